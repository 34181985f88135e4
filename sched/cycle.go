package sched

// Cycler is implemented by schedulers whose picks depend neither on the
// flow nor on connection counts (rr and wrr): their picks repeat with a
// period, so the data plane can schedule new flows from one cycle of
// them that Go computed (dataplane SetPicks).
type Cycler interface {
	// Cycle returns the next picks for one whole period, from the
	// scheduler's current position, and leaves the scheduler as it is;
	// nil when nothing is available or the period is longer than max.
	Cycle(max int) []*Dest
}

// Cycle is rr's: every available destination once, from the one after
// the cursor.
func (s *rr) Cycle(max int) []*Dest {
	c := *s
	n := 0
	for _, d := range s.dests {
		if d.Available() {
			n++
		}
	}
	if n == 0 || n > max {
		return nil
	}
	out := make([]*Dest, n)
	for i := range out {
		out[i] = c.Schedule(Flow{})
	}
	return out
}

// Cycle is wrr's: a period is sum(weight / gcd) picks over the
// destinations with a positive weight that are not overloaded (an
// overloaded one's turns are skipped, so its share drops out of the
// period; the cycle holds while the flags do).
func (s *wrr) Cycle(max int) []*Dest {
	n := 0
	for _, d := range s.dests {
		if d.Weight > 0 && !d.Overloaded {
			n += d.Weight / s.di
		}
	}
	if n == 0 || n > max {
		return nil
	}
	c := *s
	out := make([]*Dest, n)
	for i := range out {
		if out[i] = c.Schedule(Flow{}); out[i] == nil {
			return nil
		}
	}
	return out
}
