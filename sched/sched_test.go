package sched

import (
	"net/netip"
	"testing"
)

// dests builds destinations in the kernel's list order from the order
// they were added: each new one goes to the front (list_add_rcu).
func added(weights ...int) []*Dest {
	var out []*Dest
	for i, w := range weights {
		d := &Dest{ID: uint32(i + 1), Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), Weight: w}
		out = append([]*Dest{d}, out...)
	}
	return out
}

func picks(s Scheduler, n int) []uint32 {
	var out []uint32
	for i := 0; i < n; i++ {
		d := s.Schedule(Flow{})
		if d == nil {
			out = append(out, 0)
			continue
		}
		out = append(out, d.ID)
	}
	return out
}

func equal(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func newSched(t *testing.T, name string) Scheduler {
	t.Helper()
	s, err := New(name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRegistry(t *testing.T) {
	for _, n := range []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh"} {
		s := newSched(t, n)
		if s.Name() != n {
			t.Errorf("New(%q).Name() = %q", n, s.Name())
		}
	}
	if _, err := New("nope"); err == nil {
		t.Error("unknown scheduler accepted")
	}
}

// rr: reals added 1,2,3 sit in the list as [3 2 1]; the cursor starts at
// the head, so the sequence is 3 2 1 3 2 1 (hand-run of ip_vs_rr_schedule).
func TestRRSequence(t *testing.T) {
	s := newSched(t, "rr")
	ds := added(1, 1, 1)
	s.Update(ds)
	if got, want := picks(s, 6), []uint32{3, 2, 1, 3, 2, 1}; !equal(got, want) {
		t.Fatalf("rr: got %v want %v", got, want)
	}
	// Weight 0 and overload are skipped.
	ds[1].Weight = 0 // real 2
	ds[0].Overloaded = true
	s.Update(ds)
	if got, want := picks(s, 3), []uint32{1, 1, 1}; !equal(got, want) {
		t.Fatalf("rr skipping: got %v want %v", got, want)
	}
	ds[0].Overloaded, ds[2].Weight = false, 0
	s.Update(ds)
	ds[0].Weight = 0
	if got := picks(s, 1); got[0] != 0 {
		t.Fatalf("rr with nothing available picked %v", got)
	}
}

// Deleting the real the cursor sits on moves the cursor to its
// predecessor (ip_vs_rr_del_dest), so the next pick is its successor.
func TestRRDeleteCursor(t *testing.T) {
	s := newSched(t, "rr")
	ds := added(1, 1, 1) // [3 2 1]
	s.Update(ds)
	if got := picks(s, 2); !equal(got, []uint32{3, 2}) {
		t.Fatalf("got %v", got)
	}
	s.Update([]*Dest{ds[0], ds[2]}) // delete 2: cursor -> 3
	if got, want := picks(s, 3), []uint32{1, 3, 1}; !equal(got, want) {
		t.Fatalf("after delete: got %v want %v", got, want)
	}
}

// wrr with weights 4,3,2 added in that order: list [2:w2 (id3), w3 (id2),
// w4 (id1)], gcd 1, mw 4. Passes at cw=4: id1; cw=3: id2,id1; cw=2:
// id3,id2,id1; cw=1: id3,id2,id1.
func TestWRRSequence(t *testing.T) {
	s := newSched(t, "wrr")
	ds := added(4, 3, 2)
	s.Update(ds)
	// The last Update saw cw==0 on the first add and set it to mw then;
	// later adds keep cw (1 after the first add's mw of 4-(4-1)=1).
	got := picks(s, 18)
	count := map[uint32]int{}
	for _, id := range got[:9] {
		count[id]++
	}
	if count[1] != 4 || count[2] != 3 || count[3] != 2 {
		t.Fatalf("wrr one cycle %v: counts %v, want 4:3:2", got[:9], count)
	}
	if !equal(got[:9], got[9:]) {
		t.Fatalf("wrr cycle not periodic: %v", got)
	}
}

// The first cycle from a freshly built scheduler, computed by hand from
// ip_vs_wrr_schedule with cw = mw = 4 at the head.
func TestWRRFreshCycle(t *testing.T) {
	s := &wrr{cl: -1}
	ds := added(4, 3, 2) // [id3:w2, id2:w3, id1:w4]
	s.Update(ds)
	s.cw = s.mw // as ip_vs_wrr_init_svc with all dests present
	want := []uint32{1, 2, 1, 3, 2, 1, 3, 2, 1}
	if got := picks(s, 9); !equal(got, want) {
		t.Fatalf("got %v want %v", got, want)
	}
}

func TestWRRRatiosProperty(t *testing.T) {
	for _, ws := range [][]int{{1, 1}, {3, 1}, {5, 3, 2}, {10, 20, 30}, {7, 0, 3}, {100, 1}} {
		s := newSched(t, "wrr")
		ds := added(ws...)
		s.Update(ds)
		total := 0
		for _, w := range ws {
			total += w
		}
		// Any window of one full cycle holds each real weight/gcd times.
		g := 0
		for _, w := range ws {
			if w > 0 {
				g = gcd(w, g)
			}
		}
		n := total / g
		picks(s, 7) // start mid-cycle
		count := map[uint32]int{}
		for _, id := range picks(s, n*3) {
			count[id]++
		}
		for i, w := range ws {
			if count[uint32(i+1)] != 3*w/g {
				t.Errorf("weights %v: real %d got %d picks over 3 cycles, want %d", ws, i+1, count[uint32(i+1)], 3*w/g)
			}
		}
	}
}

func TestWRRAllZero(t *testing.T) {
	s := newSched(t, "wrr")
	s.Update(added(0, 0))
	if d := s.Schedule(Flow{}); d != nil {
		t.Fatalf("picked %v with all weights 0", d.ID)
	}
}

// lc takes the least active*256+inactive; ties go to the list front.
func TestLC(t *testing.T) {
	s := newSched(t, "lc")
	ds := added(1, 1, 1)                        // [3 2 1]
	ds[0].ActiveConns = 1                       // id3: 256
	ds[1].InactConns = 300                      // id2: 300
	ds[2].ActiveConns, ds[2].InactConns = 0, 10 // id1: 10
	s.Update(ds)
	if d := s.Schedule(Flow{}); d.ID != 1 {
		t.Fatalf("lc picked %d, want 1", d.ID)
	}
	ds[2].Weight = 0
	s.Update(ds) // a weight change arrives through Update
	if d := s.Schedule(Flow{}); d.ID != 3 {
		t.Fatalf("lc picked %d, want 3 (id1 drained)", d.ID)
	}
}

// wlc compares overhead/weight by cross-multiplication.
func TestWLC(t *testing.T) {
	s := newSched(t, "wlc")
	ds := added(1, 3)     // [id2:w3, id1:w1]
	ds[0].ActiveConns = 2 // 512/3 = 170.6
	ds[1].ActiveConns = 1 // 256/1
	s.Update(ds)
	if d := s.Schedule(Flow{}); d.ID != 2 {
		t.Fatalf("wlc picked %d, want 2", d.ID)
	}
	ds[0].ActiveConns = 4 // 1024/3 = 341 > 256
	s.Changed(ds[0])
	if d := s.Schedule(Flow{}); d.ID != 1 {
		t.Fatalf("wlc picked %d, want 1", d.ID)
	}
	ds[1].Weight = 0
	s.Update(ds)
	for i := 0; i < 3; i++ {
		if d := s.Schedule(Flow{}); d.ID != 2 {
			t.Fatalf("wlc picked weight-0 real %d", d.ID)
		}
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}
