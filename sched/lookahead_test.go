package sched

import (
	"math/rand/v2"
	"testing"
)

// TestLookaheadIsTheSchedulersPicks: for random destinations (weights,
// counts, overload flags), the lookahead of lc, wlc, sed, nq and ovf, its
// periodic tail repeated, is pick for pick what the scheduler itself
// chooses when each pick is counted as the server counts it (one more
// inactive connection, the overload flag set at an upper threshold,
// Changed), over far more picks than the lookahead holds.
func TestLookaheadIsTheSchedulersPicks(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	periodic := map[string]int{}
	for round := 0; round < 400; round++ {
		n := 1 + r.IntN(8)
		base := make([]Dest, n)
		for i := range base {
			base[i] = Dest{ID: uint32(i + 1), Weight: r.IntN(6), ActiveConns: r.IntN(40), InactConns: r.IntN(600), Overloaded: r.IntN(10) == 0}
			if round%3 == 0 {
				base[i].ActiveConns, base[i].InactConns = 0, r.IntN(3)
			}
			if round%4 == 1 && r.IntN(2) == 0 {
				// An upper threshold some picks away: the pick that
				// reaches it overloads the destination.
				base[i].UThreshold = base[i].ActiveConns + base[i].InactConns + 1 + r.IntN(100)
			}
		}
		for _, name := range []string{"lc", "wlc", "sed", "nq", "ovf"} {
			mk := func() (Scheduler, []*Dest) {
				s, _ := New(name)
				ds := make([]*Dest, n)
				for i := range ds {
					d := base[i]
					ds[i] = &d
				}
				s.Update(ds)
				return s, ds
			}
			la, lds := mk()
			picks, loop := la.(Lookaheader).Lookahead(256)
			ref, rds := mk()
			for i := range lds {
				if *lds[i] != *rds[i] {
					t.Fatalf("%s: Lookahead changed a destination", name)
				}
			}
			if len(picks) == 0 {
				if ref.Schedule(Flow{}) != nil {
					t.Fatalf("%s round %d: no lookahead, but the scheduler picks", name, round)
				}
				continue
			}
			if loop >= 0 {
				periodic[name]++
			}
			steps := 3000
			if loop < 0 {
				steps = len(picks)
			}
			for k := 0; k < steps; k++ {
				var want *Dest
				switch {
				case k < len(picks):
					want = picks[k]
				default:
					want = picks[loop+(k-loop)%(len(picks)-loop)]
				}
				got := ref.Schedule(Flow{})
				if got == nil || got.ID != want.ID {
					t.Fatalf("%s round %d: pick %d is %v, the lookahead (loop %d of %d) says %d", name, round, k, got, loop, len(picks), want.ID)
				}
				countPick(got)
				ref.Changed(got)
			}
		}
	}
	for _, name := range []string{"lc", "wlc", "sed", "nq", "ovf"} {
		if periodic[name] < 100 {
			t.Errorf("%s: periodic in %d rounds only", name, periodic[name])
		}
	}
	t.Logf("rounds with a periodic tail: %v", periodic)
}
