package server

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/sched"
)

// TestThresholdsInXDPAreGoDeciding: for rr, wrr and fo (a cycle) and
// sh and dh (a table), with upper thresholds on two reals, the real each
// arrival gets ("XDP" taking its pick while the real has room, as
// bpf/picks.h does, else the slow path) is the one the same scheduler
// picks for the same arrivals, reals, weights and counts, as IPVS binds
// them: the real that reaches its threshold is skipped until a recount
// finds it under the lower one.
func TestThresholdsInXDPAreGoDeciding(t *testing.T) {
	for i, name := range []string{"rr", "wrr", "fo", "sh", "dh"} {
		for seed := range uint64(4) {
			t.Run(fmt.Sprintf("%s/%d", name, seed), func(t *testing.T) {
				thresholdRun(t, rand.New(rand.NewPCG(seed, uint64(i))), name)
			})
		}
	}
}

// hashBucket is the bucket sh and dh hash addr to (hash_32 of the
// address in host order, 8 bits), as bpf/picks.h computes it.
func hashBucket(addr netip.Addr) uint32 {
	b := addr.As4()
	return (binary.BigEndian.Uint32(b[:]) * 0x61C88647) >> 24
}

func thresholdRun(t *testing.T, r *rand.Rand, name string) {
	uthresh := []int{0, 30, 200, 0}
	if name == "dh" {
		uthresh = []int{40, 30, 200, 50} // every flow hashes the VIP: to one real
	}
	addrs := []string{"10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.14"}
	weights := []int{1, 2, 3, 1}
	s, dp, _ := newTestServer(t)
	apply(t, s, "-A -t 10.0.0.100:80 -s "+name)
	xopt := func(i int) string {
		if uthresh[i] == 0 {
			return ""
		}
		return fmt.Sprintf(" -x %d", uthresh[i])
	}
	// The reference: the same scheduler given the same reals in the
	// same order of events.
	ref, _ := sched.New(name)
	refDests := map[string]*sched.Dest{}
	var list []*sched.Dest
	for i, a := range addrs {
		apply(t, s, fmt.Sprintf("-a -t 10.0.0.100:80 -r %s -g -w %d%s", a, weights[i], xopt(i)))
		d := &sched.Dest{ID: uint32(i + 1), Addr: netipMust(a), Weight: weights[i], LastWeight: weights[i], UThreshold: uthresh[i]}
		refDests[a] = d
		list = append([]*sched.Dest{d}, list...) // the kernel's list: newest first
		ref.Update(list)
	}
	id := svcID(s, "-A -t 10.0.0.100:80")
	flags := dp.SvcFlags[dataplane.ServiceKey{VIP: vip, Port: 80, Proto: 6}]
	if flags&dataplane.SvcRoom == 0 {
		t.Fatal("not flagged for room")
	}
	realOf := map[uint32]string{}
	for rid, d := range s.reals {
		realOf[rid] = d.cfg.Addr.String()
	}
	xdp, slow, none, overloads := 0, 0, 0, 0
	for step := 0; step < 20000; step++ {
		switch x := r.IntN(1000); {
		case x < 4: // a sweep: the table's counts
			counts := map[uint32]conntrack.Counts{}
			for _, rid := range slices.Sorted(maps.Keys(realOf)) {
				a := realOf[rid]
				c := conntrack.Counts{Active: r.IntN(10), Inactive: r.IntN(150)}
				counts[rid] = c
				refRecount(ref, refDests[a], c)
			}
			s.finishSweep(s.beginSweep(), dataplane.SweepResult{Counts: counts})
			continue
		case x < 5: // a weight change
			i := r.IntN(len(addrs))
			w := 1 + r.IntN(3)
			apply(t, s, fmt.Sprintf("-e -t 10.0.0.100:80 -r %s -g -w %d%s", addrs[i], w, xopt(i)))
			refDests[addrs[i]].Weight, refDests[addrs[i]].LastWeight = w, w
			ref.Update(list)
			continue
		}
		src := netip.AddrFrom4([4]byte{198, 51, byte(r.IntN(256)), byte(r.IntN(256))})
		flow := sched.Flow{Src: src, Dst: vip, SrcPort: uint16(1024 + step%60000), DstPort: 80, Proto: 6}
		want := ref.Schedule(flow)
		if refBind(ref, want) {
			overloads++
		}
		// "XDP": the service's pick for the flow, bound while its real
		// has room.
		var rid uint32
		if picks, ok := dp.Picks[id]; ok && len(picks) > 0 {
			k := dp.Cursors[id]
			rid = picks[k%uint64(len(picks))]
			dp.Cursors[id] = k + 1
		} else if table, ok := dp.HashPicks[id]; ok {
			h := hashBucket(flow.Src)
			if name == "dh" {
				h = hashBucket(flow.Dst)
			}
			rid = table[h]
		}
		got := ""
		if rid != 0 && dp.Bind(rid, flags, false) {
			got = realOf[rid]
			xdp++
		} else {
			dec, ok := s.NewFlow(dataplane.NewFlow{Key: dataplane.ConnKey{Src: flow.Src, Dst: flow.Dst,
				SrcPort: flow.SrcPort, DstPort: 80, Proto: 6}, TCPFlags: dataplane.TCPSyn})
			if ok {
				got = realOf[dec.RealID]
			}
			if want != nil {
				slow++
			} else {
				none++ // no real available
			}
		}
		wantAddr := ""
		if want != nil {
			wantAddr = want.Addr.String()
		}
		if got != wantAddr {
			t.Fatalf("%s: arrival %d went to %q, Go's %s picks %q", name, step, got, name, wantAddr)
		}
	}
	t.Logf("%s -x: %d arrivals bound in XDP, %d by the slow path, %d with no real available; %d times a real reached its threshold",
		name, xdp, slow, none, overloads)
	if overloads == 0 {
		t.Errorf("%s: no real reached its threshold: the test tests nothing", name)
	}
	if xdp < 10*slow {
		t.Errorf("%s: only %d of %d arrivals in XDP", name, xdp, xdp+slow)
	}
}
