package bench

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/server"
	"github.com/xipvs/xipvs/internal/testutil"
)

// BenchmarkConnTable reports the connection table's memory per entry
// (the kernel's memlock for the LRU hash, divided by its capacity) and
// the CPU time of one sweep over 1M live connections (batched map
// reads, expiry check and ActiveConn/InActConn counting), as xipvsd runs
// it every second. Run: go test -run '^$' -bench ConnTable -benchtime 3x ./bench/
func BenchmarkConnTable(b *testing.B) {
	testutil.RequirePrivileged(b)
	const n = 1 << 20
	d, err := dataplane.Open(dataplane.Options{ConnTableSize: n})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	mem, err := d.ConnTableMemory()
	if err != nil {
		b.Fatal(err)
	}
	vip := netip.MustParseAddr("192.0.2.10")
	now := dataplane.Now()
	for i := 0; i < n; i++ {
		k := dataplane.ConnKey{Src: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Dst: vip,
			SrcPort: 40000, DstPort: 80, Proto: conntrack.ProtoTCP}
		if err := d.SetConn(k, dataplane.Conn{RealID: 1, ServiceID: 1, State: conntrack.StateEstablished, LastSeen: now}); err != nil {
			b.Fatal(err)
		}
	}
	srv := server.New(server.Options{Dataplane: d, Route: dataplane.RouteTo})
	var cpu time.Duration
	sweeps := 0
	for b.Loop() {
		before := cpuTime()
		if err := srv.Sweep(); err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime() - before
		sweeps++
	}
	b.ReportMetric(float64(cpu.Milliseconds())/float64(sweeps), "cpu-ms/sweep-1M")
	b.ReportMetric(float64(mem)/n, "B/conn")
	b.ReportMetric(float64(mem)/n*10e6/(1<<30), "GiB/10M")
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
