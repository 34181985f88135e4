package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/xipvs/xipvs/internal/testutil"
)

// IPv6 end to end: the labs of the IPv4 tests with IPv6 addresses added
// (no duplicate address detection, so they are usable at once).

func addr6(t *testing.T, h *testutil.Host, dev, prefix string) {
	t.Helper()
	if err := h.IP("-6", "addr", "add", prefix, "dev", dev, "nodad"); err != nil {
		t.Fatal(err)
	}
}

// serve6 runs, on each real, an HTTP server on [::]:port answering
// "NAME REMOTE-ADDR", and a UDP one on udp:port answering datagrams the
// same way (a DR real binds the VIP, so its answers come from there).
func serve6(t *testing.T, lab *drLab, udp netip.Addr, port int) {
	t.Helper()
	for _, rs := range lab.rs {
		name := lab.RealName(rs)
		var ln net.Listener
		var pc net.PacketConn
		if err := rs.Do(func() (err error) {
			if ln, err = net.Listen("tcp6", fmt.Sprintf("[::]:%d", port)); err != nil {
				return err
			}
			pc, err = net.ListenPacket("udp6", netip.AddrPortFrom(udp, uint16(port)).String())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s %s", name, r.RemoteAddr)
		})}
		go srv.Serve(ln)
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
		t.Cleanup(func() { srv.Close(); pc.Close() })
	}
}

// get6 fetches http://[vip]:port/ on a new connection: the real's name,
// the address it saw, and the client's own.
func get6(t *testing.T, cl *testutil.Host, vip netip.Addr, port int) (name, seen string, local netip.AddrPort) {
	t.Helper()
	var c net.Conn
	if err := cl.Do(func() (err error) {
		c, err = net.DialTimeout("tcp6", netip.AddrPortFrom(vip, uint16(port)).String(), 10*time.Second)
		return
	}); err != nil {
		t.Fatalf("connect to [%v]:%d: %v", vip, port, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	fmt.Fprint(c, "GET / HTTP/1.0\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("response: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	f := strings.Fields(string(b))
	if len(f) != 2 {
		t.Fatalf("answer %q", b)
	}
	return f[0], f[1], netip.MustParseAddrPort(c.LocalAddr().String())
}

// ask6 sends a datagram to [vip]:port from a socket connected there (an
// answer from another address is not taken) and returns the answer.
func ask6(t *testing.T, cl *testutil.Host, vip netip.Addr, port int) string {
	t.Helper()
	var c net.Conn
	if err := cl.Do(func() (err error) {
		c, err = net.Dial("udp6", netip.AddrPortFrom(vip, uint16(port)).String())
		return
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 128)
	for try := 0; try < 5; try++ {
		if _, err := c.Write([]byte("who?")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := c.Read(buf); err == nil {
			return string(buf[:n])
		}
	}
	t.Fatalf("no UDP answer from [%v]:%d", vip, port)
	return ""
}

// TestIPv6DR: an IPv6 VIP balanced by direct routing over one segment,
// TCP and UDP, rr 5/5 and wrr 3:1; the reals hold the VIP on lo (the
// kernel answers neighbour solicitations only for addresses of the
// receiving interface, so nothing like arp_ignore is needed).
func TestIPv6DR(t *testing.T) {
	lab := newDRLab(t, "v6dr")
	vip := netip.MustParseAddr("fd77::100")
	addr6(t, lab.cl, "eth0", "fd77::1/64")
	addr6(t, lab.lb, "eth0", "fd77::2/64")
	addr6(t, lab.lb, "eth0", vip.String()+"/128")
	for i, rs := range lab.rs {
		addr6(t, rs, "eth0", fmt.Sprintf("fd77::%d/64", 11+i))
		addr6(t, rs, "lo", vip.String()+"/128")
	}
	serve6(t, lab, vip, 80)
	vs := "[" + vip.String() + "]:80"
	lab.adm(t, "-A", "-t", vs, "-s", "rr")
	lab.adm(t, "-a", "-t", vs, "-r", "[fd77::11]:80", "-g")
	lab.adm(t, "-a", "-t", vs, "-r", "[fd77::12]:80", "-g")
	count := map[string]int{}
	for i := 0; i < 10; i++ {
		name, seen, local := get6(t, lab.cl, vip, 80)
		count[name]++
		if seen != local.String() {
			t.Errorf("%s saw %s, want the client %s", name, seen, local)
		}
	}
	if count["rs1"] != 5 || count["rs2"] != 5 {
		t.Errorf("rr over two IPv6 DR reals: %v, want 5/5", count)
	}
	list := lab.adm(t, "-Ln")
	if !strings.Contains(list, "TCP  "+vs+" rr\n") || !strings.Contains(list, destLine("[fd77::11]:80", "Route", 1)) {
		t.Errorf("-Ln:\n%s", list)
	}

	// wrr 3:1 after an edit.
	lab.adm(t, "-E", "-t", vs, "-s", "wrr")
	lab.adm(t, "-e", "-t", vs, "-r", "[fd77::11]:80", "-g", "-w", "3")
	count = map[string]int{}
	for i := 0; i < 8; i++ {
		name, _, _ := get6(t, lab.cl, vip, 80)
		count[name]++
	}
	if count["rs1"] != 6 || count["rs2"] != 2 {
		t.Errorf("wrr 3:1 over two IPv6 DR reals: %v, want 6/2", count)
	}

	us := "[" + vip.String() + "]:80"
	lab.adm(t, "-A", "-u", us, "-s", "rr")
	lab.adm(t, "-a", "-u", us, "-r", "[fd77::11]", "-g")
	lab.adm(t, "-a", "-u", us, "-r", "[fd77::12]", "-g")
	ucount := map[string]int{}
	for i := 0; i < 4; i++ {
		ucount[strings.Fields(ask6(t, lab.cl, vip, 80))[0]]++
	}
	if ucount["rs1"] != 2 || ucount["rs2"] != 2 {
		t.Errorf("UDP rr over two IPv6 DR reals: %v", ucount)
	}
	conns := lab.adm(t, "-Lnc")
	if !strings.Contains(conns, "[fd77::1]:") || !strings.Contains(conns, vs) {
		t.Errorf("-Lnc lists no IPv6 connection:\n%s", conns)
	}
	// Mixed families are refused with nothing changed.
	if out, err := lab.Adm(xipvsadmBin, "-a", "-t", vs, "-r", "10.77.0.11:80", "-g"); err == nil {
		t.Errorf("an IPv4 real on an IPv6 service was accepted: %s", out)
	}
}

// TestIPv6NAT: NAT over IPv6 through the director's second interface,
// with port mapping, TCP and UDP; the real sees the client's address and
// the client gets its answers from the VIP.
func TestIPv6NAT(t *testing.T) {
	lab := newModeLab(t, "nat6", labPlan{outside: "10.82.0", inside: "10.83.0"})
	vip := netip.MustParseAddr("fd82::100")
	addr6(t, lab.cl, "eth0", "fd82::1/64")
	addr6(t, lab.lb, "eth0", "fd82::2/64")
	addr6(t, lab.lb, "eth0", vip.String()+"/128")
	addr6(t, lab.lb, "eth1", "fd83::1/64")
	for i, rs := range lab.rs {
		addr6(t, rs, "eth0", fmt.Sprintf("fd83::%d/64", 11+i))
		if err := rs.IP("-6", "route", "add", "default", "via", "fd83::1"); err != nil {
			t.Fatal(err)
		}
	}
	serve6(t, lab.drLab, netip.IPv6Unspecified(), 8080)
	vs := "[" + vip.String() + "]:80"
	lab.adm(t, "-A", "-t", vs, "-s", "rr")
	lab.adm(t, "-a", "-t", vs, "-r", "[fd83::11]:8080", "-m")
	lab.adm(t, "-a", "-t", vs, "-r", "[fd83::12]:8080", "-m")
	count := map[string]int{}
	for i := 0; i < 10; i++ {
		name, seen, local := get6(t, lab.cl, vip, 80)
		count[name]++
		if seen != local.String() {
			t.Errorf("%s saw %s, want the client %s", name, seen, local)
		}
	}
	if count["rs1"] != 5 || count["rs2"] != 5 {
		t.Errorf("rr over two IPv6 NAT reals: %v, want 5/5", count)
	}
	us := "[" + vip.String() + "]:53"
	lab.adm(t, "-A", "-u", us, "-s", "wlc")
	lab.adm(t, "-a", "-u", us, "-r", "[fd83::11]:8080", "-m")
	lab.adm(t, "-a", "-u", us, "-r", "[fd83::12]:8080", "-m")
	for i := 0; i < 4; i++ {
		if a := ask6(t, lab.cl, vip, 53); !strings.HasPrefix(a, "rs") {
			t.Errorf("UDP answer %q", a)
		}
	}
	list := lab.adm(t, "-Ln", "--stats")
	if !strings.Contains(list, "TCP  "+vs) || !strings.Contains(list, "[fd83::11]:8080") {
		t.Errorf("--stats:\n%s", list)
	}
	// What IPv6 cannot do yet is refused, clearly.
	for _, args := range [][]string{
		{"-a", "-t", vs, "-r", "[fd83::13]:8080", "-i"},
		{"-A", "-t", "[fd82::101]:80", "-p"},
	} {
		if out, err := lab.Adm(xipvsadmBin, args...); err == nil {
			t.Errorf("%v accepted: %s", args, out)
		}
	}
}
