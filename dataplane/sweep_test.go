package dataplane_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
)

// randomTable fills a connection table the way the director does: DR
// entries, NAT and FULLNAT pairs, orphan reply entries and a reused
// tuple, in every state, idle for random times around their timeouts.
func randomTable(r *rand.Rand, n int, now time.Duration, to conntrack.Timeouts) map[dataplane.ConnKey]dataplane.Conn {
	t := map[dataplane.ConnKey]dataplane.Conn{}
	idle := func(proto uint8, s conntrack.State) time.Duration {
		if r.IntN(20) == 0 {
			// Refreshed by XDP after the sweep read its clock.
			return now + time.Duration(r.IntN(1000))*time.Millisecond
		}
		d := to.Timeout(proto, s)
		return now - time.Duration(r.Float64()*2*float64(d))
	}
	for i := 0; i < n; i++ {
		proto := uint8(conntrack.ProtoTCP)
		if r.IntN(5) == 0 {
			proto = conntrack.ProtoUDP
		}
		st := conntrack.State(r.IntN(11))
		if proto == conntrack.ProtoUDP {
			st = conntrack.StateNone
		}
		k := dataplane.ConnKey{Src: netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), Dst: netip.MustParseAddr("192.0.2.10"),
			SrcPort: uint16(1024 + r.IntN(60000)), DstPort: uint16(80 + r.IntN(3)), Proto: proto}
		c := dataplane.Conn{RealID: uint32(1 + r.IntN(8)), ServiceID: uint32(1 + r.IntN(3)), State: st, LastSeen: idle(proto, st)}
		if c.ServiceID != 1 { // services 2 and 3 are persistent
			c.Flags = dataplane.ConnPersist
		}
		switch r.IntN(4) {
		case 0, 1: // DR or TUN
			t[k] = c
		case 2, 3: // NAT or FULLNAT
			out := dataplane.ConnKey{Src: k.Src, Dst: netip.MustParseAddr("10.1.0.11"), SrcPort: k.SrcPort, DstPort: 8080}
			fullnat := r.IntN(2) == 0
			if fullnat {
				c.Flags |= dataplane.ConnFullNAT
				out.Src, out.SrcPort = netip.MustParseAddr("10.1.0.250"), uint16(1024+i)
			}
			c.Out = out
			rep := dataplane.Conn{RealID: c.RealID, ServiceID: c.ServiceID, LastSeen: idle(proto, st), Flags: c.Flags&dataplane.ConnFullNAT | dataplane.ConnReply,
				Out: dataplane.ConnKey{Src: k.Dst, Dst: k.Src, SrcPort: k.DstPort, DstPort: k.SrcPort}}
			switch r.IntN(10) {
			case 0: // orphan: the forward entry was evicted
				t[c.Peer(proto)] = rep
			case 1: // the reply entry was evicted
				t[k] = c
			case 2: // the tuple was reused: the reply entry names another
				t[k] = c
				rep.Out.DstPort++
				t[c.Peer(proto)] = rep
			default:
				t[k] = c
				t[c.Peer(proto)] = rep
			}
		}
	}
	return t
}

func sweepArgs(now time.Duration) dataplane.SweepArgs {
	return dataplane.SweepArgs{Now: now, Timeouts: conntrack.DefaultTimeouts(), OrphanAge: 10 * time.Second,
		Persistent: map[uint32]dataplane.SweepPersist{2: {MaskBits: 24}, 3: {MaskBits: 32, PortZero: true}}}
}

func sorted[T any](s []T) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = fmt.Sprint(v)
	}
	slices.Sort(out)
	return out
}

// sweepClock is a sweep's clock for a table of idle times up to horizon:
// the kernel's clock moved on by horizon, so that no last-seen time in
// the table is before the machine booted (the monotonic clock of a
// machine up for minutes is smaller than a 15-minute timeout).
func sweepClock(horizon time.Duration) time.Duration {
	return dataplane.Now() + horizon
}

// TestSweepMatchesModel runs the kernel sweep and its Go model over the
// same random table: the same entries survive, the same counts, released
// ports and live templates come out.
func TestSweepMatchesModel(t *testing.T) {
	d := openDirector(t)
	// randomTable's idle times reach twice the longest timeout.
	to := conntrack.DefaultTimeouts()
	now := sweepClock(2 * max(slices.Max(to.TCP[:]), to.UDP))
	r := rand.New(rand.NewPCG(5, 6))
	table := randomTable(r, 600, now, to)
	for k, c := range table {
		if err := d.SetConn(k, c); err != nil {
			t.Fatal(err)
		}
	}
	args := sweepArgs(now)
	got, err := d.Sweep(args)
	if err != nil {
		t.Fatal(err)
	}
	model := map[dataplane.ConnKey]dataplane.Conn{}
	for k, c := range table {
		model[k] = c
	}
	want := dataplane.SweepTable(model, args)
	left := map[dataplane.ConnKey]bool{}
	if err := d.WalkConns(func(k dataplane.ConnKey, _ dataplane.Conn) bool { left[k] = true; return true }); err != nil {
		t.Fatal(err)
	}
	if len(left) != len(model) {
		t.Errorf("%d entries left, the model leaves %d", len(left), len(model))
	}
	for k := range model {
		if !left[k] {
			t.Errorf("the kernel deleted %v, the model keeps it", k)
		}
	}
	if fmt.Sprint(got.Counts) != fmt.Sprint(want.Counts) {
		t.Errorf("counts %v, model %v", got.Counts, want.Counts)
	}
	if g, w := sorted(got.Released), sorted(want.Released); !slices.Equal(g, w) {
		t.Errorf("released %d ports, model %d:\n%v\n%v", len(g), len(w), g, w)
	}
	if g, w := sorted(got.Owned), sorted(want.Owned); !slices.Equal(g, w) {
		t.Errorf("templates %v, model %v", g, w)
	}
	// Entries deleted with their pair before the walk reached them are
	// not visited.
	if got.Expired != want.Expired || got.Seen > uint64(len(table)) || got.Seen < uint64(len(left)) ||
		got.Expired == 0 || len(got.Released) == 0 || len(got.Owned) == 0 {
		t.Errorf("seen %d (table %d), expired %d (model %d), released %d, templates %d", got.Seen, len(table),
			got.Expired, want.Expired, len(got.Released), len(got.Owned))
	}
	// A second sweep at the same time finds nothing more to do, and
	// counts again.
	again, err := d.Sweep(args)
	if err != nil || again.Expired != 0 || fmt.Sprint(again.Counts) != fmt.Sprint(got.Counts) {
		t.Errorf("second sweep: expired %d, counts %v (%v)", again.Expired, again.Counts, err)
	}
	// DropStale (the first sweep after a restart): the connections of
	// reals no longer configured go too. Reals 1 to 4 are; the table
	// names 1 to 8.
	for id := uint32(1); id <= 4; id++ {
		if err := d.SetReal(id, dataplane.Real{Addr: netip.AddrFrom4([4]byte{10, 1, 0, byte(id)}), Ifindex: loIfindex, MAC: realMAC, Fwd: dataplane.FwdRoute}); err != nil {
			t.Fatal(err)
		}
	}
	args.DropStale, args.Reals = true, map[uint32]bool{1: true, 2: true, 3: true, 4: true}
	stale, err := d.Sweep(args)
	if err != nil {
		t.Fatal(err)
	}
	want = dataplane.SweepTable(model, args)
	clear(left)
	if err := d.WalkConns(func(k dataplane.ConnKey, _ dataplane.Conn) bool { left[k] = true; return true }); err != nil {
		t.Fatal(err)
	}
	if len(left) != len(model) || stale.Expired != want.Expired || stale.Expired == 0 {
		t.Errorf("dropping stale connections: %d left (model %d), %d deleted (model %d)", len(left), len(model), stale.Expired, want.Expired)
	}
	for k := range model {
		if !left[k] {
			t.Errorf("dropping stale connections: the kernel deleted %v, the model keeps it", k)
		}
	}
	if fmt.Sprint(stale.Counts) != fmt.Sprint(want.Counts) {
		t.Errorf("dropping stale connections: counts %v, model %v", stale.Counts, want.Counts)
	}
}

// TestSweepModel checks the model's judgements one by one.
func TestSweepModel(t *testing.T) {
	to := conntrack.DefaultTimeouts()
	est := to.TCP[conntrack.StateEstablished]
	now := est + time.Hour
	client, vip, rip := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("10.0.0.11")
	k := dataplane.ConnKey{Src: client, Dst: vip, SrcPort: 4000, DstPort: 80, Proto: conntrack.ProtoTCP}
	pair := func(fwd, rep time.Duration) map[dataplane.ConnKey]dataplane.Conn {
		c := dataplane.Conn{RealID: 1, State: conntrack.StateEstablished, LastSeen: fwd, Flags: dataplane.ConnFullNAT,
			Out: dataplane.ConnKey{Src: netip.MustParseAddr("10.0.0.250"), Dst: rip, SrcPort: 30000, DstPort: 8080}}
		r := dataplane.Conn{RealID: 1, LastSeen: rep, Flags: dataplane.ConnFullNAT | dataplane.ConnReply,
			Out: dataplane.ConnKey{Src: vip, Dst: client, SrcPort: 80, DstPort: 4000}}
		return map[dataplane.ConnKey]dataplane.Conn{k: c, c.Peer(k.Proto): r}
	}
	a := dataplane.SweepArgs{Now: now, Timeouts: to, OrphanAge: 10 * time.Second}
	for _, c := range []struct {
		name      string
		fwd, rep  time.Duration
		left      int
		active    int
		releasedN int
	}{
		{"both idle", 0, 0, 0, 0, 1},
		{"replies recent", 0, now - time.Second, 2, 1, 0},
		{"forward recent", now - time.Second, 0, 2, 1, 0},
	} {
		tab := pair(c.fwd, c.rep)
		res := dataplane.SweepTable(tab, a)
		if len(tab) != c.left || res.Counts[1].Active != c.active || len(res.Released) != c.releasedN {
			t.Errorf("%s: %d left, %v, released %v", c.name, len(tab), res.Counts, res.Released)
		}
	}
	// An orphan reply entry goes after OrphanAge, not before.
	tab := pair(0, now-5*time.Second)
	delete(tab, k)
	if dataplane.SweepTable(tab, a); len(tab) != 1 {
		t.Errorf("young orphan dropped")
	}
	a.Now += 5 * time.Second
	if res := dataplane.SweepTable(tab, a); len(tab) != 0 || len(res.Released) != 1 || !strings.Contains(fmt.Sprint(res.Released), "10.0.0.250 30000") {
		t.Errorf("old orphan: %d left, released %v", len(tab), res.Released)
	}
}
