package dataplane_test

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

// TestXDPPersistence: a persistent service's new flows in XDP (IPVS's
// ip_vs_sched_persist): a client network without a template takes the
// service's next pick and gets a template (under the service's netmask,
// for its virtual port or, for port-zero templates, every port); its
// next new flows follow the template, taking no pick; the template's
// connections are marked for the sweep; once Go ends the template, the
// client takes the next pick again. IPv4 (/24) and IPv6 (/64).
func TestXDPPersistence(t *testing.T) {
	d := openDirector(t)
	const rA, rB = 31, 32
	macs := map[uint32]net.HardwareAddr{rA: {2, 0xee, 0, 0, 2, rA}, rB: {2, 0xee, 0, 0, 2, rB}}
	for _, fam := range []struct {
		name      string
		vip       netip.Addr
		bits      int
		c1, c1b   netip.Addr // one client network
		c2        netip.Addr // another
		realAddrs [2]netip.Addr
	}{
		{"IPv4", vip, 24, netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("198.51.100.200"), netip.MustParseAddr("198.51.101.9"),
			[2]netip.Addr{netip.MustParseAddr("10.1.0.31"), netip.MustParseAddr("10.1.0.32")}},
		{"IPv6", vip6, 64, netip.MustParseAddr("2001:db8:77::7"), netip.MustParseAddr("2001:db8:77::ffff:1"), netip.MustParseAddr("2001:db8:78::9"),
			[2]netip.Addr{netip.MustParseAddr("2001:db8:1::31"), netip.MustParseAddr("2001:db8:1::32")}},
	} {
		t.Run(fam.name, func(t *testing.T) {
			for i, id := range []uint32{rA, rB} {
				if err := d.SetReal(id, dataplane.Real{Addr: fam.realAddrs[i], Ifindex: loIfindex, MAC: macs[id], Fwd: dataplane.FwdRoute, MTU: 1500}); err != nil {
					t.Fatal(err)
				}
			}
			flags := dataplane.SvcPersist | dataplane.SvcPersistMask(fam.bits)
			for _, port := range []uint16{80, 443} {
				if err := d.SetService(dataplane.ServiceKey{VIP: fam.vip, Port: port, Proto: 6}, 1, flags); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := d.SetPicks(1, []uint32{rA, rB}, 0); err != nil {
				t.Fatal(err)
			}
			sport := uint16(40000)
			syn := func(src netip.Addr, dport uint16) (uint32, dataplane.ConnKey) {
				t.Helper()
				sport++
				k := dataplane.ConnKey{Src: src, Dst: fam.vip, SrcPort: sport, DstPort: dport, Proto: conntrack.ProtoTCP}
				v, out := run(t, d, testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: src, Dst: fam.vip, SrcPort: sport, DstPort: dport, SYN: true}.Build())
				if v != dataplane.XDPTx {
					t.Fatalf("SYN from %v to port %d: %v", src, dport, v)
				}
				for id, mac := range macs {
					if bytes.Equal(out[0:6], mac) {
						return id, k
					}
				}
				t.Fatalf("SYN from %v: sent to %x", src, out[0:6])
				return 0, k
			}
			first, k := syn(fam.c1, 80)
			c, found, err := d.LookupConn(k)
			if err != nil || !found || c.Flags&dataplane.ConnPersist == 0 {
				t.Errorf("the connection %+v (found %v): not marked persistent for the sweep", c, found)
			}
			for i := 0; i < 10; i++ {
				src := fam.c1
				if i%2 == 1 {
					src = fam.c1b // the same network under the netmask
				}
				if got, _ := syn(src, 80); got != first {
					t.Fatalf("new flow %d of the client network went to %d, its template says %d", i, got, first)
				}
			}
			if n, _ := d.PickCursor(1); n != 1 {
				t.Errorf("picks taken: %d, want 1 (the template's)", n)
			}
			other, _ := syn(fam.c2, 80)
			if other == first {
				t.Errorf("another client network took %d, want the next pick", other)
			}
			// Port 443 is another virtual port: a template of its own.
			if got, _ := syn(fam.c1, 443); got == other {
				// rr's third pick is the first real again.
				t.Errorf("port 443 of the first client: %d", got)
			}
			client, _ := fam.c1.Prefix(fam.bits)
			tk := dataplane.Template{ServiceID: 1, Client: client.Addr(), VPort: 80}
			u, ok, err := d.LookupTemplate(tk)
			if err != nil || !ok || u.RealID != first || u.LastUsed == 0 {
				t.Fatalf("template %+v: %+v %v %v", tk, u, ok, err)
			}
			var n int
			if err := d.Templates(func(dataplane.Template, dataplane.TemplateUse) { n++ }); err != nil || n != 3 {
				t.Errorf("templates listed: %d (%v), want 3", n, err)
			}
			// Go ends it: the client network takes the next pick.
			if err := d.DeleteTemplate(tk); err != nil {
				t.Fatal(err)
			}
			before, _ := d.PickCursor(1)
			syn(fam.c1, 80)
			if after, _ := d.PickCursor(1); after != before+1 {
				t.Errorf("after the template ended: %d picks taken, want %d", after, before+1)
			}
			// Port-zero templates: one for every port of the service.
			if err := d.DeleteTemplates(func(dataplane.Template, dataplane.TemplateUse) bool { return true }); err != nil {
				t.Fatal(err)
			}
			for _, port := range []uint16{80, 443} {
				if err := d.SetService(dataplane.ServiceKey{VIP: fam.vip, Port: port, Proto: 6}, 1, flags|dataplane.SvcTmplPort0); err != nil {
					t.Fatal(err)
				}
			}
			a, _ := syn(fam.c2, 80)
			if b, _ := syn(fam.c2, 443); b != a {
				t.Errorf("port-zero template: port 80 to %d, port 443 to %d", a, b)
			}
			if _, ok, _ := d.LookupTemplate(dataplane.Template{ServiceID: 1, Client: mustPrefix(fam.c2, fam.bits), VPort: 0}); !ok {
				t.Error("no port-zero template")
			}
			if err := d.DeleteTemplates(func(dataplane.Template, dataplane.TemplateUse) bool { return true }); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func mustPrefix(a netip.Addr, bits int) netip.Addr {
	p, _ := a.Prefix(bits)
	return p.Addr()
}
