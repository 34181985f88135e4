package sched

// rr is ip_vs_rr.c: a cursor into the destination list; each pick scans
// circularly from the entry after the cursor for an available destination.
type rr struct {
	noCounts
	dests []*Dest
	last  int // cursor: index into dests, -1 for the list head
}

func init() { Register("rr", func() Scheduler { return &rr{last: -1} }) }

func (s *rr) Name() string { return "rr" }

func (s *rr) Update(dests []*Dest) {
	if s.last >= 0 {
		cur := s.dests[s.last]
		if s.last = indexOf(dests, cur); s.last < 0 {
			// ip_vs_rr_del_dest: the cursor moves to the previous entry.
			s.last = survivingPredecessor(s.dests, indexOf(s.dests, cur), dests)
		}
	}
	s.dests = append(s.dests[:0:0], dests...)
}

func (s *rr) Schedule(Flow) *Dest {
	n := len(s.dests)
	pos := s.last
	for i := 0; i < n; i++ {
		if pos++; pos == n {
			pos = 0
		}
		if d := s.dests[pos]; d.Available() {
			s.last = pos
			return d
		}
	}
	return nil
}
