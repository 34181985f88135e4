package dataplane_test

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

// TestXDPLocalEntries: an lblc service's new flows in XDP
// (ip_vs_lblc_schedule's hit): a flow to a destination address whose
// entry names a real marked LocalOK goes there, the entry's last use
// renewed; no entry, or a real not marked, is Go's (the slow path: none
// bound here, so dropped and counted). IPv4 and IPv6.
func TestXDPLocalEntries(t *testing.T) {
	d := openDirector(t)
	const rA, rB = 41, 42
	macs := map[uint32]net.HardwareAddr{rA: {2, 0xee, 0, 0, 2, rA}, rB: {2, 0xee, 0, 0, 2, rB}}
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
			setReal := func(id uint32, i int, ok bool) {
				t.Helper()
				if err := d.SetReal(id, dataplane.Real{Addr: fam.realAddrs[i], Ifindex: loIfindex, MAC: macs[id], Fwd: dataplane.FwdRoute, MTU: 1500, LocalOK: ok}); err != nil {
					t.Fatal(err)
				}
			}
			setReal(rA, 0, true)
			setReal(rB, 1, true)
			if err := d.SetService(dataplane.ServiceKey{VIP: fam.vip, Port: 80, Proto: 6}, 7, dataplane.SvcLocal); err != nil {
				t.Fatal(err)
			}
			sport := uint16(41000)
			syn := func() (dataplane.Verdict, []byte) {
				sport++
				return run(t, d, testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: fam.client, Dst: fam.vip, SrcPort: sport, DstPort: 80, SYN: true}.Build())
			}
			slow := func(why string) {
				t.Helper()
				c0, _ := d.Counters()
				if v, _ := syn(); v != dataplane.XDPDrop {
					t.Fatalf("%s: %v, want the slow path (dropped: none bound)", why, v)
				}
				c1, _ := d.Counters()
				if c1[dataplane.StatDropNoXSK] != c0[dataplane.StatDropNoXSK]+1 {
					t.Fatalf("%s: not counted as a slow-path flow with no socket", why)
				}
			}
			slow("no entry")
			entry := dataplane.LocalEntry(7, fam.vip)
			if err := d.SetTemplate(entry, dataplane.TemplateUse{RealID: rB, LastUsed: 1}); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 5; i++ {
				if v, out := syn(); v != dataplane.XDPTx || !bytes.Equal(out[0:6], macs[rB]) {
					t.Fatalf("flow %d with an entry: %v to %x, want XDP_TX to %v", i, v, out[0:6], macs[rB])
				}
			}
			if u, ok, err := d.LookupTemplate(entry); err != nil || !ok || u.RealID != rB || u.LastUsed <= 1 {
				t.Errorf("entry after its use: %+v %v %v, want real %d, last use renewed", u, ok, err, rB)
			}
			setReal(rB, 1, false) // overloaded or quiesced: Go reschedules
			slow("a real that may not keep its address")
			if err := d.DeleteTemplate(entry); err != nil {
				t.Fatal(err)
			}
		})
	}
}
