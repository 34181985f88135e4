package dataplane_test

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

// TestXDPFullNATRing: new FULLNAT flows opened in XDP with the local
// ports Go handed over in the service's ring: each SYN leaves from a
// local address and port of the ring (valid checksums), no port twice,
// with both entries written as the slow path writes them (the reply
// entry keyed by the real and the local port); a ring run dry sends the
// flow to Go before a real is picked; a real that is not FULLNAT gives
// the port back. IPv4 and IPv6.
func TestXDPFullNATRing(t *testing.T) {
	d := openDirector(t)
	const rF, rD = 51, 52
	macF, macD := net.HardwareAddr{2, 0xee, 0, 0, 5, 1}, net.HardwareAddr{2, 0xee, 0, 0, 5, 2}
	for i, fam := range []struct {
		name         string
		vip, client  netip.Addr
		laddr, realF netip.Addr
		realD        netip.Addr
	}{
		{"IPv4", vip, netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("10.9.0.250"), netip.MustParseAddr("10.1.0.51"), netip.MustParseAddr("10.1.0.52")},
		{"IPv6", vip6, netip.MustParseAddr("2001:db8:77::7"), netip.MustParseAddr("2001:db8:9::250"), netip.MustParseAddr("2001:db8:1::51"), netip.MustParseAddr("2001:db8:1::52")},
	} {
		t.Run(fam.name, func(t *testing.T) {
			ring, lid, sid := uint32(3+i), uint32(1+i), uint32(9+i)
			if err := d.SetLocalAddr(lid, fam.laddr); err != nil {
				t.Fatal(err)
			}
			if err := d.SetReal(rF, dataplane.Real{Addr: fam.realF, Ifindex: loIfindex, MAC: macF, Fwd: dataplane.FwdFullNAT, MTU: 1500, Port: 8080}); err != nil {
				t.Fatal(err)
			}
			if err := d.SetReal(rD, dataplane.Real{Addr: fam.realD, Ifindex: loIfindex, MAC: macD, Fwd: dataplane.FwdRoute, MTU: 1500}); err != nil {
				t.Fatal(err)
			}
			key := dataplane.ServiceKey{VIP: fam.vip, Port: 80, Proto: 6}
			if err := d.SetService(key, sid, dataplane.SvcRing(ring)); err != nil {
				t.Fatal(err)
			}
			if _, err := d.SetPicks(sid, []uint32{rF}, 0); err != nil {
				t.Fatal(err)
			}
			sport := uint16(42000)
			syn := func() (dataplane.Verdict, []byte, dataplane.ConnKey) {
				sport++
				k := dataplane.ConnKey{Src: fam.client, Dst: fam.vip, SrcPort: sport, DstPort: 80, Proto: conntrack.ProtoTCP}
				v, out := run(t, d, testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: fam.client, Dst: fam.vip, SrcPort: sport, DstPort: 80, SYN: true}.Build())
				return v, out, k
			}
			// An empty ring: Go's, and no pick taken.
			if v, _, _ := syn(); v != dataplane.XDPDrop {
				t.Fatalf("empty ring: %v, want the slow path (dropped: none bound)", v)
			}
			if n, _ := d.PickCursor(sid); n != 0 {
				t.Errorf("an empty ring took %d picks", n)
			}
			next := uint16(3000)
			filled, err := d.FillRing(ring, 6, func() (dataplane.LocalSlot, bool) {
				if next == 3010 {
					return dataplane.LocalSlot{}, false
				}
				next++
				return dataplane.LocalSlot{AddrID: lid, Port: next}, true
			})
			if err != nil || filled != 10 {
				t.Fatalf("filled %d (%v), want 10", filled, err)
			}
			seen := map[uint16]bool{}
			for n := 0; n < 10; n++ {
				v, out, k := syn()
				if v != dataplane.XDPTx || !bytes.Equal(out[0:6], macF) {
					t.Fatalf("SYN %d: %v to %x", n, v, out[0:6])
				}
				p := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default)
				tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
				var src, dst netip.Addr
				if ip, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
					src, _ = netip.AddrFromSlice(ip.SrcIP.To4())
					dst, _ = netip.AddrFromSlice(ip.DstIP.To4())
				} else if ip6, ok := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6); ok {
					src, _ = netip.AddrFromSlice(ip6.SrcIP)
					dst, _ = netip.AddrFromSlice(ip6.DstIP)
				}
				if tcp == nil || src != fam.laddr || dst != fam.realF || tcp.DstPort != 8080 || tcp.SrcPort <= 3000 || tcp.SrcPort > 3010 {
					t.Fatalf("SYN %d left as %v:%v -> %v:%v, want from %v on a ring port to %v:8080", n, src, tcp.SrcPort, dst, tcp.DstPort, fam.laddr, fam.realF)
				}
				if !testutil.ChecksumsValid(out) {
					t.Errorf("SYN %d: bad checksums", n)
				}
				lport := uint16(tcp.SrcPort)
				if seen[lport] {
					t.Fatalf("local port %d given twice", lport)
				}
				seen[lport] = true
				c, ok, err := d.LookupConn(k)
				if err != nil || !ok || c.Flags&dataplane.ConnFullNAT == 0 {
					t.Fatalf("forward entry %+v %v %v", c, ok, err)
				}
				rk := dataplane.ConnKey{Src: fam.realF, Dst: fam.laddr, SrcPort: 8080, DstPort: lport, Proto: conntrack.ProtoTCP}
				rc, ok, err := d.LookupConn(rk)
				if err != nil || !ok || rc.Flags&(dataplane.ConnFullNAT|dataplane.ConnReply) != dataplane.ConnFullNAT|dataplane.ConnReply {
					t.Fatalf("reply entry %v: %+v %v %v", rk, rc, ok, err)
				}
			}
			if v, _, _ := syn(); v != dataplane.XDPDrop {
				t.Fatalf("the ring run dry: %v, want the slow path", v)
			}
			// A DR real picked: the port goes back to the ring.
			if _, err := d.SetPicks(sid, []uint32{rD}, 0); err != nil {
				t.Fatal(err)
			}
			next = 3100
			if _, err := d.FillRing(ring, 6, func() (dataplane.LocalSlot, bool) {
				if next == 3101 {
					return dataplane.LocalSlot{}, false
				}
				next++
				return dataplane.LocalSlot{AddrID: lid, Port: next}, true
			}); err != nil {
				t.Fatal(err)
			}
			if v, out, _ := syn(); v != dataplane.XDPTx || !bytes.Equal(out[0:6], macD) {
				t.Fatalf("DR real: %v to %x", v, out[0:6])
			}
			left, err := d.DrainRing(ring)
			if err != nil || len(left[6]) != 1 || left[6][0].Port != 3101 {
				t.Errorf("the ring after a DR pick: %v (%v), want port 3101 back", left, err)
			}
		})
	}
}
