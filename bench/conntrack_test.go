package bench

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/neigh"
	"github.com/xipvs/xipvs/internal/server"
	"github.com/xipvs/xipvs/internal/testutil"
)

// BenchmarkConnTable reports the connection table's memory per entry
// (the kernel's memlock for the LRU hash, divided by its capacity) and
// the CPU and wall time of one sweep (in the kernel: bpf/sweep.bpf.c)
// over 1M and 10M live connections, as xipvsd runs it every second.
// Run: go test -run '^$' -bench ConnTable -benchtime 3x ./bench/
func BenchmarkConnTable(b *testing.B) {
	testutil.RequirePrivileged(b)
	for _, n := range []int{1 << 20, 10_000_000} {
		b.Run(fmt.Sprintf("%dk", n/1000), func(b *testing.B) { benchSweep(b, n) })
	}
}

func benchSweep(b *testing.B, n int) {
	d, err := dataplane.OpenHarness(uint32(n))
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	mem, err := d.ConnTableMemory()
	if err != nil {
		b.Fatal(err)
	}
	if err := d.FillEstablished(n, netip.MustParseAddr("192.0.2.10"), func(int) uint32 { return 1 }); err != nil {
		b.Fatal(err)
	}
	srv := server.New(server.Options{Dataplane: d, Route: neigh.RouteTo})
	var cpu, wall time.Duration
	sweeps := 0
	for b.Loop() {
		before, start := cpuTime(), time.Now()
		if err := srv.Sweep(); err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime() - before
		wall += time.Since(start)
		sweeps++
	}
	b.ReportMetric(float64(cpu.Microseconds())/1e3/float64(sweeps), "cpu-ms/sweep")
	b.ReportMetric(float64(wall.Microseconds())/1e3/float64(sweeps), "wall-ms/sweep")
	b.ReportMetric(float64(mem)/float64(n), "B/conn")
}
