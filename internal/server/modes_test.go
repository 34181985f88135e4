package server

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/neigh"
	"github.com/xipvs/xipvs/internal/testutil"
)

var (
	mVIP = netip.MustParseAddr("192.0.2.10")
	mRIP = netip.MustParseAddr("10.1.0.11")
)

func svcKey(port uint16) config.ServiceKey {
	return config.ServiceKey{Proto: config.TCP, Addr: mVIP, Port: port}
}

func addSvc(t *testing.T, s *Server, k config.ServiceKey, dests ...config.Dest) {
	t.Helper()
	if err := s.AddService(config.Service{ServiceKey: k, Scheduler: "rr"}); err != nil {
		t.Fatal(err)
	}
	for _, d := range dests {
		if err := s.AddDest(k, d); err != nil {
			t.Fatal(err)
		}
	}
}

// open schedules a new flow and writes its entries as the slow path does.
func open(t *testing.T, s *Server, dp *testutil.FakeDataplane, clk *clock, src netip.Addr, sport, dport uint16) (dataplane.Decision, bool) {
	t.Helper()
	f := dataplane.NewFlow{Key: dataplane.ConnKey{Src: src, Dst: mVIP, SrcPort: sport, DstPort: dport, Proto: conntrack.ProtoTCP}, Ifindex: 2}
	dec, ok := s.NewFlow(f)
	if ok {
		for _, e := range dataplane.Entries(f, dec, clk.now, nil) {
			dp.Conns[e.Key] = e.Conn
		}
	}
	return dec, ok
}

func TestNATDecision(t *testing.T) {
	s, dp, clk := newTestServer(t)
	addSvc(t, s, svcKey(80), config.Dest{Addr: mRIP, Port: 8080, Fwd: config.FwdMasq, Weight: 1})
	dec, ok := open(t, s, dp, clk, client(1), 40000, 80)
	want := dataplane.ConnKey{Src: client(1), Dst: mRIP, SrcPort: 40000, DstPort: 8080}
	if !ok || dec.Out != want || dec.FullNAT {
		t.Fatalf("NAT decision %+v, want out %+v", dec, want)
	}
	// The reply entry is keyed RIP:8080 -> client and rewrites back.
	rk := dataplane.ConnKey{Src: mRIP, Dst: client(1), SrcPort: 8080, DstPort: 40000, Proto: conntrack.ProtoTCP}
	r, ok := dp.Conns[rk]
	if !ok || r.Flags != dataplane.ConnReply || r.Out != (dataplane.ConnKey{Src: mVIP, Dst: client(1), SrcPort: 80, DstPort: 40000}) {
		t.Fatalf("reply entry %+v (%v)", r, ok)
	}
	if dp.Reals[1].Fwd != dataplane.FwdMasq {
		t.Errorf("real written with fwd %v", dp.Reals[1].Fwd)
	}
	// -e -g on a port-mapped real is refused: DR keeps the port.
	if err := s.EditDest(svcKey(80), config.Dest{Addr: mRIP, Port: 8080, Fwd: config.FwdRoute, Weight: 1}); err == nil {
		t.Errorf("-e -g of a port-mapped real accepted")
	}
	// -e -i changes the method; the data plane's real follows.
	addSvc(t, s, svcKey(81), config.Dest{Addr: mRIP, Port: 81, Fwd: config.FwdRoute, Weight: 1})
	if err := s.EditDest(svcKey(81), config.Dest{Addr: mRIP, Port: 81, Fwd: config.FwdTunnel, Weight: 1}); err == nil {
		t.Errorf("-e -i without a tunnel source accepted")
	}
}

func TestRouteChecks(t *testing.T) {
	s, _, _ := newTestServer(t)
	hop := neigh.NextHop{Ifindex: 2, MTU: 1500, Gateway: netip.MustParseAddr("10.1.0.1"), Src: netip.MustParseAddr("10.1.0.2")}
	s.opts.Route = func(netip.Addr) (neigh.NextHop, error) { return hop, nil }
	addSvc(t, s, svcKey(80))
	err := s.AddDest(svcKey(80), config.Dest{Addr: mRIP, Port: 80, Fwd: config.FwdRoute, Weight: 1})
	if err == nil || !strings.Contains(err.Error(), "direct routing") {
		t.Errorf("DR to a routed real: %v", err)
	}
	if err := s.AddDest(svcKey(80), config.Dest{Addr: mRIP, Port: 80, Fwd: config.FwdTunnel, Weight: 1}); err != nil {
		t.Fatalf("TUN to a routed real: %v", err)
	}
	s.mu.Lock()
	d := s.reals[1]
	s.mu.Unlock()
	if d.via() != hop.Gateway {
		t.Errorf("TUN real resolves %v, want the gateway", d.via())
	}
	hop.Ifindex = 9
	err = s.AddDest(svcKey(80), config.Dest{Addr: netip.MustParseAddr("10.1.0.12"), Port: 80, Fwd: config.FwdMasq, Weight: 1})
	if err == nil || !strings.Contains(err.Error(), "does not serve") {
		t.Errorf("real behind a foreign interface: %v", err)
	}
}

func TestFullNATLocalPorts(t *testing.T) {
	s, dp, clk := newTestServer(t)
	k := svcKey(80)
	addSvc(t, s, k, config.Dest{Addr: mRIP, Port: 8080, Fwd: config.FwdFullNAT, Weight: 1})
	if _, ok := open(t, s, dp, clk, client(1), 1, 80); ok {
		t.Fatal("FULLNAT without a local address scheduled a flow")
	}
	l1, l2 := netip.MustParseAddr("10.1.0.250"), netip.MustParseAddr("10.1.0.251")
	for _, l := range []netip.Addr{l1, l2} {
		if err := s.AddLocalAddr(k, l); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddLocalAddr(k, l1); !errors.Is(err, ErrLaddrExists) {
		t.Errorf("duplicate local address: %v", err)
	}
	// Local addresses are used in turn; ports never collide.
	seen := map[netip.AddrPort]bool{}
	var first []netip.Addr
	const n = 2 * (LocalPortMax - LocalPortMin + 1)
	for i := 0; i < n; i++ {
		dec, ok := open(t, s, dp, clk, client(uint32(i/60000)), uint16(1+i%60000), 80)
		if !ok {
			t.Fatalf("flow %d refused with %d ports in use", i, len(seen))
		}
		lp := netip.AddrPortFrom(dec.Out.Src, dec.Out.SrcPort)
		if seen[lp] || dec.Out.SrcPort < LocalPortMin {
			t.Fatalf("flow %d: local %v reused or out of range", i, lp)
		}
		seen[lp] = true
		if i < 4 {
			first = append(first, dec.Out.Src)
		}
	}
	if first[0] != l1 || first[1] != l2 || first[2] != l1 || first[3] != l2 {
		t.Errorf("local addresses in turn: %v", first)
	}
	// Every port of both addresses is in use: refused and counted.
	if _, ok := open(t, s, dp, clk, client(99), 1, 80); ok {
		t.Fatal("flow accepted with every local port in use")
	}
	if s.LocalPortsExhausted() != 1 || s.LocalPortsInUse(l1) != n/2 {
		t.Errorf("exhausted %d, in use %d", s.LocalPortsExhausted(), s.LocalPortsInUse(l1))
	}
	// One connection ends (both entries idle past the timeout): its
	// port comes back, and the next flow gets exactly it.
	var victim dataplane.ConnKey
	var victimConn dataplane.Conn
	for key, c := range dp.Conns {
		if c.Flags&dataplane.ConnReply == 0 {
			victim, victimConn = key, c
			break
		}
	}
	for key, c := range dp.Conns {
		if key != victim && key != victimConn.Peer(conntrack.ProtoTCP) {
			c.LastSeen = clk.now + time.Hour
			dp.Conns[key] = c
		}
	}
	clk.now += 2 * time.Minute // SYN_RECV's timeout is 60 s (state 0: NONE, 2 s)
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	if _, ok := dp.Conns[victim]; ok {
		t.Fatal("idle FULLNAT connection not expired")
	}
	if _, ok := dp.Conns[victimConn.Peer(conntrack.ProtoTCP)]; ok {
		t.Fatal("its reply entry not expired")
	}
	dec, ok := open(t, s, dp, clk, client(100), 1, 80)
	if !ok || dec.Out.Src != victimConn.Out.Src || dec.Out.SrcPort != victimConn.Out.SrcPort {
		t.Fatalf("after release: %+v %v, want %v:%d", dec.Out, ok, victimConn.Out.Src, victimConn.Out.SrcPort)
	}
}

func TestSweepPairedEntries(t *testing.T) {
	s, dp, clk := newTestServer(t)
	addSvc(t, s, svcKey(80), config.Dest{Addr: mRIP, Port: 80, Fwd: config.FwdMasq, Weight: 1})
	s.SetTimeouts(0, 0, 0)
	open(t, s, dp, clk, client(1), 1000, 80)
	fk := dataplane.ConnKey{Src: client(1), Dst: mVIP, SrcPort: 1000, DstPort: 80, Proto: conntrack.ProtoTCP}
	c := dp.Conns[fk]
	c.State = conntrack.StateEstablished
	dp.Conns[fk] = c
	rk := c.Peer(conntrack.ProtoTCP)
	// Only the server talks (a download the client ACKs rarely): the
	// reply entry keeps the connection alive.
	clk.now += 14 * time.Minute
	r := dp.Conns[rk]
	r.LastSeen = clk.now
	dp.Conns[rk] = r
	clk.now += 2 * time.Minute // forward idle 16 min > 15 min
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	if _, ok := dp.Conns[fk]; !ok {
		t.Fatal("connection expired although its replies were recent")
	}
	if st := s.Services(); st[0].Dests[0].ActiveConns != 1 {
		t.Errorf("active conns %d, want 1 (the reply entry is not counted)", st[0].Dests[0].ActiveConns)
	}
	clk.now += 16 * time.Minute
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	if len(dp.Conns) != 0 {
		t.Fatalf("entries left after both went idle: %v", dp.Conns)
	}
	// A reply entry without its forward entry goes after a grace time.
	dp.Conns[rk] = r
	r.LastSeen = clk.now
	dp.Conns[rk] = r
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	if _, ok := dp.Conns[rk]; !ok {
		t.Fatal("fresh orphan reply entry removed at once")
	}
	clk.now += orphanReplyAge + time.Second
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	if _, ok := dp.Conns[rk]; ok {
		t.Fatal("orphan reply entry kept")
	}
}

func client(i uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})
}

// walkHook is a data plane whose WalkConns runs during a hook halfway.
type walkHook struct {
	*testutil.FakeDataplane
	during func()
}

func (w walkHook) WalkConns(fn func(dataplane.ConnKey, dataplane.Conn) bool) error {
	if w.during != nil {
		w.during()
	}
	return w.FakeDataplane.WalkConns(fn)
}

// TestLocalPortsReclaimed: local ports whose connections left no entry
// (embryonic connections evicted from a full LRU table) are freed by the
// reclaim walk once their pool is over half full: the ports an entry
// holds stay taken, and so do those taken while the walk runs (their
// entries may be written after the walk passed); not again within the
// interval; a pool that ran out is reclaimed at the next sweep a second
// on.
func TestLocalPortsReclaimed(t *testing.T) {
	fake := testutil.NewFakeDataplane()
	clk := &clock{now: time.Hour}
	var s *Server
	hook := walkHook{FakeDataplane: fake}
	s = New(Options{Dataplane: &hook, Route: func(netip.Addr) (neigh.NextHop, error) { return neigh.NextHop{Ifindex: 2, MTU: 1500}, nil }, Now: clk.Now})
	apply(t, s, "-A -t 10.0.0.100:80 -s rr")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.11 -b")
	k := config.ServiceKey{Proto: config.TCP, Addr: vip, Port: 80}
	lip := netip.MustParseAddr("10.0.0.250")
	if err := s.AddLocalAddr(k, lip); err != nil {
		t.Fatal(err)
	}
	sport := 0
	flow := func() dataplane.Decision {
		t.Helper()
		sport++
		dec, ok := s.NewFlow(dataplane.NewFlow{Key: dataplane.ConnKey{Src: netip.AddrFrom4([4]byte{198, 51, byte(sport >> 16), byte(sport >> 8)}), Dst: vip,
			SrcPort: uint16(sport), DstPort: 80, Proto: 6}, TCPFlags: dataplane.TCPSyn})
		if !ok || !dec.FullNAT {
			t.Fatalf("flow %d: %+v %v", sport, dec, ok)
		}
		return dec
	}
	// 40000 connections; the reply entries of the first 100 are in the
	// table, the rest were evicted.
	const live = 100
	for i := 0; i < 40000; i++ {
		dec := flow()
		if i < live {
			fake.Conns[dataplane.ConnKey{Src: rs1, Dst: lip, SrcPort: 80, DstPort: dec.Out.SrcPort, Proto: 6}] =
				dataplane.Conn{RealID: dec.RealID, ServiceID: dec.ServiceID, Flags: dataplane.ConnReply | dataplane.ConnFullNAT, LastSeen: clk.now + time.Hour}
		}
	}
	var during dataplane.Decision
	hook.during = func() { during = flow() } // taken while the walk runs
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	hook.during = nil
	if n := s.LocalPortsInUse(lip); n != live+1 {
		t.Fatalf("after the reclaim: %d ports in use, want %d (the live entries and the one taken during the walk)", n, live+1)
	}
	if got := s.LocalPortsReclaimed(); got != 40000-live {
		t.Errorf("reclaimed %d, want %d", got, 40000-live)
	}
	if !s.pools[poolKey{lip, 6}].isUsed(during.Out.SrcPort) {
		t.Error("the port taken during the walk was freed")
	}
	// Over half full again at once: not walked again within the minute.
	for i := 0; i < 40000; i++ {
		flow()
	}
	clk.now += 10 * time.Second
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	if n := s.LocalPortsInUse(lip); n != live+1+40000 {
		t.Fatalf("a second walk within the minute: %d ports in use", n)
	}
	// Out of ports: refused, counted, and reclaimed at the next sweep.
	for s.LocalPortsInUse(lip) < LocalPortMax-LocalPortMin+1 {
		flow()
	}
	sport++
	if _, ok := s.NewFlow(dataplane.NewFlow{Key: dataplane.ConnKey{Src: netip.MustParseAddr("203.0.113.9"), Dst: vip, SrcPort: 9, DstPort: 80, Proto: 6}, TCPFlags: dataplane.TCPSyn}); ok {
		t.Fatal("a flow with every port taken was scheduled")
	}
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	if n := s.LocalPortsInUse(lip); n != live {
		t.Errorf("after running out: %d ports in use, want %d (the live entries' only)", n, live)
	}
}

// TestFullNATRings: a service with FULLNAT reals and a local address
// gets a ring of local ports for XDP, flagged on its data plane key and
// filled with ports its pool marks taken (never one a connection holds);
// the slow path's batch refills a ring XDP ran dry, takes the last free
// ports out of it when its pool has none, and a reclaim keeps the ports
// waiting in it; removing the local address or the service drains it and
// frees them.
func TestFullNATRings(t *testing.T) {
	s, dp, clk := newTestServer(t)
	apply(t, s, "-A -t 10.0.0.100:80 -s rr")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.11 -b")
	k := config.ServiceKey{Proto: config.TCP, Addr: vip, Port: 80}
	dk := dataplane.ServiceKey{VIP: vip, Port: 80, Proto: 6}
	if dp.SvcFlags[dk]&dataplane.SvcRing(0xff) != 0 {
		t.Fatal("a ring without a local address")
	}
	lip := netip.MustParseAddr("10.0.0.250")
	if err := s.AddLocalAddr(k, lip); err != nil {
		t.Fatal(err)
	}
	sv := s.services[k]
	if sv.ring == 0 || dp.SvcFlags[dk]&dataplane.SvcRing(0xff) != dataplane.SvcRing(sv.ring) {
		t.Fatalf("ring %d, flags %#x", sv.ring, dp.SvcFlags[dk])
	}
	if sv.fast == nil {
		t.Error("no picks in XDP for a service with a ring")
	}
	slots := dp.Rings[sv.ring][6]
	pool := s.pools[poolKey{lip, 6}]
	seen := map[uint16]bool{}
	for _, sl := range slots {
		if dp.Laddrs[sl.AddrID] != lip || seen[sl.Port] || !pool.isUsed(sl.Port) {
			t.Fatalf("ring slot %+v (laddr %v, twice %v, taken %v)", sl, dp.Laddrs[sl.AddrID], seen[sl.Port], pool.isUsed(sl.Port))
		}
		seen[sl.Port] = true
	}
	if len(slots) != testutil.FakeRingSlots || s.LocalPortsInUse(lip) != 0 {
		t.Fatalf("%d ports in the ring, %d in use; want %d and 0", len(slots), s.LocalPortsInUse(lip), testutil.FakeRingSlots)
	}
	// XDP takes them all and opens connections with them.
	for {
		sl, ok := dp.TakeFromRing(sv.ring, 6)
		if !ok {
			break
		}
		dp.Conns[dataplane.ConnKey{Src: rs1, Dst: lip, SrcPort: 80, DstPort: sl.Port, Proto: 6}] =
			dataplane.Conn{Flags: dataplane.ConnReply | dataplane.ConnFullNAT, LastSeen: clk.now + time.Hour}
	}
	// The next flow goes to the slow path, whose batch refills the ring
	// with other ports.
	dec, ok := s.NewFlow(dataplane.NewFlow{Key: dataplane.ConnKey{Src: netip.MustParseAddr("198.51.100.1"), Dst: vip, SrcPort: 1, DstPort: 80, Proto: 6}, TCPFlags: dataplane.TCPSyn})
	if !ok || !dec.FullNAT || seen[dec.Out.SrcPort] {
		t.Fatalf("slow-path flow: %+v %v", dec, ok)
	}
	if got := dp.Rings[sv.ring][6]; len(got) != testutil.FakeRingSlots || seen[got[0].Port] {
		t.Fatalf("refilled ring: %d ports, first %+v", len(got), got[0])
	}
	// A reclaim frees nothing that is in a connection or in the ring.
	s.reclaimWanted = true
	clk.now += time.Hour
	for ck := range dp.Conns {
		c := dp.Conns[ck]
		c.LastSeen = clk.now + time.Hour
		dp.Conns[ck] = c
	}
	s.reclaimPorts()
	for _, sl := range dp.Rings[sv.ring][6] {
		if !pool.isUsed(sl.Port) {
			t.Fatalf("a ring port (%d) freed by the reclaim", sl.Port)
		}
	}
	for p := range seen {
		if !pool.isUsed(p) {
			t.Fatalf("a port of a live connection (%d) freed by the reclaim", p)
		}
	}
	// Removing the local address drains the ring and frees its ports.
	inRing := dp.Rings[sv.ring][6]
	if err := s.DeleteLocalAddr(k, lip); err != nil {
		t.Fatal(err)
	}
	if sv.ring != 0 || dp.SvcFlags[dk]&dataplane.SvcRing(0xff) != 0 || len(dp.Rings) != 0 {
		t.Fatalf("after the local address went: ring %d, flags %#x, rings %v", sv.ring, dp.SvcFlags[dk], dp.Rings)
	}
	for _, sl := range inRing {
		if pool.isUsed(sl.Port) {
			t.Fatalf("port %d of the drained ring still taken", sl.Port)
		}
	}
	// Back, then the service goes: drained again.
	if err := s.AddLocalAddr(k, lip); err != nil {
		t.Fatal(err)
	}
	apply(t, s, "-D -t 10.0.0.100:80")
	if len(dp.Rings) != 0 {
		t.Errorf("rings after the service went: %v", dp.Rings)
	}
}
