package loadgen_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/xipvs/xipvs/bench/loadgen"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

var (
	wGen  = net.HardwareAddr{2, 0x77, 0, 0, 0, 1}
	wLB   = net.HardwareAddr{2, 0x77, 0, 0, 0, 2}
	wReal = net.HardwareAddr{2, 0x77, 0, 0, 0, 0x0c}
)

// flowsOf are flows to vip of the family of base, frames of size bytes.
func flowsOf(base netip.Addr, size int, syn, tagged bool) loadgen.Flows {
	vip, hdr := netip.MustParseAddr("10.77.0.100"), 54
	if base.Is6() {
		vip, hdr = netip.MustParseAddr("fd77::100"), 74
	}
	tmpl := testutil.Frame{SrcMAC: wGen, DstMAC: wLB, Src: base, Dst: vip, SrcPort: 1024, DstPort: 80,
		SYN: syn, ACK: !syn, Payload: make([]byte, size-hdr)}.Build()
	return loadgen.Flows{Template: tmpl, AddrBase: base, PortBase: 1024, Ports: 3, Count: 0, Tagged: tagged}
}

// TestWriterMatchesGenerator: the frames a Sender or a Loop writes in Go
// are the generator program's, byte for byte, with valid checksums, for
// both families, with and without the loop's tag, and for flow numbers
// whose address carries into the next byte.
func TestWriterMatchesGenerator(t *testing.T) {
	g := openLoadgen(t, nil, nil)
	for _, c := range []struct {
		base   string
		size   int
		syn    bool
		tagged bool
	}{
		{"198.18.0.0", 54, true, false}, {"10.90.0.1", 64, true, true}, {"10.78.0.250", 1500, false, true},
		{"10.78.0.1", 65, false, false}, {"fd90::1:fffe", 84, true, true}, {"fd78::1:0", 1520, false, true},
		{"fd78::1:0", 74, true, false},
	} {
		f := flowsOf(netip.MustParseAddr(c.base), c.size, c.syn, c.tagged)
		for _, n := range []uint64{0, 1, 2, 3, 767, 768, 1 << 20, 1<<26 + 5} {
			name := fmt.Sprintf("%s/%d/syn=%v/tag=%v/n=%d", c.base, c.size, c.syn, c.tagged, n)
			tag := loadgen.Tag{Slot: uint32(n % 97), Gen: uint16(n % 7)}
			got := make([]byte, 2048)
			l, err := loadgen.WriteFlow(f, got, n, tag)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			got = got[:l]
			// The generator writes flow Start into a frame that ends in
			// the same tag (it reads the tag, never writes it).
			f.Start = n
			if err := g.SetFlows(f); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			in := append([]byte(nil), f.Template...)
			if c.tagged {
				copy(in[len(in)-loadgen.TagLen:], got[len(got)-loadgen.TagLen:])
			}
			v, want, err := g.Run(loadgen.Gen, in)
			if err != nil || v != dataplane.XDPTx {
				t.Fatalf("%s: generator %v %v", name, v, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: Go and BPF differ\n  go %x\n bpf %x", name, got[:min(len(got), 96)], want[:min(len(want), 96)])
			}
			if !testutil.ChecksumsValid(got) {
				t.Fatalf("%s: bad checksum\n%s", name, hex.Dump(got[:min(len(got), 96)]))
			}
		}
	}
	if _, err := loadgen.WriteFlow(flowsOf(netip.MustParseAddr("10.0.0.1"), 54, true, true), make([]byte, 64), 0, loadgen.Tag{}); err == nil {
		t.Error("a tagged template with no payload was accepted")
	}
	if _, err := loadgen.WriteFlow(flowsOf(netip.MustParseAddr("10.0.0.1"), 65, true, true), make([]byte, 128), 0, loadgen.Tag{}); err == nil {
		t.Error("a tagged template with an odd segment was accepted")
	}
}

// TestLoopProgram: loadgen_loop sends a tagged frame the subject forwarded
// back as its slot's next flow, whatever the subject did to it (DR's MAC
// rewrite, TUN's outer header, FULLNAT's TOA option), and counts it for
// the real it was sent to; it drops what came back after its slot was
// reseeded, what comes while the loop is off, and untagged frames
// (counted, as the sink does); it passes ARP.
func TestLoopProgram(t *testing.T) {
	g := openLoadgen(t, nil, nil)
	const slots, slot = 8, 5
	for _, base := range []string{"10.90.0.1", "fd90::1:0"} {
		size := 64
		if netip.MustParseAddr(base).Is6() {
			size = 84
		}
		f := flowsOf(netip.MustParseAddr(base), size, true, true)
		f.Start = 1 << 26
		frameOf := func(k uint64, gen uint16) []byte {
			b := make([]byte, 2048)
			l, err := loadgen.WriteFlow(f, b, f.Start+k*slots+slot, loadgen.Tag{Slot: slot, Gen: gen})
			if err != nil {
				t.Fatal(err)
			}
			return b[:l]
		}
		// What a subject sends on for flow k.
		dr := func(k uint64) []byte {
			b := frameOf(k, 3)
			copy(b[0:6], wReal)
			copy(b[6:12], wLB)
			return b
		}
		tun := func(k uint64) []byte {
			b := frameOf(k, 3)
			if !netip.MustParseAddr(base).Is4() {
				return dr(k) // no IPv6 outer header in this test
			}
			return testutil.IPIP(b, wReal, wLB, netip.MustParseAddr("10.77.0.250"), netip.MustParseAddr("10.77.0.12"), 0, 64, 1, true)
		}
		toa := func(k uint64) []byte {
			// Eight bytes more in front of the payload, where FULLNAT
			// puts its option.
			b := dr(k)
			hdr := 54
			if !netip.MustParseAddr(base).Is4() {
				hdr = 74
			}
			return append(append(append([]byte(nil), b[:hdr]...), make([]byte, 8)...), b[hdr:]...)
		}
		for name, subject := range map[string]func(uint64) []byte{"dr": dr, "tun": tun, "toa": toa} {
			if err := g.SetLoop(f, slots, slot, 41, 3); err != nil {
				t.Fatal(err)
			}
			if err := g.ResetSink(); err != nil {
				t.Fatal(err)
			}
			v, out, err := g.Run(loadgen.LoopProg, subject(41))
			if err != nil || v != dataplane.XDPTx {
				t.Fatalf("%s %s: verdict %v %v", base, name, v, err)
			}
			if want := frameOf(42, 3); !bytes.Equal(out, want) {
				t.Fatalf("%s %s: looped frame\n got %x\nwant %x", base, name, out, want)
			}
			if k, gen, err := g.LoopSlot(slot); err != nil || k != 42 || gen != 3 {
				t.Fatalf("%s %s: slot after a trip: k %d gen %d (%v), want 42 3", base, name, k, gen, err)
			}
			counts, err := g.SinkCounts()
			if err != nil || counts[0x0c].Pkts != 1 {
				t.Fatalf("%s %s: sink counts %v (%v), want one frame for the real", base, name, counts, err)
			}
		}
		// Reseeded under generation 4: the generation-3 frame is stale.
		if err := g.SetLoop(f, slots, slot, 60, 4); err != nil {
			t.Fatal(err)
		}
		if v, _, err := g.Run(loadgen.LoopProg, dr(59)); err != nil || v != dataplane.XDPDrop {
			t.Fatalf("%s stale: verdict %v %v, want XDP_DROP", base, v, err)
		}
		if k, _, _ := g.LoopSlot(slot); k != 60 {
			t.Fatalf("%s stale: the slot moved to trip %d", base, k)
		}
		// Untagged: counted and dropped.
		untagged := dr(1)
		binary.BigEndian.PutUint16(untagged[len(untagged)-loadgen.TagLen:], 0)
		if v, _, err := g.Run(loadgen.LoopProg, untagged); err != nil || v != dataplane.XDPDrop {
			t.Fatalf("%s untagged: verdict %v %v, want XDP_DROP", base, v, err)
		}
		// Off: dropped.
		if err := g.StopLoop(); err != nil {
			t.Fatal(err)
		}
		if v, _, err := g.Run(loadgen.LoopProg, dr(0)); err != nil || v != dataplane.XDPDrop {
			t.Fatalf("%s off: verdict %v %v, want XDP_DROP", base, v, err)
		}
		st, err := g.LoopCounts()
		if err != nil || st.Looped != 3 || st.Stale != 1 {
			t.Fatalf("%s: loop counts %+v (%v), want 3 looped, 1 stale", base, st, err)
		}
	}
	arp := append(append(append([]byte(nil), wGen...), wLB...), 0x08, 0x06)
	arp = append(arp, make([]byte, 28)...)
	if v, _, err := g.Run(loadgen.LoopProg, arp); err != nil || v != dataplane.XDPPass {
		t.Fatalf("ARP: verdict %v (%v), want XDP_PASS", v, err)
	}
}
