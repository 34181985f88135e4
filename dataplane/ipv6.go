package dataplane

import (
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// IPv6 lives in tables of its own (bpf/forward.h, newflow.h, conn.h: both families): services6, conns6
// and est_conns6, whose keys and entries hold 16-byte addresses, so that
// an IPv4 connection keeps its 16-byte key and 48-byte entry. Reals share
// one array; an IPv6 real carries realFlagIPv6 and its address in Addr6.

const realFlagIPv6 = uint8(bpfobj.DirectorRealFlagREAL_F_IPV6)

// DefaultConnTableSize6 is the IPv6 tables' size for an IPv4 size n when
// none is set: a quarter (an IPv6 entry costs about 1.6 times an IPv4
// one), at least 1024.
func DefaultConnTableSize6(n uint32) uint32 { return max(n/4, 1024) }

func (k ServiceKey) raw6() bpfobj.DirectorSvcKey6 {
	return bpfobj.DirectorSvcKey6{Vip: k.VIP.As16(), Port: be16(k.Port), Proto: k.Proto}
}

func (k ConnKey) Raw6() bpfobj.DirectorConnKey6 {
	return bpfobj.DirectorConnKey6{Saddr: k.Src.As16(), Daddr: k.Dst.As16(), Sport: be16(k.SrcPort), Dport: be16(k.DstPort), Proto: k.Proto}
}

func connKeyFromRaw6(r bpfobj.DirectorConnKey6) ConnKey {
	return ConnKey{Src: netip.AddrFrom16(r.Saddr), Dst: netip.AddrFrom16(r.Daddr), SrcPort: fromBE16(r.Sport), DstPort: fromBE16(r.Dport), Proto: r.Proto}
}

func (c Conn) raw6() bpfobj.DirectorConnVal6 {
	v := bpfobj.DirectorConnVal6{LastSeen: uint64(c.LastSeen), RealId: c.RealID, SvcId: c.ServiceID, State: uint8(c.State),
		Flags: uint8(c.Flags), Hits: c.Stamp, Ifindex: uint32(c.Ifindex)}
	if c.Rewrites() {
		v.Nsaddr, v.Ndaddr = c.Out.Src.As16(), c.Out.Dst.As16()
		v.Nsport, v.Ndport = be16(c.Out.SrcPort), be16(c.Out.DstPort)
	}
	copy(v.Dmac[:], c.DstMAC)
	copy(v.Smac[:], c.SrcMAC)
	return v
}

func connFromRaw6(r bpfobj.DirectorConnVal6) Conn {
	c := Conn{RealID: r.RealId, ServiceID: r.SvcId, State: conntrack.State(r.State), LastSeen: time.Duration(r.LastSeen),
		Flags: ConnFlags(r.Flags), Stamp: r.Hits}
	if r.Nsaddr != ([16]byte{}) {
		c.Out = ConnKey{Src: netip.AddrFrom16(r.Nsaddr), Dst: netip.AddrFrom16(r.Ndaddr), SrcPort: fromBE16(r.Nsport), DstPort: fromBE16(r.Ndport)}
	}
	if c.Flags&ConnReply != 0 {
		// A forward entry's are the sync events' marks (bpf/sync.h).
		c.Ifindex = int(r.Ifindex)
		c.DstMAC = append(net.HardwareAddr(nil), r.Dmac[:]...)
		c.SrcMAC = append(net.HardwareAddr(nil), r.Smac[:]...)
	}
	return c
}

// addr6Slot is addr6_slot of bpf/consts.h: the four words as the program
// loads them, XORed, then folded as an IPv4 address is.
func addr6Slot(a netip.Addr) uint32 {
	b := a.As16()
	u := binary.NativeEndian.Uint32(b[0:]) ^ binary.NativeEndian.Uint32(b[4:]) ^
		binary.NativeEndian.Uint32(b[8:]) ^ binary.NativeEndian.Uint32(b[12:])
	return (u ^ u>>16) & (addrSlots - 1)
}

// anyKey reports whether m holds an entry.
func anyKey(m *ebpf.Map) bool {
	var k bpfobj.DirectorConnKey6
	return m.NextKey(nil, &k) == nil
}
