package loadgen_test

import (
	"bytes"
	"encoding/hex"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xipvs/xipvs/bench/loadgen"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

func openLoadgen(t *testing.T, dst, src net.HardwareAddr) *loadgen.Programs {
	t.Helper()
	testutil.RequirePrivileged(t)
	g, err := loadgen.Open(loadgen.Options{CeilingDst: dst, CeilingSrc: src})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// TestLoadgenGenerator runs the generator (not live) and checks that
// frame n carries flow n%Count's source address and port with correct
// checksums, also when the frame it is given was left mangled by an
// earlier hop (the live-frames page pool recycles frames as they are).
func TestLoadgenGenerator(t *testing.T) {
	g := openLoadgen(t, nil, nil)
	for _, size := range []int{64, 1500, 65} {
		tmpl := testutil.Frame{
			Src: netip.MustParseAddr("10.78.0.1"), Dst: netip.MustParseAddr("10.77.0.100"),
			SrcPort: 1024, DstPort: 80, ACK: true, Payload: bytes.Repeat([]byte{0xa5}, size-54),
		}.Build()
		f := loadgen.Flows{Template: tmpl, AddrBase: netip.MustParseAddr("10.78.0.1"), PortBase: 1024, Ports: 3, Count: 7, Start: 5}
		if err := g.SetFlows(f); err != nil {
			t.Fatal(err)
		}
		mangled := append([]byte(nil), tmpl...)
		for i := 0; i < 54; i++ {
			mangled[i] ^= 0x5a
		}
		for i := 0; i < 10; i++ {
			in := tmpl
			if i%2 == 1 {
				in = mangled
			}
			v, out, err := g.Run(loadgen.Gen, in)
			if err != nil {
				t.Fatal(err)
			}
			if v != dataplane.XDPTx {
				t.Fatalf("size %d frame %d: verdict %v, want XDP_TX", size, i, v)
			}
			n := (5 + i) % 7
			wantSrc := netip.AddrFrom4([4]byte{10, 78, 0, byte(1 + n/3)})
			wantPort := 1024 + n%3
			p := gopacket.NewPacket(out, layers.LayerTypeEthernet, gopacket.Default)
			ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
			tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if ip == nil || tcp == nil {
				t.Fatalf("size %d frame %d: not IPv4/TCP:\n%s", size, i, hex.Dump(out))
			}
			if got, _ := netip.AddrFromSlice(ip.SrcIP); got != wantSrc || int(tcp.SrcPort) != wantPort {
				t.Fatalf("size %d frame %d: source %v:%d, want %v:%d", size, i, got, tcp.SrcPort, wantSrc, wantPort)
			}
			if !testutil.ChecksumsValid(out) {
				t.Fatalf("size %d frame %d: bad checksum:\n%s", size, i, hex.Dump(out[:64]))
			}
			if !bytes.Equal(out[54:], tmpl[54:]) || !bytes.Equal(out[:12], tmpl[:12]) {
				t.Fatalf("size %d frame %d: frame differs from the template beyond the flow fields", size, i)
			}
		}
	}
	seq, err := g.Seq()
	if err != nil || seq != 15 {
		t.Fatalf("sequence %d (%v), want 15", seq, err)
	}
	if err := g.SetFlows(loadgen.Flows{Template: []byte{1, 2, 3}}); err == nil {
		t.Fatal("a short template was accepted")
	}
}

// TestLoadgenGenerator6: an IPv6 template; flow n's frame is exactly
// the one gopacket builds for its source (the address's last 32 bits)
// and port, checksum included.
func TestLoadgenGenerator6(t *testing.T) {
	g := openLoadgen(t, nil, nil)
	base := netip.MustParseAddr("fd78::1:ffff:fffe")
	frame := func(src netip.Addr, port uint16, size int) []byte {
		return testutil.Frame{Src: src, Dst: netip.MustParseAddr("fd77::100"), SrcPort: port, DstPort: 80, ACK: true,
			Payload: bytes.Repeat([]byte{0xa5}, size-74)}.Build()
	}
	for _, size := range []int{78, 1500, 79} {
		f := loadgen.Flows{Template: frame(base, 1024, size), AddrBase: base, PortBase: 1024, Ports: 3, Count: 7, Start: 5}
		if err := g.SetFlows(f); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 8; i++ {
			v, out, err := g.Run(loadgen.Gen, f.Template)
			if err != nil || v != dataplane.XDPTx {
				t.Fatalf("size %d frame %d: %v %v", size, i, v, err)
			}
			n := (5 + i) % 7
			a := base.As16()
			low := uint32(a[12])<<24 | uint32(a[13])<<16 | uint32(a[14])<<8 | uint32(a[15])
			low += uint32(n / 3) // carries out of the last word are the generator's limit
			a[12], a[13], a[14], a[15] = byte(low>>24), byte(low>>16), byte(low>>8), byte(low)
			if want := frame(netip.AddrFrom16(a), uint16(1024+n%3), size); !bytes.Equal(out, want) {
				t.Fatalf("size %d frame %d:\n got %x\nwant %x", size, i, out[:80], want[:80])
			}
		}
	}
	if err := g.SetFlows(loadgen.Flows{Template: frame(base, 1024, 78), AddrBase: netip.MustParseAddr("10.0.0.1"), Ports: 1}); err == nil {
		t.Fatal("an IPv4 base with an IPv6 template was accepted")
	}
}

func TestLoadgenSinkAndCeiling(t *testing.T) {
	dst := net.HardwareAddr{2, 0x77, 0, 0, 0, 0x0b}
	src := net.HardwareAddr{2, 0x77, 0, 0, 0, 0x02}
	g := openLoadgen(t, dst, src)
	ipFrame := testutil.Frame{
		Src: netip.MustParseAddr("10.78.0.1"), Dst: netip.MustParseAddr("10.77.0.100"),
		SrcPort: 1024, DstPort: 80, ACK: true, Payload: make([]byte, 10),
	}.Build()

	v, out, err := g.Run(loadgen.Ceiling, ipFrame)
	if err != nil {
		t.Fatal(err)
	}
	want := append(append(append([]byte(nil), dst...), src...), ipFrame[12:]...)
	if v != dataplane.XDPTx || !bytes.Equal(out, want) {
		t.Fatalf("ceiling: verdict %v, frame\n%s\nwant XDP_TX and\n%s", v, hex.Dump(out), hex.Dump(want))
	}

	if err := g.ResetSink(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if v, _, err := g.Run(loadgen.Sink, out); err != nil || v != dataplane.XDPDrop {
			t.Fatalf("sink: verdict %v (%v), want XDP_DROP", v, err)
		}
	}
	arp := append(append([]byte(nil), out[:12]...), 0x08, 0x06)
	arp = append(arp, make([]byte, 28)...)
	if v, _, err := g.Run(loadgen.Sink, arp); err != nil || v != dataplane.XDPPass {
		t.Fatalf("sink, ARP: verdict %v (%v), want XDP_PASS", v, err)
	}
	counts, err := g.SinkCounts()
	if err != nil {
		t.Fatal(err)
	}
	wantCounts := map[byte]loadgen.SinkCount{0x0b: {Pkts: 3, Bytes: 3 * uint64(len(out))}}
	if len(counts) != 1 || counts[0x0b] != wantCounts[0x0b] {
		t.Fatalf("sink counts %v, want %v", counts, wantCounts)
	}
}

// TestRefLB: the reference load balancer forwards a known connection of
// a service to its real's MAC, drops an unknown one and passes the rest.
func TestRefLB(t *testing.T) {
	rmac, src := net.HardwareAddr{2, 0, 0, 0, 0, 0x11}, net.HardwareAddr{2, 0, 0, 0, 0, 1}
	g := openLoadgen(t, nil, src)
	vip, cl := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("198.51.100.7")
	if err := g.SetRefService(vip, 80, 6); err != nil {
		t.Fatal(err)
	}
	if err := g.SetRefConns([]loadgen.RefTuple{{Src: cl, Dst: vip, SrcPort: 4000, DstPort: 80, Proto: 6}}, []net.HardwareAddr{rmac}); err != nil {
		t.Fatal(err)
	}
	hit := testutil.Frame{Src: cl, Dst: vip, SrcPort: 4000, DstPort: 80, ACK: true}.Build()
	v, out, err := g.Run(loadgen.RefLB, hit)
	want := append(append(append([]byte(nil), rmac...), src...), hit[12:]...)
	if err != nil || v != dataplane.XDPTx || !bytes.Equal(out, want) {
		t.Errorf("hit: %v %v\n got %x\nwant %x", v, err, out, want)
	}
	miss := testutil.Frame{Src: cl, Dst: vip, SrcPort: 4001, DstPort: 80, SYN: true}.Build()
	if v, _, err := g.Run(loadgen.RefLB, miss); err != nil || v != dataplane.XDPDrop {
		t.Errorf("miss: %v %v", v, err)
	}
	other := testutil.Frame{Src: cl, Dst: vip, SrcPort: 4000, DstPort: 22, ACK: true}.Build()
	if v, _, err := g.Run(loadgen.RefLB, other); err != nil || v != dataplane.XDPPass {
		t.Errorf("not a service: %v %v", v, err)
	}
}
