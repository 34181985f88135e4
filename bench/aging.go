package bench

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
)

// agingLab holds connection tables of the sizes aging is timed on. Each
// round fills one with established connections, as a director holding
// them finds them after a restart, and times what aging costs
// (bpf/aging.h, dataplane/aging.go): the full sweep that counts them and
// builds the deadline index from the table; a sweep at rest, which is
// what aging costs every second; and the reaper ending them all once
// they are due, per connection.
type agingLab struct {
	tables []agingTable
}

type agingTable struct {
	n int
	h *dataplane.Harness
	// skew moves the table's clock on: an hour at every round's end, so
	// the index (which never looks back) sees time go forward.
	skew time.Duration
}

func newAgingLab(sizes []int) (_ *agingLab, err error) {
	l := &agingLab{}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	for _, n := range sizes {
		h, err := dataplane.OpenHarness(uint32(n))
		if err != nil {
			return nil, err
		}
		l.tables = append(l.tables, agingTable{n: n, h: h})
	}
	return l, nil
}

func agingKey(n int) string { return "aging/sweep-" + agingSize(n) }

func agingSize(n int) string {
	switch {
	case n == 1<<20:
		return "1m"
	case n%1_000_000 == 0:
		return fmt.Sprintf("%dm", n/1_000_000)
	default:
		return fmt.Sprintf("%dk", n/1000)
	}
}

// round times each table's aging once (see agingLab).
func (l *agingLab) round(r *Report, run int) error {
	vip := netip.MustParseAddr("192.0.2.10")
	for i := range l.tables {
		t := &l.tables[i]
		if err := t.h.FillEstablishedTable(t.n, vip, func(i int) uint32 { return uint32(1 + i%8) }, dataplane.Now()+t.skew); err != nil {
			return err
		}
		t.h.RebuildAgingIndex() // the table was written behind its back
		sweep := func(full bool, ahead time.Duration) (dataplane.SweepResult, float64, error) {
			a := dataplane.SweepArgs{Now: dataplane.Now() + t.skew + ahead, Timeouts: conntrack.DefaultTimeouts(), OrphanAge: 10 * time.Second, Full: full}
			before := cpuTime()
			res, err := t.h.Sweep(a)
			return res, float64((cpuTime() - before).Microseconds()) / 1e3, err
		}
		sample := func(key, subject, unit string, v float64) {
			x := r.sample(Result{Key: "aging/" + key + "-" + agingSize(t.n), Scenario: "aging", Subject: subject, Unit: unit}, run, v)
			x.Detail["connections"] = t.n
		}
		res, ms, err := sweep(true, 0)
		if err != nil {
			return err
		}
		if res.Seen < uint64(t.n) {
			return fmt.Errorf("the full sweep saw %d of %d connections", res.Seen, t.n)
		}
		sample("full", fmt.Sprintf("full sweep of %d established connections, the deadline index built", t.n), UnitMs, ms)
		// The sweep after walks the (empty) embryonic table once; the one
		// after that is a sweep at rest.
		if _, _, err := sweep(false, time.Second); err != nil {
			return err
		}
		if _, ms, err = sweep(false, 2*time.Second); err != nil {
			return err
		}
		sample("sweep", fmt.Sprintf("sweep at rest with %d established connections", t.n), UnitMs, ms)
		// An hour on, every one is due: the reaper ends them all.
		t.skew += time.Hour
		res, ms, err = sweep(false, 0)
		if err != nil {
			return err
		}
		if res.Expired != uint64(t.n) || t.h.IndexHeld() != 0 {
			return fmt.Errorf("the reaper ended %d of %d connections (%d left in the index)", res.Expired, t.n, t.h.IndexHeld())
		}
		sample("end", "ending a due established connection (the reaper)", "ns CPU", ms*1e6/float64(t.n))
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
