package sched

// Lookaheader is implemented by the least-connection family (lc, wlc,
// sed, nq), whose picks follow connection counts. Each pick moves them:
// the server counts a new connection as one more inactive connection of
// its destination until the next recount from the table (as IPVS counts
// a connection in SYN state), and tells the scheduler (Changed). So the
// scheduler's next picks, for flows arriving before any other count
// changes, are known ahead: the data plane schedules new flows from them
// (dataplane SetPicks), and the picks are exactly the ones the scheduler
// would make in Go for the same arrivals.
type Lookaheader interface {
	// Lookahead returns the scheduler's next picks (at most max), each
	// counted as one more inactive connection of its destination, and
	// leaves the scheduler and the destinations as they are. From loop
	// on the picks repeat for ever (the counts move by a whole period
	// of weights, which changes no comparison); loop is -1 when they
	// did not become periodic within max (a picks list of max entries)
	// or nothing is available (no picks).
	Lookahead(max int) (picks []*Dest, loop int)
}

// Lookahead is the family's (lc, wlc, sed, nq; not lblc and lblcr, whose
// picks depend on the flow): the picks of a copy of the tournament tree
// over copies of the destinations, each pick counted.
func (s *named) Lookahead(max int) ([]*Dest, int) {
	t := &s.argmin
	if max <= 0 || len(t.tree) < 2 || t.tree[1] < 0 {
		return nil, -1
	}
	_, ptrs := copyDests(t.dests)
	sim := argmin{kind: t.kind}
	sim.Update(ptrs)
	// A threshold overloads its destination at the pick that reaches it,
	// which changes every later pick: such a lookahead is simulated pick
	// by pick and not taken to repeat.
	thresholds := false
	for _, d := range ptrs {
		if d.UThreshold != 0 && eligible(d) {
			thresholds = true
		}
	}
	// want is how often each destination is picked in one period once
	// the picks are periodic: lc picks every eligible destination once
	// (its overheads all move by one), wlc each weight/gcd times (the
	// overheads move in proportion to the weights). sed and nq read
	// active connections only: an inactive one changes nothing, their
	// pick is the same until the counts change otherwise.
	want := make([]int, len(ptrs))
	period := 0
	switch {
	case thresholds:
	case t.kind == bySED || t.kind == byNQ:
		return []*Dest{t.dests[sim.tree[1]]}, 0
	case t.kind == byOverhead:
		for i, d := range ptrs {
			if eligible(d) {
				want[i] = 1
				period++
			}
		}
	case t.kind == byWeighted:
		g := 0
		for _, d := range ptrs {
			if eligible(d) {
				g = gcd(g, d.Weight)
			}
		}
		for i, d := range ptrs {
			if eligible(d) {
				want[i] = d.Weight / g
				period += want[i]
			}
		}
	}
	picks := make([]*Dest, 0, max)
	idx := make([]int, 0, max)
	for len(picks) < max && sim.tree[1] >= 0 {
		i := int(sim.tree[1])
		idx = append(idx, i)
		picks = append(picks, t.dests[i])
		countPick(ptrs[i])
		sim.Changed(ptrs[i])
	}
	if thresholds {
		return picks, -1
	}
	// The first window of one period with each destination picked as
	// often as want says: the counts after it are the counts before it
	// plus want, under which every comparison comes out as before, so
	// the window repeats.
	if period == 0 || period > len(idx) {
		return picks, -1
	}
	cnt := make([]int, len(ptrs))
	off := 0 // destinations whose count in the window differs from want
	for i := range want {
		if want[i] != 0 {
			off++
		}
	}
	bump := func(i, by int) {
		if cnt[i] == want[i] {
			off++
		}
		cnt[i] += by
		if cnt[i] == want[i] {
			off--
		}
	}
	for j := 0; j < period; j++ {
		bump(idx[j], 1)
	}
	for t0 := 0; ; t0++ {
		if off == 0 {
			return picks[:t0+period], t0
		}
		if t0+period >= len(idx) {
			return picks, -1
		}
		bump(idx[t0], -1)
		bump(idx[t0+period], 1)
	}
}

// countPick counts a pick as the owner counts a new connection: one more
// inactive connection, and the overload flag at the upper threshold.
func countPick(d *Dest) {
	d.InactConns++
	if d.UThreshold != 0 && d.ActiveConns+d.InactConns >= d.UThreshold {
		d.Overloaded = true
	}
}

// Consumer is implemented by lookahead schedulers whose picks use random
// draws made ahead (twos): the server tells it how many of the
// lookahead's picks the data plane took, so that Schedule and the next
// lookahead go on from the draws after them.
type Consumer interface {
	Consumed(n int)
}
