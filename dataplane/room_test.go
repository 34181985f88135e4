package dataplane_test

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

// TestXDPRoom: a service flagged SvcRoom binds a new connection in XDP
// only while its real has room under its threshold, taking one each
// time; a pick whose real has none left goes to the slow path and takes
// nothing. A persistent service's template follower is bound whatever
// the room, and spends it, as is an lblc entry's flow; an lblcr entry's
// goes to Go. IPv4 and IPv6.
func TestXDPRoom(t *testing.T) {
	d := openDirector(t)
	const rA, rB = 41, 42
	macs := map[uint32]net.HardwareAddr{rA: {2, 0xee, 0, 0, 3, rA}, rB: {2, 0xee, 0, 0, 3, rB}}
	for _, fam := range []struct {
		name      string
		vip       netip.Addr
		client    netip.Addr
		realAddrs [2]netip.Addr
	}{
		{"IPv4", vip, netip.MustParseAddr("198.51.100.7"), [2]netip.Addr{netip.MustParseAddr("10.1.0.41"), netip.MustParseAddr("10.1.0.42")}},
		{"IPv6", vip6, netip.MustParseAddr("2001:db8:77::7"), [2]netip.Addr{netip.MustParseAddr("2001:db8:1::41"), netip.MustParseAddr("2001:db8:1::42")}},
	} {
		t.Run(fam.name, func(t *testing.T) {
			for i, id := range []uint32{rA, rB} {
				if err := d.SetReal(id, dataplane.Real{Addr: fam.realAddrs[i], Ifindex: loIfindex, MAC: macs[id], Fwd: dataplane.FwdRoute, MTU: 1500}); err != nil {
					t.Fatal(err)
				}
			}
			sk := dataplane.ServiceKey{VIP: fam.vip, Port: 80, Proto: 6}
			if err := d.SetService(sk, 1, dataplane.SvcRoom); err != nil {
				t.Fatal(err)
			}
			if _, err := d.SetPicks(1, []uint32{rA, rB}, 0); err != nil {
				t.Fatal(err)
			}
			if err := d.SetRoom(rA, 2); err != nil {
				t.Fatal(err)
			}
			if err := d.SetRoom(rB, dataplane.RoomUnlimited); err != nil {
				t.Fatal(err)
			}
			picksBefore, _ := d.RealPicks(rA)
			sport := uint16(30000)
			syn := func(src netip.Addr) uint32 {
				t.Helper()
				sport++
				v, out := run(t, d, testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: src, Dst: fam.vip, SrcPort: sport, DstPort: 80, SYN: true}.Build())
				switch v {
				case dataplane.XDPTx:
					for id, mac := range macs {
						if bytes.Equal(out[0:6], mac) {
							return id
						}
					}
					t.Fatalf("SYN: sent to %x", out[0:6])
				case dataplane.XDPDrop, dataplane.XDPRedirect: // the slow path's (none bound here)
					return 0
				}
				t.Fatalf("SYN: verdict %v", v)
				return 0
			}
			// The cycle alternates A, B: A takes its two, then its turns
			// go to the slow path while B's stay in XDP.
			var got []uint32
			for range 8 {
				got = append(got, syn(fam.client))
			}
			want := []uint32{rA, rB, rA, rB, 0, rB, 0, rB}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("reals bound %v, want %v (0: the slow path)", got, want)
				}
			}
			if room, _ := d.Room(rA); room != 0 {
				t.Errorf("A's room after its two: %d, want 0 (a refused pick takes none)", room)
			}
			if n, _ := d.RealPicks(rA); n != picksBefore+2 {
				t.Errorf("connections XDP bound to A: %d, want %d", n-picksBefore, 2)
			}
			// Go gives room back (a recount): A's turn binds again.
			if err := d.SetRoom(rA, 1); err != nil {
				t.Fatal(err)
			}
			if got := syn(fam.client); got != rA {
				t.Errorf("after a recount, A's turn went to %d", got)
			}
			// A persistent service: the client's template follower is
			// bound to A with no room left, spending it.
			if err := d.SetService(sk, 1, dataplane.SvcRoom|dataplane.SvcPersist|dataplane.SvcPersistMask(fam.client.BitLen())); err != nil {
				t.Fatal(err)
			}
			if err := d.SetRoom(rA, 1); err != nil {
				t.Fatal(err)
			}
			if _, err := d.SetPicks(1, []uint32{rA}, 0); err != nil {
				t.Fatal(err)
			}
			if got := syn(fam.client); got != rA {
				t.Fatalf("the template's first flow went to %d", got)
			}
			for i := range 3 {
				if got := syn(fam.client); got != rA {
					t.Fatalf("template follower %d went to %d, want A with no room", i, got)
				}
			}
			if room, _ := d.Room(rA); room != -3 {
				t.Errorf("A's room after three followers: %d, want -3", room)
			}
			if got := syn(netip.MustParseAddr(map[bool]string{true: "198.51.100.99", false: "2001:db8:77::99"}[fam.vip.Is4()])); got != 0 {
				t.Errorf("a new client's pick of A with no room went to %d, want the slow path", got)
			}
			if err := d.DeleteTemplates(func(dataplane.Template, dataplane.TemplateUse) bool { return true }); err != nil {
				t.Fatal(err)
			}
			// An lblc entry's real with no room left: lblc binds it anyway
			// (spending room), lblcr leaves the flow to Go.
			for i, id := range []uint32{rA, rB} {
				if err := d.SetReal(id, dataplane.Real{Addr: fam.realAddrs[i], Ifindex: loIfindex, MAC: macs[id], Fwd: dataplane.FwdRoute, MTU: 1500, LocalOK: true}); err != nil {
					t.Fatal(err)
				}
			}
			if err := d.SetTemplate(dataplane.LocalEntry(1, fam.vip), dataplane.TemplateUse{RealID: rA, LastUsed: 1}); err != nil {
				t.Fatal(err)
			}
			if err := d.SetRoom(rA, 0); err != nil {
				t.Fatal(err)
			}
			if err := d.SetService(sk, 1, dataplane.SvcRoom|dataplane.SvcLocal); err != nil {
				t.Fatal(err)
			}
			if got := syn(fam.client); got != rA {
				t.Errorf("lblc: the entry's real with no room: flow went to %d, want A", got)
			}
			if room, _ := d.Room(rA); room != -1 {
				t.Errorf("lblc: A's room %d, want -1", room)
			}
			if err := d.SetService(sk, 1, dataplane.SvcRoom|dataplane.SvcLocal|dataplane.SvcLocalSet); err != nil {
				t.Fatal(err)
			}
			if got := syn(fam.client); got != 0 {
				t.Errorf("lblcr: the entry's real with no room: flow went to %d, want the slow path", got)
			}
			if err := d.SetRoom(rA, 1); err != nil {
				t.Fatal(err)
			}
			if got := syn(fam.client); got != rA {
				t.Errorf("lblcr: the entry's real with room: flow went to %d, want A", got)
			}
			if err := d.DeleteTemplates(func(dataplane.Template, dataplane.TemplateUse) bool { return true }); err != nil {
				t.Fatal(err)
			}
			if err := d.DeleteService(sk); err != nil {
				t.Fatal(err)
			}
		})
	}
}
