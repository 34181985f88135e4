package dataplane

import (
	"strings"
	"testing"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// TestTCPStatesMatchConntrack checks conntrack's IPVS state numbers and
// names, which the sweep and -Lnc use, against bpf/consts.h's enum
// tcp_state as the object's BTF has it.
func TestTCPStatesMatchConntrack(t *testing.T) {
	names, err := enumNames("tcp_state", "TCPS_", int(bpfobj.DirectorTcpStateTCPS_LAST))
	if err != nil {
		t.Fatal(err)
	}
	for v, name := range names {
		if got := conntrack.State(v).String(); got != strings.ToUpper(name) {
			t.Errorf("state %d: conntrack calls it %s, bpf/consts.h TCPS_%s", v, got, strings.ToUpper(name))
		}
	}
}

// TestStatNames checks that every counter has a distinct name from the
// enum and that the Go indexes name the counters they say.
func TestStatNames(t *testing.T) {
	names := StatNames()
	if len(names) != NumStats {
		t.Fatalf("%d names for %d counters", len(names), NumStats)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			t.Errorf("counter name %q twice", n)
		}
		seen[n] = true
	}
	for idx, want := range map[int]string{StatPass: "pass", StatDropNoXSK: "drop_no_xsk", StatTOASkipped: "toa_skipped"} {
		if names[idx] != want {
			t.Errorf("counter %d is %q, want %q", idx, names[idx], want)
		}
	}
}
