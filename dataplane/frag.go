package dataplane

import (
	"github.com/xipvs/xipvs/dataplane/bpfobj"
	"errors"

	"github.com/cilium/ebpf"
)

// Fragments in the slow path. A later fragment carries no transport
// header; XDP noted the ports of its datagram's first fragment (frags,
// bpf/frag.h) and hands the later ones of a new flow over here, where
// they follow the connection the first one made: in the same batch, a
// moment before, or in the table. One that finds none is dropped and
// counted: the kernel, without its first fragment, could only drop it.

// fragPorts4 is the ports XDP noted for later fragment p's datagram, as
// a connection key holds them.
func (d *Dataplane) fragPorts4(p *packet) (sport, dport uint16, ok bool) {
	k := bpfobj.DirectorFragKey{Id: uint32(p.fragID), Proto: p.proto}
	copy(k.Saddr[:4], p.src[:])
	copy(k.Daddr[:4], p.dst[:])
	return d.fragPorts(&k)
}

// fragPorts6 is fragPorts4 for IPv6.
func (d *Dataplane) fragPorts6(p *packet6) (sport, dport uint16, ok bool) {
	k := bpfobj.DirectorFragKey{Saddr: p.src, Daddr: p.dst, Id: p.fragID, Proto: p.proto}
	return d.fragPorts(&k)
}

func (d *Dataplane) fragPorts(k *bpfobj.DirectorFragKey) (uint16, uint16, bool) {
	var v bpfobj.DirectorFragPorts
	if err := d.objs.Frags.Lookup(k, &v); err != nil {
		if !errors.Is(err, ebpf.ErrKeyNotExist) {
			d.log.Warn("slow path: looking up a fragment's ports", "err", err)
		}
		return 0, 0, false
	}
	return v.Sport, v.Dport, true
}

// laterFrag6 reports whether IPv6 frame f is a later fragment (the ICMP
// answer to a flow no real could take is its first fragment's alone).
func laterFrag6(f []byte) bool {
	p, ok := parsePacket6(f)
	return ok && p.fragment == fragLater
}
