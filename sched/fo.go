package sched

import "math/rand/v2"

// fo, ovf and twos: the three schedulers IPVS added after the first
// eleven (ip_vs_fo.c, ip_vs_ovf.c, ip_vs_twos.c).

// destList is what the three keep: the destinations in list order, read
// afresh at each pick.
type destList struct {
	noCounts
	dests []*Dest
}

func (l *destList) Update(dests []*Dest) { l.dests = append(l.dests[:0:0], dests...) }

// fo is ip_vs_fo.c, weighted failover: the destination with the highest
// weight that is not overloaded, the first in list order among equals;
// weight 0 never. Its pick follows weights and overload flags only, so
// it is a cycle of one pick (Cycler).
type fo struct{ destList }

func (s *fo) Name() string { return "fo" }

func (s *fo) Schedule(Flow) *Dest {
	var h *Dest
	hw := 0
	for _, d := range s.dests {
		if !d.Overloaded && d.Weight > hw {
			h, hw = d, d.Weight
		}
	}
	return h
}

// Cycle is fo's: its one pick, until the weights change.
func (s *fo) Cycle(max int) []*Dest {
	if d := s.Schedule(Flow{}); d != nil && max >= 1 {
		return []*Dest{d}
	}
	return nil
}

// ovf is ip_vs_ovf.c, overflow-connection: the destination with the
// highest weight whose active connections do not exceed its weight (a
// destination takes weight+1 active connections before the next one
// overflows), not overloaded, weight 0 never; the first in list order
// among equals.
type ovf struct{ destList }

func (s *ovf) Name() string { return "ovf" }

func (s *ovf) Schedule(Flow) *Dest {
	var h *Dest
	hw := 0
	for _, d := range s.dests {
		w := d.Weight
		if d.Overloaded || d.ActiveConns > w || w == 0 {
			continue
		}
		if h == nil || w > hw {
			h, hw = d, w
		}
	}
	return h
}

// Lookahead is ovf's: a new connection counts as inactive (it has not
// completed its handshake), and ovf reads active connections only, so
// its pick stays the same until the counts change otherwise; with an
// upper threshold, until the pick that overloads its destination, so
// then the picks are simulated and not taken to repeat.
func (s *ovf) Lookahead(max int) ([]*Dest, int) {
	if max < 1 {
		return nil, -1
	}
	thresholds := false
	for _, d := range s.dests {
		thresholds = thresholds || d.UThreshold != 0
	}
	if !thresholds {
		if d := s.Schedule(Flow{}); d != nil {
			return []*Dest{d}, 0
		}
		return nil, -1
	}
	return simulate(s.dests, max, func(_ int, ptrs []*Dest) *Dest { return (&ovf{destList{dests: ptrs}}).Schedule(Flow{}) })
}

// simulate is a lookahead that does not repeat: up to max picks of pick
// over copies of dests (k: the pick's number), each counted as the owner
// counts a new connection; loop -1.
func simulate(dests []*Dest, max int, pick func(k int, ptrs []*Dest) *Dest) ([]*Dest, int) {
	_, ptrs := copyDests(dests)
	var picks []*Dest
	for k := 0; k < max; k++ {
		d := pick(k, ptrs)
		if d == nil {
			break
		}
		picks = append(picks, dests[d.slot])
		countPick(d)
	}
	if len(picks) == 0 {
		return nil, -1
	}
	return picks, -1
}

// copyDests copies dests for a simulation: the copies' slots are their
// positions, so that a copy leads back to its original.
func copyDests(dests []*Dest) ([]Dest, []*Dest) {
	copies := make([]Dest, len(dests))
	ptrs := make([]*Dest, len(dests))
	for i, d := range dests {
		copies[i] = *d
		copies[i].slot = i
		ptrs[i] = &copies[i]
	}
	return copies, ptrs
}

// twos is ip_vs_twos.c, power of two choices: two destinations drawn at
// random, each with a chance in proportion to its weight (the first
// eligible one gets one chance more: the kernel draws from
// [0, sum of weights] and takes the first destination whose running sum
// reaches the draw), and the one with the lower overhead per weight
// (active×256 + inactive) taken, the first draw's on a tie.
//
// The draws are made ahead and queued, so that a lookahead (the picks
// the data plane takes next) uses the very draws Schedule would use:
// Schedule takes the queue's head, Consumed drops the draws of the picks
// the data plane took.
type twos struct {
	destList
	draws [][2]uint32
}

func (s *twos) Name() string { return "twos" }

// draw returns the k-th queued pair of draws, drawing as needed.
func (s *twos) draw(k int) [2]uint32 {
	for len(s.draws) <= k {
		s.draws = append(s.draws, [2]uint32{rand.Uint32(), rand.Uint32()})
	}
	return s.draws[k]
}

func (s *twos) Schedule(Flow) *Dest {
	d := twosPick(s.dests, s.draw(0))
	s.Consumed(1)
	return d
}

// Consumed drops the draws of the first n picks (taken by the data plane
// from a lookahead).
func (s *twos) Consumed(n int) {
	if n > len(s.draws) {
		n = len(s.draws)
	}
	s.draws = append(s.draws[:0], s.draws[n:]...)
}

// Lookahead is twos's: the picks of the next max queued draws over
// copies of the destinations, each pick counted as one more inactive
// connection. Random picks never repeat: loop is -1, and flows past the
// end go to Go, which installs a fresh lookahead.
func (s *twos) Lookahead(max int) ([]*Dest, int) {
	return simulate(s.dests, max, func(k int, ptrs []*Dest) *Dest { return twosPick(ptrs, s.draw(k)) })
}

// below maps a uniform 32-bit draw into [0, n), as get_random_u32_below.
func below(x uint32, n int) int { return int(uint64(x) * uint64(n) >> 32) }

// twosPick is ip_vs_twos_schedule with the draws given.
func twosPick(dests []*Dest, draws [2]uint32) *Dest {
	total := 0
	for _, d := range dests {
		if d.Available() {
			total += d.Weight
		}
	}
	if total == 0 {
		return nil
	}
	r1, r2 := below(draws[0], total+1), below(draws[1], total+1)
	var c1, c2 *Dest
	for _, d := range dests {
		if !d.Available() {
			continue
		}
		r1 -= d.Weight
		r2 -= d.Weight
		if r1 <= 0 && c1 == nil {
			c1 = d
		}
		if r2 <= 0 && c2 == nil {
			c2 = d
		}
		if c1 != nil && c2 != nil {
			break
		}
	}
	if int64(c2.Weight)*overhead(c1) > int64(c1.Weight)*overhead(c2) {
		return c2
	}
	return c1
}

func init() {
	Register("fo", func() Scheduler { return &fo{} })
	Register("ovf", func() Scheduler { return &ovf{} })
	Register("twos", func() Scheduler { return &twos{} })
}
