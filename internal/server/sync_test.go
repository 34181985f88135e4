package server

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/connsync"
	"github.com/xipvs/xipvs/internal/neigh"
	"github.com/xipvs/xipvs/internal/testutil"
)

// fixedNeighbors knows every MAC: the client's next hop's.
type fixedNeighbors struct{}

func (fixedNeighbors) Watch(netip.Addr, int)           {}
func (fixedNeighbors) Unwatch(netip.Addr)              {}
func (fixedNeighbors) MAC(netip.Addr) net.HardwareAddr { return net.HardwareAddr{2, 0xcc, 0, 0, 0, 1} }

// syncPair is a master and a backup with the same DR, NAT and FULLNAT
// services.
func syncPair(t *testing.T) (m, b *Server, mdp, bdp *testutil.FakeDataplane, clk *clock) {
	t.Helper()
	clk = &clock{now: time.Hour}
	mk := func() (*Server, *testutil.FakeDataplane) {
		dp := testutil.NewFakeDataplane()
		s := New(Options{Dataplane: dp, Neighbors: fixedNeighbors{}, Now: clk.Now,
			Route: func(netip.Addr) (neigh.NextHop, error) { return neigh.NextHop{Ifindex: 2, MTU: 1500}, nil }})
		for _, l := range []string{"-A -t 10.0.0.100:80 -s wlc", "-a -t 10.0.0.100:80 -r 10.0.0.11 -g",
			"-A -t 10.0.0.100:81 -s wlc", "-a -t 10.0.0.100:81 -r 10.0.0.12:8081 -m",
			"-A -t 10.0.0.100:82 -s wlc", "-a -t 10.0.0.100:82 -r 10.0.0.13:8082 -b"} {
			apply(t, s, l)
		}
		if err := s.AddLocalAddr(config.ServiceKey{Proto: config.TCP, Addr: vip, Port: 82}, netip.MustParseAddr("10.0.0.250")); err != nil {
			t.Fatal(err)
		}
		return s, dp
	}
	m, mdp = mk()
	b, bdp = mk()
	return
}

// eventsOf is the sync event of every entry of dp's table, as XDP would
// write them (SyncConns drops what IPVS does not sync).
func eventsOf(dp *testutil.FakeDataplane) []dataplane.SyncEvent {
	var out []dataplane.SyncEvent
	for k, c := range dp.Conns {
		out = append(out, dataplane.SyncEventOf(k, c))
	}
	return out
}

// TestSyncConns: what a master sends of XDP's events (IPVS's states and forwarding
// flags, FULLNAT's local address) a backup inserts into its own table
// bound to its own configuration: DR, NAT with its reply entry toward
// the client's next hop, FULLNAT with its local port reserved; records
// naming another service or real, or another method, are refused.
func TestSyncConns(t *testing.T) {
	m, b, mdp, bdp, _ := syncPair(t)
	client := netip.MustParseAddr("198.51.100.7")
	for i, port := range []uint16{80, 81, 82} {
		k := dataplane.ConnKey{Src: client, Dst: vip, SrcPort: uint16(40000 + i), DstPort: port, Proto: conntrack.ProtoTCP}
		d, ok := m.NewFlow(dataplane.NewFlow{Key: k, Ifindex: 2, TCPFlags: dataplane.TCPSyn})
		if !ok {
			t.Fatalf("no real for %v", k)
		}
		for _, e := range dataplane.Entries(dataplane.NewFlow{Key: k, Ifindex: 2}, d, time.Hour, nil) {
			if e.Conn.Flags&dataplane.ConnReply == 0 {
				e.Conn.State = conntrack.StateEstablished
			}
			mdp.Conns[e.Key] = e.Conn
		}
	}
	// A SYN_RECV connection is not synced (IPVS syncs from ESTABLISHED).
	mdp.Conns[dataplane.ConnKey{Src: client, Dst: vip, SrcPort: 41000, DstPort: 80, Proto: 6}] = dataplane.Conn{RealID: 1, ServiceID: 1, State: conntrack.StateSynRecv}

	recs := m.SyncConns(eventsOf(mdp), nil)
	if len(recs) != 3 {
		t.Fatalf("master lists %d connections: %+v", len(recs), recs)
	}
	byPort := map[uint16]connsync.Conn{}
	for _, r := range recs {
		byPort[r.Virtual.Port()] = r
		if r.State != 1 || r.Timeout != 900 || r.Proto != 6 || r.Client.Addr() != client {
			t.Errorf("record %+v", r)
		}
	}
	if c := byPort[80]; c.Flags != connsync.FlagFwdRoute || c.Dest != netip.MustParseAddrPort("10.0.0.11:80") || c.Local.IsValid() {
		t.Errorf("DR record %+v", c)
	}
	if c := byPort[81]; c.Flags != connsync.FlagFwdMasq || c.Dest != netip.MustParseAddrPort("10.0.0.12:8081") || c.Local.IsValid() {
		t.Errorf("NAT record %+v", c)
	}
	laddr := netip.MustParseAddr("10.0.0.250")
	if c := byPort[82]; c.Flags != connsync.FlagFwdMasq || c.Dest != netip.MustParseAddrPort("10.0.0.13:8082") || c.Local.Addr() != laddr {
		t.Errorf("FULLNAT record %+v", c)
	}

	for _, r := range recs {
		if err := b.InsertSynced(r); err != nil {
			t.Errorf("insert %+v: %v", r, err)
		}
	}
	// The backup's table holds what the master's does, entry for entry
	// (reply entries included), the state on the forward entries.
	for k, mc := range mdp.Conns {
		if mc.State == conntrack.StateSynRecv {
			continue
		}
		bc, ok := bdp.Conns[k]
		if !ok {
			t.Errorf("backup lacks %v", k)
			continue
		}
		if bc.State != mc.State || bc.Out != mc.Out || bc.Flags&^dataplane.ConnSynSeen != mc.Flags&^dataplane.ConnSynSeen {
			t.Errorf("%v: backup %+v, master %+v", k, bc, mc)
		}
	}
	if n := b.LocalPortsInUse(laddr); n != 1 {
		t.Errorf("backup's FULLNAT local ports in use: %d, want the synced one", n)
	}

	// Bound to the backup's configuration.
	other := byPort[80]
	other.Virtual = netip.MustParseAddrPort("10.0.0.100:443")
	if err := b.InsertSynced(other); !errors.Is(err, ErrSyncNoService) {
		t.Errorf("unknown service: %v", err)
	}
	other = byPort[80]
	other.Dest = netip.MustParseAddrPort("10.0.0.99:80")
	if err := b.InsertSynced(other); !errors.Is(err, ErrSyncNoDest) {
		t.Errorf("unknown real: %v", err)
	}
	other = byPort[80]
	other.Flags = connsync.FlagFwdTunnel
	if err := b.InsertSynced(other); !errors.Is(err, ErrSyncMethod) {
		t.Errorf("another method: %v", err)
	}
	other = byPort[82]
	other.Local = netip.MustParseAddrPort("10.0.0.251:5000")
	if err := b.InsertSynced(other); !errors.Is(err, ErrSyncNoLocal) {
		t.Errorf("another local address: %v", err)
	}
}

// TestSyncAgeOnFreshBackup: a synced record's remaining timeout becomes
// its last-seen time on the backup's monotonic clock; on a backup that
// booted less than the record's idle time ago the time is boot, not
// before it (which would never expire).
func TestSyncAgeOnFreshBackup(t *testing.T) {
	m, b, mdp, bdp, clk := syncPair(t)
	k := dataplane.ConnKey{Src: netip.MustParseAddr("198.51.100.7"), Dst: vip, SrcPort: 40000, DstPort: 80, Proto: conntrack.ProtoTCP}
	d, ok := m.NewFlow(dataplane.NewFlow{Key: k, Ifindex: 2, TCPFlags: dataplane.TCPSyn})
	if !ok {
		t.Fatal("no real")
	}
	for _, e := range dataplane.Entries(dataplane.NewFlow{Key: k, Ifindex: 2}, d, clk.now, nil) {
		e.Conn.State = conntrack.StateEstablished
		mdp.Conns[e.Key] = e.Conn
	}
	recs := m.SyncConns(eventsOf(mdp), nil)
	if len(recs) != 1 {
		t.Fatalf("master lists %d", len(recs))
	}
	rec := recs[0]
	rec.Timeout = 60 // idle for 840 s of ESTABLISHED's 900
	for _, c := range []struct {
		now, want time.Duration
	}{
		{time.Hour, time.Hour - 840*time.Second}, // up an hour: exact
		{2 * time.Minute, 0},                     // up two minutes: boot
	} {
		clk.now = c.now
		delete(bdp.Conns, k)
		if err := b.InsertSynced(rec); err != nil {
			t.Fatal(err)
		}
		if got := bdp.Conns[k].LastSeen; got != c.want {
			t.Errorf("backup up %v: last seen %v, want %v", c.now, got, c.want)
		}
	}
}

// slowNeighbors knows no MAC until told, then calls back as the
// resolver does.
type slowNeighbors struct{ mac net.HardwareAddr }

func (n *slowNeighbors) Watch(netip.Addr, int)           {}
func (n *slowNeighbors) Unwatch(netip.Addr)              {}
func (n *slowNeighbors) MAC(netip.Addr) net.HardwareAddr { return n.mac }

// TestSyncWaitsForMAC: a synced NAT connection whose client's next hop
// is not resolved yet waits for it, and is inserted when it resolves.
func TestSyncWaitsForMAC(t *testing.T) {
	clk := &clock{now: time.Hour}
	dp := testutil.NewFakeDataplane()
	nb := &slowNeighbors{}
	s := New(Options{Dataplane: dp, Neighbors: nb, Now: clk.Now,
		Route: func(netip.Addr) (neigh.NextHop, error) { return neigh.NextHop{Ifindex: 2, MTU: 1500}, nil }})
	apply(t, s, "-A -t 10.0.0.100:81 -s wlc")
	apply(t, s, "-a -t 10.0.0.100:81 -r 10.0.0.12:8081 -m")
	c := connsync.Conn{Proto: 6, Flags: connsync.FlagFwdMasq, State: 1, Timeout: 900,
		Client: netip.MustParseAddrPort("198.51.100.7:40000"), Virtual: netip.MustParseAddrPort("10.0.0.100:81"),
		Dest: netip.MustParseAddrPort("10.0.0.12:8081")}
	if err := s.InsertSynced(c); err != nil {
		t.Fatal(err)
	}
	k := dataplane.ConnKey{Src: c.Client.Addr(), Dst: vip, SrcPort: 40000, DstPort: 81, Proto: 6}
	if _, ok := dp.Conns[k]; ok {
		t.Fatal("inserted before the client's next hop resolved")
	}
	nb.mac = net.HardwareAddr{2, 0xcc, 0, 0, 0, 1}
	s.OnNeighbor(c.Client.Addr(), 2, nb.mac)
	if got, ok := dp.Conns[k]; !ok || got.State != conntrack.StateEstablished {
		t.Fatalf("after resolution: %+v, %v", got, ok)
	}
}

// TestSyncNeverMovesLive: a synced record naming another real than a
// connection this director has is refused while that connection is
// ESTABLISHED or was seen in the last 10 s (a forged record must not move
// a live flow); a closed, idle one is replaced, as the kernel does when
// the master reused the tuple; a record naming the same real updates it.
func TestSyncNeverMovesLive(t *testing.T) {
	_, b, _, bdp, clk := syncPair(t)
	apply(t, b, "-a -t 10.0.0.100:80 -r 10.0.0.14 -g")
	k := dataplane.ConnKey{Src: netip.MustParseAddr("198.51.100.7"), Dst: vip, SrcPort: 40000, DstPort: 80, Proto: conntrack.ProtoTCP}
	rec := connsync.Conn{Proto: 6, Flags: connsync.FlagFwdRoute, State: 1, Timeout: 900,
		Client: netip.AddrPortFrom(k.Src, k.SrcPort), Virtual: netip.AddrPortFrom(vip, 80), Dest: netip.MustParseAddrPort("10.0.0.14:80")}
	var id11 uint32
	for id, r := range bdp.Reals {
		if r.Addr == netip.MustParseAddr("10.0.0.11") {
			id11 = id
		}
	}
	for _, c := range []struct {
		name  string
		state conntrack.State
		idle  time.Duration
		moved bool
	}{
		{"established, idle an hour", conntrack.StateEstablished, time.Hour, false},
		{"closing, seen just now", conntrack.StateFinWait, time.Second, false},
		{"closed, idle a minute", conntrack.StateClose, time.Minute, true},
	} {
		bdp.Conns[k] = dataplane.Conn{RealID: id11, ServiceID: 1, State: c.state, LastSeen: clk.now - c.idle}
		err := b.InsertSynced(rec)
		if moved := bdp.Conns[k].RealID != id11; moved != c.moved || (err != nil) == c.moved {
			t.Errorf("%s: moved %v (err %v), want moved %v", c.name, moved, err, c.moved)
		}
		if !c.moved && !errors.Is(err, ErrSyncMoves) {
			t.Errorf("%s: %v, want %v", c.name, err, ErrSyncMoves)
		}
	}
	// The same real: an update, not a move.
	rec.Dest = netip.MustParseAddrPort("10.0.0.11:80")
	bdp.Conns[k] = dataplane.Conn{RealID: id11, ServiceID: 1, State: conntrack.StateEstablished, LastSeen: clk.now}
	if err := b.InsertSynced(rec); err != nil {
		t.Errorf("a record for the connection's own real: %v", err)
	}
}
