package e2e

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xipvs/xipvs/internal/api"
	"github.com/xipvs/xipvs/internal/testutil"
)

// modeLab is a client and a director on an outside LAN, and real
// servers on an inside LAN: reached through the director's second
// interface (NAT, FULLNAT) or through a router (TUN).
type modeLab struct {
	*drLab
}

type labPlan struct {
	outside, inside string // /24 prefixes, e.g. "10.78.0"
	// routed puts a router (gw) between the LANs instead of giving the
	// director a leg on the inside LAN.
	routed bool
	// realsGateway is the reals' default gateway on the inside LAN
	// (empty: none).
	realsGateway string
	// daemonArgs are xipvsd's extra arguments.
	daemonArgs []string
	// attacker, a /24 prefix without the last octet, links an attacker
	// host straight to the director (Lab.AddAttacker).
	attacker string
}

func newModeLab(t *testing.T, tag string, plan labPlan) *modeLab {
	t.Helper()
	vip := netip.MustParseAddr(plan.outside + ".100")
	l := testutil.NewTestLab(t, testutil.LabPlan{Prefix: fmt.Sprintf("xm%d%s", os.Getpid()%10000, tag),
		Outside: plan.outside, Inside: plan.inside, Routed: plan.routed, InsideReals: 2, VIPs: []netip.Addr{vip}})
	lab := &modeLab{drLab: &drLab{Lab: l, args: plan.daemonArgs, cl: l.Client, lb: l.Director, rs: l.Reals, vip: vip}}
	if plan.attacker != "" {
		if _, err := l.AddAttacker(plan.attacker); err != nil {
			t.Fatal(err)
		}
	}
	for _, rs := range lab.rs {
		if plan.realsGateway != "" {
			if err := rs.IP("route", "add", "default", "via", plan.realsGateway); err != nil {
				t.Fatal(err)
			}
		}
	}
	lab.start(t)
	return lab
}

// destLine is the start of a real's -Ln line, in ipvsadm's format
// ("  -> %-28s %-7s %-6d ...").
func destLine(addr, fwd string, weight int) string {
	return fmt.Sprintf("  -> %-28s %-7s %-6d ", addr, fwd, weight)
}

// rsName is a real server's short name (rs1, rs2).
func (lab *modeLab) rsName(rs *testutil.Host) string { return lab.RealName(rs) }

// serveEcho runs an HTTP server on every real at port (both families)
// that answers "NAME REMOTE-ADDR" and, for a POST, the body's length.
func (lab *drLab) serveEcho(t *testing.T, ports ...int) {
	t.Helper()
	if lab.servers == nil {
		lab.servers = map[string]*http.Server{}
	}
	for _, rs := range lab.rs {
		for _, port := range ports {
			name := lab.RealName(rs)
			var ln net.Listener
			if err := rs.Do(func() (err error) { ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port)); return }); err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n, _ := io.Copy(io.Discard, r.Body)
				fmt.Fprintf(w, "%s %s %d", name, r.RemoteAddr, n)
			})}
			lab.servers[fmt.Sprintf("%s:%d", name, port)] = srv
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
		}
	}
}

// stopServer stops serveEcho's server on port of rs.
func (lab *drLab) stopServer(t *testing.T, rs *testutil.Host, port int) {
	t.Helper()
	srv, ok := lab.servers[fmt.Sprintf("%s:%d", lab.RealName(rs), port)]
	if !ok {
		t.Fatalf("no server on %s:%d", lab.RealName(rs), port)
	}
	srv.Close()
}

// serveUDPEcho answers every datagram to bind:port on each real (bind
// unspecified: any local address of its family) with "NAME REMOTE-ADDR".
func (lab *drLab) serveUDPEcho(t *testing.T, bind netip.Addr, port int) {
	t.Helper()
	for _, rs := range lab.rs {
		name := lab.RealName(rs)
		var pc net.PacketConn
		if err := rs.Do(func() (err error) {
			pc, err = net.ListenPacket("udp", netip.AddrPortFrom(bind, uint16(port)).String())
			return
		}); err != nil {
			t.Fatal(err)
		}
		go func() {
			buf := make([]byte, 1500)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo([]byte(name+" "+from.String()), from)
			}
		}()
		t.Cleanup(func() { pc.Close() })
	}
}

// get sends one HTTP/1.0 request to VIP:port on a new connection from
// the client and returns the body and the client's own address.
func (lab *drLab) get(t *testing.T, port int, body []byte) (string, netip.AddrPort) {
	t.Helper()
	return lab.getAt(t, netip.AddrPortFrom(lab.vip, uint16(port)), body)
}

// getAt is get to the virtual service vs (of either family).
func (lab *drLab) getAt(t *testing.T, vs netip.AddrPort, body []byte) (string, netip.AddrPort) {
	t.Helper()
	return lab.getFrom(t, netip.Addr{}, vs, body)
}

// getFrom is getAt from the client's address src (any when invalid).
func (lab *drLab) getFrom(t *testing.T, src netip.Addr, vs netip.AddrPort, body []byte) (string, netip.AddrPort) {
	t.Helper()
	var c net.Conn
	d := net.Dialer{Timeout: 10 * time.Second}
	if src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
	}
	if err := lab.cl.Do(func() (err error) {
		c, err = d.Dial("tcp", vs.String())
		return
	}); err != nil {
		t.Fatalf("connect to %v: %v", vs, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	method := "GET"
	if body != nil {
		method = "POST"
	}
	fmt.Fprintf(c, "%s / HTTP/1.0\r\nContent-Length: %d\r\n\r\n", method, len(body))
	if _, err := c.Write(body); err != nil {
		t.Fatalf("send: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("response: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(b), netip.MustParseAddrPort(c.LocalAddr().String())
}

// ask fetches VIP:port once and returns the echo server's answer split
// into name, the address it saw, and the body length, with the client's
// own address.
func (lab *drLab) ask(t *testing.T, port int) (name, seen string, local netip.AddrPort) {
	t.Helper()
	return lab.askAt(t, netip.AddrPortFrom(lab.vip, uint16(port)))
}

// askAt is ask of the virtual service vs (of either family).
func (lab *drLab) askAt(t *testing.T, vs netip.AddrPort) (name, seen string, local netip.AddrPort) {
	t.Helper()
	body, local := lab.getAt(t, vs, nil)
	f := strings.Fields(body)
	if len(f) != 3 {
		t.Fatalf("answer %q", body)
	}
	return f[0], f[1], local
}

func TestNATTwoInterfaces(t *testing.T) {
	lab := newModeLab(t, "nat", labPlan{outside: "10.78.0", inside: "10.79.0", realsGateway: "10.79.0.1"})
	lab.serveEcho(t, 8080)
	lab.serveUDPEcho(t, netip.IPv4Unspecified(), 5300)
	vs := lab.vip.String() + ":80"
	lab.adm(t, "-A", "-t", vs, "-s", "rr")
	lab.adm(t, "-a", "-t", vs, "-r", "10.79.0.11:8080", "-m")
	lab.adm(t, "-a", "-t", vs, "-r", "10.79.0.12:8080", "-m")
	count := map[string]int{}
	for i := 0; i < 6; i++ {
		name, seen, local := lab.ask(t, 80)
		count[name]++
		// NAT keeps the client's address: the real sees it.
		if seen != local.String() {
			t.Errorf("real %s saw %s, want the client %s", name, seen, local)
		}
	}
	if count["rs1"] != 3 || count["rs2"] != 3 {
		t.Errorf("rr over two NAT reals: %v", count)
	}
	list := lab.adm(t, "-Ln")
	if !strings.Contains(list, destLine("10.79.0.11:8080", "Masq", 1)) {
		t.Errorf("-Ln:\n%s", list)
	}

	us := lab.vip.String() + ":53"
	lab.adm(t, "-A", "-u", us, "-s", "rr")
	lab.adm(t, "-a", "-u", us, "-r", "10.79.0.11:5300", "-m")
	lab.adm(t, "-a", "-u", us, "-r", "10.79.0.12:5300", "-m")
	ucount := map[string]int{}
	for i := 0; i < 4; i++ {
		// udpAsk's socket is connected to VIP:53: the answer must come
		// back from there.
		ucount[strings.Fields(lab.udpAsk(t, 53))[0]]++
	}
	if ucount["rs1"] != 2 || ucount["rs2"] != 2 {
		t.Errorf("UDP rr over two NAT reals: %v", ucount)
	}
}

// TestNATOneInterface: clients, director and reals on one segment; the
// client is in another subnet, so the reals' replies go through their
// gateway, the director.
func TestNATOneInterface(t *testing.T) {
	testutil.RequirePrivileged(t)
	lab := newDRLab(t, "nat1")
	lab.serveHTTP(t, 8080)
	for _, step := range [][]string{
		{"addr", "add", "10.80.0.1/24", "dev", "eth0"}, // the client's own subnet
	} {
		if err := lab.cl.IP(step...); err != nil {
			t.Fatal(err)
		}
	}
	for _, rs := range lab.rs {
		if err := rs.IP("route", "add", "10.80.0.0/24", "via", "10.77.0.2"); err != nil {
			t.Fatal(err)
		}
	}
	vs := lab.vip.String() + ":80"
	lab.adm(t, "-A", "-t", vs, "-s", "rr")
	lab.adm(t, "-a", "-t", vs, "-r", "10.77.0.11:8080", "-m")
	lab.adm(t, "-a", "-t", vs, "-r", "10.77.0.12:8080", "-m")
	count := map[string]int{}
	for i := 0; i < 4; i++ {
		var c net.Conn
		if err := lab.cl.Do(func() (err error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(10, 80, 0, 1)}, Timeout: 10 * time.Second}
			c, err = d.Dial("tcp4", vs)
			return
		}); err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprint(c, "GET / HTTP/1.0\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		c.Close()
		count[string(b)]++
	}
	if count["rs1"] != 2 || count["rs2"] != 2 {
		t.Errorf("NAT on one interface: %v", count)
	}
}

// captureTOA opens a packet socket on rs that returns the TOA option of
// the first TCP segment to port that carries one: over IPv4 (kind 254,
// length 8) or, with v6, over IPv6 (kind 254, length 20, DPVS's format).
func captureTOA(t *testing.T, rs *testutil.Host, port uint16, v6 bool) func() (netip.AddrPort, bool) {
	t.Helper()
	var fd int
	ethType := uint16(unix.ETH_P_IP)
	if v6 {
		ethType = unix.ETH_P_IPV6
	}
	if err := rs.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(ethType)))
		return
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 300000})
	return func() (netip.AddrPort, bool) {
		buf := make([]byte, 2048)
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				return netip.AddrPort{}, false
			}
			p := buf[:n]
			var l4 []byte
			switch {
			case !v6 && len(p) >= 14+20+20 && p[14+9] == unix.IPPROTO_TCP:
				l4 = p[14+int(p[14]&0xf)*4:]
			case v6 && len(p) >= 14+40+20 && p[14+6] == unix.IPPROTO_TCP:
				l4 = p[14+40:]
			default:
				continue
			}
			if binary.BigEndian.Uint16(l4[2:4]) != port {
				continue
			}
			opts := l4[20 : int(l4[12]>>4)*4]
			for i := 0; i < len(opts); {
				switch opts[i] {
				case 0:
					i = len(opts)
					continue
				case 1:
					i++
					continue
				}
				if i+1 >= len(opts) || opts[i+1] < 2 {
					break
				}
				if opts[i] == 254 && !v6 && opts[i+1] == 8 && i+8 <= len(opts) {
					return netip.AddrPortFrom(netip.AddrFrom4([4]byte(opts[i+4:i+8])), binary.BigEndian.Uint16(opts[i+2:i+4])), true
				}
				if opts[i] == 254 && v6 && opts[i+1] == 20 && i+20 <= len(opts) {
					return netip.AddrPortFrom(netip.AddrFrom16([16]byte(opts[i+4:i+20])), binary.BigEndian.Uint16(opts[i+2:i+4])), true
				}
				i += int(opts[i+1])
			}
		}
	}
}

func TestFULLNAT(t *testing.T) {
	// The reals have no route to the client at all.
	lab := newModeLab(t, "fnat", labPlan{outside: "10.84.0", inside: "10.85.0"})
	lip := "10.85.0.250"
	if err := lab.lb.IP("addr", "add", lip+"/32", "dev", "eth1"); err != nil {
		t.Fatal(err)
	}
	lab.serveEcho(t, 8080)
	lab.serveUDPEcho(t, netip.IPv4Unspecified(), 5300)
	vs := lab.vip.String() + ":80"
	lab.adm(t, "-A", "-t", vs, "-s", "rr")
	lab.adm(t, "--add-laddr", "-z", lip, "-t", vs)
	lab.adm(t, "-a", "-t", vs, "-r", "10.85.0.11:8080", "-b")
	lab.adm(t, "-a", "-t", vs, "-r", "10.85.0.12:8080", "--fullnat")
	toa1 := captureTOA(t, lab.rs[0], 8080, false)
	toa2 := captureTOA(t, lab.rs[1], 8080, false)
	before, err := api.NewClient(lab.Socket).Info()
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for i := 0; i < 4; i++ {
		name, seen, local := lab.ask(t, 80)
		count[name]++
		// The real sees the local address, not the client.
		if !strings.HasPrefix(seen, lip+":") {
			t.Errorf("real %s saw %s, want the local address %s", name, seen, lip)
		}
		capture := toa1
		if name == "rs2" {
			capture = toa2
		}
		got, ok := capture()
		if !ok || got != local {
			t.Errorf("TOA seen by %s: %v (found %v), want the client %v", name, got, ok, local)
		}
	}
	if count["rs1"] != 2 || count["rs2"] != 2 {
		t.Errorf("rr over two FULLNAT reals: %v", count)
	}
	if out := lab.adm(t, "-Ln"); !strings.Contains(out, destLine("10.85.0.12:8080", "FullNat", 1)) {
		t.Errorf("-Ln:\n%s", out)
	}
	if out := lab.adm(t, "--get-laddr"); !strings.Contains(out, lip) {
		t.Errorf("--get-laddr:\n%s", out)
	}

	us := lab.vip.String() + ":53"
	lab.adm(t, "-A", "-u", us, "-s", "rr")
	lab.adm(t, "--add-laddr", "-z", lip, "-u", us)
	lab.adm(t, "-a", "-u", us, "-r", "10.85.0.11:5300", "-b")
	for i := 0; i < 2; i++ {
		ans := strings.Fields(lab.udpAsk(t, 53))
		if len(ans) != 2 || ans[0] != "rs1" || !strings.HasPrefix(ans[1], lip+":") {
			t.Errorf("UDP FULLNAT answer %v, want rs1 seeing %s", ans, lip)
		}
	}
	// Every one of them opened in XDP, with a local port from the
	// service's ring.
	after, err := api.NewClient(lab.Socket).Info()
	if err != nil {
		t.Fatal(err)
	}
	if n := after.Counters["slow_new_conns"] - before.Counters["slow_new_conns"]; n != 0 {
		t.Errorf("%d of 6 FULLNAT connections opened by the slow path, want none", n)
	}
	// Deleting the local address leaves no way to open new FULLNAT
	// connections: refused (counted), never sent with a reused port.
	lab.adm(t, "--del-laddr", "-z", lip, "-t", vs)
	if out := lab.adm(t, "--get-laddr", "-t", vs); strings.Contains(out, lip) {
		t.Errorf("local address still listed:\n%s", out)
	}
}

// realserver runs xipvsadm realserver in rs's namespace.
func realserver(t *testing.T, rs *testutil.Host, args ...string) string {
	t.Helper()
	cmd := rs.Exec(xipvsadmBin, append([]string{"realserver"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("realserver %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

func TestTUNRouted(t *testing.T) {
	// The reals sit behind a router: not on the director's segment.
	lab := newModeLab(t, "tun", labPlan{outside: "10.82.0", inside: "10.83.0", routed: true, realsGateway: "10.83.0.254"})
	for _, rs := range lab.rs {
		realserver(t, rs, "up", "--vip", lab.vip.String(), "--mode", "tun", "--interface", "eth0")
		rs := rs
		t.Cleanup(func() { _ = rs.Exec(xipvsadmBin, "realserver", "down").Run() })
	}
	lab.serveEcho(t, 80)
	lab.serveUDP(t, 5353)
	vs := lab.vip.String() + ":80"
	lab.adm(t, "-A", "-t", vs, "-s", "rr")
	lab.adm(t, "-a", "-t", vs, "-r", "10.83.0.11", "-i")
	lab.adm(t, "-a", "-t", vs, "-r", "10.83.0.12", "-i")
	count := map[string]int{}
	for i := 0; i < 4; i++ {
		name, seen, local := lab.ask(t, 80)
		count[name]++
		if seen != local.String() {
			t.Errorf("real %s saw %s, want the client %s", name, seen, local)
		}
	}
	if count["rs1"] != 2 || count["rs2"] != 2 {
		t.Errorf("rr over two TUN reals: %v", count)
	}
	// Full-sized segments do not fit the tunnel: the director answers
	// with ICMP fragmentation-needed and the client's PMTU discovery
	// shrinks them; the upload arrives whole.
	big := bytes.Repeat([]byte("x"), 200000)
	body, _ := lab.get(t, 80, big)
	if f := strings.Fields(body); len(f) != 3 || f[2] != "200000" {
		t.Errorf("200000-byte upload through the tunnel: answer %q", body)
	}
	info, err := api.NewClient(lab.Socket).Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.Counters["xdp_icmp_frag_needed"] == 0 {
		t.Errorf("no ICMP fragmentation-needed sent for the upload: counters %v", info.Counters)
	}
	t.Logf("ICMP fragmentation-needed sent: %d", info.Counters["xdp_icmp_frag_needed"])
	us := lab.vip.String() + ":5353"
	lab.adm(t, "-A", "-u", us, "-s", "rr")
	lab.adm(t, "-a", "-u", us, "-r", "10.83.0.11", "-i")
	if got := lab.udpAsk(t, 5353); got != "rs1" {
		t.Errorf("UDP over TUN answered by %q", got)
	}
	if out := lab.adm(t, "-Ln"); !strings.Contains(out, destLine("10.83.0.11:80", "Tunnel", 1)) {
		t.Errorf("-Ln:\n%s", out)
	}

	// down restores what up changed; up is idempotent.
	rs := lab.rs[0]
	if out := realserver(t, rs, "up", "--vip", lab.vip.String(), "--mode", "tun", "--interface", "eth0"); out != "" {
		t.Errorf("second up changed %q", out)
	}
	realserver(t, rs, "down")
	var ignore []byte
	if err := rs.Do(func() (err error) {
		ignore, err = os.ReadFile("/proc/sys/net/ipv4/conf/all/arp_ignore")
		return
	}); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(ignore)) != "0" {
		t.Errorf("arp_ignore after down: %s", ignore)
	}
	out, _ := rs.Exec("ip", "addr", "show", "dev", "lo").Output()
	if strings.Contains(string(out), lab.vip.String()) {
		t.Errorf("VIP still on lo after down:\n%s", out)
	}
	out, _ = rs.Exec("ip", "link", "show", "dev", "eth0").Output()
	if strings.Contains(string(out), "xdp") {
		t.Errorf("decap program still attached after down:\n%s", out)
	}
}
