package sched

import (
	"math"
	"math/rand/v2"
	"testing"
)

// dests builds a kernel-order list: weights, active connections.
func foDests(ws, active []int) []*Dest {
	var ds []*Dest
	for i, w := range ws {
		ds = append(ds, &Dest{ID: uint32(i + 1), Weight: w, LastWeight: w, ActiveConns: active[i]})
	}
	return ds
}

// TestFailover: fo takes the highest weight, the first of equals, never
// weight 0 or an overloaded destination, whatever the counts.
func TestFailover(t *testing.T) {
	for _, c := range []struct {
		ws       []int
		overload int // index of an overloaded destination, or -1
		want     uint32
	}{
		{[]int{1, 3, 2}, -1, 2},
		{[]int{2, 3, 3}, -1, 2}, // the first of equals
		{[]int{2, 3, 3}, 1, 3},  // the next when it is overloaded
		{[]int{0, 0}, -1, 0},    // nobody
		{[]int{0, 1}, -1, 2},
	} {
		s, _ := New("fo")
		ds := foDests(c.ws, make([]int, len(c.ws)))
		for _, d := range ds {
			d.ActiveConns, d.InactConns = 1000, 1000 // counts do not matter
		}
		if c.overload >= 0 {
			ds[c.overload].Overloaded = true
		}
		s.Update(ds)
		got := s.Schedule(Flow{})
		if (got == nil && c.want != 0) || (got != nil && got.ID != c.want) {
			t.Errorf("fo %v (overloaded %d): %v, want %d", c.ws, c.overload, got, c.want)
		}
		if cyc := s.(Cycler).Cycle(16); (c.want == 0) != (cyc == nil) || (cyc != nil && (len(cyc) != 1 || cyc[0].ID != c.want)) {
			t.Errorf("fo %v: cycle %v", c.ws, cyc)
		}
	}
}

// TestOverflow: ovf keeps every connection on the highest weight until
// its active connections exceed its weight, then overflows to the next
// highest; inactive connections do not count.
func TestOverflow(t *testing.T) {
	for _, c := range []struct {
		ws, active []int
		want       uint32
	}{
		{[]int{1, 3, 2}, []int{0, 0, 0}, 2},
		{[]int{1, 3, 2}, []int{0, 3, 0}, 2}, // 3 is not more than 3
		{[]int{1, 3, 2}, []int{0, 4, 0}, 3}, // overflow to weight 2
		{[]int{1, 3, 2}, []int{0, 4, 3}, 1},
		{[]int{1, 3, 2}, []int{2, 4, 3}, 0}, // everyone full: nobody
		{[]int{2, 2}, []int{0, 0}, 1},       // the first of equals
		{[]int{0, 1}, []int{0, 0}, 2},
	} {
		s, _ := New("ovf")
		ds := foDests(c.ws, c.active)
		for _, d := range ds {
			d.InactConns = 5000
		}
		s.Update(ds)
		got := s.Schedule(Flow{})
		if (got == nil && c.want != 0) || (got != nil && got.ID != c.want) {
			t.Errorf("ovf %v active %v: %v, want %d", c.ws, c.active, got, c.want)
		}
	}
}

// TestTwosPick: ip_vs_twos_schedule with given draws over weights 1, 2,
// 3 (sum 6, draws in [0, 6]): a draw of 0 or 1 lands on the first, 2-3 on
// the second, 4-6 on the third; of the two, the lower overhead per
// weight wins, the first draw's on a tie.
func TestTwosPick(t *testing.T) {
	at := func(v int) uint32 { return uint32((uint64(v)<<32 + 6) / 7) } // below(at(v), 7) == v
	for v := 0; v <= 6; v++ {
		if got := below(at(v), 7); got != v {
			t.Fatalf("below(at(%d)) = %d", v, got)
		}
	}
	for _, c := range []struct {
		r1, r2   int
		overhead []int // active×256+inactive as inactive counts
		want     uint32
	}{
		{0, 0, []int{0, 0, 0}, 1},
		{1, 1, []int{0, 0, 0}, 1},
		{2, 3, []int{0, 0, 0}, 2},
		{6, 4, []int{0, 0, 0}, 3},
		{1, 5, []int{2, 0, 6}, 1}, // 2/1 == 6/3: a tie, the first draw's
		{1, 5, []int{3, 0, 6}, 3}, // 3/1 > 6/3
		{5, 2, []int{0, 5, 7}, 3}, // 7/3 < 5/2
		{5, 2, []int{0, 4, 7}, 2}, // 7/3 > 4/2
	} {
		ds := foDests([]int{1, 2, 3}, []int{0, 0, 0})
		for i, o := range c.overhead {
			ds[i].InactConns = o
		}
		if got := twosPick(ds, [2]uint32{at(c.r1), at(c.r2)}); got == nil || got.ID != c.want {
			t.Errorf("draws %d, %d over overheads %v: %v, want %d", c.r1, c.r2, c.overhead, got, c.want)
		}
	}
}

// TestTwosDraws: twos's lookahead is pick for pick what Schedule does
// with each pick counted; after the data plane took k of its picks
// (Consumed), Schedule goes on with the lookahead's pick k+1 when the
// counts are the same; its picks spread by weight.
func TestTwosDraws(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for round := 0; round < 200; round++ {
		n := 1 + r.IntN(6)
		mk := func() []*Dest {
			ds := make([]*Dest, n)
			for i := range ds {
				ds[i] = &Dest{ID: uint32(i + 1), Weight: (i*7 + round) % 5, InactConns: (i * 13 * round) % 40}
				if round%3 == 0 {
					ds[i].UThreshold = ds[i].InactConns + 1 + (i*round)%50
				}
			}
			return ds
		}
		s := &twos{}
		ds := mk()
		s.Update(ds)
		picks, loop := s.Lookahead(300)
		if loop != -1 {
			t.Fatalf("twos lookahead loops at %d", loop)
		}
		if len(picks) == 0 {
			if s.Schedule(Flow{}) != nil {
				t.Fatal("no lookahead, but Schedule picks")
			}
			continue
		}
		k := r.IntN(len(picks))
		for i := 0; i < k; i++ { // the data plane's picks, counted
			countPick(picks[i])
		}
		s.Consumed(k)
		for i := k; i < len(picks); i++ {
			got := s.Schedule(Flow{})
			if got != picks[i] {
				t.Fatalf("round %d: pick %d is %v, the lookahead says %v", round, i, got, picks[i])
			}
			countPick(got)
		}
	}
	// Weights 1:2:3, every pick counted: shares near the weights.
	s := &twos{}
	ds := foDests([]int{1, 2, 3}, []int{0, 0, 0})
	s.Update(ds)
	const n = 60000
	for i := 0; i < n; i++ {
		d := s.Schedule(Flow{})
		d.InactConns++
	}
	for i, d := range ds {
		if share := float64(d.InactConns) / n; math.Abs(share-float64(i+1)/6) > 0.02 {
			t.Errorf("weight %d: share %.3f, want about %.3f", d.Weight, share, float64(i+1)/6)
		}
	}
}
