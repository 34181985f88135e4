package dataplane

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// Pick sequences: Go computes a service's next picks and XDP schedules
// new flows from them (bpf/director.bpf.c new_flow), with no trip to Go.
// For rr and wrr, whose picks depend neither on the flow nor on
// connection counts, it is one cycle of the scheduler, repeated (loop
// 0). For the least-connection family it is a lookahead: the picks the
// scheduler would make with each one counted, up to where they become
// periodic (loop) or run out (NoLoop: the next flows go to Go until Go
// installs a fresh one). Go stays the one place that decides; the table
// is its decision for every flow it covers.

// MaxPickCycle is the longest cycle XDP can schedule from (bpf/consts.h
// PICK_SEQ_LEN); a longer one leaves the service to the slow path.
const MaxPickCycle = len(directorPickSeq{}.Reals)

// NoLoop is SetPicks's loop for a sequence that does not repeat.
const NoLoop = -1

// SetPicks installs picks (real ids) for service svcID: the n-th new flow
// goes to picks[n], then the picks from loop on repeat (NoLoop: none do).
// It replaces the sequence XDP used so far, which it returns how many new
// flows it scheduled (since it was installed; the few flows XDP schedules
// while this call runs are not seen).
func (d *Dataplane) SetPicks(svcID uint32, picks []uint32, loop int) (uint64, error) {
	if len(picks) == 0 || len(picks) > MaxPickCycle {
		return 0, fmt.Errorf("pick sequence of %d: must be 1..%d", len(picks), MaxPickCycle)
	}
	if loop >= len(picks) || loop < NoLoop {
		return 0, fmt.Errorf("pick sequence of %d: loop at %d", len(picks), loop)
	}
	var ctl directorPickCtl
	err := d.objs.PickCtls.Lookup(svcID, &ctl)
	had := err == nil
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, fmt.Errorf("pick ctl of service %d: %w", svcID, err)
	}
	var used uint64
	if had {
		if used, err = d.pickCursor(svcID, ctl.Slot); err != nil {
			return 0, err
		}
	}
	next := (ctl.Slot + 1) & 1
	if !had {
		next = 0
	}
	seq := &directorPickSeq{Len: uint32(len(picks)), Loop: uint32(loop)}
	copy(seq.Reals[:], picks)
	if err := d.objs.PickSeqs.Put(svcID<<1|next, seq); err != nil {
		return 0, fmt.Errorf("pick sequence of service %d: %w", svcID, err)
	}
	if err := d.objs.PickCtls.Put(svcID, &directorPickCtl{Slot: next}); err != nil {
		return 0, fmt.Errorf("pick ctl of service %d: %w", svcID, err)
	}
	return used, nil
}

// ClearPicks leaves service svcID's new flows to the slow path and
// returns how many XDP scheduled from the last cycle.
func (d *Dataplane) ClearPicks(svcID uint32) (uint64, error) {
	var ctl directorPickCtl
	err := d.objs.PickCtls.Lookup(svcID, &ctl)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("pick ctl of service %d: %w", svcID, err)
	}
	used, err := d.pickCursor(svcID, ctl.Slot)
	if err != nil {
		return 0, err
	}
	if err := d.objs.PickCtls.Delete(svcID); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, fmt.Errorf("pick ctl of service %d: %w", svcID, err)
	}
	for slot := uint32(0); slot < 2; slot++ {
		if err := d.objs.PickSeqs.Delete(svcID<<1 | slot); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return 0, fmt.Errorf("pick sequence of service %d: %w", svcID, err)
		}
	}
	return used, nil
}

// PickServices lists the services XDP schedules new flows for.
func (d *Dataplane) PickServices() ([]uint32, error) {
	var (
		id  uint32
		ctl directorPickCtl
		out []uint32
	)
	it := d.objs.PickCtls.Iterate()
	for it.Next(&id, &ctl) {
		out = append(out, id)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list pick services: %w", err)
	}
	return out, nil
}

func (d *Dataplane) pickCursor(svcID, slot uint32) (uint64, error) {
	var seq directorPickSeq
	err := d.objs.PickSeqs.Lookup(svcID<<1|slot&1, &seq)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("pick sequence of service %d: %w", svcID, err)
	}
	return seq.Cursor, nil
}

// PickCursor returns how many new flows of service svcID XDP has
// scheduled from its current cycle (0 when it has none).
func (d *Dataplane) PickCursor(svcID uint32) (uint64, error) {
	var ctl directorPickCtl
	err := d.objs.PickCtls.Lookup(svcID, &ctl)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("pick ctl of service %d: %w", svcID, err)
	}
	return d.pickCursor(svcID, ctl.Slot)
}
