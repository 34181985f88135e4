package server

import (
	"net/netip"
	"testing"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/health"
)

// Health transitions through SetHealth (the monitor's callback), with
// the fake data plane: remove takes a real out of scheduling and ends its
// templates; quiesce keeps it listed with weight 0; the sorry server
// takes new flows only while no real is up.
func TestSetHealth(t *testing.T) {
	s, dp, _ := newTestServer(t)
	apply(t, s, "-A -t 10.0.0.100:80 -s rr -p 300 --check tcp --on-failure remove --sorry-server 10.0.0.50")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.11 -g")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.12 -g --check none")
	svc := config.ServiceKey{Proto: config.TCP, Addr: vip, Port: 80}
	k1 := health.Key{Service: svc, Real: netip.MustParseAddrPort("10.0.0.11:80")}

	targets := s.HealthTargets()
	if len(targets) != 1 || targets[k1].Check.Type != "tcp" || targets[k1].Check.Fall != config.DefaultFall {
		t.Fatalf("targets %+v (10.0.0.12 has --check none)", targets)
	}
	// A persistent client's template ends when its real fails: it moves
	// to the other real (and stays there).
	first := newConn(t, s, dp, "192.0.2.1", 1000, 80)
	if first != rs1 {
		// Make rs1 the real this test fails: the template on rs2 goes
		// when rs2 fails, and rs1 comes back afterwards.
		s.SetHealth(health.Key{Service: svc, Real: netip.MustParseAddrPort("10.0.0.12:80")}, false, "x")
		if got := newConn(t, s, dp, "192.0.2.1", 1001, 80); got != rs1 {
			t.Fatalf("template not ended with its real failed: %v", got)
		}
		s.SetHealth(health.Key{Service: svc, Real: netip.MustParseAddrPort("10.0.0.12:80")}, true, "")
	}
	s.SetHealth(k1, false, "connection refused")
	if s.Healthy(k1) {
		t.Fatal("still healthy")
	}
	for i := 0; i < 6; i++ {
		if got := newConn(t, s, dp, "192.0.2.1", uint16(2000+i), 80); got != rs2 {
			t.Fatalf("flow %d went to %v with rs1 removed", i, got)
		}
	}
	st := s.Services()[0]
	for _, d := range st.Dests {
		if d.Addr == rs1 && (d.Health.Up || d.Health.Reason != "connection refused" || d.Weight != 1) {
			t.Errorf("rs1 status %+v (configured weight kept)", d)
		}
	}
	// Only unchecked rs2 is left; a real with --check none never fails,
	// so the sorry server stays out.
	if st.SorryActive {
		t.Error("sorry server active while rs2 is up")
	}
	// Quiesce mode and all reals down: the sorry server.
	apply(t, s, "-E -t 10.0.0.100:80 -s rr --check tcp --sorry-server 10.0.0.50")
	s.SetHealth(health.Key{Service: svc, Real: netip.MustParseAddrPort("10.0.0.12:80")}, false, "down")
	if !s.Services()[0].SorryActive {
		t.Fatal("sorry server not active with every real down")
	}
	if got := newConn(t, s, dp, "192.0.2.9", 3000, 80); got != netip.MustParseAddr("10.0.0.50") {
		t.Errorf("new flow with every real down went to %v", got)
	}
	s.SetHealth(k1, true, "")
	if got := newConn(t, s, dp, "192.0.2.9", 3001, 80); got != rs1 {
		t.Errorf("rs1 back: new flow went to %v", got)
	}
	// Deleting the service releases the sorry server's real too.
	apply(t, s, "-D -t 10.0.0.100:80")
	if len(dp.Reals) != 0 {
		t.Errorf("reals left: %v", dp.Reals)
	}
}

// TestStartDown: with --check-start-down (keepalived's alpha) a new real
// takes no flow before its first check passes; without it, at once.
func TestStartDown(t *testing.T) {
	s, _, _ := newTestServer(t)
	apply(t, s, "-A -t 10.0.0.100:80 -s rr --check tcp --check-start-down")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.11 -g")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.12 -g --check tcp")
	svc := config.ServiceKey{Proto: config.TCP, Addr: vip, Port: 80}
	k1 := health.Key{Service: svc, Real: netip.MustParseAddrPort("10.0.0.11:80")}
	k2 := health.Key{Service: svc, Real: netip.MustParseAddrPort("10.0.0.12:80")}
	if s.Healthy(k1) || !s.Healthy(k2) {
		t.Fatalf("before any check: rs1 healthy %v (start down), rs2 healthy %v (its own check, not start down)", s.Healthy(k1), s.Healthy(k2))
	}
	flow := func(sport uint16) netip.Addr {
		k := dataplane.ConnKey{Src: netip.MustParseAddr("192.0.2.1"), Dst: vip, SrcPort: sport, DstPort: 80, Proto: 6}
		d, ok := s.NewFlow(dataplane.NewFlow{Key: k})
		if !ok {
			t.Fatal("no real")
		}
		return s.reals[d.RealID].cfg.Addr
	}
	for i := uint16(0); i < 4; i++ {
		if got := flow(1000 + i); got != rs2 {
			t.Fatalf("flow %d to %v before rs1's first check", i, got)
		}
	}
	s.SetHealth(k1, true, "")
	seen := map[netip.Addr]bool{}
	for i := uint16(0); i < 4; i++ {
		seen[flow(2000+i)] = true
	}
	if !seen[rs1] || !seen[rs2] {
		t.Errorf("after rs1's first check: flows to %v", seen)
	}
}
