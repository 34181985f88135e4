package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/xipvs/xipvs/internal/testutil"
)

// A new flow to a service with no available real is answered ICMP port
// unreachable (ip_vs_leave): a TCP connect is refused at once rather than
// retransmitting its SYN for seconds, a connected UDP socket reads
// ECONNREFUSED.
func TestPortUnreachableNoReal(t *testing.T) {
	lab := newDRLab(t, "unr")
	vip := lab.vip.String()
	lab.adm(t, "-A", "-t", vip+":81", "-s", "rr")
	lab.adm(t, "-A", "-u", vip+":82", "-s", "wlc")
	// A real set to weight 0 takes no new flow either.
	lab.adm(t, "-a", "-u", vip+":82", "-r", lab.rs[0].Addr.Addr().String(), "-g", "-w", "0")

	start := time.Now()
	err := lab.cl.Do(func() error {
		c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(lab.vip, 81).String(), 5*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > 2*time.Second {
		t.Errorf("TCP connect to a service without reals: %v after %v, want refused at once", err, time.Since(start))
	}

	var c net.Conn
	if err := lab.cl.Do(func() (err error) {
		c, err = net.Dial("udp4", netip.AddrPortFrom(lab.vip, 82).String())
		return
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("who?")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 64)); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("UDP to a service whose only real has weight 0: %v, want ECONNREFUSED", err)
	}
}

// PMTU discovery through the director (issue 17): the client sits behind
// a router whose link toward it has a smaller MTU (1280) than the
// director's LANs (1500). A DR real (outside) and a NAT real (inside,
// the director its gateway) send 1500-byte segments with DF; the router
// answers each with frag-needed to their source, the VIP, which is the
// director; the director sends it on to the connection's real (DR: as it
// is; NAT: translated), whose stack lowers its path MTU, and the
// download completes. Without that, the segments are dropped for good
// and the download stalls.
func TestPMTUThroughDirector(t *testing.T) {
	vip := netip.MustParseAddr("10.88.0.100")
	pfx := fmt.Sprintf("xp%d", os.Getpid()%10000)
	l := testutil.NewTestLab(t, testutil.LabPlan{Prefix: pfx, Outside: "10.88.0", Inside: "10.89.0",
		OutsideReals: 1, InsideReals: 1, VIPs: []netip.Addr{vip}})
	dr, nat := l.Reals[0], l.Reals[1]
	if err := dr.MakeRealServer(vip); err != nil {
		t.Fatal(err)
	}
	if err := nat.IP("route", "add", "default", "via", "10.89.0.1"); err != nil {
		t.Fatal(err)
	}
	// The far side: a router on the outside LAN, its leg toward the far
	// client at MTU 1280.
	far, err := testutil.NewLAN(pfx + "f")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { far.Close() })
	gw, err := l.Out.AddHost("gw", netip.MustParsePrefix("10.88.0.254/24"), testutil.HostOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := far.Attach(gw, "gw", "eth1", netip.MustParsePrefix("10.90.0.254/24"), testutil.HostOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, kv := range [][2]string{{"net.ipv4.ip_forward", "1"}, {"net.ipv4.conf.all.rp_filter", "0"}} {
		if err := gw.Sysctl(kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := gw.IP("link", "set", "eth1", "mtu", "1280"); err != nil {
		t.Fatal(err)
	}
	cl, err := far.AddHost("cl", netip.MustParsePrefix("10.90.0.1/24"), testutil.HostOptions{TxChecksumOff: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []*testutil.Host{cl, dr} {
		if err := h.IP("route", "add", "10.90.0.0/24", "via", "10.88.0.254"); err != nil && h == dr {
			t.Fatal(err)
		}
	}
	if err := cl.IP("route", "add", "default", "via", "10.90.0.254"); err != nil {
		t.Fatal(err)
	}
	lab := &drLab{Lab: l, cl: cl, lb: l.Director, rs: l.Reals, vip: vip}
	lab.start(t)

	const size = 1 << 20
	for _, rs := range []*testutil.Host{dr, nat} {
		var ln net.Listener
		if err := rs.Do(func() (err error) { ln, err = net.Listen("tcp4", ":80"); return }); err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write(make([]byte, size))
		})}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	lab.adm(t, "-A", "-t", vip.String()+":80", "-s", "rr")
	lab.adm(t, "-a", "-t", vip.String()+":80", "-r", dr.Addr.Addr().String(), "-g")
	lab.adm(t, "-A", "-t", vip.String()+":8080", "-s", "rr")
	lab.adm(t, "-a", "-t", vip.String()+":8080", "-r", nat.Addr.Addr().String()+":80", "-m")

	for _, port := range []int{80, 8080} {
		hc := cl.HTTPClient(15 * time.Second)
		resp, err := hc.Get(fmt.Sprintf("http://%s:%d/", vip, port))
		if err != nil {
			t.Errorf("download via port %d: %v", port, err)
			continue
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != size {
			t.Errorf("download via port %d: %d of %d bytes: %v", port, n, size, err)
		}
	}
	out := lab.adm(t, "-Ln", "--stats", "--exact")
	t.Logf("%s", out)
}
