package sched

// overhead is ip_vs_dest_conn_overhead: active connections weigh 256
// times an inactive one.
func overhead(d *Dest) int64 { return int64(d.ActiveConns)<<8 + int64(d.InactConns) }

// lc is ip_vs_lc.c: the available destination with the least overhead;
// ties go to the first in list order.
type lc struct{ dests []*Dest }

func init() { Register("lc", func() Scheduler { return &lc{} }) }

func (s *lc) Name() string         { return "lc" }
func (s *lc) Update(dests []*Dest) { s.dests = append(s.dests[:0:0], dests...) }
func (s *lc) Schedule(Flow) *Dest {
	var least *Dest
	var loh int64
	for _, d := range s.dests {
		if !d.Available() {
			continue
		}
		if doh := overhead(d); least == nil || doh < loh {
			least, loh = d, doh
		}
	}
	return least
}

// wlc is ip_vs_wlc.c: least overhead/weight, compared by cross
// multiplication (loh * w(d) > doh * w(least)). Note the kernel skips
// only overloaded destinations after the first pick, so a weight-0 one
// can never win (its product is 0).
type wlc struct{ dests []*Dest }

func init() { Register("wlc", func() Scheduler { return &wlc{} }) }

func (s *wlc) Name() string         { return "wlc" }
func (s *wlc) Update(dests []*Dest) { s.dests = append(s.dests[:0:0], dests...) }
func (s *wlc) Schedule(Flow) *Dest {
	i := 0
	var least *Dest
	for ; i < len(s.dests); i++ {
		if s.dests[i].Available() {
			least = s.dests[i]
			break
		}
	}
	if least == nil {
		return nil
	}
	loh := overhead(least)
	for _, d := range s.dests[i+1:] {
		if d.Overloaded {
			continue
		}
		doh := overhead(d)
		if loh*int64(d.Weight) > doh*int64(least.Weight) {
			least, loh = d, doh
		}
	}
	return least
}
