package decap

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xipvs/xipvs/internal/testutil"
)

var (
	dirMAC  = net.HardwareAddr{0x02, 0xd1, 0, 0, 0, 1}
	realMAC = net.HardwareAddr{0x02, 0xee, 0, 0, 0, 0x11}
)

// inner builds an IP packet (no Ethernet header) to dst with a UDP
// payload, by gopacket.
func inner(t *testing.T, src, dst netip.Addr) []byte {
	t.Helper()
	udp := &layers.UDP{SrcPort: 5353, DstPort: 53}
	var ip gopacket.NetworkLayer
	var ipl gopacket.SerializableLayer
	if dst.Is4() {
		l := &layers.IPv4{Version: 4, TTL: 60, Protocol: layers.IPProtocolUDP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		ip, ipl = l, l
	} else {
		l := &layers.IPv6{Version: 6, HopLimit: 60, NextHeader: layers.IPProtocolUDP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		ip, ipl = l, l
	}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		ipl, udp, gopacket.Payload("query")); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// frame puts layers in front of payload, by gopacket.
func frame(t *testing.T, payload []byte, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		append(ls, gopacket.Payload(payload))...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// TestDecap runs the decap program on IPv4-in-IPv4 and IPv6-in-IPv6
// frames (Program.Run): to a VIP the outer header goes and the inner
// packet passes with the Ethernet addresses kept; to another address,
// or anything else, the frame passes unchanged.
func TestDecap(t *testing.T) {
	testutil.RequirePrivileged(t)
	var objs decapObjects
	if err := loadDecapObjects(&objs, nil); err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	vip4, vip6 := netip.MustParseAddr("10.0.0.100"), netip.MustParseAddr("2001:db8::100")
	if err := putVIPs(objs.DecapVips, []netip.Addr{vip4, vip6}); err != nil {
		t.Fatal(err)
	}
	client4, client6 := netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8:77::7")
	dir4, real4 := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.11")
	dir6, real6 := netip.MustParseAddr("2001:db8:1::2"), netip.MustParseAddr("2001:db8:1::11")
	eth := func(typ layers.EthernetType) *layers.Ethernet {
		return &layers.Ethernet{SrcMAC: dirMAC, DstMAC: realMAC, EthernetType: typ}
	}
	outer4 := &layers.IPv4{Version: 4, TTL: 60, Protocol: layers.IPProtocolIPv4, SrcIP: dir4.AsSlice(), DstIP: real4.AsSlice()}
	outer6 := &layers.IPv6{Version: 6, HopLimit: 60, NextHeader: layers.IPProtocolIPv6, SrcIP: dir6.AsSlice(), DstIP: real6.AsSlice()}

	in4, in6 := inner(t, client4, vip4), inner(t, client6, vip6)
	other6 := inner(t, client6, netip.MustParseAddr("2001:db8::101"))
	for _, c := range []struct {
		name    string
		in, out []byte
	}{
		// (cut to the packet: gopacket pads a short frame to 60 bytes)
		{"IPv4 in IPv4 to a VIP", frame(t, in4, eth(layers.EthernetTypeIPv4), outer4), frame(t, in4, eth(layers.EthernetTypeIPv4))[:14+len(in4)]},
		{"IPv6 in IPv6 to a VIP", frame(t, in6, eth(layers.EthernetTypeIPv6), outer6), frame(t, in6, eth(layers.EthernetTypeIPv6))},
		{"IPv6 in IPv6 to another address", frame(t, other6, eth(layers.EthernetTypeIPv6), outer6), nil},
		{"plain IPv6 to the VIP", frame(t, in6, eth(layers.EthernetTypeIPv6)), nil},
	} {
		out := make([]byte, 2048)
		opts := &ebpf.RunOptions{Data: c.in, DataOut: out}
		ret, err := objs.XipvsDecap.Run(opts)
		if err != nil {
			t.Fatal(err)
		}
		want := c.out
		if want == nil {
			want = c.in
		}
		if ret != 2 || !bytes.Equal(opts.DataOut, want) {
			t.Errorf("%s: verdict %d\n got: %x\nwant: %x", c.name, ret, opts.DataOut, want)
		}
	}
}
