package dataplane_test

import (
	"fmt"
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
