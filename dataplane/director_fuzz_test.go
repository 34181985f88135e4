package dataplane_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

// fuzzSeeds are frames of every kind of connection the fuzz lab holds,
// and issue 17's two frames (an MSS at an odd offset through TUN, an IP
// total length of 11 to a DR service).
func fuzzSeeds(tb testing.TB) [][]byte {
	f := func(sport, dport uint16, src, dst string, o testutil.Frame) []byte {
		o.SrcMAC, o.DstMAC, o.SrcPort, o.DstPort = clientMAC, ifMAC, sport, dport
		o.Src, o.Dst = netip.MustParseAddr(src), netip.MustParseAddr(dst)
		return o.Build()
	}
	seeds := [][]byte{
		f(40000, 80, "198.51.100.7", "192.0.2.10", testutil.Frame{ACK: true, Payload: []byte("GET / HTTP/1.0\r\n\r\n")}), // DR
		f(50000, 80, "198.51.100.7", "192.0.2.10", testutil.Frame{SYN: true, MSS: 1460}),                                 // TUN
		f(51000, 80, "198.51.100.7", "192.0.2.10", testutil.Frame{ACK: true, Payload: make([]byte, 1400)}),               // NAT
		f(8080, 51000, "10.1.0.11", "198.51.100.7", testutil.Frame{SYN: true, ACK: true, MSS: 1460}),                     // NAT reply
		f(52000, 80, "198.51.100.7", "192.0.2.10", testutil.Frame{ACK: true, Payload: []byte("x")}),                      // FULLNAT, TOA
		f(8080, 30001, "10.1.0.11", "10.1.0.250", testutil.Frame{SYN: true, ACK: true, MSS: 1460, Timestamps: true}),     // FULLNAT reply
		f(5300, 53, "198.51.100.7", "192.0.2.10", testutil.Frame{Proto: layers.IPProtocolUDP, Payload: []byte("q")}),     // NAT UDP
		f(41000, 80, "198.51.100.7", "192.0.2.99", testutil.Frame{ACK: true}),                                            // not ours
		f(42000, 81, "198.51.100.7", "192.0.2.10", testutil.Frame{SYN: true, MSS: 1460, Timestamps: true}),               // SYN proxy
		f(42000, 81, "198.51.100.7", "192.0.2.10", testutil.Frame{ACK: true, Timestamps: true}),                          // its ACK
		f(53000, 80, "198.51.100.7", "192.0.2.10", testutil.Frame{ACK: true, Timestamps: true, Payload: []byte("x")}),    // proxied
		f(8080, 53000, "10.1.0.11", "198.51.100.7", testutil.Frame{ACK: true, Timestamps: true, Payload: []byte("y")}),   // its reply
		// IPv4 options (issue 29): well formed, and a source route.
		f(40000, 80, "198.51.100.7", "192.0.2.10", testutil.Frame{ACK: true, IPOptions: []layers.IPv4Option{{OptionType: 1},
			{OptionType: 7, OptionLength: 7, OptionData: []byte{4, 0, 0, 0, 0}}, {OptionType: 0}}}),
		f(40000, 80, "198.51.100.7", "192.0.2.10", testutil.Frame{ACK: true, IPOptions: []layers.IPv4Option{
			{OptionType: 131, OptionLength: 7, OptionData: []byte{4, 10, 1, 0, 11}}, {OptionType: 0}}}),
	}
	// IPv6: a connection of every method (the IPv6 fixtures' lab), an
	// ICMPv6 error about one, a frame too big for the tunnel.
	c6, v6, r6 := client6.String(), vip6.String(), rip6.String()
	seeds = append(seeds,
		f(50000, 80, c6, v6, testutil.Frame{ACK: true, Payload: []byte("GET / HTTP/1.0\r\n\r\n")}), // DR
		f(50010, 80, c6, v6, testutil.Frame{SYN: true, MSS: 1460}),                                 // TUN
		f(50010, 80, c6, v6, testutil.Frame{ACK: true, Payload: make([]byte, 1450)}),               // TUN, too big
		f(50001, 80, c6, v6, testutil.Frame{ACK: true, Payload: make([]byte, 100)}),                // NAT
		f(8080, 50001, r6, c6, testutil.Frame{SYN: true, ACK: true, MSS: 1440}),                    // NAT reply
		f(52000, 80, c6, v6, testutil.Frame{ACK: true, Payload: []byte("x")}),                      // FULLNAT, TOA
		f(8080, 40001, r6, "2001:db8:1::100", testutil.Frame{SYN: true, ACK: true, MSS: 1440}),     // FULLNAT reply
		f(5353, 53, c6, v6, testutil.Frame{Proto: layers.IPProtocolUDP, Payload: []byte("q")}),     // NAT UDP
	)
	// Fragments and extension headers (issue 29), with the verdict IPVS
	// gives (the kernel reassembles, then IPVS forwards): a connection's
	// datagram cut in two, IPv4 and IPv6; a fragmented SYN of a new flow
	// (the slow path's; none is bound here); an atomic fragment, five
	// destination-options headers, hop-by-hop + destination options +
	// fragment header (the real's).
	cut4 := func(b []byte) [][]byte { return testutil.Fragment4(tb, b, 16) }
	cut6 := func(b []byte, id uint32) [][]byte { return fragment6(tb, b, id, 24) }
	seeds = append(seeds, cut4(f(40000, 80, "198.51.100.7", "192.0.2.10", testutil.Frame{ACK: true, Payload: make([]byte, 300), NoDF: true}))...)
	seeds = append(seeds, cut4(f(51000, 80, "198.51.100.7", "192.0.2.10", testutil.Frame{ACK: true, Payload: make([]byte, 300), NoDF: true}))...)
	seeds = append(seeds, cut4(f(43000, 80, "198.51.100.7", "192.0.2.10", testutil.Frame{SYN: true, MSS: 1460, Payload: make([]byte, 64), NoDF: true}))...)
	dr6 := f(50000, 80, c6, v6, testutil.Frame{ACK: true, Payload: make([]byte, 300)})
	seeds = append(seeds, cut6(dr6, 0x80000001)...)
	seeds = append(seeds, cut6(f(50001, 80, c6, v6, testutil.Frame{ACK: true, Payload: make([]byte, 300)}), 0x80000002)...)
	seeds = append(seeds, withExt6(dr6, atomicFrag(9)), withExt6(dr6, destOpts(), destOpts(), destOpts(), destOpts(), destOpts()))
	for _, fr := range cut6(dr6, 0x80000003) {
		seeds = append(seeds, withExt6(fr, hopByHop(), destOpts()))
	}
	quoted := testutil.Frame{Src: vip6, Dst: client6, SrcPort: 80, DstPort: 50001, ACK: true, Payload: make([]byte, 100)}.Build()[14:]
	seeds = append(seeds, testutil.ICMPv6Error(clientMAC, ifMAC, netip.MustParseAddr("2001:db8:ff::1"), vip6, 2, 0, 1400, quoted))
	for _, h := range []string{
		"02d10000000102cc000000070800450000311234400040063c4ec6336407c000020a9c440050000003e8000007d070ffffff353e0000010402020405b4010a",
		"02d10000000102cc0000000708004500000b1234400040063c57c6336407c000020a9c4a0050000003e8000007d05012ffff1b3b0000",
	} {
		b, _ := hex.DecodeString(h)
		seeds = append(seeds, b)
	}
	return seeds
}

// FuzzDirector runs the director on random and mutated frames with a
// connection of every forwarding method in its table (DR, TUN, NAT and
// FULLNAT, both directions): a frame it passes leaves unchanged; one it
// forwards has valid checksums when it came with them, and grows at most
// by an IP-in-IP header or the TOA option (an ICMP error is a fixed
// size); it never aborts. go test -fuzz FuzzDirector ./dataplane (root).
func FuzzDirector(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	d := openDirector(f)
	setupModes(f, d)
	if err := d.SetReal(1, dataplane.Real{Addr: rip, Ifindex: loIfindex, MAC: realMAC, Fwd: dataplane.FwdRoute}); err != nil {
		f.Fatal(err)
	}
	flow(f, d, tcpKey(40000), dataplane.Decision{RealID: 1, ServiceID: 1}, conntrack.StateEstablished)
	flow(f, d, tcpKey(50000), dataplane.Decision{RealID: tunID, ServiceID: 1}, 0)
	flow(f, d, tcpKey(51000), dataplane.Decision{RealID: natID, ServiceID: 1, Out: dataplane.ConnKey{Src: client, Dst: rip, SrcPort: 51000, DstPort: 8080}}, conntrack.StateSynRecv)
	flow(f, d, tcpKey(52000), dataplane.Decision{RealID: fullnatID, ServiceID: 1, FullNAT: true,
		Out: dataplane.ConnKey{Src: lip, Dst: rip, SrcPort: 30001, DstPort: 8080}}, conntrack.StateSynRecv)
	// A SYN-proxied service (its SYNs answered with cookie SYN-ACKs) and
	// a proxied NAT connection (sequence numbers shifted both ways).
	if err := d.SetService(dataplane.ServiceKey{VIP: vip, Port: 81, Proto: 6}, 2, dataplane.SvcSynProxy); err != nil {
		f.Fatal(err)
	}
	spk := tcpKey(53000)
	flow(f, d, spk, dataplane.Decision{RealID: natID, ServiceID: 1, Out: dataplane.ConnKey{Src: client, Dst: rip, SrcPort: 53000, DstPort: 8080}},
		conntrack.StateEstablished)
	spc, _, _ := d.LookupConn(spk)
	for _, key := range []dataplane.ConnKey{spk, spc.Peer(conntrack.ProtoTCP)} {
		e, _, _ := d.LookupConn(key)
		e.Flags |= dataplane.ConnSynProxy
		if err := d.SetConn(key, e); err != nil {
			f.Fatal(err)
		}
		if err := d.SetSeqadj(key, 100000, 5000, -2); err != nil {
			f.Fatal(err)
		}
	}
	udp := dataplane.ConnKey{Src: client, Dst: vip, SrcPort: 5300, DstPort: 53, Proto: conntrack.ProtoUDP}
	flow(f, d, udp, dataplane.Decision{RealID: natID, ServiceID: 1, Out: dataplane.ConnKey{Src: client, Dst: rip, SrcPort: 5300, DstPort: 5300}}, 0)
	setupIPv6Conns(f, d)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 14 || len(in) > 1600 {
			return // BPF_PROG_RUN's bounds
		}
		v, out, err := d.Run(in, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		switch v {
		case dataplane.XDPPass:
			if !bytes.Equal(out, in) {
				t.Fatalf("passed a changed frame:\nin:  %x\nout: %x", in, out)
			}
		case dataplane.XDPTx, dataplane.XDPRedirect:
			if len(in) >= 34 && binary.BigEndian.Uint16(in[12:]) == 0x0800 && !ipv4HeaderValid(in) {
				t.Fatalf("forwarded a frame whose IPv4 header checksum is wrong: %x", in)
			}
			checkForwarded(t, in, out)
		case dataplane.XDPDrop:
		default:
			t.Fatalf("verdict %v for %x", v, in)
		}
	})
}

// checkForwarded checks a forwarded frame against the frame it came from.
func checkForwarded(t *testing.T, in, out []byte) {
	t.Helper()
	if len(in) >= 14 && binary.BigEndian.Uint16(in[12:14]) == 0x86dd {
		checkForwarded6(t, in, out)
		return
	}
	if len(out) >= 34 && out[14+9] == 1 && len(out) == 70 {
		return // an ICMP fragmentation-needed of fixed size (checked by the fixtures)
	}
	if len(in) >= 54 && in[14+20+13]&0x17 == 0x02 && binary.BigEndian.Uint16(in[14+20+2:]) == 81 &&
		(len(out) == 58 || len(out) == 74) && out[14+9] == 6 && out[14+20+13] == 0x12 {
		// The SYN proxy's SYN-ACK, built afresh: whole and valid.
		if !testutil.ChecksumsValid(out) {
			t.Fatalf("SYN-ACK with invalid checksums:\nin:  %x\nout: %x", in, out)
		}
		return
	}
	grow := len(out) - len(in)
	if grow != 0 && grow != 20 && grow != 8 {
		t.Fatalf("frame grew by %d bytes:\nin:  %x\nout: %x", grow, in, out)
	}
	inner := out
	if grow == 20 { // IP-in-IP: the outer header, then the inner packet
		if csumOK := csum(out[14:34]) == 0xffff; !csumOK {
			t.Fatalf("outer IP checksum invalid: %x", out)
		}
		inner = append(append([]byte(nil), out[:14]...), out[34:]...)
	}
	// The director forwards only well-formed frames, with their
	// checksums kept valid if they were.
	if testutil.ChecksumsValid(trim(in)) && !testutil.ChecksumsValid(trim(inner)) {
		t.Fatalf("valid checksums in, invalid out:\nin:  %x\nout: %x", in, out)
	}
}

// trim cuts Ethernet padding after the IP datagram.
func trim(f []byte) []byte {
	if len(f) < 18 {
		return f
	}
	if n := 14 + int(binary.BigEndian.Uint16(f[16:18])); n <= len(f) {
		return f[:n]
	}
	return f
}

// setupIPv6Conns gives the fuzz lab the IPv6 fixtures' services, reals
// and a connection of every forwarding method.
func setupIPv6Conns(tb testing.TB, d *dataplane.Harness) {
	setupIPv6(tb, d)
	flow(tb, d, tcpKey6(50000), dataplane.Decision{RealID: dr6ID, ServiceID: 1}, conntrack.StateEstablished)
	flow(tb, d, tcpKey6(50010), dataplane.Decision{RealID: tun6ID, ServiceID: 1}, 0)
	flow(tb, d, tcpKey6(50001), dataplane.Decision{RealID: nat6ID, ServiceID: 1,
		Out: dataplane.ConnKey{Src: client6, Dst: rip6, SrcPort: 50001, DstPort: 8080}}, conntrack.StateSynRecv)
	flow(tb, d, tcpKey6(52000), dataplane.Decision{RealID: fnat6ID, ServiceID: 1, FullNAT: true,
		Out: dataplane.ConnKey{Src: netip.MustParseAddr("2001:db8:1::100"), Dst: rip6, SrcPort: 40001, DstPort: 8080}}, conntrack.StateSynRecv)
	flow(tb, d, dataplane.ConnKey{Src: client6, Dst: vip6, SrcPort: 5353, DstPort: 53, Proto: conntrack.ProtoUDP},
		dataplane.Decision{RealID: nat6ID, ServiceID: 1, Out: dataplane.ConnKey{Src: client6, Dst: rip6, SrcPort: 5353, DstPort: 5300}}, 0)
}

// checkForwarded6 is checkForwarded for an IPv6 frame: it grows by an
// outer IPv6 header (TUN) or the 20-byte TOA option (FULLNAT) or not at
// all, or becomes a Packet Too Big of fixed size; checksums stay valid.
func checkForwarded6(t *testing.T, in, out []byte) {
	t.Helper()
	if len(out) == 14+40+8+1232 && out[14+6] == 58 && out[14+40] == 2 {
		if !testutil.ChecksumsValid(out) {
			t.Fatalf("Packet Too Big with an invalid checksum:\nin:  %x\nout: %x", in, out)
		}
		return
	}
	inner := out
	switch grow := len(out) - len(in); grow {
	case 0, 20:
	case 40:
		if out[14]>>4 != 6 || out[14+6] != 41 {
			t.Fatalf("grew by 40 bytes but not IPv6 in IPv6:\nin:  %x\nout: %x", in, out)
		}
		inner = append(append([]byte(nil), out[:14]...), out[54:]...)
	default:
		t.Fatalf("IPv6 frame grew by %d bytes:\nin:  %x\nout: %x", grow, in, out)
	}
	if testutil.ChecksumsValid(trim6(in)) && !testutil.ChecksumsValid(trim6(inner)) {
		t.Fatalf("valid checksums in, invalid out:\nin:  %x\nout: %x", in, out)
	}
}

// trim6 cuts what follows an IPv6 packet in its frame.
func trim6(f []byte) []byte {
	if len(f) < 14+40 {
		return f
	}
	if n := 14 + 40 + int(binary.BigEndian.Uint16(f[18:20])); n <= len(f) {
		return f[:n]
	}
	return f
}

// ipv4HeaderValid reports whether an IPv4 frame's header is whole and
// its checksum right.
func ipv4HeaderValid(f []byte) bool {
	hl := int(f[14]&0xf) * 4
	if hl < 20 || len(f) < 14+hl {
		return false
	}
	var s uint32
	for i := 14; i < 14+hl; i += 2 {
		s += uint32(binary.BigEndian.Uint16(f[i:]))
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	return s == 0xffff
}
