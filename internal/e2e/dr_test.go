// Package e2e holds end-to-end tests: real xipvsd and xipvsadm binaries,
// real TCP and UDP traffic, in network namespaces the tests make and
// remove.
package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/xipvs/xipvs/internal/api"
	"github.com/xipvs/xipvs/internal/testutil"
)

var xipvsdBin, xipvsadmBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "xipvs-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	xipvsdBin, xipvsadmBin, err = testutil.BuildBinaries(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// drLab is a client, a director and two real servers on one L2 segment.
type drLab struct {
	*testutil.Lab
	args   []string // extra xipvsd arguments
	cl, lb *testutil.Host
	rs     []*testutil.Host
	vip    netip.Addr
	// servers are serveEcho's, by "rsN:port".
	servers map[string]*http.Server
}

func newDRLab(t *testing.T, tag string, daemonArgs ...string) *drLab {
	t.Helper()
	return newDRLabAttacked(t, tag, "", daemonArgs...)
}

// newDRLabAttacked is newDRLab with an attacker host linked straight to
// the director (Lab.AddAttacker) when attacker is set.
func newDRLabAttacked(t *testing.T, tag, attacker string, daemonArgs ...string) *drLab {
	t.Helper()
	vip := netip.MustParseAddr("10.77.0.100")
	l := testutil.NewTestLab(t, testutil.LabPlan{Prefix: fmt.Sprintf("xe%d%s", os.Getpid()%10000, tag),
		Outside: "10.77.0", OutsideReals: 2, VIPs: []netip.Addr{vip}})
	lab := &drLab{Lab: l, args: daemonArgs, cl: l.Client, lb: l.Director, rs: l.Reals, vip: vip}
	for _, rs := range lab.rs {
		if err := rs.MakeRealServer(vip); err != nil {
			t.Fatal(err)
		}
	}
	if attacker != "" {
		if _, err := l.AddAttacker(attacker); err != nil {
			t.Fatal(err)
		}
	}
	lab.start(t)
	return lab
}

// start starts xipvsd on the director.
func (lab *drLab) start(t *testing.T) {
	t.Helper()
	if err := lab.StartDaemon(xipvsdBin, lab.args...); err != nil {
		t.Fatal(err)
	}
}

// adm runs xipvsadm against the lab's daemon and returns its stdout.
func (lab *drLab) adm(t *testing.T, args ...string) string {
	t.Helper()
	out, err := lab.Adm(xipvsadmBin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// serveHTTP runs an HTTP server on each real server, on port 80 or the
// ports given, that answers with the server's name.
func (lab *drLab) serveHTTP(t *testing.T, ports ...int) {
	t.Helper()
	if len(ports) == 0 {
		ports = []int{80}
	}
	for _, rs := range lab.rs {
		name := lab.RealName(rs)
		for _, port := range ports {
			var ln net.Listener
			if err := rs.Do(func() (err error) { ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port)); return }); err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				fmt.Fprint(w, name)
			})}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
		}
	}
}

// serveUDP runs a UDP server bound to VIP:port on each real server that
// answers every datagram with the server's name, from the VIP.
func (lab *drLab) serveUDP(t *testing.T, port int) {
	t.Helper()
	for _, rs := range lab.rs {
		name := lab.RealName(rs)
		var pc net.PacketConn
		if err := rs.Do(func() (err error) {
			pc, err = net.ListenPacket("udp4", netip.AddrPortFrom(lab.vip, uint16(port)).String())
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
				_, _ = pc.WriteTo([]byte(name), from)
			}
		}()
		t.Cleanup(func() { pc.Close() })
	}
}

// httpGet fetches http://VIP/ from the client namespace on a new
// connection and returns the body.
func (lab *drLab) httpGet(t *testing.T) string {
	t.Helper()
	return lab.httpGetPort(t, 80)
}

// httpGetPort fetches http://VIP:port/ on a new connection.
func (lab *drLab) httpGetPort(t *testing.T, port int) string {
	t.Helper()
	hc := lab.cl.HTTPClient(10 * time.Second)
	resp, err := hc.Get(fmt.Sprintf("http://%s:%d/", lab.vip, port))
	if err != nil {
		t.Fatalf("GET via VIP: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// udpAsk sends one datagram to VIP:port from a fresh client socket and
// returns the answer; the socket is connected to the VIP, so an answer
// from any other address is not accepted.
func (lab *drLab) udpAsk(t *testing.T, port int) string {
	t.Helper()
	return lab.udpAskAt(t, netip.AddrPortFrom(lab.vip, uint16(port)))
}

// udpAskAt is udpAsk of the virtual service vs (of either family).
func (lab *drLab) udpAskAt(t *testing.T, vs netip.AddrPort) string {
	t.Helper()
	var c net.Conn
	if err := lab.cl.Do(func() (err error) {
		c, err = net.Dial("udp", vs.String())
		return
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	// The first datagram of a flow can meet an unresolved MAC; retry as
	// a UDP client would.
	for try := 0; try < 5; try++ {
		if _, err := c.Write([]byte("who?")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n])
		}
	}
	t.Fatalf("no UDP answer through the VIP")
	return ""
}

func TestDRRoundRobinHTTP(t *testing.T) {
	lab := newDRLab(t, "rr")
	lab.serveHTTP(t)
	vs := lab.vip.String() + ":80"
	lab.adm(t, "-A", "-t", vs, "-s", "rr")
	lab.adm(t, "-a", "-t", vs, "-r", "10.77.0.11:80", "-g")
	lab.adm(t, "-a", "-t", vs, "-r", "10.77.0.12", "-g")

	var got []string
	for i := 0; i < 10; i++ {
		got = append(got, lab.httpGet(t))
	}
	t.Logf("answers: %v", got)
	count := map[string]int{}
	for i, g := range got {
		count[g]++
		if i > 0 && got[i-1] == g {
			t.Errorf("rr: request %d answered by %s twice in a row: %v", i, g, got)
		}
	}
	if count["rs1"] != 5 || count["rs2"] != 5 {
		t.Errorf("rr over two reals: got %v, want 5 each", count)
	}
	// The kernel's rr starts at the front of its list, where the most
	// recently added real is.
	if got[0] != "rs2" {
		t.Errorf("first answer %s, want rs2 (last added, first in IPVS's list)", got[0])
	}

	list := lab.adm(t, "-L", "-n")
	want := "TCP  10.77.0.100:80 rr\n" +
		"  -> 10.77.0.11:80                Route   1      "
	if !strings.Contains(list, want) || !strings.Contains(list, "  -> 10.77.0.12:80                Route   1      ") {
		t.Errorf("-Ln output:\n%s\nwant lines like:\n%s", list, want)
	}

	// For scripts: -L --json, and -Lc --json.
	var svcs []api.Service
	if out := lab.adm(t, "-L", "--json"); json.Unmarshal([]byte(out), &svcs) != nil || len(svcs) != 1 || len(svcs[0].Dests) != 2 ||
		svcs[0].Stats.Conns != 10 || svcs[0].Dests[0].Serving != 1 {
		t.Errorf("-L --json:\n%s", out)
	}
	var conns []api.Conn
	if out := lab.adm(t, "-Lc", "--json"); json.Unmarshal([]byte(out), &conns) != nil || len(conns) != 10 || conns[0].Virtual.String() != vs {
		t.Errorf("-Lc --json:\n%s", out)
	}
}

func TestDRWeightedRoundRobinHTTP(t *testing.T) {
	lab := newDRLab(t, "wrr")
	lab.serveHTTP(t)
	vs := lab.vip.String() + ":80"
	lab.adm(t, "-A", "-t", vs, "-s", "wrr")
	lab.adm(t, "-a", "-t", vs, "-r", "10.77.0.11:80", "-g", "-w", "3")
	lab.adm(t, "-a", "-t", vs, "-r", "10.77.0.12:80", "-g", "-w", "1")
	count := map[string]int{}
	var got []string
	for i := 0; i < 8; i++ { // two cycles of 3+1
		g := lab.httpGet(t)
		got = append(got, g)
		count[g]++
	}
	t.Logf("answers: %v", got)
	if count["rs1"] != 6 || count["rs2"] != 2 {
		t.Errorf("wrr 3:1 over two cycles: got %v, want rs1:6 rs2:2", count)
	}
	// Weight 0 drains: no new connections.
	lab.adm(t, "-e", "-t", vs, "-r", "10.77.0.11:80", "-g", "-w", "0")
	for i := 0; i < 4; i++ {
		if g := lab.httpGet(t); g != "rs2" {
			t.Errorf("with rs1 at weight 0, answer from %s", g)
		}
	}
}

func TestDRUDP(t *testing.T) {
	lab := newDRLab(t, "udp")
	lab.serveUDP(t, 5353)
	vs := lab.vip.String() + ":5353"
	lab.adm(t, "-A", "-u", vs, "-s", "rr")
	lab.adm(t, "-a", "-u", vs, "-r", "10.77.0.11", "-g")
	lab.adm(t, "-a", "-u", vs, "-r", "10.77.0.12", "-g")
	count := map[string]int{}
	for i := 0; i < 6; i++ {
		count[lab.udpAsk(t, 5353)]++
	}
	if count["rs1"] != 3 || count["rs2"] != 3 {
		t.Errorf("UDP rr: got %v, want 3 each", count)
	}
	list := lab.adm(t, "-Ln")
	if !strings.Contains(list, "UDP  10.77.0.100:5353 rr") {
		t.Errorf("-Ln lacks the UDP service:\n%s", list)
	}
}

// TestUDPBurstOneReal: a burst of datagrams of one new flow, sent before
// the slow path has written the flow's entry, all go to one real server
// (the later ones follow the first through the slow path's record of the
// flows it just made), while rr sends each new flow to the next real.
func TestUDPBurstOneReal(t *testing.T) {
	lab := newDRLab(t, "bst")
	lab.serveUDP(t, 5353)
	vs := lab.vip.String() + ":5353"
	lab.adm(t, "-A", "-u", vs, "-s", "rr")
	lab.adm(t, "-a", "-u", vs, "-r", "10.77.0.11", "-g")
	lab.adm(t, "-a", "-u", vs, "-r", "10.77.0.12", "-g")
	// The first real's MAC resolved, so no datagram waits for ARP.
	lab.udpAsk(t, 5353)
	for flow := 0; flow < 4; flow++ {
		var c net.Conn
		if err := lab.cl.Do(func() (err error) {
			c, err = net.Dial("udp4", netip.AddrPortFrom(lab.vip, 5353).String())
			return
		}); err != nil {
			t.Fatal(err)
		}
		const burst = 32
		for i := 0; i < burst; i++ {
			if _, err := c.Write([]byte("who?")); err != nil {
				t.Fatal(err)
			}
		}
		got := map[string]int{}
		buf := make([]byte, 64)
		for {
			_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			n, err := c.Read(buf)
			if err != nil {
				break
			}
			got[string(buf[:n])]++
		}
		c.Close()
		total := 0
		for _, n := range got {
			total += n
		}
		if len(got) != 1 || total < burst*9/10 {
			t.Errorf("burst %d of %d datagrams of one new flow answered by %v", flow, burst, got)
		}
	}
	if out := lab.adm(t, "-Ln"); !strings.Contains(out, "10.77.0.11:5353") {
		t.Errorf("-Ln:\n%s", out)
	}
	info, err := api.NewClient(lab.Socket).Info()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("slow path: received %d, new %d, followed %d, batches %d", info.Counters["slow_received"],
		info.Counters["slow_new_conns"], info.Counters["slow_followed"], info.Counters["slow_batches"])
}

// TestDRRepliesBypassDirector captures frames on the client: requests
// go to the director's MAC, replies come from the real server's MAC with
// the VIP as source: the director never sees them.
func TestDRRepliesBypassDirector(t *testing.T) {
	lab := newDRLab(t, "byp")
	lab.serveHTTP(t)
	vs := lab.vip.String() + ":80"
	lab.adm(t, "-A", "-t", vs, "-s", "rr")
	lab.adm(t, "-a", "-t", vs, "-r", "10.77.0.11:80", "-g")

	var fd int
	if err := lab.cl.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		return
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000}); err != nil {
		t.Fatal(err)
	}
	if body := lab.httpGet(t); body != "rs1" {
		t.Fatalf("answer %q, want rs1", body)
	}
	var toVIP, fromVIP int
	buf := make([]byte, 2048)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			break
		}
		p := gopacket.NewPacket(buf[:n], layers.LayerTypeEthernet, gopacket.Default)
		eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if eth == nil || ip == nil || p.Layer(layers.LayerTypeTCP) == nil {
			continue
		}
		switch {
		case ip.DstIP.Equal(lab.vip.AsSlice()):
			toVIP++
			if eth.DstMAC.String() != lab.lb.MAC.String() {
				t.Errorf("request to VIP sent to %v, want the director %v", eth.DstMAC, lab.lb.MAC)
			}
		case ip.SrcIP.Equal(lab.vip.AsSlice()):
			fromVIP++
			if eth.SrcMAC.String() != lab.rs[0].MAC.String() {
				t.Errorf("reply from VIP came from %v, want real server rs1 %v", eth.SrcMAC, lab.rs[0].MAC)
			}
		}
	}
	if toVIP == 0 || fromVIP == 0 {
		t.Fatalf("captured %d frames to and %d from the VIP; want both", toVIP, fromVIP)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
