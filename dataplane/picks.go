package dataplane

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/xipvs/xipvs/dataplane/bpfobj"
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
const MaxPickCycle = len(bpfobj.DirectorPickSeq{}.Reals)

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
	var ctl bpfobj.DirectorPickCtl
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
	seq := &bpfobj.DirectorPickSeq{Len: uint32(len(picks)), Loop: uint32(loop)}
	copy(seq.Reals[:], picks)
	if err := d.objs.PickSeqs.Put(svcID<<1|next, seq); err != nil {
		return 0, fmt.Errorf("pick sequence of service %d: %w", svcID, err)
	}
	if err := d.objs.PickCtls.Put(svcID, &bpfobj.DirectorPickCtl{Slot: next}); err != nil {
		return 0, fmt.Errorf("pick ctl of service %d: %w", svcID, err)
	}
	if had && ctl.Kind != uint32(bpfobj.DirectorPickKindPICK_SEQUENCE) {
		// It scheduled from a table until now.
		for slot := uint32(0); slot < 2; slot++ {
			if err := d.deleteHashPicks(svcID, slot); err != nil {
				return used, err
			}
		}
	}
	return used, nil
}

// PickKind is how XDP finds a hashing scheduler's bucket for a new flow
// (bpf/picks.h pick_bucket): the hash the kernel's scheduler computes.
type PickKind uint32

// The hashes of the tables XDP schedules from.
const (
	PickSH     = PickKind(bpfobj.DirectorPickKindPICK_SH)      // sh: hash_32 of the source address
	PickSHPort = PickKind(bpfobj.DirectorPickKindPICK_SH_PORT) // sh with sh-port
	PickDH     = PickKind(bpfobj.DirectorPickKindPICK_DH)      // dh: hash_32 of the destination address
	PickMH     = PickKind(bpfobj.DirectorPickKindPICK_MH)      // mh: hsiphash of the source address
	PickMHPort = PickKind(bpfobj.DirectorPickKindPICK_MH_PORT) // mh with mh-port
)

// SetHashPicks installs the table of a hashing scheduler for service
// svcID: table[b] is the real (0: Go decides; with PickUnavailable, an
// owner mh-fallback looks past) of every new flow whose hash of kind kind
// is b. It replaces the service's pick sequence or
// table; the table is written whole before XDP switches to it.
func (d *Dataplane) SetHashPicks(svcID uint32, kind PickKind, table []uint32) error {
	if kind < PickSH || kind > PickMHPort || len(table) == 0 {
		return fmt.Errorf("hash picks of service %d: kind %d, %d buckets", svcID, kind, len(table))
	}
	var ctl bpfobj.DirectorPickCtl
	err := d.objs.PickCtls.Lookup(svcID, &ctl)
	had := err == nil
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("pick ctl of service %d: %w", svcID, err)
	}
	next := uint32(0)
	if had {
		next = (ctl.Slot + 1) & 1
	}
	// The other slot: whatever an earlier table left there goes first.
	if err := d.deleteHashPicks(svcID, next); err != nil {
		return err
	}
	var keys []bpfobj.DirectorHashPickKey
	var vals []uint32
	for b, rid := range table {
		if rid != 0 {
			keys = append(keys, bpfobj.DirectorHashPickKey{SidSlot: svcID<<1 | next, Bucket: uint32(b)})
			vals = append(vals, rid)
		}
	}
	if len(keys) > 0 {
		d.wroteHashPicks(svcID, next, keys)
		if _, err := d.objs.HashPicks.BatchUpdate(keys, vals, nil); err != nil {
			_ = d.deleteHashPicks(svcID, next)
			return fmt.Errorf("hash picks of service %d: %w", svcID, err)
		}
	}
	if err := d.objs.PickCtls.Put(svcID, &bpfobj.DirectorPickCtl{Slot: next, Kind: uint32(kind)}); err != nil {
		return fmt.Errorf("pick ctl of service %d: %w", svcID, err)
	}
	if had {
		if err := d.deleteHashPicks(svcID, ctl.Slot); err != nil {
			return err
		}
		if ctl.Kind == uint32(bpfobj.DirectorPickKindPICK_SEQUENCE) {
			if err := d.objs.PickSeqs.Delete(svcID<<1 | ctl.Slot&1); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("pick sequence of service %d: %w", svcID, err)
			}
		}
	}
	return nil
}

// deleteHashPicks removes the table in slot of service svcID: the
// buckets this process wrote there (one batch), or, for a table an
// earlier xipvsd left in the pinned map, every bucket there may be.
func (d *Dataplane) deleteHashPicks(svcID, slot uint32) error {
	slot &= 1
	d.picksMu.Lock()
	defer d.picksMu.Unlock()
	if d.hashBuckets == nil {
		d.hashBuckets = map[uint32]*[2][]bpfobj.DirectorHashPickKey{}
	}
	known := d.hashBuckets[svcID]
	if known != nil {
		keys := known[slot]
		known[slot] = nil
		if len(keys) == 0 {
			return nil
		}
		if _, err := d.objs.HashPicks.BatchDelete(keys, nil); err == nil {
			return nil
		}
		// Some went another way (a restart's cleanup): one by one.
	}
	for b := uint32(0); b < MaxHashBuckets; b++ {
		k := bpfobj.DirectorHashPickKey{SidSlot: svcID<<1 | slot, Bucket: b}
		if err := d.objs.HashPicks.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("hash picks of service %d: %w", svcID, err)
		}
	}
	if known == nil {
		d.hashBuckets[svcID] = &[2][]bpfobj.DirectorHashPickKey{}
	}
	return nil
}

// wroteHashPicks records the buckets written in slot of service svcID.
func (d *Dataplane) wroteHashPicks(svcID, slot uint32, keys []bpfobj.DirectorHashPickKey) {
	d.picksMu.Lock()
	defer d.picksMu.Unlock()
	if d.hashBuckets == nil {
		d.hashBuckets = map[uint32]*[2][]bpfobj.DirectorHashPickKey{}
	}
	known := d.hashBuckets[svcID]
	if known == nil {
		known = &[2][]bpfobj.DirectorHashPickKey{}
		d.hashBuckets[svcID] = known
	}
	known[slot&1] = keys
}

// MaxHashBuckets is the largest table XDP hashes into (mh's).
const MaxHashBuckets = 4093

// PickUnavailable marks a bucket of SetHashPicks's table whose owner is
// unavailable where mh-fallback hashes the flow again: XDP does, up to 4
// times (bpf/picks.h mh_fallback), before Go decides.
const PickUnavailable = 1 << 31

// ClearPicks leaves service svcID's new flows to the slow path and
// returns how many XDP scheduled from the last cycle.
func (d *Dataplane) ClearPicks(svcID uint32) (uint64, error) {
	var ctl bpfobj.DirectorPickCtl
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
		if ctl.Kind != uint32(bpfobj.DirectorPickKindPICK_SEQUENCE) {
			if err := d.deleteHashPicks(svcID, slot); err != nil {
				return 0, err
			}
		}
	}
	return used, nil
}

// PickServices lists the services XDP schedules new flows for.
func (d *Dataplane) PickServices() ([]uint32, error) {
	var (
		id  uint32
		ctl bpfobj.DirectorPickCtl
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
	var seq bpfobj.DirectorPickSeq
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
	var ctl bpfobj.DirectorPickCtl
	err := d.objs.PickCtls.Lookup(svcID, &ctl)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("pick ctl of service %d: %w", svcID, err)
	}
	return d.pickCursor(svcID, ctl.Slot)
}
