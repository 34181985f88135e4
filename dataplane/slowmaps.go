package dataplane

import (
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// What the slow path (dataplane/slowpath) reaches of the data plane: its
// AF_XDP sockets' registration, batched connection and seqadj writes, raw
// lookups, the IPv6 replay program, the fragment ports XDP noted, and the
// counters of what it forwarded itself. Nothing else writes these maps
// from Go: xsks, and conns/conns6/seqadjs only through here and the
// connection-entry API (connentries.go).

// SetXSK registers an AF_XDP socket for rx queue queue of director
// interface ifindex: XDP redirects that queue's new flows to it.
func (d *Dataplane) SetXSK(ifindex, queue, fd int) error {
	ifc := d.ifaceByIndex(ifindex)
	if ifc == nil {
		return fmt.Errorf("interface %d is not a director interface", ifindex)
	}
	return d.objs.Xsks.Put(uint32(ifc.slot)*MaxQueues+uint32(queue), uint32(fd))
}

// DeleteXSK removes SetXSK's registration.
func (d *Dataplane) DeleteXSK(ifindex, queue int) error {
	ifc := d.ifaceByIndex(ifindex)
	if ifc == nil {
		return nil
	}
	return d.objs.Xsks.Delete(uint32(ifc.slot)*MaxQueues + uint32(queue))
}

// TrimRxQueues records that interface ifindex uses n rx queues:
// IFLA_NUM_RX_QUEUES counts the allocated ones, the device may use fewer
// (real_num_rx_queues), which only binding a socket tells.
func (d *Dataplane) TrimRxQueues(ifindex, n int) {
	if ifc := d.ifaceByIndex(ifindex); ifc != nil {
		ifc.RxQueues = n
	}
}

func (d *Dataplane) ifaceByIndex(idx int) *Interface {
	for i := range d.ifaces {
		if d.ifaces[i].Index == idx {
			return &d.ifaces[i]
		}
	}
	return nil
}

// WriteConns writes raw IPv4 entries in one batched update; it returns
// how many were written (in order) before an error.
func (d *Dataplane) WriteConns(keys []bpfobj.DirectorConnKey, vals []bpfobj.DirectorConnVal) (int, error) {
	d.embWrites.Add(uint64(len(keys)))
	return d.objs.Conns.BatchUpdate(keys, vals, &ebpf.BatchOptions{ElemFlags: uint64(ebpf.UpdateAny)})
}

// WriteConns6 is WriteConns for IPv6 entries.
func (d *Dataplane) WriteConns6(keys []bpfobj.DirectorConnKey6, vals []bpfobj.DirectorConnVal6) (int, error) {
	d.ipv6.Store(true)
	d.embWrites.Add(uint64(len(keys)))
	return d.objs.Conns6.BatchUpdate(keys, vals, &ebpf.BatchOptions{ElemFlags: uint64(ebpf.UpdateAny)})
}

// WriteSeqadjs writes the SYN proxy's sequence adjustments of a
// connection (both of its keys).
func (d *Dataplane) WriteSeqadjs(keys []bpfobj.DirectorConnKey, vals []bpfobj.DirectorSeqadj) (int, error) {
	return d.objs.Seqadjs.BatchUpdate(keys, vals, nil)
}

// Replay6 runs the IPv6 replay program (xipvs_replay6) on opts' frame:
// it forwards a frame whose connection is in the tables as a hit would.
func (d *Dataplane) Replay6(opts *ebpf.RunOptions) (uint32, error) {
	return d.objs.XipvsReplay6.Run(opts)
}
