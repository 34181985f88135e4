package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// Harness is the director program loaded without attaching it to any
// interface, for running it on frames with BPF_PROG_RUN: the BPF tests
// and the bench's cost table. xipvsd does not use it.
type Harness struct {
	*Dataplane
}

// OpenHarness loads the director program and its maps, unpinned and
// attached nowhere, with a connection table of connTableSize entries.
func OpenHarness(connTableSize uint32) (*Harness, error) {
	d, err := Open(Options{ConnTableSize: connTableSize})
	if err != nil {
		return nil, err
	}
	return &Harness{Dataplane: d}, nil
}

// XDPContext mirrors struct xdp_md for BPF_PROG_RUN's context.
type XDPContext struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// maxFrame bounds the output of one Program.Run.
const maxFrame = 4096

// Run runs the director program once on frame as if it arrived on
// ifindex (0: no interface) and rx queue; it returns the verdict and the
// frame as the program left it.
func (h *Harness) Run(frame []byte, ifindex, queue uint32) (Verdict, []byte, error) {
	out := make([]byte, maxFrame)
	opts := &ebpf.RunOptions{Data: frame, DataOut: out}
	if ifindex != 0 {
		opts.Context = XDPContext{DataEnd: uint32(len(frame)), IngressIfindex: ifindex, RxQueueIndex: queue}
	}
	ret, err := h.objs.XipvsDirector.Run(opts)
	if err != nil {
		return 0, nil, fmt.Errorf("run director: %w", err)
	}
	return Verdict(ret), opts.DataOut, nil
}

// Replay6 runs the IPv6 slow path's replay program (xipvs_replay6) once
// on frame, as received on the loopback device: what the slow path does
// with a frame whose connection it has written.
func (h *Harness) Replay6(frame []byte) (Verdict, []byte, error) {
	out := make([]byte, maxFrame)
	opts := &ebpf.RunOptions{Data: frame, DataOut: out}
	ret, err := h.objs.XipvsReplay6.Run(opts)
	if err != nil {
		return 0, nil, fmt.Errorf("run replay6: %w", err)
	}
	return Verdict(ret), opts.DataOut, nil
}

// Benchmark runs the program repeat times on frame in the kernel
// (BPF_PROG_RUN with Repeat) and returns the verdict and the mean time per
// run. Without a context the kernel presents the frame as received on the
// loopback device (ifindex 1) queue 0.
func (h *Harness) Benchmark(frame []byte, repeat int) (Verdict, time.Duration, error) {
	ret, dur, err := h.objs.XipvsDirector.Benchmark(frame, repeat, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("benchmark director: %w", err)
	}
	return Verdict(ret), dur, nil
}

// SetInterface registers an interface in the ifaces map without
// attaching anything, so that Program.Run can forward as if the frame
// arrived there. Tests and benchmarks use it with ifindex 1 (loopback).
func (h *Harness) SetInterface(ifindex int, mac net.HardwareAddr, slot uint16) error {
	var v bpfobj.DirectorIface
	copy(v.Mac[:], mac)
	v.Slot = slot
	if err := h.objs.Ifaces.Put(uint32(ifindex), &v); err != nil {
		return fmt.Errorf("set iface %d: %w", ifindex, err)
	}
	h.realsMu.Lock()
	h.ifaceMACs[ifindex] = append(net.HardwareAddr(nil), mac...)
	h.realsMu.Unlock()
	return nil
}

// SetConnBatch writes connection entries in batches of 8192 (one
// BPF_MAP_UPDATE_BATCH each): how tests and the bench fill big tables.
func (h *Harness) SetConnBatch(keys []ConnKey, conns []Conn) error {
	const chunk = 8192
	ks, vs := make([]bpfobj.DirectorConnKey, 0, chunk), make([]bpfobj.DirectorConnVal, 0, chunk)
	for i := 0; i < len(keys); i += chunk {
		ks, vs = ks[:0], vs[:0]
		for j := i; j < min(i+chunk, len(keys)); j++ {
			ks, vs = append(ks, keys[j].Raw()), append(vs, conns[j].raw())
		}
		if _, err := h.objs.Conns.BatchUpdate(ks, vs, nil); err != nil {
			return fmt.Errorf("set conns: %w", err)
		}
		h.embWrites.Add(uint64(len(ks)))
	}
	return nil
}

// Established reports whether connection entry k is in the established
// table (est_conns) rather than the embryonic one.
func (h *Harness) Established(k ConnKey) (bool, error) {
	var err error
	if k.Src.Is6() {
		var v bpfobj.DirectorConnVal6
		err = h.objs.EstConns6.Lookup(k.Raw6(), &v)
	} else {
		var v bpfobj.DirectorConnVal
		err = h.objs.EstConns.Lookup(k.Raw(), &v)
	}
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	}
	return err == nil, err
}

// SetSeqadj writes a SYN-proxied connection's adjustments under key k,
// as the slow path does when the real answers.
func (h *Harness) SetSeqadj(k ConnKey, delta, tsoff uint32, wshift int8) error {
	return h.objs.Seqadjs.Put(k.Raw(), bpfobj.DirectorSeqadj{Delta: delta, Tsoff: tsoff, Wshift: wshift})
}

// SetEstConn writes a connection entry straight into the established
// table, as a connection XDP promoted: the bench's hit-path costs are
// measured on established connections.
func (h *Harness) SetEstConn(k ConnKey, c Conn) error {
	if k.Src.Is6() {
		h.ipv6.Store(true)
		if err := h.objs.EstConns6.Put(k.Raw6(), c.raw6()); err != nil {
			return fmt.Errorf("set established conn: %w", err)
		}
		return nil
	}
	if err := h.objs.EstConns.Put(k.Raw(), c.raw()); err != nil {
		return fmt.Errorf("set established conn: %w", err)
	}
	return nil
}

// Reap has the reaper (bpf/aging.h) judge established connections keys
// at now, each with the stamp of its index entry: how long until each is
// due, 0 when it ended (or is gone, or the stamp is stale), and the
// FULLNAT ports it gave back.
func (h *Harness) Reap(now time.Duration, keys []ConnKey, stamps []uint16) ([]time.Duration, []LocalPort, error) {
	var left []time.Duration
	var released []LocalPort
	for off := 0; off < len(keys); off += ReapMax {
		m := min(ReapMax, len(keys)-off)
		out, err := h.reapBatch(now, m, func(i int, s *bpfobj.SweepReapSlot) {
			if k := keys[off+i]; k.Src.Is6() {
				raw := k.Raw6()
				setReapKey(s, &raw, stamps[off+i], 1)
			} else {
				raw := k.Raw()
				setReapKey(s, &raw, stamps[off+i], 0)
			}
		})
		if err != nil {
			return nil, nil, err
		}
		left, released = append(left, out.Left...), append(released, out.Released...)
	}
	return left, released, nil
}

// HasSeqadj reports whether key k has SYN-proxy adjustments.
func (h *Harness) HasSeqadj(k ConnKey) (bool, error) {
	var v bpfobj.DirectorSeqadj
	err := h.objs.Seqadjs.Lookup(k.Raw(), &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	}
	return err == nil, err
}

// VerifiedInstructions is how many instructions the kernel's verifier
// processed to load the director program (its cost to load, and a
// measure of how far it is from the verifier's limit of a million).
func (d *Dataplane) VerifiedInstructions() (uint32, error) {
	info, err := d.objs.XipvsDirector.Info()
	if err != nil {
		return 0, fmt.Errorf("director program info: %w", err)
	}
	n, ok := info.VerifiedInstructions()
	if !ok {
		return 0, fmt.Errorf("this kernel does not report verified instructions")
	}
	return n, nil
}

// DeleteRaw deletes a raw IPv4 entry from both connection tables.
func (h *Harness) DeleteRaw(k *bpfobj.DirectorConnKey) {
	_ = h.objs.Conns.Delete(k)
	_ = h.objs.EstConns.Delete(k)
}

// FillEstablishedTable writes n established TCP connections (keys as
// FillEstablished's), last seen at lastSeen, into the established table,
// as a director holding them finds them after a restart (not counted, not
// in the deadline index).
func (h *Harness) FillEstablishedTable(n int, vip netip.Addr, realOf func(i int) uint32, lastSeen time.Duration) error {
	const chunk = 1 << 16
	ks, vs := make([]bpfobj.DirectorConnKey, 0, chunk), make([]bpfobj.DirectorConnVal, 0, chunk)
	for i := 0; i < n; i += chunk {
		ks, vs = ks[:0], vs[:0]
		for x := i; x < min(i+chunk, n); x++ {
			k := ConnKey{Src: netip.AddrFrom4([4]byte{10, byte(x >> 16), byte(x >> 8), byte(x)}), Dst: vip,
				SrcPort: uint16(40000 + x>>24), DstPort: 80, Proto: conntrack.ProtoTCP}
			c := Conn{RealID: realOf(x), ServiceID: 1, State: conntrack.StateEstablished, LastSeen: lastSeen}
			ks, vs = append(ks, k.Raw()), append(vs, c.raw())
		}
		if _, err := h.objs.EstConns.BatchUpdate(ks, vs, nil); err != nil {
			return fmt.Errorf("fill the established table: %w", err)
		}
	}
	return nil
}

// RebuildAgingIndex has the next sweep build the deadline index from the
// tables, as after a restart.
func (h *Harness) RebuildAgingIndex() { h.aging.rebuild = true }

// FillEstablished writes n established TCP connections into the table,
// from 10.x.y.z (the connection's number in its low 24 bits, the rest
// in the source port above 40000) to vip:80, connection i to real
// realOf(i): the tables the sweep's benches and the listing's test use.
func (h *Harness) FillEstablished(n int, vip netip.Addr, realOf func(i int) uint32) error {
	now := Now()
	const chunk = 1 << 20
	for i := 0; i < n; i += chunk {
		m := min(chunk, n-i)
		keys, conns := make([]ConnKey, m), make([]Conn, m)
		for j := range keys {
			x := i + j
			keys[j] = ConnKey{Src: netip.AddrFrom4([4]byte{10, byte(x >> 16), byte(x >> 8), byte(x)}), Dst: vip,
				SrcPort: uint16(40000 + x>>24), DstPort: 80, Proto: conntrack.ProtoTCP}
			conns[j] = Conn{RealID: realOf(x), ServiceID: 1, State: conntrack.StateEstablished, LastSeen: now}
		}
		if err := h.SetConnBatch(keys, conns); err != nil {
			return err
		}
	}
	return nil
}
