package dataplane

import (
	"testing"
	"time"
)

// TestAgeIndexFiling checks where the deadline index files a key: under
// the second its deadline ends in (rounded up), never before the second
// it looks at next (a deadline passed is due now), never past its
// horizon (a deadline further away is filed at the horizon and judged
// again there), across the wrap of its slots.
func TestAgeIndexFiling(t *testing.T) {
	for _, c := range []struct {
		now, d time.Duration
		want   int64
	}{
		{10 * time.Second, 0, 10},
		{10 * time.Second, time.Nanosecond, 11},
		{10*time.Second + 1, time.Second - 1, 11},
		{10 * time.Second, 900 * time.Second, 910},
	} {
		if got := secondsAfter(c.now, c.d); got != c.want {
			t.Errorf("secondsAfter(%v, %v) = %d, want %d", c.now, c.d, got, c.want)
		}
	}
	a := &agingState{next: 5000}
	for _, c := range []struct{ sec, slot int64 }{
		{4000, 5000 % ageSlots},                // passed: due now
		{5000, 5000 % ageSlots},                // now
		{5001, 5001 % ageSlots},                // next second
		{5000 + ageSlots - 1, 4999 % ageSlots}, // the horizon, wrapped
		{5000 + 10*ageSlots, 4999 % ageSlots},  // beyond: at the horizon
	} {
		if got := a.slotOf(c.sec); got != c.slot {
			t.Errorf("second %d filed in slot %d, want %d", c.sec, got, c.slot)
		}
	}
	a.file4(5001, ageKey4{stamp: 7})
	a.file6(4000, ageKey6{stamp: 8})
	if a.held != 2 || len(a.slots[5001%ageSlots].v4) != 1 || len(a.slots[5000%ageSlots].v6) != 1 {
		t.Errorf("held %d; slot 5001: %v, slot 5000: %v", a.held, a.slots[5001%ageSlots].v4, a.slots[5000%ageSlots].v6)
	}
}
