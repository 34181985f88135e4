package server

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/sched"
)

// cycleAddrs is service k's installed pick cycle, as real addresses.
func cycleAddrs(t *testing.T, s *Server, ids []uint32) []string {
	t.Helper()
	var out []string
	for _, id := range ids {
		out = append(out, s.reals[id].cfg.Addr.String())
	}
	return out
}

func svcID(s *Server, line string) uint32 {
	c, _ := config.ParseArgs(fieldsOf(line))
	return s.services[c.Service.ServiceKey].id
}

// TestPickCycles: rr and wrr services get their scheduler's cycle in
// XDP; other schedulers, persistence, FULLNAT reals and thresholds do
// not; a deleted service's cycle goes.
func TestPickCycles(t *testing.T) {
	s, dp, _ := newTestServer(t)
	apply(t, s, "-A -t 10.0.0.100:80 -s wrr")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.11 -g -w 1")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.12 -m -w 2")
	id := svcID(s, "-A -t 10.0.0.100:80")
	got := cycleAddrs(t, s, dp.Picks[id])
	slices.Sort(got)
	if want := []string{"10.0.0.11", "10.0.0.12", "10.0.0.12"}; !slices.Equal(got, want) {
		t.Errorf("wrr 1:2 cycle %v, want %v in some order", got, want)
	}
	for _, c := range []struct{ name, lines string }{
		{"wlc", "-A -t 10.0.0.100:81 -s wlc\n-a -t 10.0.0.100:81 -r 10.0.0.11 -g"},
		{"persistent rr", "-A -t 10.0.0.100:82 -s rr -p\n-a -t 10.0.0.100:82 -r 10.0.0.11 -g"},
		{"rr with a FULLNAT real", "-A -t 10.0.0.100:83 -s rr\n-a -t 10.0.0.100:83 -r 10.0.0.11 -g\n-a -t 10.0.0.100:83 -r 10.0.0.13 -b"},
		{"rr with a threshold", "-A -t 10.0.0.100:84 -s rr\n-a -t 10.0.0.100:84 -r 10.0.0.11 -g -x 10"},
	} {
		if err := s.ApplyLines(context.Background(), lines(t, c.lines+"\n")); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		first := fieldsOf(c.lines)[:3]
		if ids, ok := dp.Picks[svcID(s, first[0]+" "+first[1]+" "+first[2])]; ok {
			t.Errorf("%s: a pick cycle %v", c.name, ids)
		}
	}
	apply(t, s, "-D -t 10.0.0.100:80")
	if _, ok := dp.Picks[id]; ok {
		t.Error("a deleted service's cycle stayed")
	}
}

// TestPickCatchUp: the picks XDP made from a cycle move the scheduler on
// before the service changes, so the next cycle starts where XDP left
// off, as the kernel's rr goes on from its cursor.
func TestPickCatchUp(t *testing.T) {
	s, dp, _ := newTestServer(t)
	apply(t, s, "-A -t 10.0.0.100:80 -s rr")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.11 -g")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.12 -g")
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.13 -g")
	id := svcID(s, "-A -t 10.0.0.100:80")
	// The kernel's rr over the same list: 5 picks, then a fourth real.
	ref, _ := sched.New("rr")
	var dests []*sched.Dest
	for i, a := range []string{"10.0.0.13", "10.0.0.12", "10.0.0.11"} {
		dests = append(dests, &sched.Dest{ID: uint32(i + 1), Addr: netipMust(a), Weight: 1})
	}
	ref.Update(dests)
	var order []string
	for i := 0; i < 5; i++ {
		order = append(order, ref.Schedule(sched.Flow{}).Addr.String())
	}
	if got := cycleAddrs(t, s, dp.Picks[id]); !slices.Equal(got, order[:3]) {
		t.Fatalf("cycle %v, want the kernel's order %v", got, order[:3])
	}
	dp.Cursors[id] = 5 // XDP took five flows from it
	apply(t, s, "-a -t 10.0.0.100:80 -r 10.0.0.14 -g")
	ref.Update(append([]*sched.Dest{{ID: 4, Addr: netipMust("10.0.0.14"), Weight: 1}}, dests...))
	var next []string
	for i := 0; i < 4; i++ {
		next = append(next, ref.Schedule(sched.Flow{}).Addr.String())
	}
	if got := cycleAddrs(t, s, dp.Picks[id]); !slices.Equal(got, next) {
		t.Errorf("after 5 flows in XDP and a new real: cycle %v, want %v", got, next)
	}
}

func netipMust(s string) netip.Addr { return netip.MustParseAddr(s) }
