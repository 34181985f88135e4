package server

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/sched"
)

// cycleAddrs is service k's installed pick cycle, as real addresses.
func cycleAddrs(t *testing.T, s *Server, ids []uint32) []string {
	t.Helper()
	var out []string
	for _, id := range ids {
		out = append(out, s.reals[id].cfg.Addr.String())
	}
	return out
}

func svcID(s *Server, line string) uint32 {
	c, _ := config.ParseArgs(fieldsOf(line))
	return s.services[c.Service.ServiceKey].id
}

// TestPickCycles: rr and wrr services get their scheduler's cycle in
// XDP, persistent ones too (XDP takes a pick only for a client without a
// template), and those with thresholds (each real's room set); lblc and
// FULLNAT reals without a ring do not; a deleted service's cycle goes.
func TestPickCycles(t *testing.T) {
	s, dp, _ := newTestServer(t)
	apply(t, s, "-A -t 10.0.0.100:80 -s wrr")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.11 -g -w 1")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.12 -m -w 2")
	id := svcID(s, "-A -t 10.0.0.100:80")
	got := cycleAddrs(t, s, dp.Picks[id])
	slices.Sort(got)
	if want := []string{"10.0.0.11", "10.0.0.12", "10.0.0.12"}; !slices.Equal(got, want) {
		t.Errorf("wrr 1:2 cycle %v, want %v in some order", got, want)
	}
	for _, c := range []struct{ name, lines string }{
		{"lblc", "-A -t 10.0.0.100:81 -s lblc\n-a -t 10.0.0.100:81 -r 10.0.0.11 -g"},
		{"rr with a FULLNAT real", "-A -t 10.0.0.100:83 -s rr\n-a -t 10.0.0.100:83 -r 10.0.0.11 -g\n-a -t 10.0.0.100:83 -r 10.0.0.13 -b"},
	} {
		if err := s.ApplyLines(context.Background(), lines(t, c.lines+"\n")); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		first := fieldsOf(c.lines)[:3]
		if ids, ok := dp.Picks[svcID(s, first[0]+" "+first[1]+" "+first[2])]; ok {
			t.Errorf("%s: a pick cycle %v", c.name, ids)
		}
	}
	apply(t, s, "-A -t 10.0.0.100:82 -s rr -p")
	apply(t, s, "-a -t 10.0.0.100:82 -r 10.0.0.11 -g")
	if got := cycleAddrs(t, s, dp.Picks[svcID(s, "-A -t 10.0.0.100:82")]); !slices.Equal(got, []string{"10.0.0.11"}) {
		t.Errorf("persistent rr: cycle %v, want [10.0.0.11]", got)
	}
	// Thresholds: a cycle, with each real's room under its threshold.
	apply(t, s, "-A -t 10.0.0.100:84 -s rr")
	apply(t, s, "-a -t 10.0.0.100:84 -r 10.0.0.11 -g -x 10")
	apply(t, s, "-a -t 10.0.0.100:84 -r 10.0.0.12 -g")
	k := dataplane.ServiceKey{VIP: vip, Port: 84, Proto: 6}
	if dp.SvcFlags[k]&dataplane.SvcRoom == 0 {
		t.Error("rr with a threshold: not flagged for room")
	}
	if got := cycleAddrs(t, s, dp.Picks[svcID(s, "-A -t 10.0.0.100:84")]); len(got) != 2 {
		t.Errorf("rr with a threshold: cycle %v, want both reals", got)
	}
	for _, d := range s.byID[svcID(s, "-A -t 10.0.0.100:84")].dests {
		want := int64(dataplane.RoomUnlimited)
		if d.cfg.UThreshold != 0 {
			want = 10
		}
		if dp.Rooms[d.realID] != want {
			t.Errorf("room of %v: %d, want %d", d.cfg.Addr, dp.Rooms[d.realID], want)
		}
	}
	if dp.SvcFlags[dataplane.ServiceKey{VIP: vip, Port: 82, Proto: 6}]&dataplane.SvcRoom != 0 {
		t.Error("a service without thresholds flagged for room")
	}
	apply(t, s, "-D -t 10.0.0.100:80")
	if _, ok := dp.Picks[id]; ok {
		t.Error("a deleted service's cycle stayed")
	}
}

// TestPickCatchUp: the picks XDP made from a cycle move the scheduler on
// before the service changes, so the next cycle starts where XDP left
// off, as the kernel's rr goes on from its cursor.
func TestPickCatchUp(t *testing.T) {
	s, dp, _ := newTestServer(t)
	apply(t, s, "-A -t 10.0.0.100:80 -s rr")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.11 -g")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.12 -g")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.13 -g")
	id := svcID(s, "-A -t 10.0.0.100:80")
	// The kernel's rr over the same list: 5 picks, then a fourth real.
	ref, _ := sched.New("rr")
	var dests []*sched.Dest
	for i, a := range []string{"10.0.0.13", "10.0.0.12", "10.0.0.11"} {
		dests = append(dests, &sched.Dest{ID: uint32(i + 1), Addr: netipMust(a), Weight: 1})
	}
	ref.Update(dests)
	var order []string
	for i := 0; i < 5; i++ {
		order = append(order, ref.Schedule(sched.Flow{}).Addr.String())
	}
	if got := cycleAddrs(t, s, dp.Picks[id]); !slices.Equal(got, order[:3]) {
		t.Fatalf("cycle %v, want the kernel's order %v", got, order[:3])
	}
	dp.Cursors[id] = 5 // XDP took five flows from it
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.14 -g")
	ref.Update(append([]*sched.Dest{{ID: 4, Addr: netipMust("10.0.0.14"), Weight: 1}}, dests...))
	var next []string
	for i := 0; i < 4; i++ {
		next = append(next, ref.Schedule(sched.Flow{}).Addr.String())
	}
	if got := cycleAddrs(t, s, dp.Picks[id]); !slices.Equal(got, next) {
		t.Errorf("after 5 flows in XDP and a new real: cycle %v, want %v", got, next)
	}
}

func netipMust(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestPickLookaheadIsGoDeciding is the differential test of the
// least-connection family in XDP: random arrivals, each taken by "XDP"
// from the installed lookahead (as bpf pick_real reads it: in order,
// then the repeating tail, or to the slow path past the end of one that
// does not repeat) or by the slow path, with recounts from the table
// (sweeps) and weight changes between them, pick the very reals a Go
// scheduler of the same kind picks for the same arrivals, counting each
// pick as the server does and taking the same recounts.
func TestPickLookaheadIsGoDeciding(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	type run struct {
		name   string
		thresh bool
	}
	var runs []run
	for _, name := range []string{"lc", "wlc", "sed", "nq", "ovf", "fo"} {
		runs = append(runs, run{name, false})
	}
	for _, name := range []string{"lc", "wlc", "sed", "nq", "ovf"} {
		runs = append(runs, run{name, true})
	}
	for _, run := range runs {
		lookaheadRun(t, r, run.name, run.thresh)
	}
}

// lookaheadRun is one scheduler's run of TestPickLookaheadIsGoDeciding,
// with upper thresholds on two reals when thresh is set.
func lookaheadRun(t *testing.T, r *rand.Rand, schedName string, thresh bool) {
	t.Helper()
	run := struct {
		name   string
		thresh bool
	}{schedName, thresh}
	name := run.name
	// Upper thresholds (-x) on two reals: the overload flag set at
	// the pick that reaches one, cleared at a recount below three
	// quarters of it.
	uthresh := []int{0, 0, 0, 0}
	if run.thresh {
		uthresh = []int{0, 300, 2000, 0}
		name += " -x"
	}
	xopt := func(i int) string {
		if uthresh[i] == 0 {
			return ""
		}
		return fmt.Sprintf(" -x %d", uthresh[i])
	}
	s, dp, _ := newTestServer(t)
	apply(t, s, "-A -t 10.0.0.100:80 -s "+run.name)
	addrs := []string{"10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.14"}
	weights := []int{1, 2, 3, 1}
	for i, a := range addrs {
		apply(t, s, fmt.Sprintf("-a -t 10.0.0.100:80 -r %s -g -w %d%s", a, weights[i], xopt(i)))
	}
	id := svcID(s, "-A -t 10.0.0.100:80")
	// The reference: the same scheduler over the same list, fed the
	// same events.
	ref, _ := sched.New(run.name)
	refDests := map[string]*sched.Dest{}
	var list []*sched.Dest
	for i := len(addrs) - 1; i >= 0; i-- { // the kernel's list: newest first
		d := &sched.Dest{ID: uint32(i + 1), Addr: netipMust(addrs[i]), Weight: weights[i], LastWeight: weights[i], UThreshold: uthresh[i]}
		refDests[addrs[i]] = d
		list = append(list, d)
	}
	ref.Update(list)
	realOf := map[uint32]string{}
	for rid, d := range s.reals {
		realOf[rid] = d.cfg.Addr.String()
	}
	xdp, slow, none := 0, 0, 0
	var last map[uint32]conntrack.Counts
	for step := 0; step < 20000; step++ {
		sweepEvery := 3 // per 1000 arrivals; rarer later, so that lookaheads run out
		if step > 10000 {
			sweepEvery = 1
		}
		switch x := r.IntN(1000); {
		case x < sweepEvery: // a sweep: the table's counts
			same := r.IntN(3) == 0 && last != nil // as many closed as opened
			counts := map[uint32]conntrack.Counts{}
			for rid, a := range realOf {
				c := conntrack.Counts{Active: r.IntN(50), Inactive: r.IntN(300)}
				if r.IntN(2) == 0 {
					// Far apart: longer than a lookahead holds.
					c.Inactive = r.IntN(5000)
				}
				if run.name == "ovf" {
					// ovf looks at active connections against the
					// weights (1 to 3): near them, one real (weight
					// 2) never full.
					c.Active = r.IntN(3)
				}
				if same {
					c = last[rid]
				}
				counts[rid] = c
				refRecount(ref, refDests[a], c)
			}
			s.finishSweep(s.beginSweep(), dataplane.SweepResult{Counts: counts})
			last = counts
			continue
		case x < sweepEvery+1: // a weight change
			i := r.IntN(len(addrs))
			w := r.IntN(4)
			apply(t, s, fmt.Sprintf("-e -t 10.0.0.100:80 -r %s -g -w %d%s", addrs[i], w, xopt(i)))
			refDests[addrs[i]].Weight = w
			if w > 0 {
				refDests[addrs[i]].LastWeight = w
			}
			ref.Update(list)
			continue
		}
		want := ref.Schedule(sched.Flow{})
		refBind(ref, want)
		// "XDP": the next pick of the installed sequence.
		var got string
		picks, ok := dp.Picks[id]
		if ok {
			k := dp.Cursors[id]
			loop := dp.Loops[id]
			switch n := uint64(len(picks)); {
			case k < n:
				got = realOf[picks[k]]
			case loop >= 0:
				got = realOf[picks[uint64(loop)+(k-uint64(loop))%(n-uint64(loop))]]
			}
			dp.Cursors[id] = k + 1
		}
		if got == "" {
			// The slow path: Go schedules it.
			dec, ok := s.NewFlow(dataplane.NewFlow{Key: dataplane.ConnKey{Src: netipMust("198.51.100.1"), Dst: vip,
				SrcPort: uint16(1024 + step%60000), DstPort: 80, Proto: 6}, TCPFlags: dataplane.TCPSyn})
			if ok {
				got = realOf[dec.RealID]
			}
			if want != nil {
				slow++
			} else {
				none++ // every real overloaded or quiesced
			}
		} else {
			xdp++
		}
		wantAddr := ""
		if want != nil {
			wantAddr = want.Addr.String()
		}
		if got != wantAddr {
			t.Fatalf("%s: arrival %d went to %q, Go's %s picks %q", name, step, got, name, wantAddr)
		}
	}
	t.Logf("%s: %d arrivals scheduled from the lookahead, %d by the slow path, %d with no real available", name, xdp, slow, none)
	if xdp < 10*slow {
		t.Errorf("%s: only %d of %d arrivals from the lookahead", name, xdp, xdp+slow)
	}
}

// TestLookaheadAfterUnchangedRecount: a recount that finds the counts as
// they were (as many connections closed as XDP made) still sends XDP
// back to the start of a fresh lookahead, since Go's next pick is made
// from those counts, not from the picks XDP counted meanwhile.
func TestLookaheadAfterUnchangedRecount(t *testing.T) {
	s, dp, _ := newTestServer(t)
	apply(t, s, "-A -t 10.0.0.100:80 -s wlc")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.11 -g")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.12 -g")
	id := svcID(s, "-A -t 10.0.0.100:80")
	first := dp.Picks[id][0]
	if dp.Picks[id][1] == first {
		t.Fatalf("wlc 1:1 from zero counts: %v", dp.Picks[id])
	}
	dp.Cursors[id] = 1 // XDP took the first pick
	counts := map[uint32]conntrack.Counts{}
	for rid := range s.reals {
		counts[rid] = conntrack.Counts{} // and that connection is gone
	}
	s.finishSweep(s.beginSweep(), dataplane.SweepResult{Counts: counts})
	if got := dp.Picks[id]; got[0] != first || dp.Cursors[id] != 0 {
		t.Errorf("after a recount to the same counts: picks %v from %d, want a fresh lookahead starting with %d", got, dp.Cursors[id], first)
	}
}

// TestTwosLookahead: a twos service's new flows come from a lookahead of
// random picks Go drew ahead, which does not repeat: XDP takes them in
// order, and once it runs out, the slow path's picks go on from the next
// draw (the draws XDP used are not used again: the slow path's first pick
// is the one the lookahead would have made next), a fresh lookahead is
// installed after the batch, and the picks spread by weight.
func TestTwosLookahead(t *testing.T) {
	s, dp, _ := newTestServer(t)
	apply(t, s, "-A -t 10.0.0.100:80 -s twos")
	addrs := []string{"10.0.0.11", "10.0.0.12", "10.0.0.13"}
	for i, a := range addrs {
		apply(t, s, fmt.Sprintf("-a -t 10.0.0.100:80 -r %s -g -w %d", a, i+1))
	}
	id := svcID(s, "-A -t 10.0.0.100:80")
	per := map[uint32]int{}
	slowFlows := 0
	for round := 0; round < 40; round++ {
		picks, ok := dp.Picks[id]
		if !ok || dp.Loops[id] != dataplane.NoLoop || len(picks) != dataplane.MaxPickCycle {
			t.Fatalf("round %d: picks %d installed %v, loop %d", round, len(picks), ok, dp.Loops[id])
		}
		// "XDP" takes k picks (fewer each round), then an arrival
		// goes to the slow path.
		k := uint64(len(picks) - 1 - round)
		for _, rid := range picks[:k] {
			per[rid]++
		}
		dp.Cursors[id] += k
		seen := dp.Cursors[id]
		dec, ok := s.NewFlow(dataplane.NewFlow{Key: dataplane.ConnKey{Src: netipMust("198.51.100.1"), Dst: netipMust("10.0.0.100"),
			SrcPort: uint16(1024 + round), DstPort: 80, Proto: 6}, TCPFlags: dataplane.TCPSyn})
		if !ok {
			t.Fatal("the slow path scheduled nothing")
		}
		slowFlows++
		if dec.RealID != picks[k] {
			t.Fatalf("round %d: after %d picks in XDP the slow path picked %d, the lookahead's next is %d", round, k, dec.RealID, picks[k])
		}
		per[dec.RealID]++
		if dp.Cursors[id] == seen && slices.Equal(dp.Picks[id], picks) {
			t.Fatalf("round %d: no fresh lookahead after the slow path's pick", round)
		}
	}
	total := 0
	for _, n := range per {
		total += n
	}
	for rid, d := range s.reals {
		w := slices.Index(addrs, d.cfg.Addr.String()) + 1
		if share := float64(per[rid]) / float64(total); share < float64(w)/6-0.03 || share > float64(w)/6+0.03 {
			t.Errorf("%s (weight %d): %.3f of %d flows", d.cfg.Addr, w, share, total)
		}
	}
}

// TestPickCounts: counting a span of a sequence's picks by its periods
// gives what counting them one by one gives, for sequences that repeat
// from any point and ones that do not, over spans inside, across and far
// past the end.
func TestPickCounts(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	ds := []*sched.Dest{{ID: 1}, {ID: 2}, {ID: 3}}
	for i := 0; i < 2000; i++ {
		n := 1 + r.IntN(12)
		f := &fastPicks{loop: r.IntN(n+1) - 1} // -1: does not repeat
		for j := 0; j < n; j++ {
			f.cycle = append(f.cycle, ds[r.IntN(len(ds))])
		}
		from := uint64(r.IntN(3 * n))
		to := from + uint64(r.IntN(5*n))
		want := map[*sched.Dest]int{}
		for k := from; k < to; k++ {
			switch {
			case k < uint64(n):
				want[f.cycle[k]]++
			case f.loop >= 0:
				l := uint64(f.loop)
				want[f.cycle[l+(k-l)%(uint64(n)-l)]]++
			}
		}
		got := f.counts(from, to)
		for _, d := range ds {
			if got[d] != want[d] {
				t.Fatalf("cycle of %d looping at %d, picks %d..%d: real %d counted %d, one by one %d", n, f.loop, from, to, d.ID, got[d], want[d])
			}
		}
	}
}

// refRecount gives the reference scheduler's real d a recount's counts,
// clearing its overload flag under three quarters of its threshold
// (ip_vs_unbind_dest with no lower threshold).
func refRecount(ref sched.Scheduler, d *sched.Dest, c conntrack.Counts) {
	d.ActiveConns, d.InactConns = c.Active, c.Inactive
	if d.Overloaded && (d.ActiveConns+d.InactConns)*4 < d.UThreshold*3 {
		d.Overloaded = false
	}
	ref.Changed(d)
}

// refBind binds a new connection to the reference scheduler's pick d
// (nil: none), overloading it at its threshold (ip_vs_bind_dest); it
// reports whether that overloaded it.
func refBind(ref sched.Scheduler, d *sched.Dest) bool {
	if d == nil {
		return false
	}
	d.InactConns++
	over := d.UThreshold != 0 && d.ActiveConns+d.InactConns >= d.UThreshold
	if over {
		d.Overloaded = true
	}
	ref.Changed(d)
	return over
}
