// Package dataplane owns the xipvs XDP program: loading, attaching and
// pinning it, and every map read and write (services, reals, connection
// entries, picks, templates, FULLNAT ports, the defence, counters), with
// running the program on a frame (Program.Run) for tests. Its API uses
// plain Go types; the raw map types are dataplane/bpfobj's. The AF_XDP
// slow path that hands new flows to Go is dataplane/slowpath, which
// reaches the maps through the methods in slowmaps.go.
package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// Limits compiled into the BPF program (bpf/consts.h; TestSharedConsts
// checks them against the object's enum shared_const).
const (
	// DefaultServiceTableSize is the size of the services map when none
	// is set: one entry per (VIP, port, protocol) a service or port group
	// claims, so also the most services.
	DefaultServiceTableSize = 65536
	MaxReals                = 8192
	MaxIfaces               = 64
	MaxQueues               = 64
	// DefaultConnTableSize is the connection table size when none is set.
	DefaultConnTableSize = 1 << 20
)

// Fwd is a forwarding method as the data plane encodes it.
type Fwd uint8

// ServiceKey identifies a virtual service in the data plane.
type ServiceKey struct {
	VIP   netip.Addr
	Port  uint16
	Proto uint8
}

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

// Options configures Open.
type Options struct {
	// Interfaces to attach the director to (native XDP). Empty loads the
	// program without attaching it (for Program.Run).
	Interfaces []string
	// ConnTableSize is the connection table's capacity.
	ConnTableSize uint32
	// ConnTableSize6 is the IPv6 connection tables' capacity (default
	// DefaultConnTableSize6(ConnTableSize)).
	ConnTableSize6 uint32
	// ServiceTableSize is the services map's capacity (default
	// DefaultServiceTableSize).
	ServiceTableSize uint32
	Logger           *slog.Logger
	// PinDir, when set, is a directory on a BPF filesystem where the maps
	// and each interface's XDP link are pinned: they outlive the
	// process, so established flows keep flowing while xipvsd is down,
	// and the next Open adopts them. A directory under /sys/fs/bpf gets
	// the filesystem mounted if it is not.
	PinDir string
	// Flush discards what PinDir holds before loading.
	Flush bool
}

// Interface is a director interface.
type Interface struct {
	Name     string
	Index    int
	MAC      net.HardwareAddr
	RxQueues int
	slot     uint16
}

// Dataplane is the loaded director program and its maps.
type Dataplane struct {
	log *slog.Logger
	// hashBuckets are the buckets written to hash_picks, by service and
	// slot (picks.go), under picksMu.
	picksMu     sync.Mutex
	hashBuckets map[uint32]*[2][]bpfobj.DirectorHashPickKey
	pinDir      string
	adopted     bool // the maps came from PinDir
	// ipv6 is set once an IPv6 connection may exist (an IPv6 service, an
	// IPv6 entry written, or adopted ones): only then does the sweep
	// walk the IPv6 tables.
	ipv6 atomic.Bool
	objs bpfobj.DirectorObjects
	// fnatView maps the FULLNAT port slots (fnat.go), once.
	fnatOnce sync.Once
	fnatView *fnatView
	fnatErr  error
	links    []link.Link
	ifaces   []Interface

	realsMu   sync.RWMutex
	reals     map[uint32]Real          // mirror of the reals map
	ifaceMACs map[int]net.HardwareAddr // egress MAC by ifindex
	// views are the reals map's entries as the slow path's transforms
	// read them, one atomic pointer per id (no lock per packet).
	views [MaxReals]atomic.Pointer[RealView]
	// What the slow path forwarded itself, counted as XDP counts it:
	// global counters by STAT_* and per-real traffic (slow.go).
	slowStats   [NumStats]atomic.Uint64
	slowTraffic [MaxReals]slowCount
	slowSaved   [MaxReals]bool // ids saveSlowCounts wrote non-zero

	sweep *sweepProg

	filter           *addrFilter
	svcKeys          map[ServiceKey]bool // the services map's keys
	serviceTableSize int

	// The defence (synproxy.go, defence.go): the settings written, and
	// whether the automatic SYN proxy is engaged.
	defenceMu     sync.Mutex
	defence       Defence
	defenceWScale atomic.Uint32
	engaged       atomic.Bool
	disengagedAt  atomic.Int64 // unix ns
	defenceSince  time.Time
	defenceReason string
}

// ServiceTableSize is the services map's capacity: the most keys the
// services and port groups can claim.
func (d *Dataplane) ServiceTableSize() int { return d.serviceTableSize }

// Now is the kernel's monotonic coarse clock, the one conn.LastSeen uses.
func Now() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC_COARSE, &ts); err != nil {
		panic(fmt.Sprintf("clock_gettime: %v", err))
	}
	return time.Duration(ts.Nano())
}

// Open loads the director program, sizes its connection table and
// attaches it natively to each interface.
func Open(opts Options) (*Dataplane, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ConnTableSize == 0 {
		opts.ConnTableSize = DefaultConnTableSize
	}
	if len(opts.Interfaces) > MaxIfaces {
		return nil, fmt.Errorf("%d interfaces: at most %d", len(opts.Interfaces), MaxIfaces)
	}
	spec, err := bpfobj.LoadDirector()
	if err != nil {
		return nil, fmt.Errorf("load director spec: %w", err)
	}
	if opts.ConnTableSize6 == 0 {
		opts.ConnTableSize6 = DefaultConnTableSize6(opts.ConnTableSize)
	}
	spec.Maps[bpfobj.DirectorMapConns].MaxEntries = opts.ConnTableSize
	spec.Maps[bpfobj.DirectorMapEstConns].MaxEntries = opts.ConnTableSize
	spec.Maps[bpfobj.DirectorMapConns6].MaxEntries = opts.ConnTableSize6
	spec.Maps[bpfobj.DirectorMapEstConns6].MaxEntries = opts.ConnTableSize6
	if opts.ServiceTableSize == 0 {
		opts.ServiceTableSize = DefaultServiceTableSize
	}
	spec.Maps[bpfobj.DirectorMapServices].MaxEntries = opts.ServiceTableSize
	spec.Maps[bpfobj.DirectorMapServices6].MaxEntries = opts.ServiceTableSize
	d := &Dataplane{log: opts.Logger, reals: map[uint32]Real{}, ifaceMACs: map[int]net.HardwareAddr{}, pinDir: opts.PinDir,
		filter: newAddrFilter(), svcKeys: map[ServiceKey]bool{}, serviceTableSize: int(opts.ServiceTableSize)}
	var copts ebpf.CollectionOptions
	if opts.PinDir != "" {
		if err := preparePinDir(opts.PinDir, opts.Flush); err != nil {
			return nil, err
		}
		d.adopted = pinned(opts.PinDir)
		for name, m := range spec.Maps {
			if !strings.HasPrefix(name, ".") { // not .rodata and the like
				m.Pinning = ebpf.PinByName
			}
		}
		copts.Maps.PinPath = opts.PinDir
		if d.adopted {
			if err := dropStalePins(spec, opts.PinDir, d.log); err != nil {
				return nil, err
			}
		}
	}
	if err := spec.LoadAndAssign(&d.objs, &copts); err != nil {
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("the maps pinned in %s do not fit this xipvsd (%w): another version or --conn-table-size made them; "+
				"start with --flush to discard them and every connection they hold", opts.PinDir, err)
		}
		return nil, fmt.Errorf("load director: %w", err)
	}
	if d.adopted {
		if err := d.loadSlowCounts(); err != nil {
			d.Close()
			return nil, err
		}
		d.log.Info("adopted pinned maps", "dir", opts.PinDir)
		d.ipv6.Store(anyKey(d.objs.Conns6) || anyKey(d.objs.EstConns6))
	}
	if err := d.loadSweep(opts.ConnTableSize, opts.ConnTableSize6); err != nil {
		d.Close()
		return nil, err
	}
	// The defence's defaults until the daemon sets its own.
	if err := d.SetDefence(Defence{}); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.rebuildFilter(); err != nil {
		d.Close()
		return nil, err
	}
	for i, name := range opts.Interfaces {
		if err := d.addInterface(name, uint16(i)); err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

func (d *Dataplane) addInterface(name string, slot uint16) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("interface %s: %w", name, err)
	}
	attrs := l.Attrs()
	if len(attrs.HardwareAddr) != 6 {
		return fmt.Errorf("interface %s: not an Ethernet interface", name)
	}
	q := attrs.NumRxQueues
	if q < 1 {
		q = 1
	}
	if q > MaxQueues {
		return fmt.Errorf("interface %s: %d rx queues, at most %d supported", name, q, MaxQueues)
	}
	ifc := Interface{Name: name, Index: attrs.Index, MAC: attrs.HardwareAddr, RxQueues: q, slot: slot}
	var v bpfobj.DirectorIface
	copy(v.Mac[:], ifc.MAC)
	v.Slot = slot
	if err := d.objs.Ifaces.Put(uint32(ifc.Index), &v); err != nil {
		return fmt.Errorf("interface %s: ifaces map: %w", name, err)
	}
	if err := d.objs.TxPorts.Put(uint32(ifc.Index), uint32(ifc.Index)); err != nil {
		return fmt.Errorf("interface %s: tx_ports map: %w", name, err)
	}
	lk, err := d.attach(ifc)
	if err != nil {
		return err
	}
	d.links = append(d.links, lk)
	d.ifaces = append(d.ifaces, ifc)
	d.realsMu.Lock()
	d.ifaceMACs[ifc.Index] = ifc.MAC
	d.realsMu.Unlock()
	d.log.Info("xdp attached", "interface", name, "ifindex", ifc.Index, "mode", "native", "rx_queues", q)
	return nil
}

// Interfaces lists the director's interfaces.
func (d *Dataplane) Interfaces() []Interface { return append([]Interface(nil), d.ifaces...) }

// Close detaches the program and frees the maps (stop the slow path
// first: slowpath.SlowPath.Close).
func (d *Dataplane) Close() error {
	var err error
	// Closing a pinned link only drops our reference: the program stays
	// attached and forwarding (Cleanup detaches it).
	for i := len(d.links) - 1; i >= 0; i-- {
		err = errors.Join(err, d.links[i].Close())
	}
	d.links = nil
	err = errors.Join(err, d.sweep.Close())
	d.sweep = nil
	err = errors.Join(err, d.closeFNAT())
	err = errors.Join(err, d.objs.Close())
	return err
}

func be32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func addrFromBE32(v uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// NetPort is port p as the maps hold it: in network byte order.
func NetPort(p uint16) uint16 { return be16(p) }

func be16(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

func fromBE16(v uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], v)
	return binary.BigEndian.Uint16(b[:])
}

func (k ServiceKey) raw() bpfobj.DirectorSvcKey {
	return bpfobj.DirectorSvcKey{Vip: be32(k.VIP), Port: be16(k.Port), Proto: k.Proto}
}

func (k ConnKey) Raw() bpfobj.DirectorConnKey {
	return bpfobj.DirectorConnKey{Saddr: be32(k.Src), Daddr: be32(k.Dst), Sport: be16(k.SrcPort), Dport: be16(k.DstPort), Proto: k.Proto}
}

func connKeyFromRaw(r bpfobj.DirectorConnKey) ConnKey {
	return ConnKey{Src: addrFromBE32(r.Saddr), Dst: addrFromBE32(r.Daddr), SrcPort: fromBE16(r.Sport), DstPort: fromBE16(r.Dport), Proto: r.Proto}
}

func (c Conn) raw() bpfobj.DirectorConnVal {
	v := bpfobj.DirectorConnVal{LastSeen: uint64(c.LastSeen), RealId: c.RealID, SvcId: c.ServiceID, State: uint8(c.State),
		Flags: uint8(c.Flags), Ifindex: uint32(c.Ifindex)}
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
		Flags: ConnFlags(r.Flags), Ifindex: int(r.Ifindex)}
	if r.Nsaddr != 0 {
		c.Out = ConnKey{Src: addrFromBE32(r.Nsaddr), Dst: addrFromBE32(r.Ndaddr), SrcPort: fromBE16(r.Nsport), DstPort: fromBE16(r.Ndport)}
	}
	if c.Flags&ConnReply != 0 {
		c.DstMAC = append(net.HardwareAddr(nil), r.Dmac[:]...)
		c.SrcMAC = append(net.HardwareAddr(nil), r.Smac[:]...)
	}
	return c
}

// SetService adds or replaces a virtual service.
func (d *Dataplane) SetService(k ServiceKey, id uint32, flags SvcFlags) error {
	var err error
	if k.VIP.Is6() {
		d.ipv6.Store(true)
		err = d.objs.Services6.Put(k.raw6(), bpfobj.DirectorSvcVal{Id: id, Flags: uint32(flags)})
	} else {
		err = d.objs.Services.Put(k.raw(), bpfobj.DirectorSvcVal{Id: id, Flags: uint32(flags)})
	}
	if err != nil {
		return fmt.Errorf("set service %v:%d/%d: %w", k.VIP, k.Port, k.Proto, err)
	}
	d.realsMu.Lock()
	defer d.realsMu.Unlock()
	if d.svcKeys[k] {
		return nil
	}
	d.svcKeys[k] = true
	return d.filterVIP(k, 1)
}

// DeleteService removes a virtual service; a missing one is not an error.
func (d *Dataplane) DeleteService(k ServiceKey) error {
	var err error
	if k.VIP.Is6() {
		err = d.objs.Services6.Delete(k.raw6())
	} else {
		err = d.objs.Services.Delete(k.raw())
	}
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete service %v:%d/%d: %w", k.VIP, k.Port, k.Proto, err)
	}
	d.realsMu.Lock()
	defer d.realsMu.Unlock()
	if !d.svcKeys[k] {
		return nil
	}
	delete(d.svcKeys, k)
	return d.filterVIP(k, -1)
}

// Adopted reports whether Open took its maps over from a pin directory.
func (d *Dataplane) Adopted() bool { return d.adopted }

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

// Counters returns the data plane's global counters summed over CPUs.
func (d *Dataplane) Counters() ([NumStats]uint64, error) {
	var out [NumStats]uint64
	for i := range out {
		var per []uint64
		if err := d.objs.Stats.Lookup(uint32(i), &per); err != nil {
			return out, fmt.Errorf("read counter %s: %w", StatNames()[i], err)
		}
		for _, v := range per {
			out[i] += v
		}
		out[i] += d.slowStats[i].Load()
	}
	return out, nil
}

// Verdict is an XDP action.
type Verdict uint32

// XDP actions.
const (
	XDPAborted  Verdict = 0
	XDPDrop     Verdict = 1
	XDPPass     Verdict = 2
	XDPTx       Verdict = 3
	XDPRedirect Verdict = 4
)

func (v Verdict) String() string {
	switch v {
	case XDPAborted:
		return "XDP_ABORTED"
	case XDPDrop:
		return "XDP_DROP"
	case XDPPass:
		return "XDP_PASS"
	case XDPTx:
		return "XDP_TX"
	case XDPRedirect:
		return "XDP_REDIRECT"
	}
	return fmt.Sprintf("XDP(%d)", uint32(v))
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
	return d.resetSlowTraffic(id)
}
