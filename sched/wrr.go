package sched

// wrr is ip_vs_wrr.c: interleaved weighted round robin. cw steps down from
// mw by di (the gcd of the weights); each pass over the list takes the
// destinations whose weight is at least cw.
type wrr struct {
	noCounts
	dests []*Dest
	cl    int // cursor: index into dests, -1 for the list head
	cw    int // current weight
	mw    int // max weight - (di - 1)
	di    int // gcd of the positive weights
}

func init() { Register("wrr", func() Scheduler { return &wrr{cl: -1} }) }

func (s *wrr) Name() string { return "wrr" }

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// Update is ip_vs_wrr_dest_changed: the cursor returns to the head and
// cw is kept, rounded to the new gcd, unless it is now out of range.
func (s *wrr) Update(dests []*Dest) {
	s.dests = append(s.dests[:0:0], dests...)
	s.cl = -1
	g, max := 0, 0
	for _, d := range dests {
		if d.Weight > 0 {
			if g > 0 {
				g = gcd(d.Weight, g)
			} else {
				g = d.Weight
			}
		}
		if d.Weight > max {
			max = d.Weight
		}
	}
	if g == 0 {
		g = 1
	}
	s.di = g
	s.mw = max - (s.di - 1)
	if s.cw > s.mw || s.cw == 0 {
		s.cw = s.mw
	} else if s.di > 1 {
		s.cw = (s.cw/s.di)*s.di + 1
	}
}

func (s *wrr) Schedule(Flow) *Dest {
	if s.mw <= 0 {
		return nil
	}
	last := s.cl
	pos := s.cl
	stop := -2 // none
	lastPass, restarted := false, false
	for {
		for pos++; pos < len(s.dests); pos++ {
			d := s.dests[pos]
			if !d.Overloaded && d.Weight >= s.cw {
				s.cl = pos
				return d
			}
			if pos == stop {
				s.cl = pos
				return nil
			}
		}
		pos = -1 // back at the head
		s.cw -= s.di
		if s.cw <= 0 {
			s.cw = s.mw
			if lastPass || last == -1 {
				s.cl = pos
				return nil
			}
			restarted = true
		}
		lastPass = s.cw <= s.di
		if lastPass && restarted && last != -1 {
			stop = last
		}
	}
}
