package conntrack

import "time"

// Stats are a service's or a real server's counters, as ipvsadm --stats
// shows them: connections scheduled, packets and bytes in (toward the
// real) and out (replies through the director: NAT and FULLNAT only).
type Stats struct {
	Conns    uint64 `json:"conns"`
	InPkts   uint64 `json:"inpkts"`
	OutPkts  uint64 `json:"outpkts"`
	InBytes  uint64 `json:"inbytes"`
	OutBytes uint64 `json:"outbytes"`
}

// Add returns a + b.
func (a Stats) Add(b Stats) Stats {
	return Stats{a.Conns + b.Conns, a.InPkts + b.InPkts, a.OutPkts + b.OutPkts, a.InBytes + b.InBytes, a.OutBytes + b.OutBytes}
}

// Sub is a - b, floored at zero per field (a counter reset underneath
// reads as zero, not as a huge number).
func (a Stats) Sub(b Stats) Stats {
	d := func(x, y uint64) uint64 {
		if x < y {
			return 0
		}
		return x - y
	}
	return Stats{d(a.Conns, b.Conns), d(a.InPkts, b.InPkts), d(a.OutPkts, b.OutPkts), d(a.InBytes, b.InBytes), d(a.OutBytes, b.OutBytes)}
}

// Rates are per-second rates, as ipvsadm --rate shows them.
type Rates struct {
	CPS    uint64 `json:"cps"`
	InPPS  uint64 `json:"inpps"`
	OutPPS uint64 `json:"outpps"`
	InBPS  uint64 `json:"inbps"`
	OutBPS uint64 `json:"outbps"`
}

// EstimatorInterval is how often rates are sampled, as IPVS's estimator.
const EstimatorInterval = 2 * time.Second

// Estimator smooths rates as IPVS's ip_vs_est does: every 2 s the rate
// over the last interval is folded into an average with weight 1/4.
// Averages are kept in fixed point: per-second connection and packet
// rates scaled by 2^10, byte rates by 2^5.
type Estimator struct {
	last                              Stats
	primed                            bool
	cps, inpps, outpps, inbps, outbps int64
}

// Sample folds the counters read now into the averages.
func (e *Estimator) Sample(now Stats) {
	if !e.primed {
		e.last, e.primed = now, true
		return
	}
	d := now.Sub(e.last)
	e.last = now
	// A difference over 2 s scaled to per second <<10 is <<9; <<5 is <<4.
	fold := func(avg *int64, diff uint64, shift uint) {
		rate := int64(diff << shift)
		*avg += (rate - *avg) >> 2
	}
	fold(&e.cps, d.Conns, 9)
	fold(&e.inpps, d.InPkts, 9)
	fold(&e.outpps, d.OutPkts, 9)
	fold(&e.inbps, d.InBytes, 4)
	fold(&e.outbps, d.OutBytes, 4)
}

// Rates reads the averages, rounded as IPVS rounds them.
func (e *Estimator) Rates() Rates {
	r10 := func(v int64) uint64 { return uint64(max(v+0x1FF, 0) >> 10) }
	r5 := func(v int64) uint64 { return uint64(max(v+0xF, 0) >> 5) }
	return Rates{r10(e.cps), r10(e.inpps), r10(e.outpps), r5(e.inbps), r5(e.outbps)}
}

// Reset forgets the averages (ipvsadm -Z) and restarts from now.
func (e *Estimator) Reset(now Stats) { *e = Estimator{last: now, primed: true} }
