package dataplane_test

import (
	"encoding/binary"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

func tsOpt(val, ecr uint32) layers.TCPOption {
	b := make([]byte, 8)
	binary.BigEndian.PutUint32(b, val)
	binary.BigEndian.PutUint32(b[4:], ecr)
	return layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: b}
}

func decodeTCP(t *testing.T, frame []byte) (*layers.IPv4, *layers.TCP) {
	t.Helper()
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if ip == nil || tcp == nil {
		t.Fatalf("not TCP/IPv4: %x", frame)
	}
	return ip, tcp
}

// TestSynProxySYNACK: a SYN to a SYN-proxied service is answered in XDP
// with a cookie SYN-ACK of window 0 whose TSval carries the client's
// window scale, SACK and MSS index; an ACK with that cookie goes to the
// slow path, one without is dropped; a lost ACK's zero-window probe is
// taken as the ACK. The expected values come from the client's SYN and
// RFC 7323/the kernel's cookie layout, not from the program.
func TestSynProxySYNACK(t *testing.T) {
	d := openDirector(t)
	setupModes(t, d)
	proxied := dataplane.ServiceKey{VIP: vip, Port: 81, Proto: 6}
	if err := d.SetService(proxied, 2, dataplane.SvcSynProxy); err != nil {
		t.Fatal(err)
	}
	if err := d.SetService(dataplane.ServiceKey{VIP: vip, Port: 82, Proto: 6}, 3, dataplane.SvcSynProxy|dataplane.SvcTOARoom); err != nil {
		t.Fatal(err)
	}
	const clientISN, clientTS = 0x10203040, 0x11223344
	syn := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 40000, DstPort: 81, SYN: true,
		Seq: clientISN, MSS: 1460, TCPOptions: []layers.TCPOption{
			{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2},
			tsOpt(clientTS, 0),
			{OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{9}}}}
	before, _ := d.Counters()
	v, out := run(t, d, syn.Build())
	after, _ := d.Counters()
	if v != dataplane.XDPTx || after[dataplane.StatSPSynAck] != before[dataplane.StatSPSynAck]+1 {
		t.Fatalf("SYN: %v, sp_synack %d -> %d", v, before[dataplane.StatSPSynAck], after[dataplane.StatSPSynAck])
	}
	if !testutil.ChecksumsValid(out) {
		t.Errorf("SYN-ACK checksums invalid: %x", out)
	}
	if string(out[0:6]) != string(clientMAC) || string(out[6:12]) != string(ifMAC) {
		t.Errorf("SYN-ACK MACs %x -> %x", out[6:12], out[0:6])
	}
	ip, sa := decodeTCP(t, out)
	if !ip.SrcIP.Equal(vip.AsSlice()) || !ip.DstIP.Equal(client.AsSlice()) || sa.SrcPort != 81 || sa.DstPort != 40000 {
		t.Errorf("SYN-ACK %v:%d -> %v:%d", ip.SrcIP, sa.SrcPort, ip.DstIP, sa.DstPort)
	}
	if !sa.SYN || !sa.ACK || sa.RST || sa.FIN || sa.Ack != clientISN+1 || sa.Window != 0 {
		t.Errorf("SYN-ACK flags SYN %v ACK %v, ack %#x (want %#x), window %d (want 0)", sa.SYN, sa.ACK, sa.Ack, clientISN+1, sa.Window)
	}
	var mss, ws int = -1, -1
	var sackOK bool
	var tsval, tsecr uint32
	for _, o := range sa.Options {
		switch o.OptionType {
		case layers.TCPOptionKindMSS:
			mss = int(binary.BigEndian.Uint16(o.OptionData))
		case layers.TCPOptionKindWindowScale:
			ws = int(o.OptionData[0])
		case layers.TCPOptionKindSACKPermitted:
			sackOK = true
		case layers.TCPOptionKindTimestamps:
			tsval, tsecr = binary.BigEndian.Uint32(o.OptionData), binary.BigEndian.Uint32(o.OptionData[4:])
		}
	}
	// Our MSS and window scale (the defaults), the client's SACK; the
	// TSval's low bits: wscale 9, SACK, MSS index 3 (1460).
	if mss != 1460 || ws != 7 || !sackOK || tsecr != clientTS || tsval&0x7f != 9|0x10|3<<5 {
		t.Errorf("SYN-ACK options: MSS %d, WS %d, SACK %v, TS %#x/%#x (low bits %#x, want %#x)", mss, ws, sackOK, tsval, tsecr, tsval&0x7f, 9|0x10|3<<5)
	}

	ack := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 40000, DstPort: 81, ACK: true,
		Seq: clientISN + 1, AckNum: sa.Seq + 1, TCPOptions: []layers.TCPOption{{OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindNop}, tsOpt(clientTS+5, tsval)}}
	for _, c := range []struct {
		name  string
		frame testutil.Frame
		stat  int
		seq   uint32 // of the frame as it leaves for the slow path
	}{
		{"the cookie's ACK: to the slow path (no socket here)", ack, dataplane.StatDropNoXSK, clientISN + 1},
		{"a zero-window probe of a client whose ACK was lost: taken as its ACK", func() testutil.Frame { f := ack; f.Seq = clientISN; return f }(),
			dataplane.StatDropNoXSK, clientISN + 1},
		// (ack+1 alone would be the valid ACK of a SYN with ISN+1: the
		// cookie is additive in the client's ISN.)
		{"a wrong cookie: dropped", func() testutil.Frame { f := ack; f.AckNum += 12345; return f }(), dataplane.StatSPDrop, 0},
		{"RST, no connection: dropped", func() testutil.Frame { f := ack; f.ACK, f.RST = false, true; return f }(), dataplane.StatSPDrop, 0},
	} {
		before, _ := d.Counters()
		v, out := run(t, d, c.frame.Build())
		after, _ := d.Counters()
		if v != dataplane.XDPDrop || after[c.stat] != before[c.stat]+1 {
			var changed []string
			for i := range after {
				if after[i] != before[i] {
					changed = append(changed, dataplane.StatNames()[i])
				}
			}
			t.Errorf("%s: %v, counter %s %d -> %d (changed: %v)", c.name, v, dataplane.StatNames()[c.stat], before[c.stat], after[c.stat], changed)
		}
		if c.seq != 0 {
			if _, tcp := decodeTCP(t, out); tcp.Seq != c.seq || !testutil.ChecksumsValid(out) {
				t.Errorf("%s: leaves with seq %#x (want %#x), checksums valid %v", c.name, tcp.Seq, c.seq, testutil.ChecksumsValid(out))
			}
		}
	}

	// No timestamps: the cookie alone, and only an MSS option; FULLNAT
	// reals: 8 bytes less MSS for TOA.
	bare := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 40001, DstPort: 82, SYN: true, MSS: 1400}
	v, out = run(t, d, bare.Build())
	if v != dataplane.XDPTx || !testutil.ChecksumsValid(out) {
		t.Fatalf("SYN without timestamps: %v, checksums valid %v", v, testutil.ChecksumsValid(out))
	}
	if _, sa := decodeTCP(t, out); len(sa.Options) != 1 || sa.Options[0].OptionType != layers.TCPOptionKindMSS ||
		binary.BigEndian.Uint16(sa.Options[0].OptionData) != 1452 {
		t.Errorf("SYN-ACK without timestamps: options %v, want MSS 1452 alone", sa.Options)
	}
	// A SYN with a bad checksum is not answered.
	badSum := syn.Build()
	badSum[14+20+16] ^= 0xff
	before, _ = d.Counters()
	if v, _ := run(t, d, badSum); v != dataplane.XDPDrop {
		t.Errorf("SYN with a bad checksum: %v", v)
	}
	if after, _ := d.Counters(); after[dataplane.StatSPDrop] != before[dataplane.StatSPDrop]+1 {
		t.Error("SYN with a bad checksum: not counted sp_drop")
	}
}

// TestSeqadjFixtures: a SYN-proxied NAT connection's packets leave with
// the real's numbers toward the real (acknowledgment, SACK blocks, TSecr)
// and the client's toward the client (sequence number, TSval, window in
// the client's scale); checksums stay valid. Expected frames are built
// from scratch with the shifted values.
func TestSeqadjFixtures(t *testing.T) {
	d := openDirector(t)
	setupModes(t, d)
	k := tcpKey(53000)
	flow(t, d, k, dataplane.Decision{RealID: natID, ServiceID: 1, Out: dataplane.ConnKey{Src: client, Dst: rip, SrcPort: 53000, DstPort: 8080}},
		conntrack.StateEstablished)
	c, _, _ := d.LookupConn(k)
	rk := c.Peer(conntrack.ProtoTCP)
	for _, key := range []dataplane.ConnKey{k, rk} {
		e, _, _ := d.LookupConn(key)
		e.Flags |= dataplane.ConnSynProxy
		if err := d.SetConn(key, e); err != nil {
			t.Fatal(err)
		}
		if err := d.SetSeqadj(key, 100000, 5000, -2); err != nil {
			t.Fatal(err)
		}
	}
	sack := func(l, r uint32) layers.TCPOption {
		b := make([]byte, 8)
		binary.BigEndian.PutUint32(b, l)
		binary.BigEndian.PutUint32(b[4:], r)
		return layers.TCPOption{OptionType: layers.TCPOptionKindSACK, OptionLength: 10, OptionData: b}
	}
	nop := layers.TCPOption{OptionType: layers.TCPOptionKindNop}
	// Toward the real: the client acknowledges 500000 and SACKs
	// 501000-502000 of what it was told; TSecr 80000.
	in := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 53000, DstPort: 80, ACK: true,
		Seq: 7000, AckNum: 500000, Window: 1000, Payload: []byte("GET /"),
		TCPOptions: []layers.TCPOption{nop, nop, tsOpt(123, 80000), nop, nop, sack(501000, 502000)}}
	want := in
	want.SrcMAC, want.DstMAC, want.Dst, want.DstPort = ifMAC, realMAC, rip, 8080
	want.AckNum = 500000 - 100000
	want.TCPOptions = []layers.TCPOption{nop, nop, tsOpt(123, 80000-5000), nop, nop, sack(401000, 402000)}
	v, out := run(t, d, in.Build())
	expectFrame(t, "toward the real", v, dataplane.XDPTx, out, want.Build())

	// Toward the client: the real sends sequence 9000, TSval 70000 and a
	// window of 4001 in its scale, two more than the client was told.
	rep := testutil.Frame{SrcMAC: realMAC, DstMAC: ifMAC, Src: rip, Dst: client, SrcPort: 8080, DstPort: 53000, ACK: true,
		Seq: 9000, AckNum: 7005, Window: 4001, Payload: []byte("HTTP/1.1 200 OK"),
		TCPOptions: []layers.TCPOption{nop, nop, tsOpt(70000, 123)}}
	wantRep := rep
	wantRep.SrcMAC, wantRep.DstMAC, wantRep.Src, wantRep.SrcPort = ifMAC, clientMAC, vip, 80
	wantRep.Seq, wantRep.Window = 9000+100000, 1001 // 4001 >> 2, rounded up
	wantRep.TCPOptions = []layers.TCPOption{nop, nop, tsOpt(70000+5000, 123)}
	v, out = run(t, d, rep.Build())
	expectFrame(t, "toward the client", v, dataplane.XDPTx, out, wantRep.Build())

	// Odd offsets: a TS option after one NOP (the fields straddle the
	// checksum's words).
	odd := in
	odd.TCPOptions = []layers.TCPOption{nop, tsOpt(9, 80000), nop}
	oddWant := want
	oddWant.TCPOptions = []layers.TCPOption{nop, tsOpt(9, 80000-5000), nop}
	v, out = run(t, d, odd.Build())
	expectFrame(t, "TS at an odd offset", v, dataplane.XDPTx, out, oddWant.Build())

	// Deleting the connection (its real removed) takes its adjustments.
	for _, key := range []dataplane.ConnKey{k, rk} {
		if err := d.DeleteConn(key); err != nil {
			t.Fatal(err)
		}
		if has, err := d.HasSeqadj(key); has || err != nil {
			t.Errorf("adjustments of %v left after DeleteConn (%v)", key, err)
		}
	}
}

// TestSynProxyBareSYN: a SYN with no options, or with an MSS only, is
// answered like any other, whether the frame has room at its tail to
// grow or not (a socket buffer's frame, generic XDP or a veth's copy,
// has none: the answer is then built by growing the frame at its front):
// it used to be dropped (sp_drop) there.
func TestSynProxyBareSYN(t *testing.T) {
	d := openDirector(t)
	setupModes(t, d)
	if err := d.SetService(dataplane.ServiceKey{VIP: vip, Port: 81, Proto: 6}, 2, dataplane.SvcSynProxy); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		mss  uint16
		want int // the MSS the SYN-ACK advertises
	}{{"no options", 0, 1460}, {"an MSS only", 1400, 1460}} {
		syn := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 40100, DstPort: 81, SYN: true, Seq: 7, MSS: c.mss}
		v, out := run(t, d, syn.Build())
		if v != dataplane.XDPTx {
			t.Fatalf("%s: verdict %v, want a SYN-ACK", c.name, v)
		}
		if !testutil.ChecksumsValid(out) {
			t.Errorf("%s: SYN-ACK checksums invalid: %x", c.name, out)
		}
		ip, sa := decodeTCP(t, out)
		if !ip.SrcIP.Equal(vip.AsSlice()) || !ip.DstIP.Equal(client.AsSlice()) || !sa.SYN || !sa.ACK || sa.Ack != 8 || sa.DstPort != 40100 {
			t.Errorf("%s: SYN-ACK %v:%d -> %v:%d ack %d", c.name, ip.SrcIP, sa.SrcPort, ip.DstIP, sa.DstPort, sa.Ack)
		}
		if len(out) != 14+int(ip.Length) {
			t.Errorf("%s: a %d-byte frame for an IP length of %d", c.name, len(out), ip.Length)
		}
	}
}
