package sched

// The least-connection family (lc, wlc, sed, nq) scans the destination
// list in the kernel and keeps the first destination that no later one
// beats strictly. That is an argmin over the list with ties to the lower
// position, so it can be kept in a tournament tree: a pick reads the root
// and a count change replays one leaf-to-root path, O(log n), instead of
// the kernel's O(n) scan per new connection. The choice is the same.

// overhead is ip_vs_dest_conn_overhead: active connections weigh 256
// times an inactive one.
func overhead(d *Dest) int64 { return int64(d.ActiveConns)<<8 + int64(d.InactConns) }

// argmin is a tournament tree over dests: node i holds the position of the
// best eligible destination under it, or -1.
type argmin struct {
	dests []*Dest
	size  int     // leaves: a power of two >= len(dests)
	tree  []int32 // 1-based heap layout; leaves at size..2*size-1
	kind  order
}

// order is how a family member ranks two eligible destinations.
type order uint8

const (
	byOverhead order = iota // lc: overhead
	byWeighted              // wlc, lblc, lblcr: overhead/weight
	bySED                   // sed: (active+1)/weight
	byNQ                    // nq: idle first, then as sed
)

// better reports whether a beats b strictly, as the kernel's scans
// compare ("loh * w(d) > doh * w(least)" and the like).
func (t *argmin) better(a, b *Dest) bool {
	switch t.kind {
	case byOverhead:
		return overhead(a) < overhead(b)
	case byWeighted:
		return overhead(a)*int64(b.Weight) < overhead(b)*int64(a.Weight)
	case byNQ:
		ai, bi := a.ActiveConns == 0, b.ActiveConns == 0
		if ai || bi {
			return ai && !bi
		}
	}
	return sedOverhead(a)*int64(b.Weight) < sedOverhead(b)*int64(a.Weight)
}

// position returns d's index in dests, or false if d is not a member.
func (t *argmin) position(d *Dest) (int, bool) {
	i := d.slot
	return i, i >= 0 && i < len(t.dests) && t.dests[i] == d
}

// eligible is the kernel's skip test common to the family: overloaded
// and weight-0 destinations never take a new connection.
func eligible(d *Dest) bool { return d.Available() }

func (t *argmin) Update(dests []*Dest) {
	t.dests = append(t.dests[:0:0], dests...)
	for i, d := range dests {
		d.slot = i
	}
	t.size = 1
	for t.size < len(dests) {
		t.size <<= 1
	}
	t.tree = make([]int32, 2*t.size)
	for i := 0; i < t.size; i++ {
		t.tree[t.size+i] = t.leaf(i)
	}
	for i := t.size - 1; i >= 1; i-- {
		t.tree[i] = t.combine(t.tree[2*i], t.tree[2*i+1])
	}
}

func (t *argmin) leaf(i int) int32 {
	if i < len(t.dests) && eligible(t.dests[i]) {
		return int32(i)
	}
	return -1
}

// combine keeps the left (earlier) candidate unless the right one is
// strictly better, as the kernel's scan does.
func (t *argmin) combine(l, r int32) int32 {
	switch {
	case l < 0:
		return r
	case r < 0:
		return l
	case t.better(t.dests[r], t.dests[l]):
		return r
	default:
		return l
	}
}

func (t *argmin) Changed(d *Dest) {
	i, ok := t.position(d)
	if !ok {
		return
	}
	n := t.size + i
	t.tree[n] = t.leaf(i)
	for n >>= 1; n >= 1; n >>= 1 {
		old := t.tree[n]
		t.tree[n] = t.combine(t.tree[2*n], t.tree[2*n+1])
		if old == t.tree[n] && old != int32(i) {
			// The winner here is another destination, unchanged:
			// nothing above can change either.
			break
		}
	}
}

func (t *argmin) Schedule(Flow) *Dest {
	if len(t.tree) < 2 || t.tree[1] < 0 {
		return nil
	}
	return t.dests[t.tree[1]]
}

type named struct {
	argmin
	name string
}

func (s *named) Name() string { return s.name }

// sedOverhead is ip_vs_sed_dest_overhead and ip_vs_nq_dest_overhead:
// active connections plus the one being scheduled.
func sedOverhead(d *Dest) int64 { return int64(d.ActiveConns) + 1 }

func init() {
	// lc is ip_vs_lc.c: least overhead, weight ignored (but 0 drains).
	Register("lc", func() Scheduler { return &named{argmin{kind: byOverhead}, "lc"} })
	// wlc is ip_vs_wlc.c: least overhead/weight.
	Register("wlc", func() Scheduler { return &named{argmin{kind: byWeighted}, "wlc"} })
	// sed is ip_vs_sed.c: shortest expected delay, (active+1)/weight.
	Register("sed", func() Scheduler { return &named{argmin{kind: bySED}, "sed"} })
	// nq is ip_vs_nq.c: the first idle destination (no active
	// connections) if any, else as sed.
	Register("nq", func() Scheduler { return &named{argmin{kind: byNQ}, "nq"} })
}
