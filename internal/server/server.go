// Package server is xipvsd's in-process core: it owns the virtual
// services, their destinations and schedulers, and keeps the data plane's
// maps in step with them. All state is guarded by one mutex, Server.mu;
// API handlers are thin adapters over its methods.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/sched"
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
	ErrFull          = errors.New("Memory allocation problem")
	ErrMarkExists    = config.ErrMarkExists
	ErrMarkOverlap   = config.ErrMarkOverlap
	ErrNoMark        = config.ErrNoMark
)

// Dataplane is what the server needs of the data plane.
type Dataplane interface {
	Interfaces() []dataplane.Interface
	SetService(dataplane.ServiceKey, uint32) error
	DeleteService(dataplane.ServiceKey) error
	SetReal(uint32, dataplane.Real) error
	DeleteReal(uint32) error
	WalkConns(func(dataplane.ConnKey, dataplane.Conn) bool) error
	LookupConn(dataplane.ConnKey) (dataplane.Conn, bool, error)
	DeleteConn(dataplane.ConnKey) error
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
	// (dataplane.RouteTo).
	Route func(netip.Addr) (dataplane.NextHop, error)
	// Now is the clock connection ages are measured on (dataplane.Now).
	Now    func() time.Duration
	Logger *slog.Logger
	// ExpireQuiescentTemplate is IPVS's expire_quiescent_template sysctl:
	// a persistence template whose real has weight 0 is dropped, so the
	// client is scheduled afresh. Off (the kernel's default), persistent
	// clients keep going to a quiesced real.
	ExpireQuiescentTemplate bool
	// Persist, if set, is given the configuration after every change
	// (the daemon writes its state file with it).
	Persist func(State) error
}

type dest struct {
	cfg    config.Dest
	svc    *service
	realID uint32
	hop    dataplane.NextHop
	sd     *sched.Dest
	// conns counts connections scheduled to d (its traffic counters
	// are the data plane's); est estimates its rates.
	conns uint64
	est   conntrack.Estimator
	// down is set while the real fails its health check; reason and
	// since describe the last transition.
	down   bool
	reason string
	since  time.Time
}

// weight is what the scheduler sees: the configured weight, or 0 while
// the real fails its health check.
func (d *dest) weight() int {
	if d.down {
		return 0
	}
	return d.cfg.Weight
}

// via is the address whose MAC the data plane sends d's packets to.
func (d *dest) via() netip.Addr { return d.hop.Via(d.cfg.Addr) }

// dpFwd is the data plane's code for a forwarding method.
func dpFwd(f config.Fwd) dataplane.Fwd {
	switch f {
	case config.FwdTunnel:
		return dataplane.FwdTunnel
	case config.FwdMasq:
		return dataplane.FwdMasq
	case config.FwdFullNAT:
		return dataplane.FwdFullNAT
	}
	return dataplane.FwdRoute
}

// real is d as the data plane's reals map holds it.
func (d *dest) real(mac net.HardwareAddr) dataplane.Real {
	return dataplane.Real{Addr: d.cfg.Addr, Ifindex: d.hop.Ifindex, MAC: mac, Fwd: dpFwd(d.cfg.Fwd),
		MTU: d.hop.MTU, TunnelSrc: d.hop.Src}
}

type service struct {
	cfg   config.Service
	id    uint32
	dests []*dest // the kernel's list order: newest first
	sched sched.Scheduler
	// templates are the persistence templates of a persistent service.
	templates map[tmplKey]*template
	// laddrs are the FULLNAT local addresses, used in turn.
	laddrs    []netip.Addr
	laddrNext int
	// retired holds the counters of reals deleted from the service.
	retired conntrack.Stats
	est     conntrack.Estimator
	// sorry is the sorry server's real, when configured.
	sorry *dest
}

// tmplKey is what IPVS keys a persistence template on, within one
// service: the client's address under the -M netmask and the virtual
// port (0 for port-zero, firewall-mark and FTP services).
type tmplKey struct {
	client netip.Addr
	vport  uint16
}

// template pins a client network to a real while it controls
// connections or its timeout has not run out (IPVS's
// IP_VS_CONN_F_TEMPLATE entries).
type template struct {
	dest    *dest
	expires time.Duration
}

// templateKey returns the template of a new flow of sv.
func (sv *service) templateKey(src netip.Addr, dport uint16) tmplKey {
	p, _ := src.Prefix(sv.cfg.Netmask.Bits())
	vport := dport
	if sv.cfg.FWMark != 0 || sv.cfg.Port == 0 || sv.cfg.Port == 21 {
		vport = 0
	}
	return tmplKey{client: p.Addr(), vport: vport}
}

func (sv *service) setSchedFlags() {
	if f, ok := sv.sched.(sched.Flagged); ok {
		flags, _ := sched.ParseFlags(sv.cfg.Scheduler, sv.cfg.SchedFlags) // validated
		f.SetFlags(flags)
	}
}

func (s *service) findDest(addr netip.Addr, port uint16) (int, *dest) {
	for i, d := range s.dests {
		if d.cfg.Addr == addr && d.cfg.Port == port {
			return i, d
		}
	}
	return -1, nil
}

func (s *service) schedDests() []*sched.Dest {
	if s.sorry != nil && !s.anyUp() {
		return []*sched.Dest{s.sorry.sd}
	}
	out := make([]*sched.Dest, 0, len(s.dests))
	for _, d := range s.dests {
		if d.down && s.cfg.OnFailure == config.OnFailureRemove {
			continue
		}
		out = append(out, d.sd)
	}
	return out
}

// anyUp reports whether some real of s passes its health check (or has
// none).
func (s *service) anyUp() bool {
	for _, d := range s.dests {
		if !d.down {
			return true
		}
	}
	return false
}

// Server owns the configuration and the connection counts.
type Server struct {
	opts Options
	log  *slog.Logger

	// applyMu serializes Reconcile calls.
	applyMu sync.Mutex

	mu       sync.Mutex // guards everything below
	services map[config.ServiceKey]*service
	byID     map[uint32]*service
	// byDP is what the data plane's services map holds: every (VIP,
	// port, protocol) a service or a port group claims.
	byDP      map[dataplane.ServiceKey]*service
	marks     []config.MarkRule
	reals     map[uint32]*dest
	nextSvcID uint32
	freeReals []uint32
	nextReal  uint32
	timeouts  conntrack.Timeouts
	// pools are the FULLNAT local ports by (local address, protocol).
	pools          map[poolKey]*portPool
	portsExhausted uint64
	noLaddrLogged  time.Time
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
		reals:     map[uint32]*dest{},
		pools:     map[poolKey]*portPool{},
		nextSvcID: 1,
		nextReal:  1,
		timeouts:  conntrack.DefaultTimeouts(),
	}
}

func (s *Server) allocReal() (uint32, error) {
	if n := len(s.freeReals); n > 0 {
		id := s.freeReals[n-1]
		s.freeReals = s.freeReals[:n-1]
		return id, nil
	}
	if s.nextReal >= dataplane.MaxReals {
		return 0, fmt.Errorf("%w: more than %d real servers", ErrFull, dataplane.MaxReals-1)
	}
	id := s.nextReal
	s.nextReal++
	return id, nil
}

// normalize checks a service and fills in ipvsadm's defaults for what an
// API client may leave out.
func normalize(svc *config.Service) error {
	svc.SetDefaults()
	if err := svc.Validate(); err != nil {
		return err
	}
	if svc.OnePacket {
		return fmt.Errorf("one-packet scheduling (-o): %w yet", ErrUnsupported)
	}
	return nil
}

// desiredKeys computes the data plane's service keys from the services
// and mark rules: each -t/-u service its own key, each -f service the
// keys its mark binds (a port group wins over a plain service on the same
// port, as a firewall-mark service does in IPVS).
func (s *Server) desiredKeys() (map[dataplane.ServiceKey]*service, error) {
	want := make(map[dataplane.ServiceKey]*service, len(s.byDP))
	for _, sv := range s.services {
		if sv.cfg.FWMark == 0 {
			want[dataplane.ServiceKey{VIP: sv.cfg.Addr, Port: sv.cfg.Port, Proto: uint8(sv.cfg.Proto)}] = sv
		}
	}
	byMark := map[uint32]*service{}
	for _, sv := range s.services {
		if sv.cfg.FWMark != 0 {
			byMark[sv.cfg.FWMark] = sv
		}
	}
	for _, r := range s.marks {
		sv := byMark[r.Mark]
		if sv == nil {
			continue
		}
		k := dataplane.ServiceKey{VIP: r.Addr, Proto: uint8(r.Proto)}
		for p := int(r.PortLo); p <= int(r.PortHi); p++ {
			k.Port = uint16(p)
			want[k] = sv
		}
		if len(want) > dataplane.MaxServiceKeys {
			return nil, fmt.Errorf("%w: services and port groups would claim more than %d ports", ErrFull, dataplane.MaxServiceKeys)
		}
	}
	return want, nil
}

// syncKeys brings the data plane's services map in line with the model;
// on a capacity error it changes nothing and the caller undoes its change.
func (s *Server) syncKeys() error {
	want, err := s.desiredKeys()
	if err != nil {
		return err
	}
	for k, sv := range want {
		if s.byDP[k] == sv {
			continue
		}
		if err := s.opts.Dataplane.SetService(k, sv.id); err != nil {
			return err
		}
		s.byDP[k] = sv
	}
	for k := range s.byDP {
		if _, ok := want[k]; !ok {
			if err := s.opts.Dataplane.DeleteService(k); err != nil {
				return err
			}
			delete(s.byDP, k)
		}
	}
	return nil
}

// AddService adds a virtual service (ipvsadm -A).
func (s *Server) AddService(svc config.Service) error {
	if err := normalize(&svc); err != nil {
		return err
	}
	sc, err := sched.New(svc.Scheduler)
	if err != nil {
		return ErrNoScheduler
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.services[svc.ServiceKey]; ok {
		return ErrServiceExists
	}
	if len(s.services) >= dataplane.MaxServices {
		return fmt.Errorf("%w: more than %d services", ErrFull, dataplane.MaxServices)
	}
	sv := &service{cfg: svc, id: s.nextSvcID, sched: sc, templates: map[tmplKey]*template{}}
	sv.setSchedFlags()
	s.services[svc.ServiceKey] = sv
	s.byID[sv.id] = sv
	if err := s.syncKeys(); err != nil {
		delete(s.services, svc.ServiceKey)
		delete(s.byID, sv.id)
		_ = s.syncKeys()
		return err
	}
	s.nextSvcID++
	if err := s.setSorry(sv); err != nil {
		s.log.Warn("sorry server not installed", "service", svc.ServiceKey.String(), "err", err)
	}
	s.changed()
	s.log.Info("service added", "service", svc.ServiceKey.String(), "scheduler", svc.Scheduler,
		"persistent", svc.Timeout, "flags", svc.SchedFlags)
	return nil
}

// EditService changes a service's settings (ipvsadm -E).
func (s *Server) EditService(svc config.Service) error {
	if err := normalize(&svc); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sv, ok := s.services[svc.ServiceKey]
	if !ok {
		return ErrNoService
	}
	if svc.Scheduler != sv.cfg.Scheduler {
		sc, err := sched.New(svc.Scheduler)
		if err != nil {
			return ErrNoScheduler
		}
		sc.Update(sv.schedDests())
		sv.sched = sc
	}
	if !svc.Persistent || svc.Netmask != sv.cfg.Netmask {
		// Templates keyed on the old netmask (or no longer wanted).
		clear(sv.templates)
	}
	oldSorry := sv.cfg.Sorry
	sv.cfg = svc
	sv.setSchedFlags()
	if svc.Sorry != oldSorry {
		if err := s.setSorry(sv); err != nil {
			s.log.Warn("sorry server not installed", "service", svc.ServiceKey.String(), "err", err)
		}
	}
	sv.sched.Update(sv.schedDests())
	s.changed()
	s.log.Info("service edited", "service", svc.ServiceKey.String(), "scheduler", svc.Scheduler,
		"persistent", svc.Timeout, "flags", svc.SchedFlags)
	return nil
}

// DeleteService removes a service, its destinations and their
// connections (ipvsadm -D).
func (s *Server) DeleteService(k config.ServiceKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sv, ok := s.services[k]
	if !ok {
		return ErrNoService
	}
	defer s.changed()
	return s.deleteServiceLocked(sv)
}

func (s *Server) deleteServiceLocked(sv *service) error {
	delete(s.services, sv.cfg.ServiceKey)
	delete(s.byID, sv.id)
	if err := s.syncKeys(); err != nil {
		return err
	}
	ids := map[uint32]bool{}
	for _, d := range sv.dests {
		ids[d.realID] = true
	}
	if err := s.expireConns(ids); err != nil {
		return err
	}
	for _, d := range sv.dests {
		s.releaseDest(d)
	}
	if sv.sorry != nil {
		_ = s.expireConns(map[uint32]bool{sv.sorry.realID: true})
		s.releaseDest(sv.sorry)
		sv.sorry = nil
	}
	s.log.Info("service deleted", "service", sv.cfg.ServiceKey.String())
	return nil
}

// Clear removes every service (ipvsadm -C).
func (s *Server) Clear() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.changed()
	for _, sv := range s.services {
		if err := s.deleteServiceLocked(sv); err != nil {
			return err
		}
	}
	return nil
}

// expireConns deletes the connections of the given real ids: a deleted
// real's connections are expired, as IPVS does with expire_nodest_conn=1,
// so an id is never reused while connections still name it.
func (s *Server) expireConns(ids map[uint32]bool) error {
	if len(ids) == 0 {
		return nil
	}
	type entry struct {
		k dataplane.ConnKey
		c dataplane.Conn
	}
	var doomed []entry
	err := s.opts.Dataplane.WalkConns(func(k dataplane.ConnKey, c dataplane.Conn) bool {
		if ids[c.RealID] {
			doomed = append(doomed, entry{k, c})
		}
		return true
	})
	if err != nil {
		return err
	}
	for _, e := range doomed {
		if err := s.opts.Dataplane.DeleteConn(e.k); err != nil {
			return err
		}
		s.releaseLocal(e.k, e.c)
	}
	return nil
}

func (s *Server) releaseDest(d *dest) {
	if err := s.opts.Dataplane.DeleteReal(d.realID); err != nil {
		s.log.Warn("delete real", "id", d.realID, "err", err)
	}
	delete(s.reals, d.realID)
	s.freeReals = append(s.freeReals, d.realID)
	if !s.viaInUse(d.via()) && s.opts.Neighbors != nil {
		s.opts.Neighbors.Unwatch(d.via())
	}
}

func (s *Server) viaInUse(a netip.Addr) bool {
	for _, d := range s.reals {
		if d.via() == a {
			return true
		}
	}
	return false
}

func (s *Server) directorIface(ifindex int) bool {
	for _, i := range s.opts.Dataplane.Interfaces() {
		if i.Index == ifindex {
			return true
		}
	}
	return false
}

// route finds how the director reaches real d: direct routing needs it
// on-link; TUN, NAT and FULLNAT reals may sit behind a router, and TUN
// needs a source address for the outer header. The egress must be a
// director interface.
func (s *Server) route(d config.Dest) (dataplane.NextHop, error) {
	hop, err := s.opts.Route(d.Addr)
	if err != nil {
		return hop, fmt.Errorf("real server %v: %w", d.Addr, err)
	}
	return hop, checkHop(d, hop, s.directorIface)
}

// checkHop checks that d can be forwarded by its method over hop, from
// an interface the director serves.
func checkHop(d config.Dest, hop dataplane.NextHop, director func(ifindex int) bool) error {
	if d.Fwd == config.FwdRoute && hop.Gateway.IsValid() {
		return fmt.Errorf("real server %v is reached via %v: direct routing (-g) needs it on the director's L2 segment; use -i, -m or -b",
			d.Addr, hop.Gateway)
	}
	if !director(hop.Ifindex) {
		return fmt.Errorf("real server %v is reached through interface %d, which this director does not serve (xipvsd -i)", d.Addr, hop.Ifindex)
	}
	if d.Fwd == config.FwdTunnel && !hop.Src.Is4() {
		return fmt.Errorf("real server %v: no IPv4 source address on the route to it for the tunnel's outer header", d.Addr)
	}
	return nil
}

// AddDest adds a real server to a service (ipvsadm -a).
func (s *Server) AddDest(k config.ServiceKey, d config.Dest) error {
	if err := d.Validate(k); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sv, ok := s.services[k]
	if !ok {
		return ErrSvcNotDefined
	}
	if _, x := sv.findDest(d.Addr, d.Port); x != nil {
		return ErrDestExists
	}
	nd, err := s.newDest(sv, d)
	if err != nil {
		return err
	}
	sv.dests = append([]*dest{nd}, sv.dests...) // list_add: to the front
	sv.sched.Update(sv.schedDests())
	s.changed()
	s.log.Info("real server added", "service", k.String(), "real", d.AddrPort().String(),
		"forward", d.Fwd.String(), "weight", d.Weight)
	return nil
}

// newDest routes d, gives it a real id and installs it with zeroed
// counters; s.mu is held. The caller puts it where it belongs.
func (s *Server) newDest(sv *service, d config.Dest) (*dest, error) {
	hop, err := s.route(d)
	if err != nil {
		return nil, err
	}
	id, err := s.allocReal()
	if err != nil {
		return nil, err
	}
	nd, err := s.installDest(sv, d, id, hop)
	if err != nil {
		s.freeReals = append(s.freeReals, id)
		return nil, err
	}
	s.startDestStats(nd)
	return nd, nil
}

// installDest writes real id for d of sv into the data plane (with its
// MAC if the neighbour table has it, else resolution is started) and
// registers it; s.mu is held. The caller puts it in sv's list.
func (s *Server) installDest(sv *service, d config.Dest, id uint32, hop dataplane.NextHop) (*dest, error) {
	nd := &dest{cfg: d, svc: sv, realID: id, hop: hop,
		sd: &sched.Dest{ID: id, Addr: d.Addr, Port: d.Port, Weight: d.Weight, LastWeight: d.Weight}}
	if err := s.writeReal(nd); err != nil {
		return nil, err
	}
	s.reals[id] = nd
	return nd, nil
}

// writeReal writes d's reals-map entry, with the next hop's MAC if the
// neighbour table has it; otherwise resolution starts and OnNeighbor
// fills it in. s.mu is held.
func (s *Server) writeReal(d *dest) error {
	var mac net.HardwareAddr
	if s.opts.Neighbors != nil {
		mac = s.opts.Neighbors.MAC(d.via())
	}
	if err := s.opts.Dataplane.SetReal(d.realID, d.real(mac)); err != nil {
		return err
	}
	if s.opts.Neighbors != nil && mac == nil {
		// Without holding mu: the answer may come back at once.
		via, ifindex := d.via(), d.hop.Ifindex
		go s.opts.Neighbors.Watch(via, ifindex)
	}
	return nil
}

// EditDest changes a real server's settings (ipvsadm -e).
func (s *Server) EditDest(k config.ServiceKey, d config.Dest) error {
	if err := d.Validate(k); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sv, ok := s.services[k]
	if !ok {
		return ErrSvcNotDefined
	}
	_, x := sv.findDest(d.Addr, d.Port)
	if x == nil {
		return ErrNoDest
	}
	// __ip_vs_update_dest: last_weight keeps the latest non-zero weight;
	// removing or raising the upper threshold clears the overload flag.
	if d.Weight != 0 {
		x.sd.LastWeight = d.Weight
	}
	if d.UThreshold == 0 || d.UThreshold > x.cfg.UThreshold {
		x.sd.Overloaded = false
	}
	if d.Fwd != x.cfg.Fwd {
		// -e may change the forwarding method: new connections use the
		// new one; established ones keep their entries.
		hop, err := s.route(d)
		if err != nil {
			return err
		}
		old, oldHop := x.cfg, x.hop
		x.cfg, x.hop = d, hop
		if err := s.writeReal(x); err != nil {
			x.cfg, x.hop = old, oldHop
			return err
		}
	}
	x.cfg = d
	x.sd.Weight = x.weight()
	sv.sched.Update(sv.schedDests())
	s.changed()
	s.log.Info("real server edited", "service", k.String(), "real", d.AddrPort().String(), "weight", d.Weight)
	return nil
}

// DeleteDest removes a real server and expires its connections
// (ipvsadm -d).
func (s *Server) DeleteDest(k config.ServiceKey, addr netip.Addr, port uint16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sv, ok := s.services[k]
	if !ok {
		return ErrSvcNotDefined
	}
	i, x := sv.findDest(addr, port)
	if x == nil {
		return ErrNoDest
	}
	sv.dests = slices.Delete(sv.dests, i, i+1)
	sv.sched.Update(sv.schedDests())
	for k, t := range sv.templates {
		if t.dest == x {
			delete(sv.templates, k)
		}
	}
	if err := s.expireConns(map[uint32]bool{x.realID: true}); err != nil {
		return err
	}
	s.retireDestLocked(x)
	s.releaseDest(x)
	s.changed()
	s.log.Info("real server deleted", "service", k.String(), "real", netip.AddrPortFrom(addr, port).String())
	return nil
}

// OnNeighbor updates every real at addr with its new MAC.
func (s *Server) OnNeighbor(addr netip.Addr, ifindex int, mac net.HardwareAddr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, d := range s.reals {
		if d.via() != addr || d.hop.Ifindex != ifindex {
			continue
		}
		if err := s.opts.Dataplane.SetReal(id, d.real(mac)); err != nil {
			s.log.Warn("update real MAC", "real", d.cfg.Addr, "via", addr, "err", err)
		}
	}
}

// NewFlow schedules a new connection: the slow path's handler.
func (s *Server) NewFlow(f dataplane.NewFlow) (dataplane.Decision, bool) {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	sv, ok := s.byDP[dataplane.ServiceKey{VIP: f.Key.Dst, Port: f.Key.DstPort, Proto: f.Key.Proto}]
	if !ok {
		// Every port of the VIP, as the data plane looks it up.
		if sv, ok = s.byDP[dataplane.ServiceKey{VIP: f.Key.Dst, Proto: f.Key.Proto}]; !ok {
			return dataplane.Decision{}, false
		}
	}
	flow := sched.Flow{Src: f.Key.Src, Dst: f.Key.Dst, SrcPort: f.Key.SrcPort, DstPort: f.Key.DstPort, Proto: f.Key.Proto, Now: now}
	d := s.schedule(sv, flow)
	if d == nil {
		return dataplane.Decision{}, false
	}
	dec := dataplane.Decision{RealID: d.realID, ServiceID: sv.id}
	if d.cfg.Fwd.Rewrites() {
		rport := d.cfg.Port
		if rport == 0 { // port-zero and -f services: the client's port
			rport = f.Key.DstPort
		}
		dec.Out = dataplane.ConnKey{Src: f.Key.Src, Dst: d.cfg.Addr, SrcPort: f.Key.SrcPort, DstPort: rport}
		if d.cfg.Fwd == config.FwdFullNAT {
			lip, lport, err := s.allocLocal(sv, f.Key.Proto)
			if err != nil {
				if now := time.Now(); now.Sub(s.noLaddrLogged) > 10*time.Second {
					s.noLaddrLogged = now
					s.log.Warn("new FULLNAT connection dropped", "err", err)
				}
				return dataplane.Decision{}, false
			}
			dec.Out.Src, dec.Out.SrcPort, dec.FullNAT = lip, lport, true
		}
	}
	// ip_vs_bind_dest: counted as inactive until the next sweep sees its
	// state; reaching the upper threshold overloads the real.
	d.sd.InactConns++
	d.conns++
	if u := d.cfg.UThreshold; u != 0 && uint32(d.sd.ActiveConns+d.sd.InactConns) >= u {
		d.sd.Overloaded = true
	}
	sv.sched.Changed(d.sd)
	return dec, true
}

// schedule picks the real of a new flow, through the client's
// persistence template when the service is persistent (IPVS's
// ip_vs_sched_persist).
func (s *Server) schedule(sv *service, f sched.Flow) *dest {
	if !sv.cfg.Persistent {
		if sd := sv.sched.Schedule(f); sd != nil {
			return s.reals[sd.ID]
		}
		return nil
	}
	timeout := time.Duration(sv.cfg.Timeout) * time.Second
	k := sv.templateKey(f.Src, f.DstPort)
	if t := sv.templates[k]; t != nil {
		// ip_vs_check_template: a deleted real (already gone from the
		// map), or with expire_quiescent_template a quiesced one, ends
		// the template.
		// A real failing its health check ends the template too, and
		// so does the sorry server once a real is back.
		quiesced := s.opts.ExpireQuiescentTemplate && t.dest.cfg.Weight == 0
		if !quiesced && !t.dest.down && !(t.dest == sv.sorry && sv.anyUp()) {
			t.expires = f.Now + timeout
			return t.dest
		}
		delete(sv.templates, k)
	}
	sd := sv.sched.Schedule(f)
	if sd == nil {
		return nil
	}
	d := s.reals[sd.ID]
	sv.templates[k] = &template{dest: d, expires: f.Now + timeout}
	return d
}

// SetTimeouts changes the tcp, tcpfin and udp timeouts (ipvsadm --set);
// a zero leaves that timeout unchanged, as in ipvsadm.
func (s *Server) SetTimeouts(tcp, tcpfin, udp time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tcp > 0 {
		s.timeouts.TCP[conntrack.StateEstablished] = tcp
	}
	if tcpfin > 0 {
		s.timeouts.TCP[conntrack.StateFinWait] = tcpfin
	}
	if udp > 0 {
		s.timeouts.UDP = udp
	}
	s.changed()
	s.log.Info("timeouts set", "tcp", s.timeouts.TCP[conntrack.StateEstablished],
		"tcpfin", s.timeouts.TCP[conntrack.StateFinWait], "udp", s.timeouts.UDP)
}

// Timeouts returns the tcp, tcpfin and udp timeouts.
func (s *Server) Timeouts() (tcp, tcpfin, udp time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.timeouts.TCP[conntrack.StateEstablished], s.timeouts.TCP[conntrack.StateFinWait], s.timeouts.UDP
}

// DestStatus is a destination with its connection counts, counters and
// rates.
type DestStatus struct {
	config.Dest
	ActiveConns int
	InactConns  int
	// PersistConns counts the persistence templates naming the real.
	PersistConns int
	Stats        conntrack.Stats
	Rates        conntrack.Rates
	Health       HealthStatus
}

// ServiceStatus is a service with its destinations, counters and rates.
type ServiceStatus struct {
	config.Service
	Dests []DestStatus
	Stats conntrack.Stats
	Rates conntrack.Rates
	// SorryActive is set while the sorry server takes new flows.
	SorryActive bool
}

// Services returns every service and destination, in no set order.
func (s *Server) Services() []ServiceStatus {
	traffic := s.readTraffic()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ServiceStatus, 0, len(s.services))
	for _, sv := range s.services {
		persist := map[*dest]int{}
		for _, t := range sv.templates {
			persist[t.dest]++
		}
		per := make(map[*dest]conntrack.Stats, len(sv.dests))
		st := ServiceStatus{Service: sv.cfg, Rates: sv.est.Rates()}
		for _, d := range sv.dests {
			per[d] = destStats(d, traffic[d])
			st.Dests = append(st.Dests, DestStatus{Dest: d.cfg, ActiveConns: d.sd.ActiveConns, InactConns: d.sd.InactConns,
				PersistConns: persist[d], Stats: per[d], Rates: d.est.Rates(), Health: s.healthOf(sv, d)})
		}
		st.Stats = s.serviceStatsLocked(sv, per)
		st.SorryActive = sv.sorry != nil && !sv.anyUp()
		out = append(out, st)
	}
	return out
}

// Sweep expires idle connections, recounts ActiveConn/InActConn per real
// from the connection table, clears overload flags as connections go
// (ip_vs_unbind_dest) and ages persistence templates.
func (s *Server) Sweep() error {
	type persist struct {
		sv    *service
		owned map[tmplKey]bool // templates with live connections
	}
	s.mu.Lock()
	to := s.timeouts
	persistent := map[uint32]*persist{}
	for id, sv := range s.byID {
		if sv.cfg.Persistent {
			persistent[id] = &persist{sv: sv, owned: map[tmplKey]bool{}}
		}
	}
	s.mu.Unlock()
	now := s.opts.Now()
	counts := map[uint32]*conntrack.Counts{}
	type entry struct {
		k dataplane.ConnKey
		c dataplane.Conn
	}
	var expired []entry
	// NAT and FULLNAT connections have a reply entry: the connection is
	// idle only when both are, so those are judged after the walk.
	var paired []entry
	replies := map[dataplane.ConnKey]dataplane.Conn{}
	consider := func(k dataplane.ConnKey, c dataplane.Conn, last time.Duration) {
		if to.Remaining(k.Proto, c.State, last, now) <= 0 {
			expired = append(expired, entry{k, c})
			return
		}
		n := counts[c.RealID]
		if n == nil {
			n = &conntrack.Counts{}
			counts[c.RealID] = n
		}
		n.Add(k.Proto, c.State)
		if p := persistent[c.ServiceID]; p != nil {
			p.owned[p.sv.templateKey(k.Src, k.DstPort)] = true
		}
	}
	err := s.opts.Dataplane.WalkConns(func(k dataplane.ConnKey, c dataplane.Conn) bool {
		switch {
		case c.Flags&dataplane.ConnReply != 0:
			replies[k] = c
		case c.Rewrites():
			paired = append(paired, entry{k, c})
		default:
			consider(k, c, c.LastSeen)
		}
		return true
	})
	if err != nil {
		return err
	}
	owned := map[dataplane.ConnKey]bool{}
	for _, e := range paired {
		last := e.c.LastSeen
		rk := e.c.Peer(e.k.Proto)
		if r, ok := replies[rk]; ok && r.Peer(e.k.Proto) == e.k {
			owned[rk] = true
			last = max(last, r.LastSeen)
		}
		consider(e.k, e.c, last)
	}
	var releases []entry
	for _, e := range expired {
		// Re-read: the slow path may have renewed the entry since the
		// walk, and traffic may have refreshed it.
		c, found, err := s.opts.Dataplane.LookupConn(e.k)
		if err != nil {
			return err
		}
		if !found {
			continue
		}
		last := c.LastSeen
		var rk dataplane.ConnKey
		var r dataplane.Conn
		hasReply := false
		if c.Rewrites() {
			rk = c.Peer(e.k.Proto)
			if r, hasReply, err = s.opts.Dataplane.LookupConn(rk); err != nil {
				return err
			}
			hasReply = hasReply && r.Flags&dataplane.ConnReply != 0 && r.Peer(e.k.Proto) == e.k
			if hasReply {
				last = max(last, r.LastSeen)
			}
		}
		if to.Remaining(e.k.Proto, c.State, last, now) > 0 {
			continue
		}
		if err := s.opts.Dataplane.DeleteConn(e.k); err != nil {
			return err
		}
		if hasReply {
			if err := s.opts.Dataplane.DeleteConn(rk); err != nil {
				return err
			}
			releases = append(releases, entry{rk, r})
		}
	}
	// A reply entry no forward entry points to (its tuple was reused by
	// a new connection, or the forward entry was evicted) goes once it
	// has been idle for a while.
	for rk, r := range replies {
		if owned[rk] || now-r.LastSeen < orphanReplyAge {
			continue
		}
		if _, found, err := s.opts.Dataplane.LookupConn(r.Peer(rk.Proto)); err != nil {
			return err
		} else if found {
			continue // written since the walk
		}
		if err := s.opts.Dataplane.DeleteConn(rk); err != nil {
			return err
		}
		releases = append(releases, entry{rk, r})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range releases {
		s.releaseLocal(e.k, e.c)
	}
	for id, d := range s.reals {
		c := counts[id]
		if c == nil {
			c = &conntrack.Counts{}
		}
		changed := d.sd.ActiveConns != c.Active || d.sd.InactConns != c.Inactive
		d.sd.ActiveConns, d.sd.InactConns = c.Active, c.Inactive
		if d.sd.Overloaded && underThreshold(d) {
			d.sd.Overloaded = false
			changed = true
		}
		if changed {
			d.svc.sched.Changed(d.sd)
		}
	}
	// A template expires when its timeout has run out and it controls
	// no connection; one that still does is re-armed for another
	// timeout, as ip_vs_conn_expire does.
	for id, p := range persistent {
		if s.byID[id] != p.sv {
			continue // deleted meanwhile
		}
		timeout := time.Duration(p.sv.cfg.Timeout) * time.Second
		for k, t := range p.sv.templates {
			if now < t.expires {
				continue
			}
			if p.owned[k] {
				t.expires = now + timeout
				continue
			}
			delete(p.sv.templates, k)
		}
	}
	return nil
}

// orphanReplyAge is how long a reply entry without its forward entry is
// kept (a new connection writes the reply entry just before the forward
// one).
const orphanReplyAge = 10 * time.Second

// underThreshold is ip_vs_unbind_dest's test for clearing the overload
// flag: below the lower threshold if one is set, else below three
// quarters of the upper one.
func underThreshold(d *dest) bool {
	total := uint64(d.sd.ActiveConns + d.sd.InactConns)
	switch {
	case d.cfg.LThreshold != 0:
		return total < uint64(d.cfg.LThreshold)
	case d.cfg.UThreshold != 0:
		return total*4 < uint64(d.cfg.UThreshold)*3
	default:
		return true
	}
}

// Templates returns the number of persistence templates of a service.
func (s *Server) Templates(k config.ServiceKey) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sv := s.services[k]; sv != nil {
		return len(sv.templates)
	}
	return 0
}

// AddMarks binds ports to firewall marks for -f services (xipvsadm
// --add-mark). All rules are checked before any is applied.
func (s *Server) AddMarks(rules []config.MarkRule) error {
	for _, r := range rules {
		if err := r.Validate(); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	all, err := config.MergeMarks(s.marks, rules)
	if err != nil {
		return err
	}
	if err := s.setMarks(all); err != nil {
		return err
	}
	for _, r := range rules {
		s.log.Info("port group added", "rule", r.String())
	}
	return nil
}

// DeleteMarks removes port-group rules (xipvsadm --del-mark): the given
// rules, each of which must exist, or with no rules every rule of mark.
func (s *Server) DeleteMarks(mark uint32, rules []config.MarkRule) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keep []config.MarkRule
	if len(rules) == 0 {
		for _, o := range s.marks {
			if o.Mark != mark {
				keep = append(keep, o)
			}
		}
		if len(keep) == len(s.marks) {
			return fmt.Errorf("%w: mark %d", ErrNoMark, mark)
		}
	} else {
		for _, r := range rules {
			if !slices.Contains(s.marks, r) {
				return fmt.Errorf("%w: %s", ErrNoMark, r)
			}
		}
		for _, o := range s.marks {
			if !slices.Contains(rules, o) {
				keep = append(keep, o)
			}
		}
	}
	removed := len(s.marks) - len(keep)
	if err := s.setMarks(keep); err != nil {
		return err
	}
	s.log.Info("port group deleted", "mark", mark, "rules", removed)
	return nil
}

// setMarks replaces the port-group rules and the data plane's keys with
// them, or on error restores both; s.mu is held.
func (s *Server) setMarks(rules []config.MarkRule) error {
	old := s.marks
	s.marks = rules
	if err := s.syncKeys(); err != nil {
		s.marks = old
		_ = s.syncKeys()
		return err
	}
	s.changed()
	return nil
}

// Marks returns the port-group rules in the order they were added.
func (s *Server) Marks() []config.MarkRule {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.marks)
}

// RunSweeper sweeps every interval until ctx ends.
func (s *Server) RunSweeper(ctx context.Context, interval time.Duration) {
	every(ctx, interval, func() {
		if err := s.Sweep(); err != nil {
			s.log.Warn("connection sweep", "err", err)
		}
	})
}

// every runs fn every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, fn func()) {
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

// ConnStatus is one connection as ipvsadm -c lists it.
type ConnStatus struct {
	Proto   uint8
	Expire  time.Duration // time left before it is aged out
	State   string        // IPVS state name; "UDP" for UDP, as /proc/net/ip_vs_conn
	Client  netip.AddrPort
	Virtual netip.AddrPort
	Real    netip.AddrPort
}

// Conns lists the connection table (ipvsadm -Lnc).
func (s *Server) Conns() ([]ConnStatus, error) {
	s.mu.Lock()
	to := s.timeouts
	reals := make(map[uint32]netip.AddrPort, len(s.reals))
	for id, d := range s.reals {
		reals[id] = d.cfg.AddrPort()
	}
	s.mu.Unlock()
	now := s.opts.Now()
	var out []ConnStatus
	err := s.opts.Dataplane.WalkConns(func(k dataplane.ConnKey, c dataplane.Conn) bool {
		if c.Flags&dataplane.ConnReply != 0 {
			return true // listed with its forward entry
		}
		left := to.Remaining(k.Proto, c.State, c.LastSeen, now)
		if left < 0 {
			left = 0
		}
		state := c.State.String()
		if k.Proto == conntrack.ProtoUDP {
			state = "UDP"
		}
		real := reals[c.RealID]
		if c.Rewrites() {
			real = netip.AddrPortFrom(c.Out.Dst, c.Out.DstPort)
		}
		if real.Port() == 0 {
			// -g/-i reals of port-zero and -f services: the client's port.
			real = netip.AddrPortFrom(real.Addr(), k.DstPort)
		}
		out = append(out, ConnStatus{Proto: k.Proto, Expire: left, State: state,
			Client: netip.AddrPortFrom(k.Src, k.SrcPort), Virtual: netip.AddrPortFrom(k.Dst, k.DstPort), Real: real})
		return true
	})
	return out, err
}
