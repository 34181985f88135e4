package dataplane

import (
	"fmt"
	"net/netip"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// FULLNAT local ports handed to XDP ahead (bpf/maps.h fnat_slots): each
// ring (a service's, 1..FNATRings()-1) has a run of slots per protocol,
// each empty (0) or holding a local address id and port the server
// allocated. XDP takes one with an atomic exchange for a new FULLNAT
// connection; the server fills empty slots in place (the map is
// memory-mapped) and only empty ones, so a port is taken by one side
// once. Local addresses are named by id (SetLocalAddr).

// fnatView is the memory-mapped slot array.
type fnatView struct {
	mem   []byte
	slots []uint64
	per   int // slots per ring and protocol
	rings int
}

func (d *Dataplane) fnat() (*fnatView, error) {
	d.fnatOnce.Do(func() {
		rings := int(d.objs.FnatCursor.MaxEntries()) / 2
		mem, slots, err := mmapWords[uint64](d.objs.FnatSlots)
		if err != nil {
			d.fnatErr = fmt.Errorf("map the FULLNAT port slots: %w", err)
			return
		}
		d.fnatView = &fnatView{mem: mem, slots: slots, per: len(slots) / (rings * 2), rings: rings}
	})
	return d.fnatView, d.fnatErr
}

func (d *Dataplane) closeFNAT() error {
	if d.fnatView == nil {
		return nil
	}
	err := unix.Munmap(d.fnatView.mem)
	d.fnatView = nil
	return err
}

// FNATRings is how many ring ids there are (0 is none).
func (d *Dataplane) FNATRings() int { return int(d.objs.FnatCursor.MaxEntries()) / 2 }

// SvcRing is the flags' field naming a service's ring of local ports.
func SvcRing(ring uint32) SvcFlags { return SvcFlags(ring&0xff) << 8 }

// SetLocalAddr names local address a by id (1..MaxLocalAddrs-1) for the
// slots.
func (d *Dataplane) SetLocalAddr(id uint32, a netip.Addr) error {
	v := bpfobj.DirectorLaddr{}
	if a.Is4() {
		b := a.As4()
		copy(v.Addr[:], b[:])
	} else {
		v.Addr, v.V6 = a.As16(), 1
	}
	if err := d.objs.Laddrs.Put(id, &v); err != nil {
		return fmt.Errorf("set local address %d (%v): %w", id, a, err)
	}
	return nil
}

// MaxLocalAddrs bounds the local address ids.
func (d *Dataplane) MaxLocalAddrs() uint32 { return d.objs.Laddrs.MaxEntries() }

// LocalSlot is a local port in a ring slot.
type LocalSlot struct {
	AddrID uint32
	Port   uint16
}

func slotValue(s LocalSlot) uint64 { return uint64(s.AddrID)<<32 | uint64(s.Port)<<16 | 1 }

func slotOf(v uint64) LocalSlot { return LocalSlot{AddrID: uint32(v >> 32), Port: uint16(v >> 16)} }

func (v *fnatView) ring(ring uint32, proto uint8) ([]uint64, error) {
	if ring == 0 || int(ring) >= v.rings {
		return nil, fmt.Errorf("FULLNAT ring %d out of range", ring)
	}
	i := int(ring) * 2
	if proto == unix.IPPROTO_UDP {
		i++
	}
	return v.slots[i*v.per : (i+1)*v.per], nil
}

// FillRing fills the empty slots of ring's protocol with the ports next
// gives, until it has none, in ring order from XDP's cursor (where XDP
// looks first); it returns how many it placed.
func (d *Dataplane) FillRing(ring uint32, proto uint8, next func() (LocalSlot, bool)) (int, error) {
	v, err := d.fnat()
	if err != nil {
		return 0, err
	}
	slots, err := v.ring(ring, proto)
	if err != nil {
		return 0, err
	}
	r := ring * 2
	if proto == unix.IPPROTO_UDP {
		r++
	}
	var cur uint32
	if err := d.objs.FnatCursor.Lookup(r, &cur); err != nil {
		return 0, fmt.Errorf("read FULLNAT ring cursor: %w", err)
	}
	n := 0
	for j := range slots {
		i := (int(cur) + j) % len(slots)
		if atomic.LoadUint64(&slots[i]) != 0 {
			continue
		}
		s, ok := next()
		if !ok {
			break
		}
		// Only XDP empties a slot and only the server fills one: an
		// empty slot stays empty until this store.
		atomic.StoreUint64(&slots[i], slotValue(s))
		n++
	}
	return n, nil
}

// DrainRing empties ring's slots of both protocols and returns the ports
// that were in them (XDP can no longer take them).
func (d *Dataplane) DrainRing(ring uint32) (map[uint8][]LocalSlot, error) {
	v, err := d.fnat()
	if err != nil {
		return nil, err
	}
	out := map[uint8][]LocalSlot{}
	for _, proto := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
		slots, err := v.ring(ring, proto)
		if err != nil {
			return nil, err
		}
		for i := range slots {
			if x := atomic.SwapUint64(&slots[i], 0); x != 0 {
				out[proto] = append(out[proto], slotOf(x))
			}
		}
	}
	return out, nil
}

// TakeRingPort takes a port out of ring's protocol slots, as XDP would
// (for a new connection the slow path opens when its pools have none
// left); false: the slots are empty.
func (d *Dataplane) TakeRingPort(ring uint32, proto uint8) (LocalSlot, bool, error) {
	v, err := d.fnat()
	if err != nil {
		return LocalSlot{}, false, err
	}
	slots, err := v.ring(ring, proto)
	if err != nil {
		return LocalSlot{}, false, err
	}
	for i := range slots {
		if atomic.LoadUint64(&slots[i]) == 0 {
			continue
		}
		if x := atomic.SwapUint64(&slots[i], 0); x != 0 {
			return slotOf(x), true, nil
		}
	}
	return LocalSlot{}, false, nil
}

// RingPorts calls fn for every port in every ring's slots now.
func (d *Dataplane) RingPorts(fn func(ring uint32, proto uint8, s LocalSlot)) error {
	v, err := d.fnat()
	if err != nil {
		return err
	}
	for r := 1; r < v.rings; r++ {
		for _, proto := range []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			slots, _ := v.ring(uint32(r), proto)
			for i := range slots {
				if x := atomic.LoadUint64(&slots[i]); x != 0 {
					fn(uint32(r), proto, slotOf(x))
				}
			}
		}
	}
	return nil
}
