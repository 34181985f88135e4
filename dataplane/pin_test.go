package dataplane_test

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

// TestUpgradeKeepsConnections: a pinned map an older xipvsd laid out
// differently (0.1's counters: 13 of them) is created afresh on start,
// and the pinned connection table is adopted with its connections; a
// connection table that does not fit is refused with the --flush advice.
func TestUpgradeKeepsConnections(t *testing.T) {
	testutil.RequirePrivileged(t)
	dir := filepath.Join("/sys/fs/bpf", fmt.Sprintf("xipvs-test-pins-%d", os.Getpid()))
	// Pins an earlier run of the same pid left (killed before its
	// cleanup) would be adopted.
	if err := dataplane.Cleanup(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dataplane.Cleanup(dir) })
	d, err := dataplane.Open(dataplane.Options{ConnTableSize: 1024, PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	k := tcpKey(43000)
	if err := d.SetConn(k, dataplane.Conn{RealID: 1, ServiceID: 1, State: conntrack.StateEstablished, LastSeen: dataplane.Now()}); err != nil {
		t.Fatal(err)
	}
	d.Close()

	stats := filepath.Join(dir, "stats")
	if err := os.Remove(stats); err != nil {
		t.Fatal(err)
	}
	old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: 13})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Pin(stats); err != nil {
		t.Fatal(err)
	}
	old.Close()

	d, err = dataplane.Open(dataplane.Options{ConnTableSize: 1024, PinDir: dir})
	if err != nil {
		t.Fatalf("start over an older version's pins: %v", err)
	}
	if !d.Adopted() {
		t.Error("the pinned maps were not adopted")
	}
	if _, ok, err := d.LookupConn(k); !ok || err != nil {
		t.Errorf("the connection did not survive the upgrade: %v %v", ok, err)
	}
	if c, err := d.Counters(); err != nil || len(c) != dataplane.NumStats {
		t.Errorf("counters after the upgrade: %d, %v", len(c), err)
	}
	d.Close()

	_, err = dataplane.Open(dataplane.Options{ConnTableSize: 2048, PinDir: dir})
	if err == nil || !strings.Contains(err.Error(), "--flush") {
		t.Errorf("another --conn-table-size over the pins: %v, want a refusal naming --flush", err)
	}
}

// TestRestartKeepsAddrFilter: a restarted director rebuilds the address
// prefilter from the adopted maps without a slot a VIP shares with a NAT
// real ever losing its NAT-source bit, read all along from the pinned
// map as the program reads it (issue 29: 5000 services, and the real's
// replies passed to the kernel un-NATed while the VIPs were counted).
func TestRestartKeepsAddrFilter(t *testing.T) {
	testutil.RequirePrivileged(t)
	dir := filepath.Join("/sys/fs/bpf", fmt.Sprintf("xipvs-test-filter-%d", os.Getpid()))
	if err := dataplane.Cleanup(dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dataplane.Cleanup(dir) })
	d, err := dataplane.Open(dataplane.Options{ConnTableSize: 1024, PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	real := netip.MustParseAddr("10.200.0.1")
	slot := dataplane.AddrSlot(real)
	h := &dataplane.Harness{Dataplane: d}
	if err := h.SetInterface(1, []byte{2, 0, 0, 0, 0, 2}, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.SetReal(1, dataplane.Real{Addr: real, Ifindex: 1, MAC: []byte{2, 0, 0, 0, 0, 1}, Fwd: dataplane.FwdMasq, MTU: 1500}); err != nil {
		t.Fatal(err)
	}
	// 5000 VIPs, the first of them (counted first) in the real's slot.
	var vips []netip.Addr
	for i := 0; i < 1<<16 && len(vips) == 0; i++ {
		if a := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}); dataplane.AddrSlot(a) == slot {
			vips = append(vips, a)
		}
	}
	if len(vips) == 0 {
		t.Fatal("no VIP in 10.1/16 folds into the real's slot")
	}
	for i := 0; len(vips) < 5000; i++ {
		if a := netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}); dataplane.AddrSlot(a) != slot {
			vips = append(vips, a)
		}
	}
	for i, v := range vips {
		if err := d.SetService(dataplane.ServiceKey{VIP: v, Port: 80, Proto: 6}, uint32(1+i), 0); err != nil {
			t.Fatal(err)
		}
	}
	d.Close()

	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "addr_filter"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var v uint8
	if err := m.Lookup(slot, &v); err != nil || v&dataplane.AddrNATSource == 0 || v&dataplane.AddrVIP == 0 {
		t.Fatalf("before the restart the slot holds %#x (%v), want VIP and NAT source", v, err)
	}
	stop, lost := make(chan struct{}), make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				lost <- n
				return
			default:
			}
			if err := m.Lookup(slot, &v); err == nil && v&dataplane.AddrNATSource == 0 {
				n++
			}
		}
	}()
	d, err = dataplane.Open(dataplane.Options{ConnTableSize: 1024, PinDir: dir})
	close(stop)
	n := <-lost
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if n > 0 {
		t.Errorf("the NAT real's slot lost its NAT-source bit in %d reads during the restart", n)
	}
	if err := m.Lookup(slot, &v); err != nil || v != dataplane.AddrVIP|dataplane.AddrNATSource {
		t.Errorf("after the restart the slot holds %#x (%v), want VIP and NAT source", v, err)
	}
}
