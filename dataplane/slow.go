package dataplane

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/cilium/ebpf"

	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// slowCount is one real's traffic forwarded by the slow path itself.
type slowCount struct{ pkts, bytes atomic.Uint64 }

// accountSlow counts one packet of length bytes the slow path forwarded
// to real id, as real_account does in XDP.
func (d *Dataplane) AccountSlow(id uint32, bytes uint64) {
	if id < MaxReals {
		d.slowTraffic[id].pkts.Add(1)
		d.slowTraffic[id].bytes.Add(bytes)
	}
}

// addStats adds a batch's outcome counts (STAT_*).
func (d *Dataplane) AddSlowStats(s *[NumStats]uint64) {
	for i, v := range s {
		if v != 0 {
			d.slowStats[i].Add(v)
		}
	}
}

// loadSlowCounts reads the slow path's totals a previous run left in the
// pinned maps.
func (d *Dataplane) loadSlowCounts() error {
	var (
		id uint32
		v  bpfobj.DirectorRealStats
	)
	it := d.objs.SlowTraffic.Iterate()
	for it.Next(&id, &v) {
		if id < MaxReals && v.Inpkts != 0 {
			d.slowTraffic[id].pkts.Store(v.Inpkts)
			d.slowTraffic[id].bytes.Store(v.Inbytes)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read slow_traffic: %w", err)
	}
	var n uint64
	its := d.objs.SlowStats.Iterate()
	for its.Next(&id, &n) {
		if int(id) < NumStats {
			d.slowStats[id].Store(n)
		}
	}
	if err := its.Err(); err != nil {
		return fmt.Errorf("read slow_stats: %w", err)
	}
	return nil
}

// saveSlowCounts writes the slow path's totals to the pinned maps, so a
// restart goes on from them: at every Close, and each second while the
// slow path runs (a kill -9 loses at most that).
func (d *Dataplane) SaveSlowCounts() error {
	keys := make([]uint32, 0, 64)
	vals := make([]bpfobj.DirectorRealStats, 0, 64)
	for id := range d.slowTraffic {
		c := &d.slowTraffic[id]
		if p := c.pkts.Load(); p != 0 || d.slowSaved[id] {
			keys = append(keys, uint32(id))
			vals = append(vals, bpfobj.DirectorRealStats{Inpkts: p, Inbytes: c.bytes.Load()})
			d.slowSaved[id] = p != 0
		}
	}
	var err error
	if len(keys) > 0 {
		if _, e := d.objs.SlowTraffic.BatchUpdate(keys, vals, nil); e != nil {
			err = fmt.Errorf("write slow_traffic: %w", e)
		}
	}
	skeys := make([]uint32, NumStats)
	svals := make([]uint64, NumStats)
	for i := range skeys {
		skeys[i], svals[i] = uint32(i), d.slowStats[i].Load()
	}
	if _, e := d.objs.SlowStats.BatchUpdate(skeys, svals, nil); e != nil {
		err = errors.Join(err, fmt.Errorf("write slow_stats: %w", e))
	}
	return err
}

// resetSlowTraffic zeroes real id's slow-path traffic (ResetRealTraffic).
func (d *Dataplane) resetSlowTraffic(id uint32) error {
	if id >= MaxReals {
		return nil
	}
	d.slowTraffic[id].pkts.Store(0)
	d.slowTraffic[id].bytes.Store(0)
	if err := d.objs.SlowTraffic.Put(id, &bpfobj.DirectorRealStats{}); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("reset slow traffic of real %d: %w", id, err)
	}
	return nil
}
