package dataplane

import (
	"errors"

	"github.com/cilium/ebpf"

	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// Fragments in the slow path. A later fragment carries no transport
// header; XDP noted the ports of its datagram's first fragment (frags,
// bpf/frag.h) and hands the later ones of a new flow over here, where
// they follow the connection the first one made: in the same batch, a
// moment before, or in the table. One that finds none is dropped and
// counted: the kernel, without its first fragment, could only drop it.

func (d *Dataplane) FragPorts(k *bpfobj.DirectorFragKey) (uint16, uint16, bool) {
	var v bpfobj.DirectorFragPorts
	if err := d.objs.Frags.Lookup(k, &v); err != nil {
		if !errors.Is(err, ebpf.ErrKeyNotExist) {
			d.log.Warn("slow path: looking up a fragment's ports", "err", err)
		}
		return 0, 0, false
	}
	return v.Sport, v.Dport, true
}
