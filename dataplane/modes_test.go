package dataplane_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

var (
	tunSrc = netip.MustParseAddr("10.1.0.2")
	lip    = netip.MustParseAddr("10.1.0.250")
	gwMAC  = net.HardwareAddr{0x02, 0x99, 0, 0, 0, 0x01}
)

// Real ids of the mode fixtures.
const (
	tunID     = 11
	natID     = 12
	fullnatID = 13
)

func setupModes(t testing.TB, d *dataplane.Harness) {
	t.Helper()
	for _, k := range []dataplane.ServiceKey{{VIP: vip, Port: 80, Proto: 6}, {VIP: vip, Port: 53, Proto: 17}} {
		if err := d.SetService(k, 1, 0); err != nil {
			t.Fatal(err)
		}
	}
	// The TUN real is routed: its MAC is the gateway's.
	reals := map[uint32]dataplane.Real{
		tunID:     {Addr: netip.MustParseAddr("172.16.5.5"), Ifindex: loIfindex, MAC: gwMAC, Fwd: dataplane.FwdTunnel, MTU: 1500, TunnelSrc: tunSrc},
		natID:     {Addr: rip, Ifindex: loIfindex, MAC: realMAC, Fwd: dataplane.FwdMasq, MTU: 1500},
		fullnatID: {Addr: rip, Ifindex: loIfindex, MAC: realMAC, Fwd: dataplane.FwdFullNAT, MTU: 1500},
	}
	for id, r := range reals {
		if err := d.SetReal(id, r); err != nil {
			t.Fatal(err)
		}
	}
}

// flow writes the entries of a new connection as the slow path does.
func flow(t testing.TB, d *dataplane.Harness, k dataplane.ConnKey, dec dataplane.Decision, state conntrack.State) {
	t.Helper()
	f := dataplane.NewFlow{Key: k, Ifindex: loIfindex, SrcMAC: [6]byte(clientMAC)}
	if err := d.SetConns(f, dec, dataplane.Now()); err != nil {
		t.Fatal(err)
	}
	if state != 0 {
		c, _, _ := d.LookupConn(k)
		c.State = state
		if err := d.SetConn(k, c); err != nil {
			t.Fatal(err)
		}
	}
}

func run(t *testing.T, d *dataplane.Harness, in []byte) (dataplane.Verdict, []byte) {
	t.Helper()
	v, out, err := d.Run(in, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return v, out
}

func expectFrame(t *testing.T, name string, v, wantV dataplane.Verdict, got, want []byte) {
	t.Helper()
	if v != wantV || !bytes.Equal(got, want) {
		t.Errorf("%s: verdict %v, want %v\nwant: %s\ngot:  %s", name, v, wantV, hex.EncodeToString(want), hex.EncodeToString(got))
	}
	if v != dataplane.XDPTx || len(got) < 34 {
		return
	}
	frame := got
	if got[14+9] == 4 { // IP-in-IP: the outer header, then the inner packet
		if csum(got[14:34]) != 0xffff {
			t.Errorf("%s: outer IP checksum invalid: %s", name, hex.EncodeToString(got))
		}
		frame = append(append([]byte(nil), got[:14]...), got[34:]...)
	}
	if !testutil.ChecksumsValid(frame) {
		t.Errorf("%s: checksums invalid: %s", name, hex.EncodeToString(got))
	}
}

func TestTUNFixtures(t *testing.T) {
	d := openDirector(t)
	setupModes(t, d)
	real := netip.MustParseAddr("172.16.5.5")
	flow(t, d, tcpKey(50000), dataplane.Decision{RealID: tunID, ServiceID: 1}, conntrack.StateEstablished)
	flow(t, d, tcpKey(50001), dataplane.Decision{RealID: tunID, ServiceID: 1}, 0)

	// A data packet: the inner packet is untouched; the outer header
	// carries TOS, TTL, DF and ID of the inner one.
	in := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 50000, DstPort: 80, ACK: true,
		TOS: 0x28, TTL: 57, ID: 0xbeef, Payload: []byte("GET / HTTP/1.1\r\n\r\n")}.Build()
	v, out := run(t, d, in)
	want := testutil.IPIP(in, gwMAC, ifMAC, tunSrc, real, 0x28, 57, 0xbeef, true)
	expectFrame(t, "TUN data", v, dataplane.XDPTx, out, want)
	if !bytes.Equal(out[34:], in[14:]) {
		t.Errorf("inner packet changed")
	}

	// Without DF on the inner packet, none on the outer.
	noDF := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 50000, DstPort: 80, ACK: true, NoDF: true,
		Payload: []byte("0123456789")}.Build()
	v, out = run(t, d, noDF)
	expectFrame(t, "TUN without DF", v, dataplane.XDPTx, out, testutil.IPIP(noDF, gwMAC, ifMAC, tunSrc, real, 0, 64, 0x1234, false))

	// A SYN's MSS is clamped to MTU - 20 (outer) - 40.
	syn := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 50001, DstPort: 80, SYN: true, MSS: 1460, Timestamps: true}
	v, out = run(t, d, syn.Build())
	syn.MSS = 1440
	expectFrame(t, "TUN SYN clamp", v, dataplane.XDPTx, out, testutil.IPIP(syn.Build(), gwMAC, ifMAC, tunSrc, real, 0, 64, 0x1234, true))
	// An MSS after four NOPs (issue 29), and after five (at an odd
	// offset), is found and clamped too.
	for _, n := range []int{4, 5} {
		flow(t, d, tcpKey(50002), dataplane.Decision{RealID: tunID, ServiceID: 1}, 0)
		opts := func(mss uint16) []layers.TCPOption {
			var o []layers.TCPOption
			for i := 0; i < n; i++ {
				o = append(o, layers.TCPOption{OptionType: layers.TCPOptionKindNop})
			}
			return append(o, layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{byte(mss >> 8), byte(mss)}})
		}
		late := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 50002, DstPort: 80, SYN: true, TCPOptions: opts(1460)}
		v, out = run(t, d, late.Build())
		late.TCPOptions = opts(1440)
		expectFrame(t, fmt.Sprintf("TUN SYN clamp, MSS after %d NOPs", n), v, dataplane.XDPTx, out,
			testutil.IPIP(late.Build(), gwMAC, ifMAC, tunSrc, real, 0, 64, 0x1234, true))
	}

	// Too big for the tunnel with DF: ICMP fragmentation-needed back to
	// the client, from the VIP, quoting the header.
	big := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 50000, DstPort: 80, ACK: true,
		Payload: make([]byte, 1500-40-10)}.Build() // IP length 1490: 1510 with the outer header
	v, out = run(t, d, big)
	if v != dataplane.XDPTx {
		t.Fatalf("oversized DF packet: verdict %v, want XDP_TX of an ICMP error", v)
	}
	p := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	icmp, _ := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if eth == nil || ip == nil || icmp == nil {
		t.Fatalf("ICMP frame does not decode: %s", hex.EncodeToString(out))
	}
	if eth.DstMAC.String() != clientMAC.String() || eth.SrcMAC.String() != ifMAC.String() {
		t.Errorf("ICMP MACs %v <- %v", eth.DstMAC, eth.SrcMAC)
	}
	if !ip.SrcIP.Equal(vip.AsSlice()) || !ip.DstIP.Equal(client.AsSlice()) || ip.Length != 56 || len(out) != 70 {
		t.Errorf("ICMP IP header %v -> %v len %d, frame %d", ip.SrcIP, ip.DstIP, ip.Length, len(out))
	}
	if icmp.TypeCode != layers.CreateICMPv4TypeCode(3, 4) || binary.BigEndian.Uint16(out[40:42]) != 1480 {
		t.Errorf("ICMP %v mtu %d, want 3/4 mtu 1480", icmp.TypeCode, binary.BigEndian.Uint16(out[40:42]))
	}
	if !bytes.Equal(out[42:70], big[14:42]) {
		t.Errorf("ICMP quotes %x, want %x", out[42:70], big[14:42])
	}
	if csum(out[14:34]) != 0xffff || csum(out[34:70]) != 0xffff {
		t.Errorf("ICMP checksums invalid: %s", hex.EncodeToString(out))
	}
	// Without DF the director cannot fragment: dropped and counted.
	bigNoDF := testutil.Frame{Src: client, Dst: vip, SrcPort: 50000, DstPort: 80, ACK: true, NoDF: true, Payload: make([]byte, 1450)}.Build()
	if v, _ := run(t, d, bigNoDF); v != dataplane.XDPDrop {
		t.Errorf("oversized packet without DF: verdict %v, want drop", v)
	}
	c, _ := d.Counters()
	if c[dataplane.StatICMPFragNeeded] != 1 || c[dataplane.StatDropTooBig] != 1 {
		t.Errorf("counters %v", c)
	}
}

func csum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

func TestNATFixtures(t *testing.T) {
	d := openDirector(t)
	setupModes(t, d)
	k := tcpKey(51000)
	flow(t, d, k, dataplane.Decision{RealID: natID, ServiceID: 1,
		Out: dataplane.ConnKey{Src: client, Dst: rip, SrcPort: 51000, DstPort: 8080}}, 0)

	// Client -> VIP:80 becomes client -> RIP:8080 (port mapping).
	in := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 51000, DstPort: 80, SYN: true, MSS: 1460}
	v, out := run(t, d, in.Build())
	want := in
	want.DstMAC, want.SrcMAC, want.Dst, want.DstPort = realMAC, ifMAC, rip, 8080
	expectFrame(t, "NAT SYN", v, dataplane.XDPTx, out, want.Build())

	// The reply RIP:8080 -> client is found by its own key and leaves
	// as VIP:80 -> client toward the client's previous hop.
	rep := testutil.Frame{SrcMAC: realMAC, DstMAC: ifMAC, Src: rip, Dst: client, SrcPort: 8080, DstPort: 51000, SYN: true, ACK: true, MSS: 1460}
	v, out = run(t, d, rep.Build())
	wantRep := rep
	wantRep.DstMAC, wantRep.SrcMAC, wantRep.Src, wantRep.SrcPort = clientMAC, ifMAC, vip, 80
	expectFrame(t, "NAT SYN-ACK", v, dataplane.XDPTx, out, wantRep.Build())

	// State follows both directions (IPVS's INPUT and OUTPUT tables).
	ack := in
	ack.SYN, ack.ACK, ack.MSS = false, true, 0
	run(t, d, ack.Build())
	if c, _, _ := d.LookupConn(k); c.State != conntrack.StateEstablished {
		t.Errorf("after client ACK: %v", c.State)
	}
	fin := rep
	fin.SYN, fin.FIN, fin.MSS = false, true, 0
	run(t, d, fin.Build())
	if c, _, _ := d.LookupConn(k); c.State != conntrack.StateFinWait {
		t.Errorf("after server FIN: %v, want FIN_WAIT (OUTPUT fin from ESTABLISHED)", c.State)
	}

	// UDP: a checksum is updated, a zero checksum stays zero.
	uk := dataplane.ConnKey{Src: client, Dst: vip, SrcPort: 5353, DstPort: 53, Proto: 17}
	flow(t, d, uk, dataplane.Decision{RealID: natID, ServiceID: 1, Out: dataplane.ConnKey{Src: client, Dst: rip, SrcPort: 5353, DstPort: 5300}}, 0)
	for _, zero := range []bool{false, true} {
		u := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 5353, DstPort: 53,
			Proto: layers.IPProtocolUDP, Payload: []byte("query"), NoUDPChecksum: zero}
		v, out = run(t, d, u.Build())
		w := u
		w.DstMAC, w.SrcMAC, w.Dst, w.DstPort = realMAC, ifMAC, rip, 5300
		expectFrame(t, "NAT UDP", v, dataplane.XDPTx, out, w.Build())
		if zero && (out[40] != 0 || out[41] != 0) {
			t.Errorf("zero UDP checksum became %x", out[40:42])
		}
	}
	c, _ := d.Counters()
	if c[dataplane.StatReply] != 2 {
		t.Errorf("reply counter %d, want 2", c[dataplane.StatReply])
	}
}

// toa is the TOA option a FULLNAT director adds: kind 254, length 8,
// client port, client address.
func toa(port uint16, a netip.Addr) layers.TCPOption {
	b := a.As4()
	return layers.TCPOption{OptionType: 254, OptionLength: 8, OptionData: []byte{byte(port >> 8), byte(port), b[0], b[1], b[2], b[3]}}
}

func TestFULLNATFixtures(t *testing.T) {
	d := openDirector(t)
	setupModes(t, d)
	k := tcpKey(52000)
	flow(t, d, k, dataplane.Decision{RealID: fullnatID, ServiceID: 1, FullNAT: true,
		Out: dataplane.ConnKey{Src: lip, Dst: rip, SrcPort: 30001, DstPort: 8080}}, 0)

	syn := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 52000, DstPort: 80, SYN: true, MSS: 1460, Timestamps: true}
	v, out := run(t, d, syn.Build())
	w := syn
	w.DstMAC, w.SrcMAC, w.Src, w.SrcPort, w.Dst, w.DstPort = realMAC, ifMAC, lip, 30001, rip, 8080
	expectFrame(t, "FULLNAT SYN", v, dataplane.XDPTx, out, w.Build())

	// The SYN-ACK comes back to the local address; it leaves as VIP ->
	// client with its MSS 8 lower, so the client's segments leave room
	// for the TOA option.
	sa := testutil.Frame{SrcMAC: realMAC, DstMAC: ifMAC, Src: rip, Dst: lip, SrcPort: 8080, DstPort: 30001, SYN: true, ACK: true, MSS: 1460, Timestamps: true}
	v, out = run(t, d, sa.Build())
	w = sa
	w.DstMAC, w.SrcMAC, w.Src, w.SrcPort, w.Dst, w.DstPort, w.MSS = clientMAC, ifMAC, vip, 80, client, 52000, 1452
	expectFrame(t, "FULLNAT SYN-ACK", v, dataplane.XDPTx, out, w.Build())

	// The ACK completing the handshake carries TOA (client port and
	// address), after the existing options; with data too.
	for i, payload := range [][]byte{nil, []byte("GET / HTTP/1.1\r\n\r\n")} {
		if i == 1 { // back to SYN_RECV for the second case
			c, _, _ := d.LookupConn(k)
			c.State = conntrack.StateSynRecv
			_ = d.SetConn(k, c)
		}
		ack := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 52000, DstPort: 80, ACK: true, Timestamps: true, Payload: payload}
		v, out = run(t, d, ack.Build())
		w = ack
		w.DstMAC, w.SrcMAC, w.Src, w.SrcPort, w.Dst, w.DstPort = realMAC, ifMAC, lip, 30001, rip, 8080
		w.TCPOptions = []layers.TCPOption{toa(52000, client)}
		expectFrame(t, "FULLNAT handshake ACK with TOA", v, dataplane.XDPTx, out, w.Build())
		if c, _, _ := d.LookupConn(k); c.State != conntrack.StateEstablished {
			t.Errorf("after the handshake ACK: %v", c.State)
		}
	}
	// Options that end in an end-of-options and its padding (macOS
	// sends them so): the TOA after them would never be read (issue
	// 29); they become NOPs and the TOA follows.
	k3 := tcpKey(52002)
	flow(t, d, k3, dataplane.Decision{RealID: fullnatID, ServiceID: 1, FullNAT: true,
		Out: dataplane.ConnKey{Src: lip, Dst: rip, SrcPort: 30003, DstPort: 8080}}, conntrack.StateSynRecv)
	ts := layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: []byte{0, 0, 0x10, 0, 0, 0, 0x20, 0}}
	eol := layers.TCPOption{OptionType: layers.TCPOptionKindEndList}
	nop := layers.TCPOption{OptionType: layers.TCPOptionKindNop}
	mac := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 52002, DstPort: 80, ACK: true,
		TCPOptions: []layers.TCPOption{nop, ts, eol}, Payload: []byte("x")}
	v, out = run(t, d, mac.Build())
	w = mac
	w.DstMAC, w.SrcMAC, w.Src, w.SrcPort, w.Dst, w.DstPort = realMAC, ifMAC, lip, 30003, rip, 8080
	w.TCPOptions = []layers.TCPOption{nop, ts, nop, toa(52002, client)}
	expectFrame(t, "FULLNAT handshake ACK ending in an end-of-options", v, dataplane.XDPTx, out, w.Build())

	// Later packets carry no TOA.
	data := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 52000, DstPort: 80, ACK: true, Timestamps: true, Payload: []byte("more")}
	v, out = run(t, d, data.Build())
	w = data
	w.DstMAC, w.SrcMAC, w.Src, w.SrcPort, w.Dst, w.DstPort = realMAC, ifMAC, lip, 30001, rip, 8080
	expectFrame(t, "FULLNAT data", v, dataplane.XDPTx, out, w.Build())

	// Replies: RIP:8080 -> LIP:30001 become VIP:80 -> client.
	r := testutil.Frame{SrcMAC: realMAC, DstMAC: ifMAC, Src: rip, Dst: lip, SrcPort: 8080, DstPort: 30001, ACK: true, Payload: []byte("HTTP/1.1 200 OK\r\n")}
	v, out = run(t, d, r.Build())
	w = r
	w.DstMAC, w.SrcMAC, w.Src, w.SrcPort, w.Dst, w.DstPort = clientMAC, ifMAC, vip, 80, client, 52000
	expectFrame(t, "FULLNAT reply", v, dataplane.XDPTx, out, w.Build())

	// No room for TOA (40 bytes of options already): forwarded without
	// it and counted.
	k2 := tcpKey(52001)
	flow(t, d, k2, dataplane.Decision{RealID: fullnatID, ServiceID: 1, FullNAT: true,
		Out: dataplane.ConnKey{Src: lip, Dst: rip, SrcPort: 30002, DstPort: 8080}}, conntrack.StateSynRecv)
	nops := make([]layers.TCPOption, 40)
	for i := range nops {
		nops[i] = layers.TCPOption{OptionType: layers.TCPOptionKindNop}
	}
	full := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 52001, DstPort: 80, ACK: true, TCPOptions: nops}
	v, out = run(t, d, full.Build())
	w = full
	w.DstMAC, w.SrcMAC, w.Src, w.SrcPort, w.Dst, w.DstPort = realMAC, ifMAC, lip, 30002, rip, 8080
	expectFrame(t, "FULLNAT no room for TOA", v, dataplane.XDPTx, out, w.Build())
	c, _ := d.Counters()
	if c[dataplane.StatTOASkipped] != 1 {
		t.Errorf("toa_skipped %d, want 1", c[dataplane.StatTOASkipped])
	}
	// A truncated reply is passed, not rewritten.
	trunc := r.Build()[:14+20+8]
	if v, out := run(t, d, trunc); v != dataplane.XDPPass || !bytes.Equal(out, trunc) {
		t.Errorf("truncated reply: verdict %v", v)
	}
}

// The per-real counters count what was forwarded: packets and IP bytes
// toward the real, and NAT replies back; a dropped packet is not counted,
// and a reset starts the real from zero.
func TestRealTrafficCounters(t *testing.T) {
	d := openDirector(t)
	setupModes(t, d)
	k := tcpKey(52000)
	flow(t, d, k, dataplane.Decision{RealID: natID, ServiceID: 1,
		Out: dataplane.ConnKey{Src: client, Dst: rip, SrcPort: 52000, DstPort: 8080}}, 0)
	in := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 52000, DstPort: 80, SYN: true, MSS: 1460}
	data := in
	data.SYN, data.ACK, data.MSS, data.Payload = false, true, 0, make([]byte, 300)
	rep := testutil.Frame{SrcMAC: realMAC, DstMAC: ifMAC, Src: rip, Dst: client, SrcPort: 8080, DstPort: 52000, SYN: true, ACK: true, MSS: 1460}
	var inBytes, outBytes uint64
	for _, f := range [][]byte{in.Build(), data.Build()} {
		if v, _ := run(t, d, f); v != dataplane.XDPTx {
			t.Fatalf("forward verdict %v", v)
		}
		inBytes += uint64(binary.BigEndian.Uint16(f[16:18])) // IP total length: padding is not counted
	}
	r := rep.Build()
	if v, _ := run(t, d, r); v != dataplane.XDPTx {
		t.Fatalf("reply verdict %v", v)
	}
	outBytes += uint64(binary.BigEndian.Uint16(r[16:18]))
	want := dataplane.Traffic{InPkts: 2, InBytes: inBytes, OutPkts: 1, OutBytes: outBytes}
	if got, err := d.RealTraffic(natID); err != nil || got != want {
		t.Errorf("NAT real traffic %+v (%v), want %+v", got, err, want)
	}
	if inBytes != 20+24+20+20+300 { // SYN with MSS; ACK with 300 bytes
		t.Errorf("frame sizes changed: %d", inBytes)
	}

	// A real without a MAC drops: nothing counted for it.
	noMAC := dataplane.Real{Addr: rip, Ifindex: loIfindex, Fwd: dataplane.FwdRoute, MTU: 1500}
	if err := d.SetReal(14, noMAC); err != nil {
		t.Fatal(err)
	}
	k2 := tcpKey(52001)
	flow(t, d, k2, dataplane.Decision{RealID: 14, ServiceID: 1}, 0)
	f2 := in
	f2.SrcPort = 52001
	if v, _ := run(t, d, f2.Build()); v != dataplane.XDPDrop {
		t.Fatalf("no-MAC verdict %v", v)
	}
	if got, _ := d.RealTraffic(14); got != (dataplane.Traffic{}) {
		t.Errorf("dropped packet counted: %+v", got)
	}

	if err := d.ResetRealTraffic(natID); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.RealTraffic(natID); got != (dataplane.Traffic{}) {
		t.Errorf("after reset: %+v", got)
	}
}

// TestMSSAtOddOffset: an MSS option after one NOP straddles two checksum
// words; clamping it (TUN SYN) or lowering it (FULLNAT SYN-ACK) must
// leave a valid TCP checksum (issue 17's frame, then built ones).
func TestMSSAtOddOffset(t *testing.T) {
	d := openDirector(t)
	setupModes(t, d)
	in, err := hex.DecodeString("02d10000000102cc000000070800450000311234400040063c4ec6336407c000020a9c440050000003e8000007d070ffffff353e0000010402020405b4010a")
	if err != nil {
		t.Fatal(err)
	}
	if !testutil.ChecksumsValid(in) {
		t.Fatalf("the input's checksums are not valid")
	}
	sport := binary.BigEndian.Uint16(in[34:36])
	flow(t, d, tcpKey(sport), dataplane.Decision{RealID: tunID, ServiceID: 1}, 0)
	v, out := run(t, d, in)
	if v != dataplane.XDPTx || len(out) != len(in)+20 {
		t.Fatalf("verdict %v, %d bytes", v, len(out))
	}
	inner := append(append([]byte(nil), out[:14]...), out[34:]...)
	if !testutil.ChecksumsValid(inner) {
		t.Errorf("TUN SYN with MSS at an odd offset: inner checksum invalid: %s", hex.EncodeToString(out))
	}
	nopMSS := []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}},
		{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}}
	syn := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 52100, DstPort: 80, SYN: true, TCPOptions: nopMSS}.Build()
	flow(t, d, tcpKey(52100), dataplane.Decision{RealID: fullnatID, ServiceID: 1, FullNAT: true,
		Out: dataplane.ConnKey{Src: lip, Dst: rip, SrcPort: 30100, DstPort: 8080}}, 0)
	if v, out := run(t, d, syn); v != dataplane.XDPTx || !testutil.ChecksumsValid(out) {
		t.Errorf("FULLNAT SYN: verdict %v, %s", v, hex.EncodeToString(out))
	}
	sa := testutil.Frame{SrcMAC: realMAC, DstMAC: ifMAC, Src: rip, Dst: lip, SrcPort: 8080, DstPort: 30100, SYN: true, ACK: true, TCPOptions: nopMSS}.Build()
	v, out = run(t, d, sa)
	if v != dataplane.XDPTx || !testutil.ChecksumsValid(out) {
		t.Errorf("FULLNAT SYN-ACK with MSS at an odd offset: verdict %v, checksums invalid: %s", v, hex.EncodeToString(out))
	}
	if mss := binary.BigEndian.Uint16(out[14+20+20+3:]); mss != 1460-8 {
		t.Errorf("SYN-ACK MSS %d, want %d", mss, 1460-8)
	}
}

// TestXDPPicks: a service with a pick cycle has its new flows scheduled
// in XDP, the n-th to cycle[n % len], entries written as the slow path
// writes them (NAT: the reply entry too), the first packet forwarded, the
// connection counted for its real; a FULLNAT real in a cycle is left to
// the slow path.
func TestXDPPicks(t *testing.T) {
	d := openDirector(t)
	setupModes(t, d)
	const drA, drB = 21, 22
	macA, macB := net.HardwareAddr{2, 0xee, 0, 0, 0, 0x21}, net.HardwareAddr{2, 0xee, 0, 0, 0, 0x22}
	for id, mac := range map[uint32]net.HardwareAddr{drA: macA, drB: macB} {
		if err := d.SetReal(id, dataplane.Real{Addr: netip.AddrFrom4([4]byte{10, 1, 0, byte(id)}), Ifindex: loIfindex, MAC: mac, Fwd: dataplane.FwdRoute}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.SetPicks(1, []uint32{drA, drB, drB}, 0); err != nil {
		t.Fatal(err)
	}
	want := []net.HardwareAddr{macA, macB, macB, macA, macB, macB, macA}
	for i, mac := range want {
		syn := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: uint16(53000 + i), DstPort: 80, SYN: true}.Build()
		v, out := run(t, d, syn)
		if v != dataplane.XDPTx || !bytes.Equal(out[0:6], mac) {
			t.Fatalf("new flow %d: %v to %x, want XDP_TX to %v", i, v, out[0:6], mac)
		}
		c, found, err := d.LookupConn(tcpKey(uint16(53000 + i)))
		if err != nil || !found || c.State != conntrack.StateSynRecv || c.ServiceID != 1 {
			t.Fatalf("new flow %d: entry %+v found %v (%v)", i, c, found, err)
		}
	}
	if n, err := d.PickCursor(1); err != nil || n != uint64(len(want)) {
		t.Errorf("cursor %d (%v), want %d", n, err, len(want))
	}
	ta, _ := d.RealTraffic(drA)
	tb, _ := d.RealTraffic(drB)
	if ta.Conns != 3 || tb.Conns != 4 {
		t.Errorf("connections counted %d and %d, want 3 and 4", ta.Conns, tb.Conns)
	}

	// NAT: both entries, as the slow path writes them.
	if err := d.SetReal(natID, dataplane.Real{Addr: rip, Ifindex: loIfindex, MAC: realMAC, Fwd: dataplane.FwdMasq, MTU: 1500, Port: 8080}); err != nil {
		t.Fatal(err)
	}
	if used, err := d.SetPicks(1, []uint32{natID}, 0); err != nil || used != uint64(len(want)) {
		t.Fatalf("replacing the cycle: %d used (%v), want %d", used, err, len(want))
	}
	k := tcpKey(54000)
	syn := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 54000, DstPort: 80, SYN: true, MSS: 1460}.Build()
	v, out := run(t, d, syn)
	w := testutil.Frame{SrcMAC: ifMAC, DstMAC: realMAC, Src: client, Dst: rip, SrcPort: 54000, DstPort: 8080, SYN: true, MSS: 1460}
	expectFrame(t, "NAT first packet scheduled in XDP", v, dataplane.XDPTx, out, w.Build())
	dec := dataplane.Decision{RealID: natID, ServiceID: 1, Out: dataplane.ConnKey{Src: client, Dst: rip, SrcPort: 54000, DstPort: 8080}}
	for _, e := range dataplane.Entries(dataplane.NewFlow{Key: k, Ifindex: loIfindex, SrcMAC: [6]byte(clientMAC), TCPFlags: dataplane.TCPSyn}, dec, 0, ifMAC) {
		got, found, err := d.LookupConn(e.Key)
		if err != nil || !found {
			t.Fatalf("entry %v missing (%v)", e.Key, err)
		}
		got.LastSeen, e.Conn.LastSeen = 0, 0
		if e.Conn.Flags&dataplane.ConnReply == 0 {
			e.Conn.State = conntrack.StateSynRecv
		}
		if fmt.Sprint(got) != fmt.Sprint(e.Conn) {
			t.Errorf("entry %v:\n got %+v\nwant %+v", e.Key, got, e.Conn)
		}
	}

	// FULLNAT needs a local port from Go: the slow path (no socket here:
	// dropped, not forwarded).
	if _, err := d.SetPicks(1, []uint32{fullnatID}, 0); err != nil {
		t.Fatal(err)
	}
	syn = testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 54001, DstPort: 80, SYN: true}.Build()
	if v, _ := run(t, d, syn); v != dataplane.XDPDrop {
		t.Errorf("FULLNAT in a cycle: %v, want the slow path (dropped without a socket)", v)
	}
	if _, found, _ := d.LookupConn(tcpKey(54001)); found {
		t.Error("XDP made a FULLNAT connection")
	}
	if _, err := d.ClearPicks(1); err != nil {
		t.Fatal(err)
	}
	syn = testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 54002, DstPort: 80, SYN: true}.Build()
	if v, _ := run(t, d, syn); v != dataplane.XDPDrop {
		t.Errorf("no cycle: %v, want the slow path", v)
	}
}

// TestXDPLookaheadPicks: a lookahead (the least-connection family's
// next picks, sched.Lookaheader) is taken in order, then its tail from
// loop on repeats; one that does not repeat hands the flows after its
// end to the slow path (none bound here: dropped, counted).
func TestXDPLookaheadPicks(t *testing.T) {
	d := openDirector(t)
	setupModes(t, d)
	const drA, drB, drC = 21, 22, 23
	macs := map[uint32]net.HardwareAddr{drA: {2, 0xee, 0, 0, 0, 0x21}, drB: {2, 0xee, 0, 0, 0, 0x22}, drC: {2, 0xee, 0, 0, 0, 0x23}}
	for id, mac := range macs {
		if err := d.SetReal(id, dataplane.Real{Addr: netip.AddrFrom4([4]byte{10, 1, 0, byte(id)}), Ifindex: loIfindex, MAC: mac, Fwd: dataplane.FwdRoute}); err != nil {
			t.Fatal(err)
		}
	}
	sport := uint16(55000)
	next := func() (dataplane.Verdict, []byte) {
		sport++
		return run(t, d, testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: sport, DstPort: 80, SYN: true}.Build())
	}
	// A, A, A, then B C B C ...: the tail from 3 repeats.
	if _, err := d.SetPicks(1, []uint32{drA, drA, drA, drB, drC}, 3); err != nil {
		t.Fatal(err)
	}
	for i, id := range []uint32{drA, drA, drA, drB, drC, drB, drC, drB, drC} {
		if v, out := next(); v != dataplane.XDPTx || !bytes.Equal(out[0:6], macs[id]) {
			t.Fatalf("flow %d: %v to %x, want XDP_TX to %v", i, v, out[0:6], macs[id])
		}
	}
	// C, B and no more: the third flow is Go's.
	if _, err := d.SetPicks(1, []uint32{drC, drB}, dataplane.NoLoop); err != nil {
		t.Fatal(err)
	}
	c0, _ := d.Counters()
	for i, id := range []uint32{drC, drB} {
		if v, out := next(); v != dataplane.XDPTx || !bytes.Equal(out[0:6], macs[id]) {
			t.Fatalf("flow %d: %v to %x, want XDP_TX to %v", i, v, out[0:6], macs[id])
		}
	}
	for i := 0; i < 3; i++ {
		if v, _ := next(); v != dataplane.XDPDrop {
			t.Fatalf("past the end of a lookahead that does not repeat: %v, want the slow path (dropped: none bound)", v)
		}
	}
	c1, _ := d.Counters()
	if n := c1[dataplane.StatDropNoXSK] - c0[dataplane.StatDropNoXSK]; n != 3 {
		t.Errorf("slow-path hand-overs counted %d, want 3", n)
	}
	if n, _ := d.PickCursor(1); n != 5 {
		t.Errorf("cursor %d, want 5 (every flow that asked)", n)
	}
	for _, bad := range []int{2, -2} {
		if _, err := d.SetPicks(1, []uint32{drC, drB}, bad); err == nil {
			t.Errorf("loop %d of 2 picks accepted", bad)
		}
	}
}
