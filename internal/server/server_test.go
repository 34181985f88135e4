package server

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/health"
	"github.com/xipvs/xipvs/internal/neigh"
	"github.com/xipvs/xipvs/internal/testutil"
	"github.com/xipvs/xipvs/sched"
)

type clock struct{ now time.Duration }

func (c *clock) Now() time.Duration { return c.now }

func newTestServer(t testing.TB) (*Server, *testutil.FakeDataplane, *clock) {
	t.Helper()
	dp := testutil.NewFakeDataplane()
	clk := &clock{now: time.Hour}
	s := New(Options{Dataplane: dp, Route: func(netip.Addr) (neigh.NextHop, error) { return neigh.NextHop{Ifindex: 2, MTU: 1500}, nil }, Now: clk.Now})
	return s, dp, clk
}

var (
	vip = netip.MustParseAddr("10.0.0.100")
	rs1 = netip.MustParseAddr("10.0.0.11")
	rs2 = netip.MustParseAddr("10.0.0.12")
)

func mustParse(t *testing.T, line string) *config.Command {
	t.Helper()
	c, err := config.ParseArgs(fieldsOf(line))
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return c
}

func fieldsOf(s string) []string {
	var out []string
	cur := ""
	for _, r := range s + " " {
		if r == ' ' {
			if cur != "" {
				out = append(out, cur)
			}
			cur = ""
			continue
		}
		cur += string(r)
	}
	return out
}

// apply runs an ipvsadm line against the server.
func apply(t *testing.T, s *Server, line string) {
	t.Helper()
	c := mustParse(t, line)
	var err error
	switch c.Op {
	case config.OpAddService:
		err = s.AddService(c.Service)
	case config.OpEditService:
		err = s.EditService(c.Service)
	case config.OpDelService:
		err = s.DeleteService(c.Service.ServiceKey)
	case config.OpAddDest:
		err = s.AddDest(c.Service.ServiceKey, c.Dest)
	case config.OpEditDest:
		err = s.EditDest(c.Service.ServiceKey, c.Dest)
	case config.OpDelDest:
		err = s.DeleteDest(c.Service.ServiceKey, c.Dest.Addr, c.Dest.Port)
	case config.OpAddMark:
		err = s.AddMarks(c.Marks)
	case config.OpDelMark:
		err = s.DeleteMarks(c.Service.FWMark, c.Marks)
	default:
		t.Fatalf("apply: %s", line)
	}
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
}

// newConn schedules a TCP connection as the slow path does and records it
// in the fake connection table as established.
func newConn(t *testing.T, s *Server, dp *testutil.FakeDataplane, src string, sport, dport uint16) netip.Addr {
	t.Helper()
	k := dataplane.ConnKey{Src: netip.MustParseAddr(src), Dst: vip, SrcPort: sport, DstPort: dport, Proto: conntrack.ProtoTCP}
	d, ok := s.NewFlow(dataplane.NewFlow{Key: k})
	if !ok {
		t.Fatalf("flow %v not scheduled", k)
	}
	c := dataplane.Conn{RealID: d.RealID, ServiceID: d.ServiceID, State: conntrack.StateEstablished, LastSeen: s.opts.Now()}
	if d.Persistent {
		c.Flags = dataplane.ConnPersist
	}
	dp.Conns[k] = c
	return dp.Reals[d.RealID].Addr
}

// A client sticks to one real while its template lives; with rr and no
// persistence it would alternate.
func TestPersistence(t *testing.T) {
	s, dp, clk := newTestServer(t)
	apply(t, s, "-A -t 10.0.0.100:80 -s rr -p 60")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.11 -g")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.12 -g")
	first := newConn(t, s, dp, "192.0.2.1", 1000, 80)
	for i := 1; i < 20; i++ {
		if got := newConn(t, s, dp, "192.0.2.1", uint16(1000+i), 80); got != first {
			t.Fatalf("connection %d went to %v, template says %v", i, got, first)
		}
	}
	// Another client is scheduled by rr: the other real.
	if other := newConn(t, s, dp, "192.0.2.2", 1000, 80); other == first {
		t.Fatalf("second client also on %v", first)
	}
	// The template outlives its timeout while it controls connections.
	clk.now += 2 * time.Minute
	for k, c := range dp.Conns {
		c.LastSeen = clk.now
		dp.Conns[k] = c
	}
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	if n := s.Templates(config.ServiceKey{Proto: config.TCP, Addr: vip, Port: 80}); n != 2 {
		t.Fatalf("templates with live connections: %d, want 2", n)
	}
	// With the connections gone and the timeout run out it expires.
	clear(dp.Conns)
	clk.now += 2 * time.Minute
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	if n := s.Templates(config.ServiceKey{Proto: config.TCP, Addr: vip, Port: 80}); n != 0 {
		t.Fatalf("templates after expiry: %d, want 0", n)
	}
}

// -M 255.255.255.0 shares one template across a /24; a client of another
// /24 gets its own.
func TestPersistenceNetmask(t *testing.T) {
	s, dp, _ := newTestServer(t)
	apply(t, s, "-A -t 10.0.0.100:80 -s rr -p 60 -M 255.255.255.0")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.11 -g")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.12 -g")
	a := newConn(t, s, dp, "192.0.2.1", 1, 80)
	for i := 2; i < 10; i++ {
		if got := newConn(t, s, dp, fmt.Sprintf("192.0.2.%d", i), 1, 80); got != a {
			t.Fatalf("192.0.2.%d went to %v, its /24 to %v", i, got, a)
		}
	}
	if b := newConn(t, s, dp, "198.51.100.1", 1, 80); b == a {
		t.Fatalf("other /24 on the same real under rr")
	}
}

// A persistent port-0 service pins a client across ports; a port group
// (-f) with -p does the same for the ports its mark binds.
func TestPersistenceAcrossPorts(t *testing.T) {
	for _, setup := range [][]string{
		{"-A -t 10.0.0.100:0 -s rr -p 60", "-a -t 10.0.0.100:0 -r 10.0.0.11 -g", "-a -t 10.0.0.100:0 -r 10.0.0.12 -g"},
		{"--add-mark -f 6666 -t 10.0.0.100:80,443", "-A -f 6666 -s rr", "-a -f 6666 -r 10.0.0.11 -g", "-a -f 6666 -r 10.0.0.12 -g", "-E -f 6666 -s rr -p 3000"},
	} {
		s, dp, _ := newTestServer(t)
		for _, l := range setup {
			apply(t, s, l)
		}
		a := newConn(t, s, dp, "192.0.2.1", 1, 80)
		if got := newConn(t, s, dp, "192.0.2.1", 2, 443); got != a {
			t.Fatalf("%v: port 443 went to %v, port 80 to %v", setup, got, a)
		}
	}
}

// The port group's ports are in the data plane's services map; other
// ports are not, and deleting the mark or the service removes them.
func TestMarkKeys(t *testing.T) {
	s, dp, _ := newTestServer(t)
	apply(t, s, "--add-mark -f 1 -t 10.0.0.100:80,443,8000-8002")
	if len(dp.Services) != 0 {
		t.Fatalf("keys without a -f service: %v", dp.Services)
	}
	apply(t, s, "-A -t 10.0.0.100:80 -s rr")
	apply(t, s, "-A -f 1 -s wlc")
	fw := s.services[config.ServiceKey{FWMark: 1, Proto: config.TCP}].id
	want := map[uint16]uint32{80: fw, 443: fw, 8000: fw, 8001: fw, 8002: fw}
	if len(dp.Services) != len(want) {
		t.Fatalf("keys %v", dp.Services)
	}
	for p, id := range want {
		if got := dp.Services[dataplane.ServiceKey{VIP: vip, Port: p, Proto: 6}]; got != id {
			t.Errorf("port %d: service %d, want %d (the port group wins over -t :80)", p, got, id)
		}
	}
	// Overlapping another mark's rule is refused and changes nothing.
	c := mustParse(t, "--add-mark -f 2 -t 10.0.0.100:8001-8100")
	if err := s.AddMarks(c.Marks); !errors.Is(err, ErrMarkOverlap) {
		t.Fatalf("overlap: %v", err)
	}
	apply(t, s, "--del-mark -f 1 -t 10.0.0.100:8000-8002")
	if len(dp.Services) != 2 {
		t.Fatalf("after --del-mark of a range: %v", dp.Services)
	}
	apply(t, s, "-D -f 1")
	if len(dp.Services) != 1 || dp.Services[dataplane.ServiceKey{VIP: vip, Port: 80, Proto: 6}] == 0 {
		t.Fatalf("after -D -f 1 the -t service should own :80 again: %v", dp.Services)
	}
}

// The upper threshold overloads a real when its connections reach it;
// it is taken again once they fall below 3/4 of it (no lower threshold)
// or below the lower threshold.
func TestThresholds(t *testing.T) {
	s, dp, clk := newTestServer(t)
	apply(t, s, "-A -t 10.0.0.100:80 -s rr")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.11 -g -x 4")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.12 -g -w 0")
	for i := 0; i < 4; i++ {
		newConn(t, s, dp, "192.0.2.1", uint16(i), 80)
	}
	k := dataplane.ConnKey{Src: netip.MustParseAddr("192.0.2.9"), Dst: vip, SrcPort: 9, DstPort: 80, Proto: 6}
	if _, ok := s.NewFlow(dataplane.NewFlow{Key: k}); ok {
		t.Fatal("overloaded real took a 5th connection")
	}
	// 3 connections: 3*4 = 12 is not < 4*3 = 12: still overloaded.
	var one dataplane.ConnKey
	for k := range dp.Conns {
		one = k
		break
	}
	delete(dp.Conns, one)
	clk.now += time.Second
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.NewFlow(dataplane.NewFlow{Key: k}); ok {
		t.Fatal("cleared at 3 of 4")
	}
	for k := range dp.Conns {
		delete(dp.Conns, k)
		break
	}
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.NewFlow(dataplane.NewFlow{Key: k}); !ok {
		t.Fatal("not cleared at 2 of 4")
	}
	// Raising the threshold clears the flag at once.
	apply(t, s, "-e -t 10.0.0.100:80 -r 10.0.0.11 -g -x 2")
	newConn(t, s, dp, "192.0.2.3", 3, 80)
	apply(t, s, "-e -t 10.0.0.100:80 -r 10.0.0.11 -g -x 100")
	if _, ok := s.NewFlow(dataplane.NewFlow{Key: dataplane.ConnKey{Src: k.Src, Dst: vip, SrcPort: 99, DstPort: 80, Proto: 6}}); !ok {
		t.Fatal("raising -x did not clear the overload")
	}
}

// Every scheduler name is accepted and its flags validated.
func TestSchedulersAccepted(t *testing.T) {
	s, _, _ := newTestServer(t)
	for i, name := range []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh"} {
		apply(t, s, fmt.Sprintf("-A -t 10.0.0.100:%d -s %s", 1000+i, name))
	}
	apply(t, s, "-E -t 10.0.0.100:1007 -s sh -b sh-port,sh-fallback")
	c := mustParse(t, "-E -t 10.0.0.100:1007 -s sh")
	c.Service.SchedFlags = []string{"mh-port"}
	if err := s.EditService(c.Service); !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("mh-port on sh: %v", err)
	}
}

// A restarted server rebuilds the configuration with the same ids, so
// the adopted connections keep their meaning, and removes what the state
// does not name.
func TestRestore(t *testing.T) {
	var saved State
	s, dp, clk := newTestServer(t)
	s.opts.Persist = func(st State) error { saved = st; return nil }
	apply(t, s, "-A -t 10.0.0.100:80 -s wrr")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.11 -g -w 3")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.12 -g")
	apply(t, s, "-A -t 10.0.0.100:81 -s rr")
	apply(t, s, "-a -t 10.0.0.100:81 -r 10.0.0.11 -g")
	apply(t, s, "-D -t 10.0.0.100:81") // its real id is free again
	apply(t, s, "--add-mark -f 5 -t 10.0.0.100:443")
	s.SetTimeouts(100*time.Second, 0, 0)
	conn := newConn(t, s, dp, "192.0.2.1", 1, 80)
	// Leftovers of something the state no longer names.
	stale := dataplane.ServiceKey{VIP: vip, Port: 9999, Proto: 6}
	dp.Services[stale] = 77
	dp.Reals[99] = dataplane.Real{Addr: rs2}
	ghost := dataplane.ConnKey{Src: netip.MustParseAddr("192.0.2.7"), Dst: vip, SrcPort: 7, DstPort: 9999, Proto: 6}
	dp.Conns[ghost] = dataplane.Conn{RealID: 99, ServiceID: 77, LastSeen: clk.now}

	r := New(Options{Dataplane: dp, Route: func(netip.Addr) (neigh.NextHop, error) { return neigh.NextHop{Ifindex: 2, MTU: 1500}, nil }, Now: clk.Now})
	if err := r.Restore(saved, dp); err != nil {
		t.Fatal(err)
	}
	if _, ok := dp.Services[stale]; ok {
		t.Error("stale service key kept")
	}
	if _, ok := dp.Reals[99]; ok {
		t.Error("stale real kept")
	}
	// The first sweep removes the connection of the unknown real (the
	// restore itself walks no table).
	if err := r.Sweep(); err != nil {
		t.Fatal(err)
	}
	if _, ok := dp.Conns[ghost]; ok {
		t.Error("connection to an unknown real kept")
	}
	if len(dp.Conns) != 1 {
		t.Fatalf("adopted connections: %d, want 1", len(dp.Conns))
	}
	for k, c := range dp.Conns {
		if got := r.reals[c.RealID]; got == nil || got.cfg.Addr != conn || r.byID[c.ServiceID] == nil {
			t.Fatalf("connection %v names real %d / service %d, which the restored server does not have as before", k, c.RealID, c.ServiceID)
		}
	}
	st := r.Services()
	if len(st) != 1 || st[0].Scheduler != "wrr" || len(st[0].Dests) != 2 {
		t.Fatalf("restored services: %+v", st)
	}
	if tcp, _, _ := r.Timeouts(); tcp != 100*time.Second {
		t.Errorf("timeouts not restored: %v", tcp)
	}
	if m := r.Marks(); len(m) != 1 || m[0].PortLo != 443 {
		t.Errorf("marks not restored: %v", m)
	}
	// New ids do not collide with adopted ones.
	apply(t, r, "-A -t 10.0.0.100:82 -s rr")
	apply(t, r, "-a -t 10.0.0.100:82 -r 10.0.0.12 -g")
	ids := map[uint32]bool{}
	for id := range r.reals {
		if ids[id] {
			t.Fatalf("real id %d reused", id)
		}
		ids[id] = true
	}
	if len(ids) != 3 {
		t.Fatalf("reals %v", ids)
	}
}

// TestTemplatesSharedWithXDP: the data plane's templates are the
// server's too. One XDP made (for a new flow it scheduled) sends the
// slow path's next flow of that client network to its real and counts
// among the service's templates after a sweep; it expires as the
// server's do (renewed by each new connection XDP saw, kept while it
// controls a connection); the slow path's templates reach the data
// plane; a real failing its check ends its templates there too, and
// deleting the service ends them all.
func TestTemplatesSharedWithXDP(t *testing.T) {
	s, dp, clk := newTestServer(t)
	apply(t, s, "-A -t 10.0.0.100:80 -s rr -p 60 -M 255.255.255.0")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.11 -g")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.12 -g")
	sk := config.ServiceKey{Proto: config.TCP, Addr: vip, Port: 80}
	id := svcID(s, "-A -t 10.0.0.100:80")
	var rid12 uint32
	for rid, d := range s.reals {
		if d.cfg.Addr == rs2 {
			rid12 = rid
		}
	}
	// XDP made this one.
	xt := dataplane.Template{ServiceID: id, Client: netipMust("192.0.2.0"), VPort: 80}
	if err := dp.SetTemplate(xt, dataplane.TemplateUse{RealID: rid12, LastUsed: clk.now}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if got := newConn(t, s, dp, fmt.Sprintf("192.0.2.%d", 10+i), uint16(2000+i), 80); got != rs2 {
			t.Fatalf("a slow-path flow of the client network XDP pinned went to %v, want %v", got, rs2)
		}
	}
	// The slow path's own template reaches the data plane.
	other := newConn(t, s, dp, "198.51.100.1", 1, 80)
	ot := dataplane.Template{ServiceID: id, Client: netipMust("198.51.100.0"), VPort: 80}
	if u, ok := dp.Tmpls[ot]; !ok || s.reals[u.RealID].cfg.Addr != other {
		t.Fatalf("the slow path's template in the data plane: %+v %v", u, ok)
	}
	// A third, XDP's alone, is counted after a sweep.
	yt := dataplane.Template{ServiceID: id, Client: netipMust("203.0.113.0"), VPort: 80}
	if err := dp.SetTemplate(yt, dataplane.TemplateUse{RealID: rid12, LastUsed: clk.now}); err != nil {
		t.Fatal(err)
	}
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	if n := s.Templates(sk); n != 3 {
		t.Fatalf("templates after a sweep: %d, want 3", n)
	}
	// XDP renews yt (a new connection followed it) past the timeout.
	clk.now += 50 * time.Second
	dp.Tmpls[yt] = dataplane.TemplateUse{RealID: rid12, LastUsed: clk.now}
	clear(dp.Conns)
	clk.now += 30 * time.Second
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	if _, ok := dp.Tmpls[yt]; !ok || s.Templates(sk) != 1 {
		t.Errorf("after the timeout: %d templates, the renewed one kept %v; want 1, true", s.Templates(sk), ok)
	}
	if _, ok := dp.Tmpls[xt]; ok {
		t.Error("an expired template stayed in the data plane")
	}
	// 10.0.0.12 fails its check: its templates end, XDP's too.
	s.SetHealth(health.Key{Service: sk, Real: netip.AddrPortFrom(rs2, 80)}, false, "test")
	if _, ok := dp.Tmpls[yt]; ok {
		t.Error("a failed real's template stayed in the data plane")
	}
	if err := dp.SetTemplate(xt, dataplane.TemplateUse{RealID: rid12, LastUsed: clk.now}); err != nil {
		t.Fatal(err)
	}
	apply(t, s, "-D -t 10.0.0.100:80")
	if len(dp.Tmpls) != 0 {
		t.Errorf("templates left after the service went: %v", dp.Tmpls)
	}
}

// TestLocalEntriesInXDP: an lblc service's entries are XDP's to serve:
// the service is flagged, its reals marked while they may keep their
// addresses; the entry the slow path's lblc makes reaches the data plane;
// a sweep brings the uses XDP made into Go's table and unmarks a real
// that lblc finds overloaded (more active connections than its weight,
// another under half of its own), whose address Go then moves, the entry
// following; deleting the real an entry names ends it in the data plane;
// another scheduler ends them all.
func TestLocalEntriesInXDP(t *testing.T) {
	s, dp, clk := newTestServer(t)
	apply(t, s, "-A -t 10.0.0.100:80 -s lblc")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.11 -g -w 1")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.12 -g -w 2")
	sk := config.ServiceKey{Proto: config.TCP, Addr: vip, Port: 80}
	dk := dataplane.ServiceKey{VIP: vip, Port: 80, Proto: 6}
	id := svcID(s, "-A -t 10.0.0.100:80")
	rid := map[netip.Addr]uint32{}
	for r, d := range s.reals {
		rid[d.cfg.Addr] = r
	}
	if dp.SvcFlags[dk]&dataplane.SvcLocal == 0 {
		t.Fatalf("lblc service flags %#x: not served in XDP", dp.SvcFlags[dk])
	}
	for _, a := range []netip.Addr{rs1, rs2} {
		if !dp.Reals[rid[a]].LocalOK {
			t.Errorf("%v: not marked as keeping its addresses", a)
		}
	}
	// wlc's pick, both idle: the first in the list, 10.0.0.12.
	if got := newConn(t, s, dp, "198.51.100.1", 1000, 80); got != rs2 {
		t.Fatalf("first flow to %v, want %v", got, rs2)
	}
	entry := dataplane.LocalEntry(id, vip)
	if u, ok := dp.Tmpls[entry]; !ok || u.RealID != rid[rs2] {
		t.Fatalf("the slow path's entry in the data plane: %+v %v", u, ok)
	}
	// XDP takes the next flows to the VIP (three established now),
	// renewing the entry.
	for i := 0; i < 2; i++ {
		dp.Conns[dataplane.ConnKey{Src: netipMust("198.51.100.2"), Dst: vip, SrcPort: uint16(2000 + i), DstPort: 80, Proto: 6}] =
			dataplane.Conn{RealID: rid[rs2], ServiceID: id, State: conntrack.StateEstablished, LastSeen: clk.now}
	}
	clk.now += 10 * time.Second
	dp.Tmpls[entry] = dataplane.TemplateUse{RealID: rid[rs2], LastUsed: clk.now}
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	loc := s.services[sk].sched.(sched.Locality)
	loc.LocalEntries(func(a netip.Addr, d *sched.Dest, lastuse time.Duration) {
		if a != vip || d.ID != rid[rs2] || lastuse != clk.now {
			t.Errorf("Go's entry after the sweep: %v to %d last used %v, want %v to %d at %v", a, d.ID, lastuse, vip, rid[rs2], clk.now)
		}
	})
	// 3 active > weight 2 while 10.0.0.11 is under half its weight.
	if dp.Reals[rid[rs2]].LocalOK || !dp.Reals[rid[rs1]].LocalOK {
		t.Fatalf("after the recount: 10.0.0.12 marked %v, 10.0.0.11 %v; want false, true", dp.Reals[rid[rs2]].LocalOK, dp.Reals[rid[rs1]].LocalOK)
	}
	if got := newConn(t, s, dp, "198.51.100.3", 3000, 80); got != rs1 {
		t.Fatalf("a flow after the overload went to %v, want %v", got, rs1)
	}
	if u := dp.Tmpls[entry]; u.RealID != rid[rs1] {
		t.Fatalf("the moved entry in the data plane names %d, want %d", u.RealID, rid[rs1])
	}
	apply(t, s, "-d -t 10.0.0.100:80 -r 10.0.0.11")
	if _, ok := dp.Tmpls[entry]; ok {
		t.Fatal("an entry naming a deleted real stayed in the data plane")
	}
	newConn(t, s, dp, "198.51.100.4", 4000, 80)
	if _, ok := dp.Tmpls[entry]; !ok {
		t.Fatal("no entry after the next flow")
	}
	apply(t, s, "-E -t 10.0.0.100:80 -s wlc")
	if len(dp.Tmpls) != 0 || dp.SvcFlags[dk]&dataplane.SvcLocal != 0 || dp.Reals[rid[rs2]].LocalOK {
		t.Errorf("after -s wlc: entries %v, flags %#x, real marked %v", dp.Tmpls, dp.SvcFlags[dk], dp.Reals[rid[rs2]].LocalOK)
	}
}

// TestLocalEntriesAdopted: the lblc entries a restarted xipvsd finds in
// the pinned map become its table's (their real still the service's), so
// the destinations stay where they were.
func TestLocalEntriesAdopted(t *testing.T) {
	s, dp, clk := newTestServer(t)
	apply(t, s, "-A -t 10.0.0.100:80 -s lblc")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.11 -g -w 1")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.12 -g -w 2")
	id := svcID(s, "-A -t 10.0.0.100:80")
	var rid11 uint32
	for r, d := range s.reals {
		if d.cfg.Addr == rs1 {
			rid11 = r
		}
	}
	// Left by the previous xipvsd: 10.0.0.100 on 10.0.0.11 (wlc would
	// pick 10.0.0.12).
	entry := dataplane.LocalEntry(id, vip)
	if err := dp.SetTemplate(entry, dataplane.TemplateUse{RealID: rid11, LastUsed: clk.now}); err != nil {
		t.Fatal(err)
	}
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	if u, ok := dp.Tmpls[entry]; !ok || u.RealID != rid11 {
		t.Fatalf("the kept entry after a sweep: %+v %v", u, ok)
	}
	if got := newConn(t, s, dp, "198.51.100.1", 1000, 80); got != rs1 {
		t.Errorf("a slow-path flow to the VIP went to %v, its kept entry names %v", got, rs1)
	}
}

// TestLblcrEntriesInXDP: lblcr's sets of one real are served in XDP as
// lblc's entries are (flagged so that a real at its threshold is
// skipped); a set that grows to two is Go's alone: its entry leaves the
// data plane.
func TestLblcrEntriesInXDP(t *testing.T) {
	s, dp, clk := newTestServer(t)
	apply(t, s, "-A -t 10.0.0.100:80 -s lblcr")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.11 -g -w 1")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.12 -g -w 2")
	dk := dataplane.ServiceKey{VIP: vip, Port: 80, Proto: 6}
	id := svcID(s, "-A -t 10.0.0.100:80")
	rid := map[netip.Addr]uint32{}
	for r, d := range s.reals {
		rid[d.cfg.Addr] = r
	}
	if f := dp.SvcFlags[dk]; f&dataplane.SvcLocal == 0 || f&dataplane.SvcLocalSet == 0 {
		t.Fatalf("lblcr service flags %#x: want its entries served in XDP, as sets", f)
	}
	if got := newConn(t, s, dp, "198.51.100.1", 1000, 80); got != rs2 {
		t.Fatalf("first flow to %v, want %v", got, rs2)
	}
	entry := dataplane.LocalEntry(id, vip)
	if u, ok := dp.Tmpls[entry]; !ok || u.RealID != rid[rs2] {
		t.Fatalf("the set of one in the data plane: %+v %v", u, ok)
	}
	// 3 active > weight 2 while 10.0.0.11 is idle: lblcr adds it.
	for i := 0; i < 3; i++ {
		dp.Conns[dataplane.ConnKey{Src: netipMust("198.51.100.2"), Dst: vip, SrcPort: uint16(2000 + i), DstPort: 80, Proto: 6}] =
			dataplane.Conn{RealID: rid[rs2], ServiceID: id, State: conntrack.StateEstablished, LastSeen: clk.now}
	}
	if err := s.Sweep(); err != nil {
		t.Fatal(err)
	}
	if got := newConn(t, s, dp, "198.51.100.3", 3000, 80); got != rs1 {
		t.Fatalf("a flow after the overload went to %v, want %v", got, rs1)
	}
	if u, ok := dp.Tmpls[entry]; ok {
		t.Fatalf("a set of two left an entry in the data plane: %+v", u)
	}
}
