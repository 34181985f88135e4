package dataplane_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

// Fragments as a router or the sender's stack makes them, and back: the
// fixtures of fragment tracking (bpf/frag.h) cut a datagram, run each
// fragment through the director and put what comes out together again,
// which must be, byte for byte, what the whole datagram becomes.

// reassemble4 puts IPv4 fragments (after outer bytes of encapsulation,
// 0 or 20) together: the datagram with the first fragment's header, its
// fragment field cleared. The outer headers are returned as they are.
func reassemble4(t *testing.T, frags [][]byte, outer int) ([]byte, [][]byte) {
	t.Helper()
	type piece struct {
		off  int
		more bool
		data []byte
	}
	var ps []piece
	var first []byte
	var outers [][]byte
	for _, f := range frags {
		outers = append(outers, f[:14+outer])
		h := f[14+outer:]
		fo := binary.BigEndian.Uint16(h[6:8])
		total := int(binary.BigEndian.Uint16(h[2:4]))
		hl := int(h[0]&0xf) * 4
		p := piece{off: int(fo&0x1fff) * 8, more: fo&0x2000 != 0, data: h[hl:total]}
		if p.off == 0 {
			first = f
		}
		ps = append(ps, p)
	}
	if first == nil {
		t.Fatal("no first fragment")
	}
	slices.SortFunc(ps, func(a, b piece) int { return a.off - b.off })
	var payload []byte
	for i, p := range ps {
		if p.off != len(payload) || p.more != (i+1 < len(ps)) {
			t.Fatalf("fragments do not fit: piece at %d after %d bytes", p.off, len(payload))
		}
		payload = append(payload, p.data...)
	}
	hl := int(first[14+outer]&0xf) * 4
	whole := append(append([]byte(nil), first[:14]...), first[14+outer:14+outer+hl]...)
	whole = append(whole, payload...)
	h := whole[14:]
	binary.BigEndian.PutUint16(h[2:4], uint16(hl+len(payload)))
	binary.BigEndian.PutUint16(h[6:8], 0)
	testutil.SetIPv4Csum(h[:hl])
	return whole, outers
}

// normal4 is frame (after outer encapsulation bytes) with its inner
// fragment field cleared, as reassemble4 leaves it, and its outer
// header dropped.
func normal4(frame []byte, outer int) []byte {
	w := append(append([]byte(nil), frame[:14]...), frame[14+outer:]...)
	binary.BigEndian.PutUint16(w[14+6:], 0)
	testutil.SetIPv4Csum(w[14 : 14+int(w[14]&0xf)*4])
	return w
}

// runAll runs each frame through the director; every verdict must be
// want.
func runAll(t *testing.T, d *dataplane.Harness, name string, frames [][]byte, want dataplane.Verdict) [][]byte {
	t.Helper()
	var outs [][]byte
	for i, f := range frames {
		v, out, err := d.Run(f, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if v != want {
			t.Fatalf("%s: fragment %d: verdict %v, want %v\n%s", name, i, v, want, hex.EncodeToString(f))
		}
		outs = append(outs, out)
	}
	return outs
}

// TestFragmentsFollowTheirConnection: an IPv4 datagram cut in three
// (and its fragments sent in order, or the later ones swapped) goes to
// its connection's real in every mode, each fragment transformed as the
// whole would be (DR: MACs; TUN: each in its own outer header; NAT and
// FULLNAT: addresses in every fragment, ports and checksum in the
// first), and the reals' fragmented replies come back translated.
func TestFragmentsFollowTheirConnection(t *testing.T) {
	d := openDirector(t)
	setup(t, d)
	setupModes(t, d)
	body := bytes.Repeat([]byte("fragmented upload "), 40) // 720 bytes
	lipFN := netip.MustParseAddr("10.1.0.250")
	cases := []struct {
		name  string
		sport uint16
		dec   dataplane.Decision
		outer int
		udp   bool
	}{
		{"DR", 46000, dataplane.Decision{RealID: 1, ServiceID: 1}, 0, false},
		{"TUN", 46001, dataplane.Decision{RealID: tunID, ServiceID: 1}, 20, false},
		{"NAT", 46002, dataplane.Decision{RealID: natID, ServiceID: 1,
			Out: dataplane.ConnKey{Src: client, Dst: rip, SrcPort: 46002, DstPort: 8080}}, 0, false},
		{"FULLNAT", 46003, dataplane.Decision{RealID: fullnatID, ServiceID: 1, FullNAT: true,
			Out: dataplane.ConnKey{Src: lipFN, Dst: rip, SrcPort: 31003, DstPort: 8080}}, 0, false},
		{"NAT UDP", 46004, dataplane.Decision{RealID: natID, ServiceID: 1,
			Out: dataplane.ConnKey{Src: client, Dst: rip, SrcPort: 46004, DstPort: 5300}}, 0, true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dport := uint16(80)
			proto := uint8(conntrack.ProtoTCP)
			if tc.udp {
				dport, proto = 53, conntrack.ProtoUDP
			}
			k := dataplane.ConnKey{Src: client, Dst: vip, SrcPort: tc.sport, DstPort: dport, Proto: proto}
			state := conntrack.StateEstablished
			if tc.udp {
				state = 0
			}
			flow(t, d, k, tc.dec, state)
			in := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: tc.sport, DstPort: dport,
				ACK: !tc.udp, Payload: body, ID: uint16(0x4000 + i)}
			if tc.udp {
				in.Proto = layers.IPProtocolUDP
			}
			whole := in.Build()
			v, wantOut := run(t, d, whole)
			if v != dataplane.XDPTx {
				t.Fatalf("whole datagram: verdict %v", v)
			}
			frags := testutil.Fragment4(t, whole, 256, 512)
			for _, order := range [][]int{{0, 1, 2}, {0, 2, 1}} {
				var sent [][]byte
				for _, j := range order {
					sent = append(sent, frags[j])
				}
				outs := runAll(t, d, tc.name, sent, dataplane.XDPTx)
				got, outers := reassemble4(t, outs, tc.outer)
				if want := normal4(wantOut, tc.outer); !bytes.Equal(got, want) {
					t.Fatalf("order %v: reassembled\n%s\nwant\n%s", order, hex.EncodeToString(got), hex.EncodeToString(want))
				}
				if !testutil.ChecksumsValid(got) {
					t.Errorf("order %v: reassembled checksums invalid", order)
				}
				for j, o := range outers {
					if !bytes.Equal(o[:14], wantOut[:14]) {
						t.Errorf("fragment %d: Ethernet header %x, want %x", j, o[:14], wantOut[:14])
					}
					if tc.outer > 0 {
						h := o[14:34]
						sum := append([]byte(nil), h...)
						testutil.SetIPv4Csum(sum)
						if !bytes.Equal(h[12:20], wantOut[14+12:14+20]) || h[9] != 4 || !bytes.Equal(sum, h) {
							t.Errorf("fragment %d: outer header %x", j, h)
						}
						if int(binary.BigEndian.Uint16(h[2:4])) != len(outs[j])-14 {
							t.Errorf("fragment %d: outer length %d for %d bytes", j, binary.BigEndian.Uint16(h[2:4]), len(outs[j])-14)
						}
					}
				}
			}
			if tc.dec.Out.Src.IsValid() {
				// The real's answer, fragmented on its way back.
				out := tc.dec.Out
				r := testutil.Frame{SrcMAC: realMAC, DstMAC: ifMAC, Src: out.Dst, Dst: out.Src, SrcPort: out.DstPort, DstPort: out.SrcPort,
					ACK: !tc.udp, Payload: body, ID: uint16(0x5000 + i)}
				if tc.udp {
					r.Proto = layers.IPProtocolUDP
				}
				rw := r.Build()
				v, wantBack := run(t, d, rw)
				if v != dataplane.XDPTx {
					t.Fatalf("whole reply: verdict %v", v)
				}
				outs := runAll(t, d, tc.name+" reply", testutil.Fragment4(t, rw, 128, 384), dataplane.XDPTx)
				got, _ := reassemble4(t, outs, 0)
				if want := normal4(wantBack, 0); !bytes.Equal(got, want) {
					t.Fatalf("reply: reassembled\n%s\nwant\n%s", hex.EncodeToString(got), hex.EncodeToString(want))
				}
			}
		})
	}

	c0, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	// A later fragment whose first never came: the kernel's, counted.
	orphan := testutil.Fragment4(t, testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 46000, DstPort: 80,
		ACK: true, Payload: body, ID: 0x6000}.Build(), 256)[1]
	v, out := run(t, d, orphan)
	if v != dataplane.XDPPass || !bytes.Equal(out, orphan) {
		t.Errorf("later fragment without its first: verdict %v", v)
	}
	// A first fragment of no connection and no new flow (an ACK): not
	// noted, so its later fragment is the kernel's too.
	stray := testutil.Fragment4(t, testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 47999, DstPort: 80,
		ACK: true, Payload: body, ID: 0x6001}.Build(), 256)
	runAll(t, d, "stray", stray, dataplane.XDPPass)
	// A fragmented new UDP flow: both fragments to the slow path (none
	// bound here: dropped and counted as such).
	newUDP := testutil.Fragment4(t, testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 48000, DstPort: 53,
		Proto: layers.IPProtocolUDP, Payload: body, ID: 0x6002}.Build(), 256)
	runAll(t, d, "new UDP flow", newUDP, dataplane.XDPDrop)
	c1, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if n := c1[dataplane.StatPassFragment] - c0[dataplane.StatPassFragment]; n != 2 {
		t.Errorf("STAT_PASS_FRAGMENT counted %d, want 2 (the orphan, the stray's later fragment)", n)
	}
	if n := c1[dataplane.StatDropNoXSK] - c0[dataplane.StatDropNoXSK]; n != 2 {
		t.Errorf("STAT_DROP_NO_XSK counted %d, want 2 (both fragments of the new flow)", n)
	}
}

// fragment6 cuts frame's IPv6 packet (no extension headers) at the given
// offsets of its payload (multiples of 8), as its sender would: each
// fragment gets a fragment header with id.
func fragment6(t testing.TB, frame []byte, id uint32, cuts ...int) [][]byte {
	t.Helper()
	ip := frame[14:]
	next := ip[6]
	payload := ip[40 : 40+int(binary.BigEndian.Uint16(ip[4:6]))]
	bounds := append(append([]int{0}, cuts...), len(payload))
	var out [][]byte
	for i := 0; i+1 < len(bounds); i++ {
		a, b := bounds[i], bounds[i+1]
		f := append([]byte(nil), frame[:14+40]...)
		fo := uint16(a/8) << 3
		if i+2 < len(bounds) {
			fo |= 1
		}
		fh := []byte{next, 0, byte(fo >> 8), byte(fo), 0, 0, 0, 0}
		binary.BigEndian.PutUint32(fh[4:], id)
		f = append(append(f, fh...), payload[a:b]...)
		binary.BigEndian.PutUint16(f[14+4:], uint16(8+b-a))
		f[14+6] = 44
		out = append(out, f)
	}
	return out
}

// reassemble6 puts IPv6 fragments (after outer bytes of encapsulation,
// 0 or 40) together: the packet without its fragment header.
func reassemble6(t *testing.T, frags [][]byte, outer int) []byte {
	t.Helper()
	type piece struct {
		off  int
		more bool
		data []byte
	}
	var ps []piece
	var first []byte
	for _, f := range frags {
		h := f[14+outer:]
		if h[6] != 44 {
			t.Fatalf("no fragment header: next header %d", h[6])
		}
		plen := int(binary.BigEndian.Uint16(h[4:6]))
		fo := binary.BigEndian.Uint16(h[40+2:])
		p := piece{off: int(fo>>3) * 8, more: fo&1 != 0, data: h[48 : 40+plen]}
		if p.off == 0 {
			first = f
		}
		ps = append(ps, p)
	}
	if first == nil {
		t.Fatal("no first fragment")
	}
	slices.SortFunc(ps, func(a, b piece) int { return a.off - b.off })
	var payload []byte
	for i, p := range ps {
		if p.off != len(payload) || p.more != (i+1 < len(ps)) {
			t.Fatalf("fragments do not fit: piece at %d after %d bytes", p.off, len(payload))
		}
		payload = append(payload, p.data...)
	}
	whole := append(append([]byte(nil), first[:14]...), first[14+outer:14+outer+40]...)
	whole[14+6] = first[14+outer+40] // the fragment header's next header
	whole = append(whole, payload...)
	binary.BigEndian.PutUint16(whole[14+4:], uint16(len(payload)))
	return whole
}

// TestIPv6FragmentsFollowTheirConnection is the IPv6 twin: fragment
// headers from the sender, every mode, replies included.
func TestIPv6FragmentsFollowTheirConnection(t *testing.T) {
	d := openDirector(t)
	setupIPv6(t, d)
	lip6 := netip.MustParseAddr("2001:db8:1::100")
	body := bytes.Repeat([]byte("fragmented upload "), 40)
	cases := []struct {
		name  string
		sport uint16
		dec   dataplane.Decision
		outer int
		udp   bool
	}{
		{"DR", 56000, dataplane.Decision{RealID: dr6ID, ServiceID: 1}, 0, false},
		{"TUN", 56001, dataplane.Decision{RealID: tun6ID, ServiceID: 1}, 40, false},
		{"NAT", 56002, dataplane.Decision{RealID: nat6ID, ServiceID: 1,
			Out: dataplane.ConnKey{Src: client6, Dst: rip6, SrcPort: 56002, DstPort: 8080}}, 0, false},
		{"FULLNAT", 56003, dataplane.Decision{RealID: fnat6ID, ServiceID: 1, FullNAT: true,
			Out: dataplane.ConnKey{Src: lip6, Dst: rip6, SrcPort: 41003, DstPort: 8080}}, 0, false},
		{"NAT UDP", 56004, dataplane.Decision{RealID: nat6ID, ServiceID: 1,
			Out: dataplane.ConnKey{Src: client6, Dst: rip6, SrcPort: 56004, DstPort: 5300}}, 0, true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dport := uint16(80)
			proto := uint8(conntrack.ProtoTCP)
			if tc.udp {
				dport, proto = 53, conntrack.ProtoUDP
			}
			k := dataplane.ConnKey{Src: client6, Dst: vip6, SrcPort: tc.sport, DstPort: dport, Proto: proto}
			state := conntrack.StateEstablished
			if tc.udp {
				state = 0
			}
			flow(t, d, k, tc.dec, state)
			in := frame6{srcMAC: clientMAC, dstMAC: ifMAC, src: client6, dst: vip6, sport: tc.sport, dport: dport,
				ack: !tc.udp, udp: tc.udp, payload: body}
			whole := in.build(t)
			v, wantOut := run(t, d, whole)
			if v != dataplane.XDPTx {
				t.Fatalf("whole packet: verdict %v", v)
			}
			frags := fragment6(t, whole, uint32(0x80000080+i) /* both ends' top bits set, as read either way */, 256, 512)
			for _, order := range [][]int{{0, 1, 2}, {0, 2, 1}} {
				var sent [][]byte
				for _, j := range order {
					sent = append(sent, frags[j])
				}
				outs := runAll(t, d, tc.name, sent, dataplane.XDPTx)
				got := reassemble6(t, outs, tc.outer)
				want := append(append([]byte(nil), wantOut[:14]...), wantOut[14+tc.outer:]...)
				if !bytes.Equal(got, want) {
					t.Fatalf("order %v: reassembled\n%s\nwant\n%s", order, hex.EncodeToString(got), hex.EncodeToString(want))
				}
				if !testutil.ChecksumsValid(got) {
					t.Errorf("order %v: reassembled checksums invalid", order)
				}
				for j, o := range outs {
					if tc.outer > 0 {
						// The outer header as the whole's, but for its length.
						oh, wh := append([]byte(nil), o[14:54]...), append([]byte(nil), wantOut[14:54]...)
						if int(binary.BigEndian.Uint16(oh[4:6])) != len(o)-54 {
							t.Errorf("fragment %d: outer payload length %d for %d bytes", j, binary.BigEndian.Uint16(oh[4:6]), len(o)-54)
						}
						oh[4], oh[5], wh[4], wh[5] = 0, 0, 0, 0
						if !bytes.Equal(oh, wh) {
							t.Errorf("fragment %d: outer header %x, want %x", j, oh, wh)
						}
					}
				}
			}
			if tc.dec.Out.Src.IsValid() {
				out := tc.dec.Out
				r := frame6{srcMAC: realMAC, dstMAC: ifMAC, src: out.Dst, dst: out.Src, sport: out.DstPort, dport: out.SrcPort,
					ack: !tc.udp, udp: tc.udp, payload: body}
				rw := r.build(t)
				v, wantBack := run(t, d, rw)
				if v != dataplane.XDPTx {
					t.Fatalf("whole reply: verdict %v", v)
				}
				outs := runAll(t, d, tc.name+" reply", fragment6(t, rw, uint32(0x800000f0+i), 128, 384), dataplane.XDPTx)
				if got := reassemble6(t, outs, 0); !bytes.Equal(got, wantBack) {
					t.Fatalf("reply: reassembled\n%s\nwant\n%s", hex.EncodeToString(got), hex.EncodeToString(wantBack))
				}
			}
		})
	}
	// A later fragment whose first never came: the kernel's.
	orphan := fragment6(t, frame6{srcMAC: clientMAC, dstMAC: ifMAC, src: client6, dst: vip6, sport: 56000, dport: 80,
		ack: true, payload: body}.build(t), 0x90000, 256)[1]
	if v, _ := run(t, d, orphan); v != dataplane.XDPPass {
		t.Errorf("later fragment without its first: verdict %v", v)
	}
}

// ext6 is one IPv6 extension header: its type and its bytes after the
// next-header byte (length, data), the next-header byte filled in by
// withExt6.
type ext6 struct {
	typ  uint8
	body []byte
}

func destOpts() ext6 { return ext6{60, []byte{0, 1, 4, 0, 0, 0, 0}} } // PadN
func hopByHop() ext6 { return ext6{0, []byte{0, 1, 4, 0, 0, 0, 0}} }
func routing(left uint8) ext6 {
	return ext6{43, []byte{0, 0, left, 0, 0, 0, 0}} // type 0, no addresses
}
func atomicFrag(id uint32) ext6 {
	return ext6{44, []byte{0, 0, 0, byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}}
}

// withExt6 puts the headers between frame's IPv6 header and its payload.
func withExt6(frame []byte, hdrs ...ext6) []byte {
	out := append([]byte(nil), frame[:14+40]...)
	next := out[14+6]
	if len(hdrs) > 0 {
		out[14+6] = hdrs[0].typ
	}
	for i, h := range hdrs {
		nh := next
		if i+1 < len(hdrs) {
			nh = hdrs[i+1].typ
		}
		out = append(append(out, nh), h.body...)
	}
	out = append(out, frame[14+40:]...)
	binary.BigEndian.PutUint16(out[14+4:], uint16(len(out)-14-40))
	return out
}

// TestIPv6ExtensionHeaderChains: what reaches the kernel's transport
// through any chain of extension headers reaches the real through the
// director (IPVS sees the packet after ip6_input walked them all): five
// destination-options headers, an atomic fragment, hop-by-hop then
// destination options then a fragment header. What the kernel refuses
// or has not finished with (hop-by-hop not first, a routing header with
// segments left) and chains longer than the walk passes untouched.
func TestIPv6ExtensionHeaderChains(t *testing.T) {
	d := openDirector(t)
	setupIPv6(t, d)
	flow(t, d, tcpKey6(57000), dataplane.Decision{RealID: dr6ID, ServiceID: 1}, conntrack.StateEstablished)
	f := frame6{srcMAC: clientMAC, dstMAC: ifMAC, src: client6, dst: vip6, sport: 57000, dport: 80, ack: true,
		payload: bytes.Repeat([]byte("x"), 600)}
	plain := f.build(t)
	dr := func(in []byte) []byte { return withMACs(in, realMAC, ifMAC) }
	long := make([]ext6, 17)
	for i := range long {
		long[i] = destOpts()
	}
	forwarded := map[string][]byte{
		"five destination-options headers": withExt6(plain, destOpts(), destOpts(), destOpts(), destOpts(), destOpts()),
		"an atomic fragment":               withExt6(plain, atomicFrag(7)),
		"routing header, no segments left": withExt6(plain, routing(0)),
	}
	for name, in := range forwarded {
		v, out := run(t, d, in)
		expectFrame6(t, name, v, dataplane.XDPTx, out, dr(in))
	}
	// Hop-by-hop, destination options, then the fragment header: both
	// fragments follow the connection.
	frags := fragment6(t, plain, 0xabc, 304)
	for i, fr := range frags {
		in := append(append([]byte(nil), fr[:14+40]...), fr[14+40:]...)
		in = withExt6(in, hopByHop(), destOpts())
		// withExt6 put the chain in front of the fragment header: the
		// last of them names it.
		v, out := run(t, d, in)
		expectFrame6(t, fmt.Sprintf("fragment %d after hop-by-hop and destination options", i), v, dataplane.XDPTx, out, dr(in))
	}
	c0, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	passed := map[string][]byte{
		"hop-by-hop not first":          withExt6(plain, destOpts(), hopByHop()),
		"routing header, segments left": withExt6(plain, routing(1)),
		"seventeen extension headers":   withExt6(plain, long...),
		"truncated extension header":    withExt6(plain, destOpts())[:14+40+4],
	}
	for name, in := range passed {
		v, out := run(t, d, in)
		expectFrame6(t, name, v, dataplane.XDPPass, out, in)
	}
	c1, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if n := c1[dataplane.StatPassFragment] - c0[dataplane.StatPassFragment]; n != 2 {
		t.Errorf("passed as the kernel's: %d, want 2 (segments left, too many headers)", n)
	}
	if n := c1[dataplane.StatPassMalformed] - c0[dataplane.StatPassMalformed]; n != 2 {
		t.Errorf("passed as malformed: %d, want 2 (hop-by-hop not first, truncated)", n)
	}
}
