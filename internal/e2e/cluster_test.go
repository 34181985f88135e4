package e2e

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xipvs/xipvs/internal/testutil"
)

// needBird skips (or, under XIPVS_REQUIRE_PRIVILEGED, fails) without BIRD.
func needBird(t *testing.T) {
	t.Helper()
	testutil.RequirePrivileged(t)
	for _, b := range []string{"bird", "birdc"} {
		if _, err := exec.LookPath(b); err != nil {
			if os.Getenv("XIPVS_REQUIRE_PRIVILEGED") != "" {
				t.Fatalf("%s not installed (apt-get install bird2; .ci/run installs it)", b)
			}
			t.Skipf("%s not installed (apt-get install bird2)", b)
		}
	}
}

type clusterLab struct {
	*testutil.Cluster
	t    *testing.T
	args [][]string // each director's xipvsd arguments
	srv  *testutil.StreamServer
}

func newClusterLab(t *testing.T, tag string, p testutil.ClusterPlan) *clusterLab {
	t.Helper()
	needBird(t)
	p.Prefix = fmt.Sprintf("xe%d%s", os.Getpid()%10000, tag)
	c, err := testutil.NewCluster(p)
	if err != nil {
		t.Fatal(err)
	}
	lab := &clusterLab{Cluster: c, t: t}
	t.Cleanup(func() {
		if t.Failed() {
			for i, d := range c.Daemons {
				if d != nil {
					t.Logf("d%d log:\n%s", i+1, d.Logs())
				}
			}
			if out, err := c.Birdc("show", "protocols", "all"); err == nil {
				t.Logf("birdc show protocols all:\n%s", out)
			}
			t.Logf("bird log:\n%s", c.BirdLog())
		}
		if err := c.Close(); err != nil {
			t.Errorf("cluster cleanup: %v", err)
		}
	})
	return lab
}

// start starts xipvsd on director i with BGP toward the router.
func (lab *clusterLab) start(i int, extra ...string) {
	lab.t.Helper()
	p := lab.Plan
	peer := fmt.Sprintf("%s,%d,hold_time=%d", lab.RouterAddr(), p.RouterASN, int(p.HoldTime/time.Second))
	if p.BFD {
		peer += ",bfd,bfd_interval=100ms"
	}
	args := append([]string{"--sloppy-tcp", "--metrics-addr", "",
		"--bgp-asn", fmt.Sprint(p.DirectorASN), "--bgp-router-id", lab.Directors[i].Addr.Addr().String(),
		"--bgp-peer", peer, "--bgp-drain", "2s"}, extra...)
	for len(lab.args) <= i {
		lab.args = append(lab.args, nil)
	}
	lab.args[i] = args
	if err := lab.StartDirector(i, xipvsdBin, args...); err != nil {
		lab.t.Fatal(err)
	}
}

func (lab *clusterLab) adm(i int, args ...string) string {
	lab.t.Helper()
	out, err := lab.Adm(i, xipvsadmBin, args...)
	if err != nil {
		lab.t.Fatal(err)
	}
	return out
}

// serve runs the stream server on port of every real.
func (lab *clusterLab) serve(port int) {
	lab.t.Helper()
	srv, err := testutil.ServeStreams(lab.Reals, port)
	if err != nil {
		lab.t.Fatal(err)
	}
	lab.srv = srv
	lab.t.Cleanup(srv.Close)
}

func (lab *clusterLab) startStreams(n int, vs netip.AddrPort, seedBase uint32) *testutil.Streams {
	lab.t.Helper()
	s, err := lab.srv.StartStreams(lab.Client, n, vs, seedBase)
	if err != nil {
		lab.t.Fatal(err)
	}
	return s
}

// waitStreams waits for every stream, fails the test for each broken
// one, and returns the cuts across the event, longest first.
func waitStreams(t *testing.T, s *testutil.Streams) []time.Duration {
	t.Helper()
	errs, cuts := s.Wait()
	broken := 0
	for i, err := range errs {
		if err != nil {
			broken++
			if broken <= 10 {
				t.Errorf("stream %d: %v", i, err)
			}
		}
	}
	if broken > 0 {
		t.Errorf("%d of %d streams broke", broken, len(errs))
	}
	return cuts
}

// stats returns the Conns column of director i's service listing.
func (lab *clusterLab) conns(i int, vs netip.AddrPort) int {
	lab.t.Helper()
	out := lab.adm(i, "-Ln", "--stats", "--exact")
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 3 && f[0] == "TCP" && f[1] == vs.String() {
			var n int
			fmt.Sscan(f[2], &n)
			return n
		}
	}
	lab.t.Fatalf("d%d lists no %v:\n%s", i+1, vs, out)
	return 0
}

// TestClusterBGP is issue 19's acceptance: two directors announce the
// VIPs over BGP to a router running BIRD 2, which installs ECMP routes
// (L4 hash) over them; traffic reaches both; a VIP whose reals all fail
// is withdrawn and comes back; 200 long streams through the two
// directors with mh survive the drain of one (SIGTERM) and the abrupt
// loss of the other's links (after the hold time), and new connections
// keep succeeding on the survivor.
func TestClusterBGP(t *testing.T) {
	vip, vip2 := netip.MustParseAddr("10.88.0.100"), netip.MustParseAddr("10.88.0.101")
	lab := newClusterLab(t, "bgp", testutil.ClusterPlan{Fabric: "10.88.0", Clients: "10.89.0", Directors: 2, Reals: 2,
		VIPs: []netip.Addr{vip, vip2}, RouterASN: 65000, DirectorASN: 65001, HoldTime: 3 * time.Second})
	lab.serve(80)
	// The second VIP's reals are checked on a port the test opens and
	// closes: all fail, then one recovers.
	var checkLns [2]net.Listener
	listenCheck := func(r int) {
		t.Helper()
		if err := lab.Reals[r].Do(func() (err error) { checkLns[r], err = net.Listen("tcp", ":9000"); return }); err != nil {
			t.Fatal(err)
		}
		go func(ln net.Listener) {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}(checkLns[r])
	}
	listenCheck(0)
	listenCheck(1)
	t.Cleanup(func() {
		for _, ln := range checkLns {
			if ln != nil {
				ln.Close()
			}
		}
	})
	vs := netip.AddrPortFrom(vip, 80)
	for i := range lab.Directors {
		if i == 0 {
			lab.start(i, "--metrics-addr", "127.0.0.1:9639")
		} else {
			lab.start(i)
		}
		// The same configuration on every director: mh with the source
		// port picks the same real for a flow on each of them.
		lab.adm(i, "-A", "-t", vs.String(), "-s", "mh", "-b", "mh-port")
		lab.adm(i, "-A", "-t", vip2.String()+":8080", "-s", "wlc", "--check", "tcp", "--check-port", "9000",
			"--check-interval", "0.3", "--fall", "1", "--rise", "1")
		for _, rs := range lab.Reals {
			lab.adm(i, "-a", "-t", vs.String(), "-r", rs.Addr.Addr().String(), "-g")
			lab.adm(i, "-a", "-t", vip2.String()+":8080", "-r", rs.Addr.Addr().String(), "-g")
		}
	}
	d1, d2 := lab.Directors[0].Addr.Addr(), lab.Directors[1].Addr.Addr()
	for _, v := range []netip.Addr{vip, vip2} {
		hops, err := lab.WaitNextHops(v, 2, 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(hops, netip.Addr.Compare)
		if !slices.Equal(hops, []netip.Addr{d1, d2}) {
			t.Fatalf("route to %v via %v, want via both directors %v and %v", v, hops, d1, d2)
		}
	}
	out := lab.adm(0, "-L", "--bgp")
	t.Logf("xipvsadm -L --bgp on d1:\n%s", out)
	if !strings.Contains(out, "established") || !strings.Contains(out, "10.88.0.100/32") || !strings.Contains(out, "announced") {
		t.Errorf("-L --bgp lists no established session and announced VIP:\n%s", out)
	}

	// A VIP whose reals all fail is withdrawn on every director, and
	// comes back when one recovers.
	checkLns[0].Close()
	checkLns[1].Close()
	if _, err := lab.WaitNextHops(vip2, 0, 15*time.Second); err != nil {
		t.Fatalf("all reals of %v down: %v", vip2, err)
	}
	if out := lab.adm(1, "-L", "--bgp"); !strings.Contains(out, "withdrawn") || !strings.Contains(out, "0 of 2 reals healthy") {
		t.Errorf("-L --bgp does not say why %v is withdrawn:\n%s", vip2, out)
	}
	metrics := func() string {
		t.Helper()
		resp, err := lab.Directors[0].HTTPClient(5 * time.Second).Get("http://127.0.0.1:9639/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	m := metrics()
	for _, want := range []string{
		`xipvs_bgp_session_up{peer="10.88.0.254",state="established"} 1`,
		`xipvs_bgp_announced{prefix="10.88.0.100/32"} 1`,
		`xipvs_bgp_announced{prefix="10.88.0.101/32"} 0`,
		`xipvs_bgp_advertised_prefixes{peer="10.88.0.254"} 1`,
		`xipvs_bgp_draining 0`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	if hops, _ := lab.NextHops(vip); len(hops) != 2 {
		t.Errorf("route to %v via %v while only %v's reals failed", vip, hops, vip2)
	}
	listenCheck(1)
	if _, err := lab.WaitNextHops(vip2, 2, 15*time.Second); err != nil {
		t.Fatalf("a real of %v back: %v", vip2, err)
	}

	// 200 streams over both directors; d1 is drained (SIGTERM) mid-way.
	s := lab.startStreams(200, vs, 1000)
	time.Sleep(2 * time.Second)
	c1, c2 := lab.conns(0, vs), lab.conns(1, vs)
	t.Logf("connections scheduled: d1 %d, d2 %d", c1, c2)
	if c1 == 0 || c2 == 0 || c1+c2 < 200 {
		t.Errorf("ECMP spread 200 streams as %d on d1 and %d on d2: want both used", c1, c2)
	}
	ev := s.Mark()
	if err := lab.Daemons[0].Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.WaitNextHops(vip, 1, 10*time.Second); err != nil {
		t.Fatalf("drain of d1: %v", err)
	}
	t.Logf("drain: route moved to d2 alone %v after SIGTERM", time.Since(ev).Round(time.Millisecond))
	gaps := waitStreams(t, s)
	t.Logf("drain: the longest silence of a client toward its real across SIGTERM %v (median %v; ticks every 100 ms)", gaps[0].Round(time.Millisecond), gaps[len(gaps)/2].Round(time.Millisecond))
	if logs := lab.Daemons[0].Logs(); !strings.Contains(logs, "BGP drain") {
		t.Errorf("d1 logged no drain:\n%s", logs)
	}
	lab.Daemons[0].Stop()

	// d1 comes back (adopting its saved configuration) and is used again.
	if err := lab.StartDirector(0, xipvsdBin, lab.args[0]...); err != nil {
		t.Fatal(err)
	}
	if _, err := lab.WaitNextHops(vip, 2, 20*time.Second); err != nil {
		t.Fatalf("d1 back: %v", err)
	}

	// 200 streams again; d2's link goes down and its daemon is killed:
	// the router drops d2 after the hold time and every stream goes on
	// through d1.
	lab.abruptLoss(vs, 200, 5000, 1)
}

// abruptLoss opens n streams to vs over the directors, then takes
// director lost's link down and kills its daemon mid-way: every stream
// must complete through the survivors, and new connections succeed once
// the router dropped the lost director. It logs and returns how long the
// router took to withdraw the lost director's route (polled every 50 ms).
func (lab *clusterLab) abruptLoss(vs netip.AddrPort, n int, seedBase uint32, lost int) time.Duration {
	t := lab.t
	t.Helper()
	before := lab.conns(lost, vs)
	s := lab.startStreams(n, vs, seedBase)
	time.Sleep(2 * time.Second)
	onLost := lab.conns(lost, vs) - before
	ev := s.Mark()
	if err := lab.Directors[lost].IP("link", "set", "eth0", "down"); err != nil {
		t.Fatal(err)
	}
	lab.Daemons[lost].Kill()
	lab.Daemons[lost] = nil
	if _, err := lab.WaitNextHops(vs.Addr(), len(lab.Directors)-1, 15*time.Second); err != nil {
		t.Fatalf("loss of d%d: %v", lost+1, err)
	}
	routeGone := time.Since(ev)
	// New connections succeed on the survivors.
	for i := 0; i < 20; i++ {
		var c net.Conn
		if err := lab.Client.Do(func() (err error) { c, err = net.DialTimeout("tcp", vs.String(), 3*time.Second); return }); err != nil {
			t.Errorf("new connection %d after d%d's loss: %v", i, lost+1, err)
			continue
		}
		c.Close()
	}
	gaps := waitStreams(t, s)
	cut := 0
	for _, g := range gaps {
		if g > time.Second/2 {
			cut++
		}
	}
	how := fmt.Sprintf("hold time %v", lab.Plan.HoldTime)
	if lab.Plan.BFD {
		how = "BFD 100 ms x 3"
	}
	t.Logf("abrupt loss of d%d (%s): route withdrawn after %v; the longest silence of a client toward its real %v "+
		"(%d streams were on d%d, %d cut over 0.5 s; median %v; ticks every 100 ms)",
		lost+1, how, routeGone.Round(time.Millisecond), gaps[0].Round(time.Millisecond), onLost, lost+1, cut, gaps[len(gaps)/2].Round(time.Millisecond))
	return routeGone
}

// TestClusterBFD: the abrupt loss of a director with BFD between BIRD
// and GoBGP (100 ms x 3): the router withdraws its route within 1 s of
// the loss, not after the 9 s hold time, and every stream completes
// through the other director.
func TestClusterBFD(t *testing.T) {
	vip := netip.MustParseAddr("10.86.0.100")
	lab := newClusterLab(t, "bfd", testutil.ClusterPlan{Fabric: "10.86.0", Clients: "10.87.0", Directors: 2, Reals: 2,
		VIPs: []netip.Addr{vip}, RouterASN: 65000, DirectorASN: 65001, HoldTime: 9 * time.Second, BFD: true})
	lab.serve(80)
	vs := netip.AddrPortFrom(vip, 80)
	for i := range lab.Directors {
		lab.start(i)
		lab.adm(i, "-A", "-t", vs.String(), "-s", "mh", "-b", "mh-port")
		for _, rs := range lab.Reals {
			lab.adm(i, "-a", "-t", vs.String(), "-r", rs.Addr.Addr().String(), "-g")
		}
	}
	if _, err := lab.WaitNextHops(vip, 2, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := lab.adm(0, "-L", "--bgp")
		if strings.Contains(out, " up ") {
			t.Logf("xipvsadm -L --bgp on d1:\n%s", out)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("BFD session not up:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if gone := lab.abruptLoss(vs, 60, 9000, 1); gone > time.Second {
		t.Errorf("with BFD the router withdrew the lost director's route after %v; want within 1 s (the hold time is %v)", gone.Round(time.Millisecond), lab.Plan.HoldTime)
	}
}
