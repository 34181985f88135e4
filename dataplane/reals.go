package dataplane

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// le reads and writes the maps' host-order fields.
var le = binary.LittleEndian

// RealView is a real server as the slow path's transforms read it: the
// reals map's entry, kept in Go by SetReal (one atomic pointer per id,
// no lock per packet).
type RealView struct {
	Valid    bool // the entry exists and has an address
	MACValid bool
	Fwd      Fwd
	Addr     [4]byte // IPv4 address (network order)
	TunSrc   [4]byte // the tunnel's outer source (TUN)
	MAC      [6]byte
	SrcMAC   [6]byte
	Ifindex  int
	MTU      int
}

// viewOf is the view of a reals-map entry.
func viewOf(r *bpfobj.DirectorReal) *RealView {
	v := &RealView{Valid: r.Addr != 0 || r.Flags&realFlagIPv6 != 0, MACValid: r.Flags&realFlagMACValid != 0, Fwd: Fwd(r.Fwd),
		MAC: r.Mac, SrcMAC: r.SrcMac, Ifindex: int(r.Ifindex), MTU: int(r.Mtu)}
	le.PutUint32(v.Addr[:], r.Addr)
	le.PutUint32(v.TunSrc[:], r.TunSrc)
	return v
}

// noReal is the view of an id with no entry.
var noReal = &RealView{}

// RealView returns real id's view.
func (d *Dataplane) RealView(id uint32) *RealView {
	if id >= MaxReals {
		return noReal
	}
	if v := d.views[id].Load(); v != nil {
		return v
	}
	return noReal
}

// IfaceMAC is the MAC of director interface ifindex.
func (d *Dataplane) IfaceMAC(ifindex int) [6]byte {
	d.realsMu.RLock()
	defer d.realsMu.RUnlock()
	var m [6]byte
	copy(m[:], d.ifaceMACs[ifindex])
	return m
}

// Fwd is a forwarding method as the data plane encodes it.
type Fwd uint8

// Real is a real server as the data plane forwards to it.
type Real struct {
	Addr    netip.Addr
	Ifindex int              // egress interface
	MAC     net.HardwareAddr // next hop's MAC; nil until resolved
	Fwd     Fwd
	// MTU of the egress interface: a TUN packet that would not fit with
	// its outer header is answered with ICMP fragmentation-needed.
	MTU int
	// TunnelSrc is the outer source address of TUN packets.
	TunnelSrc netip.Addr
	// Port is the real's port for NAT connections XDP makes (0: the
	// client's destination port, for port-zero and -f services).
	Port uint16
	// LocalOK: an lblc service's real that may keep its destination
	// addresses (weight > 0, not overloaded as lblc says): XDP sends the
	// new flows of an address whose entry names it there.
	LocalOK bool
}

// SetReal writes real server id (1..MaxReals-1). With no MAC given, a
// resolved MAC already in the entry for the same address is kept (a
// restarted daemon must not stall its adopted flows until ARP resolves).
func (d *Dataplane) SetReal(id uint32, r Real) error {
	if id == 0 || id >= MaxReals {
		return fmt.Errorf("real id %d out of range", id)
	}
	v := bpfobj.DirectorReal{Ifindex: uint32(r.Ifindex), Fwd: uint8(r.Fwd), Mtu: uint16(r.MTU)}
	if r.Addr.Is6() {
		v.Addr6, v.Flags = r.Addr.As16(), realFlagIPv6
	} else {
		v.Addr = be32(r.Addr)
	}
	switch {
	case r.TunnelSrc.Is4():
		v.TunSrc = be32(r.TunnelSrc)
	case r.TunnelSrc.Is6():
		v.TunSrc6 = r.TunnelSrc.As16()
	}
	if r.Fwd == FwdTunnel && (!r.TunnelSrc.IsValid() || r.TunnelSrc.Is4() != r.Addr.Is4()) {
		return fmt.Errorf("set real %d (%v): a TUN real needs a tunnel source address of its family", id, r.Addr)
	}
	d.realsMu.Lock()
	defer d.realsMu.Unlock()
	src, ok := d.ifaceMACs[r.Ifindex]
	if !ok {
		return fmt.Errorf("set real %d (%v): interface %d is not a director interface", id, r.Addr, r.Ifindex)
	}
	copy(v.SrcMac[:], src)
	if r.LocalOK {
		v.Flags |= realFlagLocalOK
	}
	if len(r.MAC) == 6 {
		copy(v.Mac[:], r.MAC)
		v.Flags |= realFlagMACValid
	} else {
		var old bpfobj.DirectorReal
		if err := d.objs.Reals.Lookup(id, &old); err == nil && old.Addr == v.Addr && old.Addr6 == v.Addr6 && old.Flags&realFlagMACValid != 0 {
			v.Mac = old.Mac
			v.Flags |= realFlagMACValid
			r.MAC = append(net.HardwareAddr(nil), old.Mac[:]...)
		}
	}
	if err := d.objs.Reals.Put(id, &v); err != nil {
		return fmt.Errorf("set real %d (%v): %w", id, r.Addr, err)
	}
	d.views[id].Store(viewOf(&v))
	if err := d.objs.RealPorts.Put(id, be16(r.Port)); err != nil {
		return fmt.Errorf("set real %d (%v) port: %w", id, r.Addr, err)
	}
	old, had := d.reals[id]
	d.reals[id] = r
	if err := d.syncNATSource(r.Addr); err != nil {
		return err
	}
	if had && old.Addr != r.Addr {
		return d.syncNATSource(old.Addr)
	}
	return nil
}

// syncNATSource marks addr in the prefilter exactly while a NAT or
// FULLNAT real has it: only packets from those can be replies. realsMu
// is held.
func (d *Dataplane) syncNATSource(addr netip.Addr) error {
	want := false
	for _, r := range d.reals {
		if r.Addr == addr && (r.Fwd == FwdMasq || r.Fwd == FwdFullNAT) {
			want = true
			break
		}
	}
	return d.filterNATSource(addr, want)
}

// DeleteReal clears real server id; connections still naming it are
// dropped by the fast path until they expire.
func (d *Dataplane) DeleteReal(id uint32) error {
	if err := d.objs.Reals.Put(id, &bpfobj.DirectorReal{}); err != nil {
		return fmt.Errorf("delete real %d: %w", id, err)
	}
	d.views[id].Store(nil)
	d.realsMu.Lock()
	defer d.realsMu.Unlock()
	old, had := d.reals[id]
	delete(d.reals, id)
	if had {
		return d.syncNATSource(old.Addr)
	}
	return nil
}

// Traffic is what passed through the director for one real server:
// packets and bytes (IP length) toward it, and back from it (NAT and
// FULLNAT replies; zero in DR and TUN, where replies bypass the director),
// and the connections XDP scheduled to it itself (rr and wrr services).
type Traffic struct {
	InPkts, InBytes, OutPkts, OutBytes uint64
	Conns                              uint64
}

// Add returns t + o.
func (t Traffic) Add(o Traffic) Traffic {
	return Traffic{t.InPkts + o.InPkts, t.InBytes + o.InBytes, t.OutPkts + o.OutPkts, t.OutBytes + o.OutBytes, t.Conns + o.Conns}
}

// RealTraffic returns real id's traffic counters summed over CPUs.
func (d *Dataplane) RealTraffic(id uint32) (Traffic, error) {
	var per []bpfobj.DirectorRealStats
	if err := d.objs.RealTraffic.Lookup(id, &per); err != nil {
		return Traffic{}, fmt.Errorf("read traffic of real %d: %w", id, err)
	}
	var t Traffic
	for _, v := range per {
		t = t.Add(Traffic{InPkts: v.Inpkts, InBytes: v.Inbytes, OutPkts: v.Outpkts, OutBytes: v.Outbytes})
	}
	var conns []uint64
	if err := d.objs.RealConns.Lookup(id, &conns); err != nil {
		return Traffic{}, fmt.Errorf("read connections of real %d: %w", id, err)
	}
	for _, n := range conns {
		t.Conns += n
	}
	if id < MaxReals {
		t = t.Add(Traffic{InPkts: d.slowTraffic[id].pkts.Load(), InBytes: d.slowTraffic[id].bytes.Load()})
	}
	return t, nil
}

// ResetRealTraffic zeroes real id's counters on every CPU: done when an
// id is given to a new real, so it starts from zero.
func (d *Dataplane) ResetRealTraffic(id uint32) error {
	zero := make([]bpfobj.DirectorRealStats, ebpf.MustPossibleCPU())
	if err := d.objs.RealTraffic.Update(id, zero, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("reset traffic of real %d: %w", id, err)
	}
	if err := d.objs.RealConns.Update(id, make([]uint64, ebpf.MustPossibleCPU()), ebpf.UpdateExist); err != nil {
		return fmt.Errorf("reset connections of real %d: %w", id, err)
	}
	if err := d.resetLive(id); err != nil {
		return err
	}
	return d.resetSlowTraffic(id)
}
