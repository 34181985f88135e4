// Command demo is `make demo`: it builds an LVS lab in network namespaces
// (a client, a director with an outside and an inside interface, real
// servers for DR and TUN outside and for NAT and FULLNAT inside), dual
// stack, starts xipvsd on the director, configures one service per
// forwarding method and address family with xipvsadm exactly as an LVS
// admin would, sends HTTP requests to each VIP from the client and prints
// which real server answered and whom it saw. It removes everything it
// made when it ends, also on failure or Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/xipvs/xipvs/internal/testutil"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding xipvsd and xipvsadm")
	requests := flag.Int("n", 4, "HTTP requests to send to each VIP")
	flag.Parse()
	if err := run(*bin, *requests); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

var step = testutil.DemoStep

// demo is the lab and what the demo made in it.
type demo struct {
	xipvsd, xipvsadm, prefix string
	vips                     map[string]netip.Addr
	lab                      *testutil.Lab
	prepared                 []*testutil.Host // hosts with a realserver setup
	servers                  []*http.Server
}

func run(bin string, requests int) (err error) {
	xipvsd, xipvsadm, err := testutil.DemoBinaries(bin)
	if err != nil {
		return err
	}
	d := &demo{xipvsd: xipvsd, xipvsadm: xipvsadm, prefix: fmt.Sprintf("xdemo%d", os.Getpid()%10000),
		vips: map[string]netip.Addr{
			"DR": netip.MustParseAddr("10.99.0.100"), "TUN": netip.MustParseAddr("10.99.0.101"),
			"NAT": netip.MustParseAddr("10.99.0.102"), "FULLNAT": netip.MustParseAddr("10.99.0.103"),
			"DR6": netip.MustParseAddr("fd99::100"), "TUN6": netip.MustParseAddr("fd99::101"),
			"NAT6": netip.MustParseAddr("fd99::102"), "FULLNAT6": netip.MustParseAddr("fd99::103"),
		}}
	step("Lab: outside LAN 10.99.0.0/24 and fd99::/64 (%s-sw): client cl, director lb eth0, real servers rs1 rs2 (DR, TUN);\n"+
		"    inside LAN 10.98.0.0/24 and fd98::/64 (%si-sw): director lb eth1, rs3 (NAT, gateway = director), rs4 (FULLNAT, no route to clients)", d.prefix, d.prefix)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d.lab, err = testutil.NewLab(testutil.LabPlan{Prefix: d.prefix, Outside: "10.99.0", Inside: "10.98.0",
		OutsideReals: 2, InsideReals: 2, VIPs: []netip.Addr{d.vips["DR"], d.vips["TUN"], d.vips["NAT"], d.vips["FULLNAT"]}})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, d.cleanup()) }()
	if err := d.addIPv6(); err != nil {
		return err
	}
	if err := d.prepareReals(); err != nil {
		return err
	}
	step("Director: xipvsd -i eth0,eth1 --socket %s", d.lab.Socket)
	if err := d.lab.StartDaemon(d.xipvsd); err != nil {
		return err
	}
	step("Configure one service per forwarding method, as with ipvsadm (FULLNAT as with DPVS's ipvsadm)")
	if err := d.configure(); err != nil {
		return err
	}
	if err := d.requests(ctx, requests); err != nil {
		return err
	}
	step("xipvsadm -Ln (connections stay listed until they age out)")
	time.Sleep(1200 * time.Millisecond) // one sweep of the connection table
	return d.adm("-Ln")
}

// cleanup undoes the real servers' setup and removes the lab.
func (d *demo) cleanup() error {
	for _, s := range d.servers {
		s.Close()
	}
	step("Cleaning up")
	for _, h := range d.prepared {
		_ = h.Exec(d.xipvsadm, "realserver", "down").Run()
	}
	err := d.lab.Close()
	if err == nil {
		fmt.Println("removed every namespace, link, state file and process the demo made")
	}
	return err
}

// serve runs an HTTP server on h's port that says who answered whom.
func (d *demo) serve(h *testutil.Host, name string, port int) error {
	var ln net.Listener
	if err := h.Do(func() (err error) { ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port)); return }); err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s at %v, you are %s\n", name, r.Context().Value(http.LocalAddrContextKey), r.RemoteAddr)
	})}
	d.servers = append(d.servers, srv)
	go srv.Serve(ln)
	return nil
}

// realserver runs xipvsadm realserver ARGS on h, as an admin would.
func (d *demo) realserver(h *testutil.Host, args ...string) error {
	fmt.Printf("    %s# xipvsadm realserver %s\n", strings.TrimPrefix(h.Name, d.prefix+"-"), strings.Join(args, " "))
	cmd := h.Exec(d.xipvsadm, append([]string{"realserver"}, args...)...)
	var o strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &o
	d.prepared = append(d.prepared, h)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("realserver %s: %w: %s", strings.Join(args, " "), err, o.String())
	}
	for _, l := range strings.Split(strings.TrimSpace(o.String()), "\n") {
		fmt.Printf("        %s\n", l)
	}
	return nil
}

// addIPv6 puts IPv6 next to IPv4 on the same links (no duplicate address
// detection: usable at once). The director's IPv6 VIPs get preferred_lft
// 0, so the kernel never picks one as a source address.
func (d *demo) addIPv6() error {
	lab := d.lab
	v6 := []struct {
		h    *testutil.Host
		args []string
	}{
		{lab.Client, []string{"fd99::1/64", "dev", "eth0"}},
		{lab.Director, []string{"fd99::2/64", "dev", "eth0"}},
		{lab.Director, []string{"fd98::1/64", "dev", "eth1"}},
		{lab.Reals[0], []string{"fd99::11/64", "dev", "eth0"}},
		{lab.Reals[1], []string{"fd99::12/64", "dev", "eth0"}},
		{lab.Reals[2], []string{"fd98::13/64", "dev", "eth0"}},
		{lab.Reals[3], []string{"fd98::14/64", "dev", "eth0"}},
		{lab.Director, []string{"fd98::250/128", "dev", "eth1"}},
	}
	for _, m := range []string{"DR6", "TUN6", "NAT6", "FULLNAT6"} {
		v6 = append(v6, struct {
			h    *testutil.Host
			args []string
		}{lab.Director, []string{d.vips[m].String() + "/128", "dev", "eth0", "preferred_lft", "0"}})
	}
	for _, a := range v6 {
		if err := a.h.IP(append([]string{"-6", "addr", "add"}, append(a.args, "nodad")...)...); err != nil {
			return err
		}
	}
	return nil
}

// prepareReals sets the real servers up for their methods and starts
// their HTTP servers, and gives the director its FULLNAT local address.
func (d *demo) prepareReals() error {
	lab, vips := d.lab, d.vips
	for _, rs := range lab.Reals[:2] {
		if err := d.realserver(rs, "up", "--vip", vips["DR"].String()+","+vips["DR6"].String(), "--mode", "dr"); err != nil {
			return err
		}
		if err := d.realserver(rs, "up", "--vip", vips["TUN"].String()+","+vips["TUN6"].String(), "--mode", "tun", "--interface", "eth0"); err != nil {
			return err
		}
		if err := d.serve(rs, lab.RealName(rs), 80); err != nil {
			return err
		}
	}
	rs3, rs4 := lab.Reals[2], lab.Reals[3]
	fmt.Println("    rs3# ip route add default via 10.98.0.1; ip -6 route add default via fd98::1 (NAT: replies go back through the director)")
	if err := rs3.IP("route", "add", "default", "via", "10.98.0.1"); err != nil {
		return err
	}
	if err := rs3.IP("-6", "route", "add", "default", "via", "fd98::1"); err != nil {
		return err
	}
	fmt.Println("    rs4: no route change at all (FULLNAT)")
	for _, h := range []*testutil.Host{rs3, rs4} {
		if err := d.serve(h, lab.RealName(h), 8080); err != nil {
			return err
		}
	}
	fmt.Println("    director: the eight VIPs on eth0 (answers ARP and neighbour solicitations for them); local addresses 10.98.0.250 and fd98::250 on eth1 (FULLNAT)")
	if err := lab.Director.IP("addr", "add", "10.98.0.250/32", "dev", "eth1"); err != nil {
		return err
	}
	return nil
}

// adm runs xipvsadm ARGS on the director, printing the line and what it
// said.
func (d *demo) adm(args ...string) error {
	fmt.Printf("    # xipvsadm %s\n", strings.Join(args, " "))
	out, err := d.lab.Adm(d.xipvsadm, args...)
	fmt.Print(out)
	return err
}

// vs is the virtual service of method m.
func (d *demo) vs(m string) string { return netip.AddrPortFrom(d.vips[m], 80).String() }

// configure adds one service per forwarding method and family.
func (d *demo) configure() error {
	dr, tun, nat, fnat := d.vs("DR"), d.vs("TUN"), d.vs("NAT"), d.vs("FULLNAT")
	dr6, tun6, nat6, fnat6 := d.vs("DR6"), d.vs("TUN6"), d.vs("NAT6"), d.vs("FULLNAT6")
	for _, a := range [][]string{
		{"-A", "-t", dr, "-s", "rr"},
		{"-a", "-t", dr, "-r", "10.99.0.11:80", "-g"},
		{"-a", "-t", dr, "-r", "10.99.0.12:80", "-g"},
		{"-A", "-t", tun, "-s", "rr"},
		{"-a", "-t", tun, "-r", "10.99.0.11", "-i"},
		{"-a", "-t", tun, "-r", "10.99.0.12", "-i"},
		{"-A", "-t", nat, "-s", "rr"},
		{"-a", "-t", nat, "-r", "10.98.0.13:8080", "-m"},
		{"-A", "-t", fnat, "-s", "rr"},
		{"--add-laddr", "-z", "10.98.0.250", "-t", fnat},
		{"-a", "-t", fnat, "-r", "10.98.0.14:8080", "-b"},
		{"-A", "-t", dr6, "-s", "rr"},
		{"-a", "-t", dr6, "-r", "[fd99::11]:80", "-g"},
		{"-a", "-t", dr6, "-r", "[fd99::12]:80", "-g"},
		{"-A", "-t", tun6, "-s", "rr"},
		{"-a", "-t", tun6, "-r", "fd99::11", "-i"},
		{"-a", "-t", tun6, "-r", "fd99::12", "-i"},
		{"-A", "-t", nat6, "-s", "rr"},
		{"-a", "-t", nat6, "-r", "[fd98::13]:8080", "-m"},
		{"-A", "-t", fnat6, "-s", "rr"},
		{"--add-laddr", "-z", "fd98::250", "-t", fnat6},
		{"-a", "-t", fnat6, "-r", "[fd98::14]:8080", "-b"},
	} {
		if err := d.adm(a...); err != nil {
			return err
		}
	}
	return nil
}

// requests sends n HTTP requests to every VIP from the client, each on a
// new connection, and prints who answered.
func (d *demo) requests(ctx context.Context, n int) error {
	hc := d.lab.Client.HTTPClient(10 * time.Second)
	for _, mode := range []string{"DR", "TUN", "NAT", "FULLNAT", "DR6", "TUN6", "NAT6", "FULLNAT6"} {
		client := "10.99.0.1"
		if d.vips[mode].Is6() {
			client = "fd99::1"
		}
		step("%s: client %s sends %d HTTP requests to http://%s/ (a new TCP connection each)", mode, client, n, d.vs(mode))
		for i := 1; i <= n; i++ {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			resp, err := hc.Get("http://" + d.vs(mode) + "/")
			if err != nil {
				return fmt.Errorf("%s request %d: %w", mode, i, err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			fmt.Printf("    request %2d: %s", i, body)
		}
	}
	return nil
}
