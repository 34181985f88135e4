// Package server is xipvsd's in-process core: it owns the virtual
// services, their destinations and schedulers, and keeps the data plane's
// maps in step with them. Configuration changes are serialized by one
// lock, Server.cfgMu (commands.go); the state they change, which new
// flows, sweeps and listings also read, is guarded by Server.mu. API
// handlers are thin adapters over its methods.
package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/connsync"
	"github.com/xipvs/xipvs/internal/neigh"
)

// Errors, with ipvsadm's messages (libipvs ipvs_strerror); the shared
// ones are config's, so a rules file checked offline fails alike.
var (
	ErrServiceExists = config.ErrServiceExists
	ErrNoService     = config.ErrNoService
	ErrSvcNotDefined = config.ErrSvcNotDefined
	ErrDestExists    = config.ErrDestExists
	ErrNoDest        = config.ErrNoDest
	ErrNoScheduler   = config.ErrNoScheduler
	ErrUnsupported   = errors.New("not supported")
	// ErrNotSaved: the state could not be written; the change that
	// needed saving was undone.
	ErrNotSaved    = errors.New("configuration not saved")
	ErrFull        = errors.New("Memory allocation problem")
	ErrMarkExists  = config.ErrMarkExists
	ErrMarkOverlap = config.ErrMarkOverlap
	ErrNoMark      = config.ErrNoMark
)

// Dataplane is what the server needs of the data plane.
type Dataplane interface {
	Interfaces() []dataplane.Interface
	SetService(dataplane.ServiceKey, uint32, dataplane.SvcFlags) error
	DeleteService(dataplane.ServiceKey) error
	SetReal(uint32, dataplane.Real) error
	DeleteReal(uint32) error
	WalkConns(func(dataplane.ConnKey, dataplane.Conn) bool) error
	LookupConn(dataplane.ConnKey) (dataplane.Conn, bool, error)
	DeleteConn(dataplane.ConnKey) error
	SetPicks(svcID uint32, picks []uint32, loop int) (uint64, error)
	SetHashPicks(svcID uint32, kind dataplane.PickKind, table []uint32) error
	// Persistence templates XDP follows and makes (dataplane/tmpl.go).
	LookupTemplate(t dataplane.Template) (dataplane.TemplateUse, bool, error)
	SetTemplate(t dataplane.Template, u dataplane.TemplateUse) error
	DeleteTemplate(t dataplane.Template) error
	DeleteTemplates(end func(dataplane.Template, dataplane.TemplateUse) bool) error
	Templates(fn func(dataplane.Template, dataplane.TemplateUse)) error
	// FULLNAT local ports handed to XDP ahead (dataplane/fnat.go).
	FNATRings() int
	MaxLocalAddrs() uint32
	SetLocalAddr(id uint32, a netip.Addr) error
	FillRing(ring uint32, proto uint8, next func() (dataplane.LocalSlot, bool)) (int, error)
	DrainRing(ring uint32) (map[uint8][]dataplane.LocalSlot, error)
	TakeRingPort(ring uint32, proto uint8) (dataplane.LocalSlot, bool, error)
	RingPorts(fn func(ring uint32, proto uint8, s dataplane.LocalSlot)) error
	ClearPicks(svcID uint32) (uint64, error)
	PickCursor(svcID uint32) (uint64, error)
	PickServices() ([]uint32, error)
	// Room under upper thresholds, and the connections XDP bound
	// (dataplane/room.go).
	SetRoom(id uint32, room int64) error
	AddRoom(id uint32, n int64) error
	RealPicks(id uint32) (uint64, error)
	Sweep(dataplane.SweepArgs) (dataplane.SweepResult, error)
}

// Neighbors resolves real servers' MAC addresses.
type Neighbors interface {
	Watch(addr netip.Addr, ifindex int)
	Unwatch(addr netip.Addr)
	MAC(addr netip.Addr) net.HardwareAddr
}

// Options configures a Server.
type Options struct {
	Dataplane Dataplane
	Neighbors Neighbors
	// Route finds how the director reaches a real server
	// (neigh.RouteTo).
	Route func(netip.Addr) (neigh.NextHop, error)
	// Now is the clock connection ages are measured on (dataplane.Now).
	Now    func() time.Duration
	Logger *slog.Logger
	// ExpireQuiescentTemplate is IPVS's expire_quiescent_template sysctl:
	// a persistence template whose real has weight 0 is dropped, so the
	// client is scheduled afresh. Off (the kernel's default), persistent
	// clients keep going to a quiesced real.
	ExpireQuiescentTemplate bool
	// GoSchedules are services (VIP and port, any protocol) whose new
	// flows Go's slow path schedules, none in XDP: to diagnose a
	// difference, or to measure the slow path (xipvsd --go-schedules).
	GoSchedules []netip.AddrPort
	// Persist, if set, is given the configuration after every change
	// (the daemon writes its state file with it): the change is
	// acknowledged only once it returns nil, and undone otherwise.
	Persist func(State) error
	// Changed, if set, is called after every committed change to the
	// configuration (the daemon refreshes the health checks' targets
	// with it).
	Changed func()
	// Reserve, if set, is asked before a change for room for the state
	// to grow by n bytes (StateFile.Reserve): a change the disk has no
	// room to save fails before anything changes.
	Reserve func(n int) error
	// LocalAddress, if set, checks that a FULLNAT local address is one
	// of the director's (neigh.LocalAddress).
	LocalAddress func(netip.Addr) error
	// ServiceKeys is the data plane's services map capacity (default
	// dataplane.DefaultServiceTableSize).
	ServiceKeys int
}

// Server owns the configuration and the connection counts.
type Server struct {
	opts Options
	log  *slog.Logger

	// cfgMu serializes configuration changes: it is held for the whole
	// of one command, restore or reload (commands.go), so a command
	// never lands in the middle of a restore whose rollback would undo
	// it. Taken before mu, never while holding it.
	cfgMu sync.Mutex
	// batch is set while a restore or reload applies (commands.go).
	batch *batch

	mu       sync.Mutex // guards everything below
	services map[config.ServiceKey]*service
	byID     map[uint32]*service
	// byDP is what the data plane's services map holds: every (VIP,
	// port, protocol) a service or a port group claims.
	byDP  map[dataplane.ServiceKey]*service
	marks []config.MarkRule
	reals map[uint32]*dest
	// relooks are the services a slow-path batch scheduled from Go while
	// XDP had a lookahead of theirs (flow.go, picks.go).
	relooks map[*service]bool
	// dropStale: the next sweep also deletes the connections of reals
	// this server does not have (set by a restore: state.go).
	dropStale bool
	// nextFull is when the sweep next walks the established tables too
	// (dataplane.SweepArgs.Full); 0: at the next sweep.
	nextFull time.Duration
	// syncPending are synced NAT connections waiting for the MAC of
	// their client's next hop (by its address), syncPendingN how many.
	syncPending  map[netip.Addr][]connsync.Conn
	syncPendingN int
	nextSvcID    uint32
	freeReals    []uint32
	nextReal     uint32
	timeouts     conntrack.Timeouts
	// pools are the FULLNAT local ports by (local address, protocol).
	pools map[poolKey]*portPool
	// rings are the services by FULLNAT ring id (fnat.go); laddrIDs and
	// laddrOf name the local addresses for the rings; ringFills are the
	// services whose ring the slow path's batch drew on.
	rings     []*service
	laddrIDs  map[netip.Addr]uint32
	laddrOf   map[uint32]netip.Addr
	ringFills map[*service]bool
	// lastReclaim is when reclaimPorts last walked the table;
	// reclaimWanted is set when a pool ran out; portsReclaimed counts the
	// ports it freed.
	lastReclaim    time.Duration
	reclaimTook    time.Duration
	reclaimWanted  bool
	portsReclaimed uint64
	portsExhausted uint64
	noLaddrLogged  time.Time
}

// serviceKeys is the services map's capacity.
func (s *Server) serviceKeys() int {
	if s.opts.ServiceKeys > 0 {
		return s.opts.ServiceKeys
	}
	return dataplane.DefaultServiceTableSize
}

// New returns a server with no services.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = dataplane.Now
	}
	return &Server{
		opts:      opts,
		log:       opts.Logger,
		services:  map[config.ServiceKey]*service{},
		byID:      map[uint32]*service{},
		byDP:      map[dataplane.ServiceKey]*service{},
		relooks:   map[*service]bool{},
		reals:     map[uint32]*dest{},
		pools:     map[poolKey]*portPool{},
		laddrIDs:  map[netip.Addr]uint32{},
		laddrOf:   map[uint32]netip.Addr{},
		ringFills: map[*service]bool{},
		nextSvcID: 1,
		nextReal:  1,
		timeouts:  conntrack.DefaultTimeouts(),
	}
}

// Every calls fn every interval until ctx ends.
func Every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}
