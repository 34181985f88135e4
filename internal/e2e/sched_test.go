package e2e

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/xipvs/xipvs/internal/api"
	"github.com/xipvs/xipvs/sched"
)

// TestLeastConnSchedulersInXDP: lc, wlc, sed and nq services (DR, IPv4
// and IPv6, reals weighted 1 and 2) take real HTTP connections, each
// scheduled in XDP from the lookahead Go installed, and in the very
// order the kernel's scheduler of that name picks them when each pick
// counts as a new connection (the sweep is held off, so no recount from
// the table moves the counts between them): wlc 1:2 by weight, lc
// alternating, sed all on the heavier real and nq all on the first idle
// one (every finished connection is inactive, and these two count
// active ones only). Not one new flow goes to the Go slow path.
func TestLeastConnSchedulersInXDP(t *testing.T) {
	lab := newDRLab(t, "lcx", "--sweep-interval", "1h")
	vip6 := addDR6(t, lab, true)
	lab.serveEcho(t, 81, 82, 83, 84)
	reals := map[netip.Addr][2]string{
		lab.vip: {"10.77.0.11", "10.77.0.12"},
		vip6:    {"[fd77::11]", "[fd77::12]"},
	}
	names := map[string]string{"10.77.0.11": "rs1", "10.77.0.12": "rs2", "[fd77::11]": "rs1", "[fd77::12]": "rs2"}
	before, err := api.NewClient(lab.Socket).Info()
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"lc", "wlc", "sed", "nq"} {
		port := uint16(81 + i)
		for vip, rs := range reals {
			vs := netip.AddrPortFrom(vip, port)
			lab.adm(t, "-A", "-t", vs.String(), "-s", name)
			for w, r := range rs {
				lab.adm(t, "-a", "-t", vs.String(), "-r", fmt.Sprintf("%s:%d", r, port), "-g", "-w", fmt.Sprint(w+1))
			}
			// The kernel's scheduler over the same list (newest first),
			// each pick counted.
			ref, _ := sched.New(name)
			list := []*sched.Dest{{ID: 2, Weight: 2, LastWeight: 2}, {ID: 1, Weight: 1, LastWeight: 1}}
			ref.Update(list)
			var want, got []string
			for n := 0; n < 12; n++ {
				d := ref.Schedule(sched.Flow{})
				d.InactConns++
				ref.Changed(d)
				want = append(want, names[rs[d.ID-1]])
				who, _, _ := lab.askAt(t, vs)
				got = append(got, who)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s on %v: the connections went to %v, the kernel's %s picks %v", name, vs, got, name, want)
			}
		}
	}
	after, err := api.NewClient(lab.Socket).Info()
	if err != nil {
		t.Fatal(err)
	}
	if n := after.Counters["slow_new_conns"] - before.Counters["slow_new_conns"]; n != 0 {
		t.Errorf("%d new flows scheduled by the slow path, want none", n)
	}
	if n := after.Counters["xdp_forward"] - before.Counters["xdp_forward"]; n < 96 {
		t.Errorf("XDP forwarded %d packets for 96 connections", n)
	}
}
