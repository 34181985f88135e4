package conntrack

import "testing"

// A steady load converges to its rate: 1000 connections, 100000 packets
// and 64 MB every 2 s read as 500 cps, 50000 pps, 32 MB/s; the first
// sample after priming is a quarter of the way (weight 1/4, as IPVS).
func TestEstimatorConverges(t *testing.T) {
	var e Estimator
	var now Stats
	step := Stats{Conns: 1000, InPkts: 100000, OutPkts: 50000, InBytes: 64 << 20, OutBytes: 1 << 20}
	e.Sample(now)
	now = now.Add(step)
	e.Sample(now)
	if r := e.Rates(); r.CPS != 125 || r.InPPS != 12500 {
		t.Errorf("after one interval: %+v, want cps 125, inpps 12500", r)
	}
	for i := 0; i < 100; i++ {
		now = now.Add(step)
		e.Sample(now)
	}
	want := Rates{CPS: 500, InPPS: 50000, OutPPS: 25000, InBPS: 32 << 20, OutBPS: 1 << 19}
	if r := e.Rates(); r != want {
		t.Errorf("steady: %+v, want %+v", r, want)
	}
	// Load stops: the rate decays (by 3/4 per interval) toward zero.
	prev := e.Rates().CPS
	for i := 0; i < 5; i++ {
		e.Sample(now)
		if c := e.Rates().CPS; c >= prev {
			t.Fatalf("idle interval %d: cps %d, not below %d", i, c, prev)
		} else {
			prev = c
		}
	}
	for i := 0; i < 100; i++ {
		e.Sample(now)
	}
	if r := e.Rates(); r != (Rates{}) {
		t.Errorf("idle: %+v", r)
	}
	e.Reset(Stats{})
	if r := e.Rates(); r != (Rates{}) {
		t.Errorf("after reset: %+v", r)
	}
}

// A counter that went backwards (zeroed underneath) is no traffic, not
// a wrapped huge rate.
func TestEstimatorCounterReset(t *testing.T) {
	var e Estimator
	e.Sample(Stats{Conns: 1000})
	e.Sample(Stats{Conns: 10})
	if r := e.Rates(); r.CPS != 0 {
		t.Errorf("cps %d after a counter reset", r.CPS)
	}
}
