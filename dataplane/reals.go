package dataplane

import (
	"encoding/binary"

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
