package sched

// rr is ip_vs_rr.c: a cursor into the destination list; each pick scans
// circularly from the entry after the cursor for an available destination.
type rr struct {
	dests []*Dest
	last  *Dest // nil: the list head
}

func init() { Register("rr", func() Scheduler { return &rr{} }) }

func (s *rr) Name() string { return "rr" }

func (s *rr) Update(dests []*Dest) {
	if s.last != nil && indexOf(dests, s.last) < 0 {
		// ip_vs_rr_del_dest: the cursor moves to the previous entry.
		p := survivingPredecessor(s.dests, indexOf(s.dests, s.last), dests)
		s.last = nil
		if p >= 0 {
			s.last = dests[p]
		}
	}
	s.dests = append(s.dests[:0:0], dests...)
}

func (s *rr) Schedule(Flow) *Dest {
	n := len(s.dests)
	if n == 0 {
		return nil
	}
	start := indexOf(s.dests, s.last) // -1 when at the head
	for i := 1; i <= n; i++ {
		pos := start + i
		if start < 0 {
			pos = i - 1
		} else {
			pos %= n
		}
		if d := s.dests[pos]; d.Available() {
			s.last = d
			return d
		}
	}
	return nil
}
