package dataplane_test

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

var (
	vip6    = netip.MustParseAddr("2001:db8::100")
	client6 = netip.MustParseAddr("2001:db8:77::7")
	rip6    = netip.MustParseAddr("2001:db8:1::11")
)

// Real ids of the IPv6 fixtures.
const (
	dr6ID   = 21
	nat6ID  = 22
	tun6ID  = 23
	fnat6ID = 24
)

// tunSrc6 is the director's outer source toward the IPv6 TUN real.
var tunSrc6 = netip.MustParseAddr("2001:db8:1::2")

// frame6 describes an IPv6 test frame, serialized by gopacket with its
// checksums computed there (never by the code under test).
type frame6 struct {
	srcMAC, dstMAC   net.HardwareAddr
	src, dst         netip.Addr
	sport, dport     uint16
	udp, syn, ack    bool
	hopLimit         uint8
	tclass           uint8
	flowLabel        uint32
	mss              uint16 // a TCP MSS option when non-zero
	tcpOpts          []layers.TCPOption
	payload          []byte
	hopByHop, dstOpt bool // extension headers before the transport header
	fragment         bool // a fragment header (first fragment)
}

func (f frame6) build(t testing.TB) []byte {
	eth := &layers.Ethernet{SrcMAC: f.srcMAC, DstMAC: f.dstMAC, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: f.hopLimit, TrafficClass: f.tclass, FlowLabel: f.flowLabel,
		SrcIP: f.src.AsSlice(), DstIP: f.dst.AsSlice()}
	if ip.HopLimit == 0 {
		ip.HopLimit = 64
	}
	var l4 gopacket.SerializableLayer
	var next layers.IPProtocol
	if f.udp {
		u := &layers.UDP{SrcPort: layers.UDPPort(f.sport), DstPort: layers.UDPPort(f.dport)}
		if err := u.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		l4, next = u, layers.IPProtocolUDP
	} else {
		tc := &layers.TCP{SrcPort: layers.TCPPort(f.sport), DstPort: layers.TCPPort(f.dport), SYN: f.syn, ACK: f.ack,
			Seq: 1000, Ack: 2000, Window: 65535}
		if f.mss != 0 {
			tc.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4,
				OptionData: []byte{byte(f.mss >> 8), byte(f.mss)}}}
		}
		tc.Options = append(tc.Options, f.tcpOpts...)
		if err := tc.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		l4, next = tc, layers.IPProtocolTCP
	}
	// Extension headers are raw bytes: next header, length, padding.
	var ext []byte
	hdrs := []layers.IPProtocol{}
	if f.hopByHop {
		hdrs = append(hdrs, layers.IPProtocolIPv6HopByHop)
	}
	if f.dstOpt {
		hdrs = append(hdrs, layers.IPProtocolIPv6Destination)
	}
	if f.fragment {
		hdrs = append(hdrs, layers.IPProtocolIPv6Fragment)
	}
	ip.NextHeader = next
	if len(hdrs) > 0 {
		ip.NextHeader = hdrs[0]
		for i, h := range hdrs {
			nh := next
			if i+1 < len(hdrs) {
				nh = hdrs[i+1]
			}
			if h == layers.IPProtocolIPv6Fragment {
				ext = append(ext, byte(nh), 0, 0, 1, 0, 0, 0x12, 0x34) // offset 0, M=1
			} else {
				ext = append(ext, byte(nh), 0, 1, 4, 0, 0, 0, 0) // PadN
			}
		}
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	// The checksum covers only the transport header and payload: compute
	// it without extension headers, then splice them in.
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, l4, gopacket.Payload(f.payload)); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	if len(ext) == 0 {
		return append([]byte(nil), b...)
	}
	out := append([]byte(nil), b[:54]...)
	out = append(out, ext...)
	out = append(out, b[54:]...)
	plen := len(out) - 54
	out[18], out[19] = byte(plen>>8), byte(plen)
	out[20] = byte(hdrs[0])
	return out
}

func setupIPv6(t testing.TB, d *dataplane.Harness) {
	t.Helper()
	for _, k := range []dataplane.ServiceKey{{VIP: vip6, Port: 80, Proto: 6}, {VIP: vip6, Port: 53, Proto: 17}} {
		if err := d.SetService(k, 1, 0); err != nil {
			t.Fatal(err)
		}
	}
	for id, r := range map[uint32]dataplane.Real{
		dr6ID:   {Addr: rip6, Ifindex: loIfindex, MAC: realMAC, Fwd: dataplane.FwdRoute, MTU: 1500},
		nat6ID:  {Addr: rip6, Ifindex: loIfindex, MAC: realMAC, Fwd: dataplane.FwdMasq, MTU: 1500},
		tun6ID:  {Addr: rip6, Ifindex: loIfindex, MAC: realMAC, Fwd: dataplane.FwdTunnel, MTU: 1500, TunnelSrc: tunSrc6},
		fnat6ID: {Addr: rip6, Ifindex: loIfindex, MAC: realMAC, Fwd: dataplane.FwdFullNAT, MTU: 1500},
	} {
		if err := d.SetReal(id, r); err != nil {
			t.Fatal(err)
		}
	}
}

// tcpKey6 is the client's TCP connection from sport to VIP:80.
func tcpKey6(sport uint16) dataplane.ConnKey {
	return dataplane.ConnKey{Src: client6, Dst: vip6, SrcPort: sport, DstPort: 80, Proto: conntrack.ProtoTCP}
}

func TestIPv6Fixtures(t *testing.T) {
	d := openDirector(t)
	setupIPv6(t, d)
	flow(t, d, tcpKey6(50000), dataplane.Decision{RealID: dr6ID, ServiceID: 1}, conntrack.StateEstablished)
	nat := dataplane.Decision{RealID: nat6ID, ServiceID: 1, Out: dataplane.ConnKey{Src: client6, Dst: rip6, SrcPort: 50001, DstPort: 8080}}
	flow(t, d, tcpKey6(50001), nat, conntrack.StateEstablished)
	udpKey := dataplane.ConnKey{Src: client6, Dst: vip6, SrcPort: 5353, DstPort: 53, Proto: conntrack.ProtoUDP}
	flow(t, d, udpKey, dataplane.Decision{RealID: nat6ID, ServiceID: 1, Out: dataplane.ConnKey{Src: client6, Dst: rip6, SrcPort: 5353, DstPort: 5300}}, 0)

	data := []byte("GET / HTTP/1.1\r\n\r\n")
	in := func(sport uint16) frame6 {
		return frame6{srcMAC: clientMAC, dstMAC: ifMAC, src: client6, dst: vip6, sport: sport, dport: 80, ack: true, payload: data}
	}

	// DR: only the MACs change (no hop limit decrement, as IPVS's DR).
	f := in(50000)
	v, out := run(t, d, f.build(t))
	w := f
	w.srcMAC, w.dstMAC = ifMAC, realMAC
	expectFrame6(t, "DR", v, dataplane.XDPTx, out, w.build(t))

	// DR through a hop-by-hop and a destination-options header.
	f.hopByHop, f.dstOpt = true, true
	v, out = run(t, d, f.build(t))
	w.hopByHop, w.dstOpt = true, true
	expectFrame6(t, "DR with extension headers", v, dataplane.XDPTx, out, w.build(t))

	// A first fragment follows its connection (frag_test.go).
	f = in(50000)
	f.fragment = true
	v, out = run(t, d, f.build(t))
	w = f
	w.srcMAC, w.dstMAC = ifMAC, realMAC
	expectFrame6(t, "first fragment", v, dataplane.XDPTx, out, w.build(t))

	// NAT: to RIP:8080, the checksum over the new pseudo-header.
	f = in(50001)
	v, out = run(t, d, f.build(t))
	w = f
	w.srcMAC, w.dstMAC, w.dst, w.dport = ifMAC, realMAC, rip6, 8080
	expectFrame6(t, "NAT forward", v, dataplane.XDPTx, out, w.build(t))

	// NAT reply: from RIP:8080 back as VIP:80 to the client's hop.
	r := frame6{srcMAC: realMAC, dstMAC: ifMAC, src: rip6, dst: client6, sport: 8080, dport: 50001, ack: true, payload: []byte("HTTP/1.1 200 OK\r\n")}
	v, out = run(t, d, r.build(t))
	wr := r
	wr.srcMAC, wr.dstMAC, wr.src, wr.sport = ifMAC, clientMAC, vip6, 80
	expectFrame6(t, "NAT reply", v, dataplane.XDPTx, out, wr.build(t))

	// UDP NAT, both ways (IPv6 UDP always carries a checksum).
	u := frame6{srcMAC: clientMAC, dstMAC: ifMAC, src: client6, dst: vip6, sport: 5353, dport: 53, udp: true, payload: []byte("query")}
	v, out = run(t, d, u.build(t))
	wu := u
	wu.srcMAC, wu.dstMAC, wu.dst, wu.dport = ifMAC, realMAC, rip6, 5300
	expectFrame6(t, "UDP NAT forward", v, dataplane.XDPTx, out, wu.build(t))
	ur := frame6{srcMAC: realMAC, dstMAC: ifMAC, src: rip6, dst: client6, sport: 5300, dport: 5353, udp: true, payload: []byte("answer")}
	v, out = run(t, d, ur.build(t))
	wur := ur
	wur.srcMAC, wur.dstMAC, wur.src, wur.sport = ifMAC, clientMAC, vip6, 53
	expectFrame6(t, "UDP NAT reply", v, dataplane.XDPTx, out, wur.build(t))

	// UDP with a zero checksum is malformed over IPv6: passed unchanged.
	bad := u.build(t)
	bad[14+40+6], bad[14+40+7] = 0, 0
	v, out = run(t, d, bad)
	expectFrame6(t, "UDP zero checksum", v, dataplane.XDPPass, out, bad)

	// A new flow to the VIP goes to the slow path (dropped here: no
	// AF_XDP socket is bound); traffic to another address passes.
	syn := frame6{srcMAC: clientMAC, dstMAC: ifMAC, src: client6, dst: vip6, sport: 40000, dport: 80, syn: true}.build(t)
	if v, _ = run(t, d, syn); v != dataplane.XDPDrop {
		t.Errorf("new IPv6 flow: verdict %v, want drop (no slow path bound)", v)
	}
	other := frame6{srcMAC: clientMAC, dstMAC: ifMAC, src: client6, dst: netip.MustParseAddr("2001:db8::200"), sport: 40000, dport: 80, syn: true}.build(t)
	v, out = run(t, d, other)
	expectFrame6(t, "not a VIP", v, dataplane.XDPPass, out, other)

	// The connections are listed with their family's addresses.
	n := 0
	if err := d.WalkConns(func(k dataplane.ConnKey, c dataplane.Conn) bool {
		if k.Src.Is6() {
			n++
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if n != 5 { // DR 1, TCP NAT 2, UDP NAT 2
		t.Errorf("walk: %d IPv6 entries, want 5", n)
	}
}

// TestIPv6Sweep: the sweep ages IPv6 connections (both entries of a NAT
// one) and counts the live ones per real.
// tunnelled6 is what TUN sends for inner (an IPv6 frame as built): an
// outer IPv6 header (traffic class and hop limit of the inner one, flow
// label 0, next header 41) from tunSrc6 to rip6, to the real's MAC.
func tunnelled6(t *testing.T, inner []byte) []byte {
	t.Helper()
	in := gopacket.NewPacket(inner, layers.LayerTypeEthernet, gopacket.Default)
	ip := in.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	eth := &layers.Ethernet{SrcMAC: ifMAC, DstMAC: realMAC, EthernetType: layers.EthernetTypeIPv6}
	outer := &layers.IPv6{Version: 6, TrafficClass: ip.TrafficClass, HopLimit: ip.HopLimit,
		NextHeader: layers.IPProtocolIPv6, SrcIP: tunSrc6.AsSlice(), DstIP: rip6.AsSlice()}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, eth, outer, gopacket.Payload(inner[14:])); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestIPv6Tunnel: TUN over IPv6 through Program.Run: IPv6 in IPv6, the
// SYN's MSS clamped to MTU - 100, a packet too big for the tunnel
// answered with ICMPv6 Packet Too Big, and the slow path's replay.
func TestIPv6Tunnel(t *testing.T) {
	d := openDirector(t)
	setupIPv6(t, d)
	flow(t, d, tcpKey6(50010), dataplane.Decision{RealID: tun6ID, ServiceID: 1}, conntrack.StateEstablished)
	f := frame6{srcMAC: clientMAC, dstMAC: ifMAC, src: client6, dst: vip6, sport: 50010, dport: 80, ack: true,
		hopLimit: 57, tclass: 0x28, flowLabel: 0x12345, payload: []byte("GET / HTTP/1.1\r\n\r\n")}
	v, out := run(t, d, f.build(t))
	expectFrame6(t, "TUN", v, dataplane.XDPTx, out, tunnelled6(t, f.build(t)))

	// A SYN: MSS 1460 clamped to 1500 - 40 - 60, checksum kept right.
	flow(t, d, tcpKey6(50011), dataplane.Decision{RealID: tun6ID, ServiceID: 1}, 0)
	syn := frame6{srcMAC: clientMAC, dstMAC: ifMAC, src: client6, dst: vip6, sport: 50011, dport: 80, syn: true, mss: 1460}
	v, out = run(t, d, syn.build(t))
	clamped := syn
	clamped.mss = 1400
	expectFrame6(t, "TUN SYN", v, dataplane.XDPTx, out, tunnelled6(t, clamped.build(t)))

	// 1560 bytes of IPv6 do not fit a 1500-byte tunnel: Packet Too Big
	// (MTU 1460) from the VIP back to the client, quoting 1232 bytes.
	big := f
	big.payload = make([]byte, 1500)
	for i := range big.payload {
		big.payload[i] = byte(i)
	}
	bigFrame := big.build(t)
	v, out = run(t, d, bigFrame)
	eth := &layers.Ethernet{SrcMAC: ifMAC, DstMAC: clientMAC, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: vip6.AsSlice(), DstIP: client6.AsSlice()}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypePacketTooBig, 0)}
	if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	body := append([]byte{0, 0, 0x05, 0xb4}, bigFrame[14:14+1232]...)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, icmp, gopacket.Payload(body)); err != nil {
		t.Fatal(err)
	}
	expectFrame6(t, "Packet Too Big", v, dataplane.XDPTx, out, buf.Bytes())

	// The slow path's replay forwards a frame of a written connection as
	// the hit path does, and drops one without (never hands it over).
	v, out, err := d.Replay6(f.build(t))
	if err != nil {
		t.Fatal(err)
	}
	expectFrame6(t, "replay", v, dataplane.XDPTx, out, tunnelled6(t, f.build(t)))
	orphan := f
	orphan.sport = 50099
	if v, _, err = d.Replay6(orphan.build(t)); err != nil || v != dataplane.XDPDrop {
		t.Errorf("replay of a frame without a connection: %v %v, want a drop", v, err)
	}
}

// TestIPv6FullNAT: FULLNAT over IPv6 through Program.Run: both ends
// rewritten, the SYN-ACK's MSS lowered by the 20 bytes TOA takes, the
// ACK that completes the handshake carrying the TOA option in DPVS's
// IPv6 format (kind 254, length 20, port, address), replies un-NATed,
// and the sweep handing the local port back.
func TestIPv6FullNAT(t *testing.T) {
	d := openDirector(t)
	setupIPv6(t, d)
	lip6 := netip.MustParseAddr("2001:db8:1::100")
	k := dataplane.ConnKey{Src: client6, Dst: vip6, SrcPort: 52000, DstPort: 80, Proto: conntrack.ProtoTCP}
	flow(t, d, k, dataplane.Decision{RealID: fnat6ID, ServiceID: 1, FullNAT: true,
		Out: dataplane.ConnKey{Src: lip6, Dst: rip6, SrcPort: 40001, DstPort: 8080}}, 0)

	syn := frame6{srcMAC: clientMAC, dstMAC: ifMAC, src: client6, dst: vip6, sport: 52000, dport: 80, syn: true, mss: 1460}
	v, out := run(t, d, syn.build(t))
	w := syn
	w.srcMAC, w.dstMAC, w.src, w.dst, w.sport, w.dport = ifMAC, realMAC, lip6, rip6, 40001, 8080
	expectFrame6(t, "FULLNAT SYN", v, dataplane.XDPTx, out, w.build(t))

	synack := frame6{srcMAC: realMAC, dstMAC: ifMAC, src: rip6, dst: lip6, sport: 8080, dport: 40001, syn: true, ack: true, mss: 1440}
	v, out = run(t, d, synack.build(t))
	wr := synack
	wr.srcMAC, wr.dstMAC, wr.src, wr.dst, wr.sport, wr.dport, wr.mss = ifMAC, clientMAC, vip6, client6, 80, 52000, 1420
	expectFrame6(t, "FULLNAT SYN-ACK, MSS lowered for TOA", v, dataplane.XDPTx, out, wr.build(t))

	ack := frame6{srcMAC: clientMAC, dstMAC: ifMAC, src: client6, dst: vip6, sport: 52000, dport: 80, ack: true, payload: []byte("GET /")}
	v, out = run(t, d, ack.build(t))
	wa := ack
	wa.srcMAC, wa.dstMAC, wa.src, wa.dst, wa.sport, wa.dport = ifMAC, realMAC, lip6, rip6, 40001, 8080
	toa := append([]byte{0xcb, 0x20}, client6.AsSlice()...) // port 52000
	wa.tcpOpts = []layers.TCPOption{{OptionType: 254, OptionLength: 20, OptionData: toa}}
	expectFrame6(t, "FULLNAT ACK with TOA", v, dataplane.XDPTx, out, wa.build(t))
	// Later segments carry no TOA.
	v, out = run(t, d, ack.build(t))
	wa.tcpOpts = nil
	expectFrame6(t, "FULLNAT data", v, dataplane.XDPTx, out, wa.build(t))

	// Expired, the connection gives its local port back: here at a full
	// sweep two hours on (its timer would, but not in a test's time).
	var a dataplane.SweepArgs
	a.Now, a.Full = dataplane.Now()+7200e9, true
	for i := range a.Timeouts.TCP {
		a.Timeouts.TCP[i] = 3600e9
	}
	a.Timeouts.UDP, a.OrphanAge = 3600e9, 3600e9
	res, err := d.Sweep(a)
	if err != nil {
		t.Fatal(err)
	}
	want := []dataplane.LocalPort{{Addr: lip6, Port: 40001, Proto: conntrack.ProtoTCP}}
	if !slices.Equal(res.Released, want) {
		t.Errorf("released %v, want %v", res.Released, want)
	}
}

// icmp6Error builds an ICMPv6 error frame (code 0) quoting q, an IPv6
// packet without its Ethernet header; word is the 4 bytes after the
// checksum (Packet Too Big: the MTU).
func icmp6Error(t *testing.T, srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, typ uint8, word uint32, q []byte) []byte {
	t.Helper()
	return testutil.ICMPv6Error(srcMAC, dstMAC, src, dst, typ, 0, word, q)
}

// TestIPv6ICMPErrors: ICMPv6 errors quoting a tracked connection follow
// it as IPVS's ip_vs_in_icmp_v6 and ip_vs_out_icmp_v6 do (DR, TUN, NAT,
// from outside and from a NAT real); neighbour discovery and errors about
// unknown connections pass. Expected frames are built by gopacket.
func TestIPv6ICMPErrors(t *testing.T) {
	d := openDirector(t)
	setupIPv6(t, d)
	flow(t, d, tcpKey6(51000), dataplane.Decision{RealID: dr6ID, ServiceID: 1}, conntrack.StateEstablished)
	flow(t, d, tcpKey6(51001), dataplane.Decision{RealID: tun6ID, ServiceID: 1}, conntrack.StateEstablished)
	flow(t, d, tcpKey6(51002), dataplane.Decision{RealID: nat6ID, ServiceID: 1,
		Out: dataplane.ConnKey{Src: client6, Dst: rip6, SrcPort: 51002, DstPort: 8080}}, conntrack.StateEstablished)
	router6 := netip.MustParseAddr("2001:db8:ff::1")
	routerMAC := net.HardwareAddr{0x02, 0x77, 0, 0, 0, 0x01}
	// What left from the VIP toward the client, quoted back by a router.
	fromVIP := func(cport uint16) []byte {
		return frame6{src: vip6, dst: client6, sport: 80, dport: cport, ack: true, payload: make([]byte, 200),
			srcMAC: ifMAC, dstMAC: clientMAC}.build(t)[14:]
	}

	in := icmp6Error(t, routerMAC, ifMAC, router6, vip6, 2, 1400, fromVIP(51000))
	v, out := run(t, d, in)
	expectFrame6(t, "DR: on to the real as it is", v, dataplane.XDPTx, out, withMACs(in, realMAC, ifMAC))

	in = icmp6Error(t, routerMAC, ifMAC, router6, vip6, 2, 1400, fromVIP(51001))
	v, out = run(t, d, in)
	expectFrame6(t, "TUN: on to the real in IPv6 in IPv6", v, dataplane.XDPTx, out, tunnelled6(t, in))

	// NAT: the real sees its own packet (RIP:8080 -> client) quoted, the
	// error addressed to it.
	in = icmp6Error(t, routerMAC, ifMAC, router6, vip6, 1, 0, fromVIP(51002))
	v, out = run(t, d, in)
	q := frame6{src: rip6, dst: client6, sport: 8080, dport: 51002, ack: true, payload: make([]byte, 200),
		srcMAC: ifMAC, dstMAC: clientMAC}.build(t)[14:]
	// The quoted TCP checksum is left as it was (IPVS leaves it too).
	copy(q[40+16:40+18], fromVIP(51002)[40+16:40+18])
	want := icmp6Error(t, ifMAC, realMAC, router6, rip6, 1, 0, q)
	expectFrame6(t, "NAT: translated for the real", v, dataplane.XDPTx, out, want)

	// From the NAT real (time exceeded about client -> RIP:8080): to the
	// client from the VIP, quoting what the client sent.
	toReal := frame6{src: client6, dst: rip6, sport: 51002, dport: 8080, ack: true, payload: make([]byte, 100),
		srcMAC: ifMAC, dstMAC: realMAC}.build(t)[14:]
	in = icmp6Error(t, realMAC, ifMAC, rip6, client6, 3, 0, toReal)
	v, out = run(t, d, in)
	q = frame6{src: client6, dst: vip6, sport: 51002, dport: 80, ack: true, payload: make([]byte, 100),
		srcMAC: ifMAC, dstMAC: realMAC}.build(t)[14:]
	copy(q[40+16:40+18], toReal[40+16:40+18])
	want = icmp6Error(t, ifMAC, clientMAC, vip6, client6, 3, 0, q)
	expectFrame6(t, "NAT real: to the client from the VIP", v, dataplane.XDPTx, out, want)

	// An error about no connection, and neighbour discovery, pass.
	in = icmp6Error(t, routerMAC, ifMAC, router6, vip6, 2, 1400, fromVIP(51999))
	v, out = run(t, d, in)
	expectFrame6(t, "unknown connection", v, dataplane.XDPPass, out, in)
	ns := icmp6Error(t, clientMAC, ifMAC, client6, vip6, 135, 0, vip6.AsSlice())
	v, out = run(t, d, ns)
	expectFrame6(t, "neighbour solicitation", v, dataplane.XDPPass, out, ns)
}

// TestIPv6Admission: with admission control on, SYNs from new IPv6
// sources are paced (shed past the burst); a source whose /64 completed
// a handshake passes, whatever its address within the /64.
func TestIPv6Admission(t *testing.T) {
	d := openDirector(t)
	setupIPv6(t, d)
	shed := admissionOn(t, d)
	syn := func(src string, sport uint16) []byte {
		return frame6{srcMAC: clientMAC, dstMAC: ifMAC, src: netip.MustParseAddr(src), dst: vip6, sport: sport, dport: 80, syn: true}.build(t)
	}
	// A known /64: one of its hosts completes a handshake through XDP
	// (its SYN, within the burst, then the ACK that promotes the entry
	// and records the /64).
	known := dataplane.ConnKey{Src: netip.MustParseAddr("2001:db8:aa::1"), Dst: vip6, SrcPort: 40000, DstPort: 80, Proto: conntrack.ProtoTCP}
	flow(t, d, known, dataplane.Decision{RealID: dr6ID, ServiceID: 1}, 0)
	if v, _ := run(t, d, syn(known.Src.String(), 40000)); v != dataplane.XDPTx {
		t.Fatalf("the known source's SYN: %v", v)
	}
	run(t, d, frame6{srcMAC: clientMAC, dstMAC: ifMAC, src: known.Src, dst: vip6, sport: 40000, dport: 80, ack: true}.build(t))
	if est, err := d.Established(known); err != nil || !est {
		t.Fatalf("the handshake did not promote the connection: %v %v", est, err)
	}

	before := shed()
	for i := 0; i < 20; i++ {
		run(t, d, syn(fmt.Sprintf("2001:db8:%x::1", 0x100+i), 50000))
	}
	if n := shed() - before; n < 15 {
		t.Errorf("20 SYNs from new /64s at 1/s with a burst of 1: %d shed, want most", n)
	}
	before = shed()
	for i := 0; i < 5; i++ {
		run(t, d, syn(fmt.Sprintf("2001:db8:aa::%x", 0x10+i), 50001+uint16(i)))
	}
	if n := shed() - before; n != 0 {
		t.Errorf("SYNs from a known /64 shed: %d", n)
	}
}

func TestIPv6Sweep(t *testing.T) {
	d := openDirector(t)
	setupIPv6(t, d)
	k := dataplane.ConnKey{Src: client6, Dst: vip6, SrcPort: 50001, DstPort: 80, Proto: conntrack.ProtoTCP}
	flow(t, d, k, dataplane.Decision{RealID: nat6ID, ServiceID: 1, Out: dataplane.ConnKey{Src: client6, Dst: rip6, SrcPort: 50001, DstPort: 8080}}, conntrack.StateEstablished)
	// A persistent service's connection: its template is the client under
	// /64 (service 2) and under /127 with the port ignored (service 3).
	src := netip.MustParseAddr("2001:db8:c::1:2:3:5")
	for i, sid := range []uint32{2, 3} {
		pk := dataplane.ConnKey{Src: src, Dst: vip6, SrcPort: 50002 + uint16(i), DstPort: 443, Proto: conntrack.ProtoTCP}
		flow(t, d, pk, dataplane.Decision{RealID: dr6ID, ServiceID: sid, Persistent: true}, conntrack.StateEstablished)
	}
	var a dataplane.SweepArgs
	a.Now = dataplane.Now()
	a.Persistent = map[uint32]dataplane.SweepPersist{2: {MaskBits: 64}, 3: {MaskBits: 127, PortZero: true}}
	for i := range a.Timeouts.TCP {
		a.Timeouts.TCP[i] = 3600e9
	}
	a.Timeouts.UDP, a.OrphanAge = 3600e9, 3600e9
	res, err := d.Sweep(a)
	if err != nil {
		t.Fatal(err)
	}
	if res.Expired != 0 || res.Counts[nat6ID].Active != 1 || res.Counts[dr6ID].Active != 2 {
		t.Fatalf("live: %+v", res)
	}
	wantOwned := []dataplane.Template{
		{ServiceID: 2, Client: netip.MustParseAddr("2001:db8:c::"), VPort: 443},
		{ServiceID: 3, Client: netip.MustParseAddr("2001:db8:c::1:2:3:4"), VPort: 0},
	}
	slices.SortFunc(res.Owned, func(x, y dataplane.Template) int { return cmp.Compare(x.ServiceID, y.ServiceID) })
	if !slices.Equal(res.Owned, wantOwned) {
		t.Errorf("templates: got %v, want %v", res.Owned, wantOwned)
	}
	a.Now += 7200e9
	if res, err = d.Sweep(a); err != nil || res.Expired != 3 {
		t.Fatalf("expired: %+v %v", res, err)
	}
	if _, found, _ := d.LookupConn(k); found {
		t.Error("forward entry left")
	}
	if _, found, _ := d.LookupConn(dataplane.ConnKey{Src: rip6, Dst: client6, SrcPort: 8080, DstPort: 50001, Proto: conntrack.ProtoTCP}); found {
		t.Error("reply entry left")
	}
}

func expectFrame6(t *testing.T, name string, v, wantV dataplane.Verdict, got, want []byte) {
	t.Helper()
	if v != wantV || string(got) != string(want) {
		t.Errorf("%s: verdict %v, want %v\nwant: %x\ngot:  %x", name, v, wantV, want, got)
	}
}

// BenchmarkHitFamilies times a connection hit in the kernel (BPF_PROG_RUN
// with Repeat), IPv4 next to IPv6, DR (a NAT hit rewrites the frame in
// place, so the repeats after the first would not be hits):
// go test -run '^$' -bench HitFamilies ./dataplane (root).
func BenchmarkHitFamilies(b *testing.B) {
	d := openDirector(b)
	setupModes(b, d)
	if err := d.SetReal(1, dataplane.Real{Addr: rip, Ifindex: loIfindex, MAC: realMAC, Fwd: dataplane.FwdRoute}); err != nil {
		b.Fatal(err)
	}
	for _, r := range []struct {
		id  uint32
		fwd dataplane.Fwd
	}{{dr6ID, dataplane.FwdRoute}, {nat6ID, dataplane.FwdMasq}} {
		if err := d.SetReal(r.id, dataplane.Real{Addr: rip6, Ifindex: loIfindex, MAC: realMAC, Fwd: r.fwd, MTU: 1500}); err != nil {
			b.Fatal(err)
		}
	}
	if err := d.SetService(dataplane.ServiceKey{VIP: vip6, Port: 80, Proto: 6}, 1, 0); err != nil {
		b.Fatal(err)
	}
	key4 := func(sport uint16) dataplane.ConnKey {
		return dataplane.ConnKey{Src: client, Dst: vip, SrcPort: sport, DstPort: 80, Proto: conntrack.ProtoTCP}
	}
	key6 := func(sport uint16) dataplane.ConnKey {
		return dataplane.ConnKey{Src: client6, Dst: vip6, SrcPort: sport, DstPort: 80, Proto: conntrack.ProtoTCP}
	}
	flow(b, d, key4(50000), dataplane.Decision{RealID: 1, ServiceID: 1}, conntrack.StateEstablished)
	flow(b, d, key6(50000), dataplane.Decision{RealID: dr6ID, ServiceID: 1}, conntrack.StateEstablished)
	payload := make([]byte, 64)
	v4 := func(sport uint16) []byte {
		return testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: sport, DstPort: 80, ACK: true, Payload: payload}.Build()
	}
	v6 := func(sport uint16) []byte {
		return frame6{srcMAC: clientMAC, dstMAC: ifMAC, src: client6, dst: vip6, sport: sport, dport: 80, ack: true, payload: payload}.build(b)
	}
	for _, c := range []struct {
		name  string
		frame []byte
	}{{"ipv4-dr", v4(50000)}, {"ipv6-dr", v6(50000)}} {
		b.Run(c.name, func(b *testing.B) {
			v, dur, err := d.Benchmark(c.frame, b.N)
			if err != nil {
				b.Fatal(err)
			}
			if v != dataplane.XDPTx {
				b.Fatalf("verdict %v, want XDP_TX", v)
			}
			b.ReportMetric(float64(dur.Nanoseconds()), "ns/packet")
			b.ReportMetric(0, "ns/op")
		})
	}
}
