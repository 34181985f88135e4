package dataplane

import (
	"strings"
	"testing"

	"github.com/xipvs/xipvs/config"
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

// TestFwdMethodsMatchBTF checks the forwarding methods' table (config's
// FwdMethods: what every other part of xipvs reads) against bpf/consts.h's
// enum fwd_method as the object's BTF has it, and the data plane's
// constants against both.
func TestFwdMethodsMatchBTF(t *testing.T) {
	names, err := enumValues("fwd_method", "FWD_")
	if err != nil {
		t.Fatal(err)
	}
	dp := map[config.Fwd]Fwd{config.FwdRoute: FwdRoute, config.FwdTunnel: FwdTunnel, config.FwdMasq: FwdMasq, config.FwdFullNAT: FwdFullNAT}
	for f, m := range config.FwdMethods {
		if got := strings.ToUpper(names[uint64(m.Code)]); got != m.CName {
			t.Errorf("%s: code %d is FWD_%s in the object, the table says FWD_%s", m.Name, m.Code, got, m.CName)
		}
		if Fwd(m.Code) != dp[config.Fwd(f)] {
			t.Errorf("%s: the table's code %d, the data plane's %d", m.Name, m.Code, dp[config.Fwd(f)])
		}
	}
	if len(dp) != len(config.FwdMethods) {
		t.Errorf("%d methods in the table, %d in the data plane", len(config.FwdMethods), len(dp))
	}
}

// TestSharedConsts checks the limits Go shares with the program against
// bpf/consts.h's enum shared_const, which bpf2go generated from the
// object's BTF (a #define never reaches it).
func TestSharedConsts(t *testing.T) {
	for name, c := range map[string]struct{ goVal, c int }{
		"DefaultServiceTableSize": {DefaultServiceTableSize, int(bpfobj.DirectorSharedConstSC_MAX_SERVICES)},
		"MaxReals":                {MaxReals, int(bpfobj.DirectorSharedConstSC_MAX_REALS)},
		"MaxIfaces":               {MaxIfaces, int(bpfobj.DirectorSharedConstSC_MAX_IFACES)},
		"MaxQueues":               {MaxQueues, int(bpfobj.DirectorSharedConstSC_MAX_QUEUES)},
		"DefaultConnTableSize":    {DefaultConnTableSize, int(bpfobj.DirectorSharedConstSC_MAX_CONNS)},
		"addrSlots":               {addrSlots, int(bpfobj.DirectorSharedConstSC_ADDR_SLOTS)},
		"ReapMax":                 {ReapMax, int(bpfobj.DirectorSharedConstSC_REAP_MAX)},
		"MaxHashBuckets":          {MaxHashBuckets, int(bpfobj.DirectorSharedConstSC_MH_TAB_SIZE)},
		"PickUnavailable":         {PickUnavailable, int(bpfobj.DirectorSharedConstSC_PICK_UNAVAIL)},
	} {
		if c.goVal != c.c {
			t.Errorf("%s is %d in Go, %d in bpf/consts.h", name, c.goVal, c.c)
		}
	}
}
