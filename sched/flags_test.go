package sched

import (
	"errors"
	"slices"
	"testing"
)

// TestParseFlags follows ipvsadm's parse_sched_flags: generic names for
// every scheduler, a scheduler's own names only for it.
func TestParseFlags(t *testing.T) {
	for _, c := range []struct {
		sched string
		names []string
		want  Flags
		err   error
	}{
		{"wlc", nil, 0, nil},
		{"wlc", []string{"flag-1", "flag-3"}, FlagFallback | Flag3, nil},
		{"sh", []string{"sh-fallback", "sh-port"}, FlagFallback | FlagPort, nil},
		{"sh", []string{"flag-2"}, FlagPort, nil},
		{"mh", []string{"mh-port"}, FlagPort, nil},
		{"mh", []string{"sh-port"}, 0, ErrIncompatibleFlag},
		{"rr", []string{"mh-fallback"}, 0, ErrIncompatibleFlag},
		{"rr", []string{"fallback"}, 0, ErrBadFlag},
		{"rr", []string{""}, 0, ErrBadFlag},
	} {
		got, err := ParseFlags(c.sched, c.names)
		if !errors.Is(err, c.err) || got != c.want {
			t.Errorf("ParseFlags(%s, %q) = %v, %v; want %v, %v", c.sched, c.names, got, err, c.want, c.err)
		}
	}
}

func TestFlagNames(t *testing.T) {
	for _, c := range []struct {
		sched string
		f     Flags
		want  []string
	}{
		{"sh", FlagFallback | FlagPort, []string{"sh-fallback", "sh-port"}},
		{"mh", FlagPort | Flag3, []string{"mh-port", "flag-3"}},
		{"wrr", FlagFallback, []string{"flag-1"}},
		{"wrr", 0, nil},
	} {
		if got := c.f.Names(c.sched); !slices.Equal(got, c.want) {
			t.Errorf("%v.Names(%s) = %q, want %q", c.f, c.sched, got, c.want)
		}
	}
}

func TestKnown(t *testing.T) {
	for _, n := range []string{"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo", "ovf", "twos"} {
		if !Known(n) {
			t.Errorf("%s unknown", n)
		}
	}
	for _, n := range []string{"", "WLC", "p2c", "fo "} {
		if Known(n) {
			t.Errorf("%q known", n)
		}
	}
}

// TestCycleRepeats: a Cycler's cycle is what its Schedule returns, and
// the next period repeats it; the scheduler itself is left as it was.
func TestCycleRepeats(t *testing.T) {
	for _, name := range []string{"rr", "wrr"} {
		for _, weights := range [][]int{{1}, {1, 1, 1}, {3, 1}, {4, 6, 2}, {5, 0, 3, 7}, {0, 2}} {
			s, _ := New(name)
			var dests []*Dest
			for i, w := range weights {
				dests = append(dests, &Dest{ID: uint32(i + 1), Weight: w, LastWeight: w})
			}
			s.Update(dests)
			// Start mid-way: a few picks first.
			for i := 0; i < 2; i++ {
				s.Schedule(Flow{})
			}
			cyc := s.(Cycler).Cycle(1024)
			if cyc == nil {
				t.Fatalf("%s %v: no cycle", name, weights)
			}
			for i := 0; i < 3*len(cyc); i++ {
				if got := s.Schedule(Flow{}); got != cyc[i%len(cyc)] {
					t.Fatalf("%s %v: pick %d is %d, the cycle says %d", name, weights, i, got.ID, cyc[i%len(cyc)].ID)
				}
			}
		}
	}
	s, _ := New("wrr")
	s.Update([]*Dest{{ID: 1, Weight: 1000}, {ID: 2, Weight: 999}})
	if c := s.(Cycler).Cycle(1024); c != nil {
		t.Errorf("a cycle of %d picks longer than the maximum", len(c))
	}
}
