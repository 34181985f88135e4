package dataplane_test

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

// knownSlot is bpf/synproxy.h's known_slot of an IPv4 source (the
// address as the program loads it: in the host's byte order).
func knownSlot(a netip.Addr) uint32 {
	return binary.NativeEndian.Uint32(a.AsSlice()) * 2654435761 >> (32 - 17)
}

// admissionOn turns admission control on at 1 new source's SYN per
// second (a burst of 1) and returns a reader of the shed counter.
func admissionOn(t *testing.T, d *dataplane.Harness) func() uint64 {
	t.Helper()
	if err := d.SetDefence(dataplane.Defence{AdmitRate: 1, AdmitBurst: 1}); err != nil {
		t.Fatal(err)
	}
	return func() uint64 {
		c, err := d.Counters()
		if err != nil {
			t.Fatal(err)
		}
		return c[dataplane.StatShed]
	}
}

// TestAdmission: with admission control on, SYNs from new IPv4 sources
// are paced (shed past the burst); a source that completed a handshake
// passes; and a new source that shares its slot of the known-source
// filter with that known one is still paced: the filter only spares
// flood sources the LRU lookup, it never admits one.
func TestAdmission(t *testing.T) {
	d := openDirector(t)
	setup(t, d)
	shed := admissionOn(t, d)
	syn := func(src netip.Addr, sport uint16) []byte {
		return testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: src, Dst: vip, SrcPort: sport, DstPort: 80, SYN: true}.Build()
	}
	// The known source completes a handshake through XDP: its SYN (the
	// burst's), then the ACK that promotes the entry and records it.
	known := dataplane.ConnKey{Src: client, Dst: vip, SrcPort: 40000, DstPort: 80, Proto: conntrack.ProtoTCP}
	flow(t, d, known, dataplane.Decision{RealID: 1, ServiceID: 1}, 0)
	if v, _ := run(t, d, syn(client, 40000)); v != dataplane.XDPTx {
		t.Fatalf("the known source's SYN: %v", v)
	}
	run(t, d, testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 40000, DstPort: 80, ACK: true}.Build())
	if est, err := d.Established(known); err != nil || !est {
		t.Fatalf("the handshake did not promote the connection: %v %v", est, err)
	}

	before := shed()
	for i := 0; i < 20; i++ {
		run(t, d, syn(netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), 50000))
	}
	if n := shed() - before; n < 15 {
		t.Errorf("20 SYNs from new sources at 1/s with a burst of 1: %d shed, want most", n)
	}
	before = shed()
	for i := 0; i < 5; i++ {
		run(t, d, syn(client, 50001+uint16(i)))
	}
	if n := shed() - before; n != 0 {
		t.Errorf("SYNs from a known source shed: %d", n)
	}

	// A new source in the known one's filter slot.
	var twin netip.Addr
	for x := uint32(0); x < 1<<24; x++ {
		a := netip.AddrFrom4([4]byte{198, 18 | byte(x>>16)&1, byte(x >> 8), byte(x)})
		if knownSlot(a) == knownSlot(client) {
			twin = a
			break
		}
	}
	if !twin.IsValid() {
		t.Fatal("no address shares the known source's slot")
	}
	before = shed()
	start := time.Now()
	for i := 0; i < 5; i++ {
		run(t, d, syn(twin, 50010+uint16(i)))
	}
	// At 1/s with a burst of 1: one passes, and one more for each second
	// the five took (a loaded machine).
	passes := 1 + int(time.Since(start).Seconds())
	if n := shed() - before; n < uint64(max(0, 5-passes)) {
		t.Errorf("%v (the known %v's filter slot): %d of 5 SYNs shed, want them paced as any new source's", twin, client, n)
	}
	t.Logf("%v shares slot %d with %v", twin, knownSlot(client), client)
}
