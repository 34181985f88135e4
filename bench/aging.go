package bench

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/neigh"
	"github.com/xipvs/xipvs/internal/server"
)

// agingLab holds connection tables of the sizes the sweep is timed on,
// full of live connections, and a server that sweeps each as xipvsd does
// every second (bpf/sweep.bpf.c in the kernel, then the server's share).
type agingLab struct {
	tables []agingTable
}

type agingTable struct {
	n   int
	h   *dataplane.Harness
	srv *server.Server
}

func newAgingLab(sizes []int) (_ *agingLab, err error) {
	l := &agingLab{}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	vip := netip.MustParseAddr("192.0.2.10")
	for _, n := range sizes {
		h, err := dataplane.OpenHarness(uint32(n))
		if err != nil {
			return nil, err
		}
		l.tables = append(l.tables, agingTable{n: n, h: h,
			srv: server.New(server.Options{Dataplane: h, Route: neigh.RouteTo, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})})
		if err := h.FillEstablished(n, vip, func(i int) uint32 { return uint32(1 + i%8) }); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func agingKey(n int) string {
	switch {
	case n == 1<<20:
		return "aging/sweep-1m"
	case n%1_000_000 == 0:
		return fmt.Sprintf("aging/sweep-%dm", n/1_000_000)
	default:
		return fmt.Sprintf("aging/sweep-%dk", n/1000)
	}
}

// round sweeps each table once and records the CPU time it took.
func (l *agingLab) round(r *Report, run int) error {
	for _, t := range l.tables {
		before := cpuTime()
		if err := t.srv.Sweep(); err != nil {
			return err
		}
		ms := float64((cpuTime() - before).Microseconds()) / 1e3
		x := r.sample(Result{Key: agingKey(t.n), Scenario: "aging", Subject: fmt.Sprintf("sweep of %d live connections", t.n), Unit: UnitMs}, run, ms)
		x.Detail["connections"] = t.n
	}
	return nil
}

func (l *agingLab) Close() error {
	var err error
	for _, t := range l.tables {
		err = errors.Join(err, t.h.Close())
	}
	return err
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
