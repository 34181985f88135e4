package dataplane_test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"

	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
	"github.com/xipvs/xipvs/sched"
)

// TestXDPHashPicksAreTheSchedulers is the differential test of sh, dh
// and mh in XDP: Go's scheduler (the kernel's semantics, sched/) over
// random weights, flags and unavailable reals builds the table; XDP,
// hashing each new flow as the kernel does, sends it to the real Go's
// Schedule gives that flow, for thousands of random IPv4 and IPv6
// clients, or to the slow path exactly where the table leaves the
// bucket to Go.
func TestXDPHashPicksAreTheSchedulers(t *testing.T) {
	d := openDirector(t)
	r := rand.New(rand.NewPCG(21, 22))
	kinds := map[sched.HashKind]dataplane.PickKind{sched.HashSrc: dataplane.PickSH, sched.HashSrcPort: dataplane.PickSHPort,
		sched.HashDst: dataplane.PickDH, sched.HashMH: dataplane.PickMH, sched.HashMHPort: dataplane.PickMHPort}
	const n = 5
	macOf := func(id uint32) net.HardwareAddr { return net.HardwareAddr{2, 0xee, 0, 0, 1, byte(id)} }
	vips := []netip.Addr{vip, vip6}
	for i, v := range vips {
		if err := d.SetService(dataplane.ServiceKey{VIP: v, Port: 80, Proto: 6}, uint32(10+i), 0); err != nil {
			t.Fatal(err)
		}
	}
	for id := uint32(1); id <= 2*n; id++ {
		a := netip.AddrFrom4([4]byte{10, 1, 0, byte(100 + id)})
		if id > n {
			a = netip.MustParseAddr(fmt.Sprintf("2001:db8:1::%x", 100+id))
		}
		if err := d.SetReal(100+id, dataplane.Real{Addr: a, Ifindex: loIfindex, MAC: macOf(100 + id), Fwd: dataplane.FwdRoute, MTU: 1500}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string][2]int{}
	for round := 0; round < 24; round++ {
		name := []string{"sh", "dh", "mh"}[round%3]
		for fam, v := range vips {
			s, err := sched.New(name)
			if err != nil {
				t.Fatal(err)
			}
			if f, ok := s.(sched.Flagged); ok {
				f.SetFlags(sched.Flags(r.IntN(4)))
			}
			var dests []*sched.Dest
			for i := 0; i < n; i++ {
				w := r.IntN(4)
				if round%4 == 0 {
					w = 1 + r.IntN(3) // all available
				}
				dests = append(dests, &sched.Dest{ID: uint32(101 + fam*n + i), Weight: w, LastWeight: 1 + r.IntN(3)})
			}
			s.Update(dests)
			kind, ids := sched.HashIDs(s.(sched.Hasher), dataplane.PickUnavailable)
			sid := uint32(10 + fam)
			if err := d.SetHashPicks(sid, kinds[kind], ids); err != nil {
				t.Fatal(err)
			}
			fwd, slow := 0, 0
			for k := 0; k < 300; k++ {
				var src netip.Addr
				if fam == 0 {
					src = netip.AddrFrom4([4]byte{198, 51, byte(r.IntN(256)), byte(r.IntN(256))})
				} else {
					src = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0x77, byte(r.IntN(256)), 0, 0, 0, 0, 0, 0, byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))})
				}
				sport := uint16(1024 + r.IntN(60000))
				fr := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: src, Dst: v, SrcPort: sport, DstPort: 80, SYN: true}.Build()
				verdict, out, err := d.Run(fr, 0, 0)
				if err != nil {
					t.Fatal(err)
				}
				want := s.Schedule(sched.Flow{Src: src, Dst: v, SrcPort: sport, DstPort: 80, Proto: 6})
				switch verdict {
				case dataplane.XDPTx:
					fwd++
					if want == nil || net.HardwareAddr(out[0:6]).String() != macOf(want.ID).String() {
						t.Fatalf("%s (%v) %v:%d: XDP sent it to %x, Go's %s picks %v", name, kind, src, sport, out[0:6], name, want)
					}
				case dataplane.XDPDrop: // the slow path's (none bound)
					slow++
				default:
					t.Fatalf("%s: verdict %v", name, verdict)
				}
			}
			if round%4 == 0 && slow != 0 {
				// Every real available: every bucket has its real, no
				// flow is Go's.
				t.Fatalf("%s (%v), every real available: %d of 300 flows to the slow path", name, kind, slow)
			}
			c := seen[name]
			seen[name] = [2]int{c[0] + fwd, c[1] + slow}
		}
	}
	for _, name := range []string{"sh", "dh", "mh"} {
		if seen[name][0] < 1000 {
			t.Errorf("%s: %v flows scheduled in XDP, slow path", name, seen[name])
		}
	}
	t.Logf("flows in XDP, to the slow path: %v", seen)
}
