package dataplane

// connentries.go: the connection table as Go reads and writes it: an
// RawEntry4 where it belongs (the established table or the embryonic LRU),
// looked up, deleted and walked in either.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// SetConn writes a connection RawEntry4 where it is: in the established
// table if it is there (keeping how it is counted: keepCounted), else in
// the embryonic one.
func (d *Dataplane) SetConn(k ConnKey, c Conn) error {
	if k.Src.Is6() {
		d.ipv6.Store(true)
		raw := k.Raw6()
		var old bpfobj.DirectorConnVal6
		if d.objs.EstConns6.Lookup(&raw, &old) == nil {
			d.keepCounted(k, &c, connFromRaw6(old))
		} else {
			d.embWrites.Add(1)
		}
		return setConnIn(d.objs.EstConns6, d.objs.Conns6, raw, c.raw6())
	}
	raw := k.Raw()
	var old bpfobj.DirectorConnVal
	if d.objs.EstConns.Lookup(&raw, &old) == nil {
		d.keepCounted(k, &c, connFromRaw(old))
	} else {
		d.embWrites.Add(1)
	}
	return setConnIn(d.objs.EstConns, d.objs.Conns, raw, c.raw())
}

// keepCounted makes c, to be written over established entry old (key k),
// keep how old is counted and its stamp: the reaper, or XDP at the next
// state change, moves the count if c's state belongs to another. One not
// counted yet goes to the deadline index, whose reaper counts it.
func (d *Dataplane) keepCounted(k ConnKey, c *Conn, old Conn) {
	if c.Flags&ConnReply != 0 {
		return
	}
	c.Flags = c.Flags&^(ConnCounted|ConnCountedActive) | old.Flags&(ConnCounted|ConnCountedActive)
	c.Stamp = old.Stamp
	if old.Flags&ConnCounted == 0 && d.aging.on.Load() {
		d.indexWritten(k, *c)
	}
}

// setConnIn writes RawEntry4 v under key k: in table est if it is there,
// else in table emb.
func setConnIn[K, V any](est, emb *ebpf.Map, k K, v V) error {
	err := est.Update(&k, &v, ebpf.UpdateExist)
	if err == nil {
		return nil
	}
	if !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("set conn: %w", err)
	}
	if err := emb.Put(&k, &v); err != nil {
		return fmt.Errorf("set conn: %w", err)
	}
	return nil
}

// LookupConn reads a connection entry.
func (d *Dataplane) LookupConn(k ConnKey) (Conn, bool, error) {
	if k.Src.Is6() {
		raw := k.Raw6()
		v, found, err := lookupIn[bpfobj.DirectorConnKey6, bpfobj.DirectorConnVal6](&raw, d.objs.EstConns6, d.objs.Conns6)
		if !found || err != nil {
			return Conn{}, false, err
		}
		return connFromRaw6(v), true, nil
	}
	raw := k.Raw()
	v, found, err := d.LookupRaw(&raw)
	if !found || err != nil {
		return Conn{}, false, err
	}
	return connFromRaw(v), true, nil
}

// lookupRaw finds an RawEntry4 in the established table, then the embryonic
// one, as the program does.
func (d *Dataplane) LookupRaw(k *bpfobj.DirectorConnKey) (bpfobj.DirectorConnVal, bool, error) {
	return lookupIn[bpfobj.DirectorConnKey, bpfobj.DirectorConnVal](k, d.objs.EstConns, d.objs.Conns)
}

// LookupRaw6 is LookupRaw for an IPv6 key.
func (d *Dataplane) LookupRaw6(k *bpfobj.DirectorConnKey6) (bpfobj.DirectorConnVal6, bool, error) {
	return lookupIn[bpfobj.DirectorConnKey6, bpfobj.DirectorConnVal6](k, d.objs.EstConns6, d.objs.Conns6)
}

// lookupIn finds key k in the first of maps that has it.
func lookupIn[K, V any](k *K, maps ...*ebpf.Map) (V, bool, error) {
	var v V
	for _, m := range maps {
		err := m.Lookup(k, &v)
		if err == nil {
			return v, true, nil
		}
		if !errors.Is(err, ebpf.ErrKeyNotExist) {
			return v, false, fmt.Errorf("lookup conn: %w", err)
		}
	}
	return v, false, nil
}

// DeleteConn removes a connection RawEntry4 from either table, and a SYN
// proxied one's adjustments; a missing one is not an error. An
// established one's count stays: its real is going, and the id's counts
// start again from zero when it is given to another (ResetRealTraffic).
func (d *Dataplane) DeleteConn(k ConnKey) error {
	if k.Src.Is6() {
		return deleteIn(k.Raw6(), d.objs.EstConns6, d.objs.Conns6)
	}
	return deleteIn(k.Raw(), d.objs.EstConns, d.objs.Conns, d.objs.Seqadjs)
}

// deleteIn deletes key k from each of maps; a missing key is not an
// error.
func deleteIn[K any](k K, maps ...*ebpf.Map) error {
	for _, m := range maps {
		if err := m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete conn: %w", err)
		}
	}
	return nil
}

// connBatch is how many entries one batched lookup returns.
const connBatch = 4096

// WalkConns calls fn for every connection, reading the table in batches
// so that a walk never holds the map for long. Entries may change while
// the walk runs; fn returning false stops it.
func (d *Dataplane) WalkConns(fn func(ConnKey, Conn) bool) error {
	more, err := walkIn(fn, func(k bpfobj.DirectorConnKey, v bpfobj.DirectorConnVal) (ConnKey, Conn) {
		return connKeyFromRaw(k), connFromRaw(v)
	},
		d.objs.EstConns, d.objs.Conns)
	if err != nil || !more {
		return err
	}
	_, err = walkIn(fn, func(k bpfobj.DirectorConnKey6, v bpfobj.DirectorConnVal6) (ConnKey, Conn) {
		return connKeyFromRaw6(k), connFromRaw6(v)
	},
		d.objs.EstConns6, d.objs.Conns6)
	return err
}

// walkIn calls fn for every RawEntry4 of maps, converted by conv, in
// batches; it reports whether fn wants more.
func walkIn[K, V any](fn func(ConnKey, Conn) bool, conv func(K, V) (ConnKey, Conn), maps ...*ebpf.Map) (bool, error) {
	keys := make([]K, connBatch)
	vals := make([]V, connBatch)
	for _, m := range maps {
		var cursor ebpf.MapBatchCursor
		for {
			n, err := m.BatchLookup(&cursor, keys, vals, nil)
			for i := 0; i < n; i++ {
				if !fn(conv(keys[i], vals[i])) {
					return false, nil
				}
			}
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				break
			}
			if err != nil {
				return false, fmt.Errorf("walk conns: %w", err)
			}
		}
	}
	return true, nil
}

// NewFlow is the first packet of a flow the fast path did not know.
type NewFlow struct {
	Key      ConnKey
	TCPFlags uint8
	Ifindex  int
	// SrcMAC is the frame's source: the client's previous hop, where a
	// NAT or FULLNAT connection's replies go back to.
	SrcMAC [6]byte
}

// TCP flag bits of NewFlow.TCPFlags.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPAck = 0x10
)

// Decision is where the slow path's handler sends a new flow. A zero
// RealID drops the packet (no real server available).
type Decision struct {
	RealID    uint32
	ServiceID uint32
	// Out is, for NAT and FULLNAT, the tuple the client's packets leave
	// with: (client or local address, real server, client or local port,
	// real port). Zero for DR and TUN.
	Out     ConnKey
	FullNAT bool
	// Persistent marks a persistent service's connection (the sweep
	// lists the templates of those).
	Persistent bool
	// Unreachable (with RealID 0): the flow is a service's and no real
	// server can take it; the client is answered ICMP port unreachable,
	// rate-limited, as IPVS's ip_vs_leave does.
	Unreachable bool
	// SynProxy: the service's SYNs are proxied (-j enable); a flow that
	// reaches the slow path with an ACK carried a valid cookie.
	// SynProxyAuto: they are while the defence is engaged.
	SynProxy, SynProxyAuto bool
}

// RawEntry is a raw connection-table RawEntry4 (IPv4 or IPv6 key and value).
type RawEntry[K, V any] struct {
	K K
	V V
}

// The raw entries of each family.
type (
	RawEntry4 = RawEntry[bpfobj.DirectorConnKey, bpfobj.DirectorConnVal]
	RawEntry6 = RawEntry[bpfobj.DirectorConnKey6, bpfobj.DirectorConnVal6]
)

// Entry is one connection-table entry.
type Entry struct {
	Key  ConnKey
	Conn Conn
}

// SetConns writes the entries of a new connection (see Entries).
func (d *Dataplane) SetConns(f NewFlow, dec Decision, now time.Duration) error {
	mac := d.IfaceMAC(f.Ifindex)
	for _, e := range Entries(f, dec, now, mac[:]) {
		if err := d.SetConn(e.Key, e.Conn); err != nil {
			return err
		}
	}
	return nil
}

// SetSynced writes the entries of a connection a sync master sent (see
// internal/connsync): those of a new flow f decided as dec, with the
// master's state on the forward RawEntry4 and lastSeen as its age. They go
// where SetConn puts them: a connection that is not already in the
// established table goes to the embryonic LRU, so that a flood of sync
// messages can never fill the table that is never evicted.
//
// An ESTABLISHED connection's entries go to the established table, where
// nothing evicts them (a flood of synced or new embryonic entries in the
// LRU included); when that table is full, to the LRU.
func (d *Dataplane) SetSynced(f NewFlow, dec Decision, state conntrack.State, lastSeen time.Duration) error {
	mac := d.IfaceMAC(f.Ifindex)
	for _, e := range Entries(f, dec, lastSeen, mac[:]) {
		if e.Conn.Flags&ConnReply == 0 {
			e.Conn.State = state
		}
		var err error
		if state == conntrack.StateEstablished {
			err = d.setEstablished(e.Key, e.Conn)
		} else {
			err = d.SetConn(e.Key, e.Conn)
		}
		if err != nil {
			return fmt.Errorf("synced connection %v: %w", e.Key, err)
		}
	}
	return nil
}

// setEstablished writes an RawEntry4 into the established table (and out of
// the LRU); a full established table leaves it to SetConn. A forward
// entry written over one keeps how it is counted (keepCounted); a new one
// goes to the deadline index, whose reaper counts it.
func (d *Dataplane) setEstablished(k ConnKey, c Conn) error {
	var err error
	written := true // a new entry, not one written over
	if k.Src.Is6() {
		d.ipv6.Store(true)
		raw := k.Raw6()
		var old bpfobj.DirectorConnVal6
		if d.objs.EstConns6.Lookup(&raw, &old) == nil {
			d.keepCounted(k, &c, connFromRaw6(old))
			written = false
		}
		if err = d.objs.EstConns6.Put(&raw, c.raw6()); err == nil {
			_ = d.objs.Conns6.Delete(&raw)
		}
	} else {
		raw := k.Raw()
		var old bpfobj.DirectorConnVal
		if d.objs.EstConns.Lookup(&raw, &old) == nil {
			d.keepCounted(k, &c, connFromRaw(old))
			written = false
		}
		if err = d.objs.EstConns.Put(&raw, c.raw()); err == nil {
			_ = d.objs.Conns.Delete(&raw)
		}
	}
	if err == nil && written && c.Flags&ConnReply == 0 && d.aging.on.Load() {
		d.indexWritten(k, c)
	}
	if errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.ENOSPC) {
		return d.SetConn(k, c)
	}
	return err
}

// The raw entries are built on each family's raw types directly, from
// the flow's raw key: built once in family-neutral types and converted,
// they cost 146 ns a new flow instead of 45 (the slow path's hot path).

// RawEntries builds the entries of a new connection in the order they
// are written: for NAT and FULLNAT the reply entry first (replies can
// come back as soon as the first packet leaves), then the forward entry.
// It returns them and how many there are.
func RawEntries(f *NewFlow, dec *Decision, now uint64, ifaceMAC [6]byte) ([2]RawEntry4, int) {
	var out [2]RawEntry4
	fk := f.Key.Raw()
	fwd := bpfobj.DirectorConnVal{LastSeen: now, RealId: dec.RealID, SvcId: dec.ServiceID}
	if dec.Persistent {
		fwd.Flags = uint8(ConnPersist)
	}
	if f.Key.Proto == unix.IPPROTO_TCP && f.TCPFlags&(TCPSyn|TCPAck) == TCPSyn {
		fwd.Flags |= uint8(ConnSynSeen)
	}
	if !dec.Out.Src.IsValid() {
		out[0] = RawEntry4{fk, fwd}
		return out, 1
	}
	var flags uint8
	if dec.FullNAT {
		flags = uint8(ConnFullNAT)
	}
	fwd.Flags |= flags
	fwd.Nsaddr, fwd.Ndaddr = be32(dec.Out.Src), be32(dec.Out.Dst)
	fwd.Nsport, fwd.Ndport = be16(dec.Out.SrcPort), be16(dec.Out.DstPort)
	rep := bpfobj.DirectorConnVal{LastSeen: now, RealId: dec.RealID, SvcId: dec.ServiceID, Flags: flags | uint8(ConnReply),
		Nsaddr: fk.Daddr, Ndaddr: fk.Saddr, Nsport: fk.Dport, Ndport: fk.Sport,
		Ifindex: uint32(f.Ifindex), Dmac: f.SrcMAC, Smac: ifaceMAC}
	rk := bpfobj.DirectorConnKey{Saddr: fwd.Ndaddr, Daddr: fwd.Nsaddr, Sport: fwd.Ndport, Dport: fwd.Nsport, Proto: fk.Proto}
	out[0], out[1] = RawEntry4{rk, rep}, RawEntry4{fk, fwd}
	return out, 2
}

// RawEntries6 is RawEntries for an IPv6 flow: its entries as written,
// NAT's and FULLNAT's reply RawEntry4 first, and how many there are.
func RawEntries6(f *NewFlow, dec *Decision, now uint64, ifaceMAC [6]byte) ([2]RawEntry6, int) {
	var out [2]RawEntry6
	fk := f.Key.Raw6()
	fwd := bpfobj.DirectorConnVal6{LastSeen: now, RealId: dec.RealID, SvcId: dec.ServiceID}
	if dec.Persistent {
		fwd.Flags = uint8(ConnPersist)
	}
	if f.Key.Proto == unix.IPPROTO_TCP && f.TCPFlags&(TCPSyn|TCPAck) == TCPSyn {
		fwd.Flags |= uint8(ConnSynSeen)
	}
	if !dec.Out.Src.IsValid() {
		out[0] = RawEntry6{fk, fwd}
		return out, 1
	}
	var flags uint8
	if dec.FullNAT {
		flags = uint8(ConnFullNAT)
	}
	fwd.Flags |= flags
	fwd.Nsaddr, fwd.Ndaddr = dec.Out.Src.As16(), dec.Out.Dst.As16()
	fwd.Nsport, fwd.Ndport = be16(dec.Out.SrcPort), be16(dec.Out.DstPort)
	rep := bpfobj.DirectorConnVal6{LastSeen: now, RealId: dec.RealID, SvcId: dec.ServiceID, Flags: flags | uint8(ConnReply),
		Nsaddr: fk.Daddr, Ndaddr: fk.Saddr, Nsport: fk.Dport, Ndport: fk.Sport,
		Ifindex: uint32(f.Ifindex), Dmac: f.SrcMAC, Smac: ifaceMAC}
	rk := bpfobj.DirectorConnKey6{Saddr: fwd.Ndaddr, Daddr: fwd.Nsaddr, Sport: fwd.Ndport, Dport: fwd.Nsport, Proto: fk.Proto}
	out[0], out[1] = RawEntry6{rk, rep}, RawEntry6{fk, fwd}
	return out, 2
}

// Entries returns the entries of a new connection, in the order the slow
// path writes them (see RawEntries), as they read back from the tables.
// ifaceMAC is the MAC of the interface the flow came in on.
func Entries(f NewFlow, dec Decision, now time.Duration, ifaceMAC net.HardwareAddr) []Entry {
	var mac [6]byte
	copy(mac[:], ifaceMAC)
	if f.Key.Src.Is6() {
		ents, n := RawEntries6(&f, &dec, uint64(now), mac)
		return fromRaw(ents[:n], connKeyFromRaw6, connFromRaw6)
	}
	ents, n := RawEntries(&f, &dec, uint64(now), mac)
	return fromRaw(ents[:n], connKeyFromRaw, connFromRaw)
}

func fromRaw[K, V any](ents []RawEntry[K, V], key func(K) ConnKey, val func(V) Conn) []Entry {
	out := make([]Entry, len(ents))
	for i, e := range ents {
		out[i] = Entry{key(e.K), val(e.V)}
	}
	return out
}

// ConnKey is a connection's 5-tuple as the client sends it.
type ConnKey struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto            uint8
}

// ConnFlags mark what kind of entry a Conn is (bpf/consts.h CONN_F_*).
type ConnFlags uint8

// Conn is a connection entry. DR and TUN connections have one, keyed by
// the client's tuple. NAT and FULLNAT connections have two: the forward
// entry and a reply entry (ConnReply) keyed by the tuple of the real
// server's replies; each one's Out tuple, reversed, is the other's key.
type Conn struct {
	RealID    uint32
	ServiceID uint32
	State     conntrack.State // kept on the forward entry
	// LastSeen is on the kernel's monotonic clock (see Now).
	LastSeen time.Duration
	Flags    ConnFlags
	// Stamp is an established forward entry's last aging event's stamp
	// (bpf/aging.h): written back as read, so that Go's index still
	// knows it.
	Stamp uint16
	// Out is the tuple a packet of this entry leaves with (NAT and
	// FULLNAT; zero for DR and TUN). Proto is not used.
	Out ConnKey
	// Reply entries only: the interface and next hop toward the client
	// (where its packets came from) and that interface's MAC.
	Ifindex        int
	DstMAC, SrcMAC net.HardwareAddr
}

// Rewrites reports whether the entry rewrites addresses (NAT, FULLNAT).
func (c Conn) Rewrites() bool { return c.Out.Src.IsValid() }

// Peer returns the key of the other entry of a NAT or FULLNAT connection.
func (c Conn) Peer(proto uint8) ConnKey {
	return ConnKey{Src: c.Out.Dst, Dst: c.Out.Src, SrcPort: c.Out.DstPort, DstPort: c.Out.SrcPort, Proto: proto}
}

func (k ConnKey) Raw() bpfobj.DirectorConnKey {
	return bpfobj.DirectorConnKey{Saddr: be32(k.Src), Daddr: be32(k.Dst), Sport: be16(k.SrcPort), Dport: be16(k.DstPort), Proto: k.Proto}
}

func connKeyFromRaw(r bpfobj.DirectorConnKey) ConnKey {
	return ConnKey{Src: addrFromBE32(r.Saddr), Dst: addrFromBE32(r.Daddr), SrcPort: fromBE16(r.Sport), DstPort: fromBE16(r.Dport), Proto: r.Proto}
}

func (c Conn) raw() bpfobj.DirectorConnVal {
	v := bpfobj.DirectorConnVal{LastSeen: uint64(c.LastSeen), RealId: c.RealID, SvcId: c.ServiceID, State: uint8(c.State),
		Flags: uint8(c.Flags), Hits: c.Stamp, Ifindex: uint32(c.Ifindex)}
	if c.Rewrites() {
		v.Nsaddr, v.Ndaddr = be32(c.Out.Src), be32(c.Out.Dst)
		v.Nsport, v.Ndport = be16(c.Out.SrcPort), be16(c.Out.DstPort)
	}
	copy(v.Dmac[:], c.DstMAC)
	copy(v.Smac[:], c.SrcMAC)
	return v
}

func connFromRaw(r bpfobj.DirectorConnVal) Conn {
	c := Conn{RealID: r.RealId, ServiceID: r.SvcId, State: conntrack.State(r.State), LastSeen: time.Duration(r.LastSeen),
		Flags: ConnFlags(r.Flags), Stamp: r.Hits}
	if r.Nsaddr != 0 {
		c.Out = ConnKey{Src: addrFromBE32(r.Nsaddr), Dst: addrFromBE32(r.Ndaddr), SrcPort: fromBE16(r.Nsport), DstPort: fromBE16(r.Ndport)}
	}
	if c.Flags&ConnReply != 0 {
		// A forward entry's are the sync events' marks (bpf/sync.h).
		c.Ifindex = int(r.Ifindex)
		c.DstMAC = append(net.HardwareAddr(nil), r.Dmac[:]...)
		c.SrcMAC = append(net.HardwareAddr(nil), r.Smac[:]...)
	}
	return c
}
