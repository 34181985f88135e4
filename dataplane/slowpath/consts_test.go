package slowpath

import (
	"testing"

	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// TestSharedConsts checks the protocol numbers the Go transform and SYN
// proxy share with the program against bpf/consts.h's enum shared_const,
// which bpf2go generated from the object's BTF.
func TestSharedConsts(t *testing.T) {
	for name, c := range map[string]struct{ goVal, c int }{
		"ipipHLen":      {ipipHLen, int(bpfobj.DirectorSharedConstSC_IPIP_HLEN)},
		"optTOA":        {optTOA, int(bpfobj.DirectorSharedConstSC_TCPOPT_TOA)},
		"tcpOptLenTo":   {tcpOptLenTo, int(bpfobj.DirectorSharedConstSC_TCPOLEN_TOA)},
		"tsOptWScale":   {tsOptWScale, int(bpfobj.DirectorSharedConstSC_TS_OPT_WSCALE)},
		"tsOptSACK":     {tsOptSACK, int(bpfobj.DirectorSharedConstSC_TS_OPT_SACK)},
		"tsOptMSSShift": {tsOptMSSShift, int(bpfobj.DirectorSharedConstSC_TS_OPT_MSS_SHIFT)},
	} {
		if c.goVal != c.c {
			t.Errorf("%s is %d in Go, %d in bpf/consts.h", name, c.goVal, c.c)
		}
	}
}

// TestTCPStatesMatchProgram checks the Go transform's copy of IPVS's TCP
// state table against the program's (bpf/conn.h tcp_states), read from
// the object.
func TestTCPStatesMatchProgram(t *testing.T) {
	spec, err := bpfobj.LoadDirector()
	if err != nil {
		t.Fatal(err)
	}
	v, ok := spec.Variables["tcp_states"]
	if !ok {
		t.Fatal("no tcp_states in the object")
	}
	var c [3][4][11]uint8
	if err := v.Get(&c); err != nil {
		t.Fatal(err)
	}
	if c != tcpStates {
		t.Errorf("tcp_states differ:\nC:  %v\nGo: %v", c, tcpStates)
	}
}
