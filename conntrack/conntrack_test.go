package conntrack

import (
	"testing"
	"time"
)

func TestDefaultsMatchIPVS(t *testing.T) {
	to := DefaultTimeouts()
	// ipvsadm -L --timeout on a fresh IPVS: 900 120 300.
	if to.TCP[StateEstablished] != 900*time.Second || to.TCP[StateFinWait] != 120*time.Second || to.UDP != 300*time.Second {
		t.Fatalf("defaults %v %v %v", to.TCP[StateEstablished], to.TCP[StateFinWait], to.UDP)
	}
	if to.TCP[StateSynRecv] != time.Minute || to.TCP[StateClose] != 10*time.Second || to.TCP[StateTimeWait] != 2*time.Minute {
		t.Fatal("per-state defaults differ from ip_vs_proto_tcp.c")
	}
}

// Expiry with an injected clock: a connection is alive until its state's
// timeout has passed since it was last seen.
func TestRemaining(t *testing.T) {
	to := DefaultTimeouts()
	seen := 1000 * time.Second
	cases := []struct {
		proto uint8
		state State
		now   time.Duration
		alive bool
	}{
		{ProtoTCP, StateEstablished, seen + 899*time.Second, true},
		{ProtoTCP, StateEstablished, seen + 900*time.Second, false},
		{ProtoTCP, StateSynRecv, seen + 59*time.Second, true},
		{ProtoTCP, StateSynRecv, seen + 61*time.Second, false},
		{ProtoTCP, StateClose, seen + 11*time.Second, false},
		{ProtoUDP, StateNone, seen + 299*time.Second, true},
		{ProtoUDP, StateNone, seen + 301*time.Second, false},
		{ProtoTCP, State(200), seen + 11*time.Second, false}, // unknown: CLOSE's
	}
	for _, c := range cases {
		if got := to.Remaining(c.proto, c.state, seen, c.now) > 0; got != c.alive {
			t.Errorf("%d %v at +%v: alive %v, want %v", c.proto, c.state, c.now-seen, got, c.alive)
		}
	}
}

func TestCounts(t *testing.T) {
	var c Counts
	c.Add(ProtoTCP, StateEstablished)
	c.Add(ProtoTCP, StateSynRecv)
	c.Add(ProtoTCP, StateFinWait)
	c.Add(ProtoUDP, StateNone)
	c.Add(ProtoUDP, StateEstablished) // UDP is never active
	if c.Active != 1 || c.Inactive != 4 {
		t.Fatalf("counts %+v, want 1 active 4 inactive", c)
	}
}

func TestStateNames(t *testing.T) {
	if StateEstablished.String() != "ESTABLISHED" || StateCloseWait.String() != "CLOSE_WAIT" || State(99).String() != "STATE(99)" {
		t.Fatal("state names")
	}
}
