package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// The address prefilter (bpf/maps.h addr_filter): by a 16-bit fold of an
// address, whether some VIP or some NAT/FULLNAT real address folds there.
// Traffic to and from neither leaves XDP after two array reads. Go counts
// what folds into each slot and writes a slot's flags when they change.

const addrSlots = 65536

// addrSlot is addr_slot of bpf/consts.h: the address as the program
// loads it from the packet (network order in a native u32), folded.
func addrSlot(a netip.Addr) uint32 {
	if a.Is6() {
		return addr6Slot(a)
	}
	b := a.As4()
	u := binary.NativeEndian.Uint32(b[:])
	return (u ^ u>>16) & (addrSlots - 1)
}

const (
	addrVIP       = uint8(bpfobj.DirectorAddrFlagADDR_F_VIP)
	addrNATSource = uint8(bpfobj.DirectorAddrFlagADDR_F_NAT_SOURCE)
	addrAllPorts  = uint8(bpfobj.DirectorAddrFlagADDR_F_ALL_PORTS)
)

type addrFilter struct {
	mu sync.Mutex
	// rebuilding: counts change, the map is written once at the end.
	rebuilding bool
	vips       map[netip.Addr]int  // service keys per VIP
	all        map[netip.Addr]int  // port-zero service keys per VIP
	nat        map[netip.Addr]bool // NAT and FULLNAT real addresses
	// per slot: how many VIPs, VIPs with a port-zero key and NAT
	// sources fold there.
	vipN, allN, natN [addrSlots]uint16
}

func newAddrFilter() *addrFilter {
	return &addrFilter{vips: map[netip.Addr]int{}, all: map[netip.Addr]int{}, nat: map[netip.Addr]bool{}}
}

func (f *addrFilter) flags(slot uint32) uint8 {
	var v uint8
	if f.vipN[slot] > 0 {
		v |= addrVIP
	}
	if f.natN[slot] > 0 {
		v |= addrNATSource
	}
	if f.allN[slot] > 0 {
		v |= addrAllPorts
	}
	return v
}

// write stores slot's flags in the map if they differ from before
// (unless the filter is being rebuilt: then rebuildFilter writes them
// all at the end).
func (d *Dataplane) writeSlot(slot uint32, before uint8) error {
	if d.filter.rebuilding {
		return nil
	}
	if now := d.filter.flags(slot); now != before {
		if err := d.objs.AddrFilter.Put(slot, now); err != nil {
			return fmt.Errorf("addr_filter: %w", err)
		}
	}
	return nil
}

// filterVIP counts one more (delta 1) or one less (-1) service key k.
func (d *Dataplane) filterVIP(k ServiceKey, delta int) error {
	f := d.filter
	f.mu.Lock()
	defer f.mu.Unlock()
	slot := addrSlot(k.VIP)
	before := f.flags(slot)
	count(f.vips, k.VIP, delta, &f.vipN[slot])
	if k.Port == 0 {
		count(f.all, k.VIP, delta, &f.allN[slot])
	}
	return d.writeSlot(slot, before)
}

// count adds delta to m[a], counting a in *slot while m[a] > 0.
func count(m map[netip.Addr]int, a netip.Addr, delta int, slot *uint16) {
	was := m[a]
	n := was + delta
	if n <= 0 {
		delete(m, a)
	} else {
		m[a] = n
	}
	switch {
	case was == 0 && n > 0:
		*slot++
	case was > 0 && n <= 0:
		*slot--
	}
}

// filterNATSource marks addr as a NAT or FULLNAT real's address, or not.
func (d *Dataplane) filterNATSource(addr netip.Addr, on bool) error {
	f := d.filter
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.nat[addr] == on {
		return nil
	}
	slot := addrSlot(addr)
	before := f.flags(slot)
	if on {
		f.nat[addr] = true
		f.natN[slot]++
	} else {
		delete(f.nat, addr)
		f.natN[slot]--
	}
	return d.writeSlot(slot, before)
}

// rebuildFilter counts what adopted maps hold and writes every slot: a
// restarted xipvsd's program must see the services and NAT reals the
// previous one installed. The counts are made in memory first and the
// map written once, each slot its final flags: a slot a VIP shares with
// a NAT real never loses its NAT-source bit in between (the real's
// replies would pass to the kernel un-NATed, and its clients reset).
func (d *Dataplane) rebuildFilter() error {
	d.filter.mu.Lock()
	d.filter.rebuilding = true
	d.filter.mu.Unlock()
	defer func() {
		d.filter.mu.Lock()
		d.filter.rebuilding = false
		d.filter.mu.Unlock()
	}()
	keys, err := d.ServiceKeys()
	if err != nil {
		return err
	}
	for _, k := range keys {
		d.svcKeys[k] = true
		if err := d.filterVIP(k, 1); err != nil {
			return err
		}
	}
	var (
		id uint32
		r  bpfobj.DirectorReal
	)
	it := d.objs.Reals.Iterate()
	for it.Next(&id, &r) {
		addr := addrFromBE32(r.Addr)
		if r.Flags&realFlagIPv6 != 0 {
			addr = netip.AddrFrom16(r.Addr6)
		}
		if (r.Addr != 0 || r.Flags&realFlagIPv6 != 0) && (Fwd(r.Fwd) == FwdMasq || Fwd(r.Fwd) == FwdFullNAT) {
			if err := d.filterNATSource(addr, true); err != nil {
				return err
			}
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read reals: %w", err)
	}
	// Every slot, so that nothing an older run left stays.
	keysAll, vals := make([]uint32, addrSlots), make([]uint8, addrSlots)
	d.filter.mu.Lock()
	for i := range keysAll {
		keysAll[i], vals[i] = uint32(i), d.filter.flags(uint32(i))
	}
	d.filter.mu.Unlock()
	_, err = d.objs.AddrFilter.BatchUpdate(keysAll, vals, nil)
	if errors.Is(err, ebpf.ErrNotSupported) {
		// No batch operations: slot by slot, each written once.
		for i, k := range keysAll {
			if err = d.objs.AddrFilter.Put(k, vals[i]); err != nil {
				break
			}
		}
	}
	if err != nil {
		return fmt.Errorf("write addr_filter: %w", err)
	}
	return nil
}
