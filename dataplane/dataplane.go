// Package dataplane owns the xipvs XDP program: loading, attaching and
// pinning it, and every map read and write (services, reals, connection
// entries, picks, templates, FULLNAT ports, the defence, counters), with
// running the program on a frame (Program.Run) for tests. Its API uses
// plain Go types; the raw map types are dataplane/bpfobj's. The AF_XDP
// slow path that hands new flows to Go is dataplane/slowpath, which
// reaches the maps through the methods in slowmaps.go.
package dataplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
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
	// ReapMax is how many connections the reaper judges in one run
	// (bpf/consts.h REAP_MAX).
	ReapMax = 4096
)

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
	// SweepAging ages established connections by walking them at every
	// sweep, as before the deadline index (aging.go): for comparison,
	// and as a way back.
	SweepAging bool
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
	// roomView maps the reals' room under their thresholds (room.go), once.
	roomOnce sync.Once
	roomView *roomView
	roomErr  error
	fnatErr  error
	links    []link.Link
	ifaces   []Interface
	aging    agingState // aging by Go's deadline index (aging.go)
	// embWrites counts the entries Go wrote into the embryonic tables
	// (XDP counts its own: STAT_EMB_NEW).
	embWrites atomic.Uint64

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

	sweepMu    sync.Mutex
	sweep      *sweepProg
	sweepSizes [2]uint32 // the connection tables' sizes, for loadSweep

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
	// The sweep's program is loaded at the first sweep, or by LoadSweep:
	// its verification (a second or so) need not delay forwarding.
	d.sweepSizes = [2]uint32{opts.ConnTableSize, opts.ConnTableSize6}
	// Until the first sweep gives the configured timeouts.
	if err := d.writeAging(!opts.SweepAging, conntrack.DefaultTimeouts()); err != nil {
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
	d.sweepMu.Lock()
	err = errors.Join(err, d.sweep.Close(), d.aging.Close())
	d.sweep = nil
	d.sweepMu.Unlock()
	err = errors.Join(err, d.closeFNAT(), d.closeRooms())
	err = errors.Join(err, d.objs.Close())
	return err
}

// Adopted reports whether Open took its maps over from a pin directory.
func (d *Dataplane) Adopted() bool { return d.adopted }
