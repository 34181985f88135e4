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

// Errors, with ipvsadm's messages (libipvs ipvs_strerror).
var (
	ErrServiceExists = errors.New("Service already exists")
	ErrNoService     = errors.New("No such service")
	ErrSvcNotDefined = errors.New("Service not defined")
	ErrDestExists    = errors.New("Destination already exists")
	ErrNoDest        = errors.New("No such destination")
	ErrNoScheduler   = errors.New("Scheduler not found")
	ErrUnsupported   = errors.New("not supported")
	ErrFull          = errors.New("Memory allocation problem")
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
	// Route finds the director interface that reaches a real server
	// directly (dataplane.Route).
	Route func(netip.Addr) (int, error)
	// Now is the clock connection ages are measured on (dataplane.Now).
	Now    func() time.Duration
	Logger *slog.Logger
}

type dest struct {
	cfg     config.Dest
	realID  uint32
	ifindex int
	sd      *sched.Dest
}

type service struct {
	cfg   config.Service
	id    uint32
	dests []*dest // the kernel's list order: newest first
	sched sched.Scheduler
}

func (s *service) dpKey() dataplane.ServiceKey {
	return dataplane.ServiceKey{VIP: s.cfg.Addr, Port: s.cfg.Port, Proto: uint8(s.cfg.Proto)}
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
	out := make([]*sched.Dest, len(s.dests))
	for i, d := range s.dests {
		out[i] = d.sd
	}
	return out
}

// Server owns the configuration and the connection counts.
type Server struct {
	opts Options
	log  *slog.Logger

	mu        sync.Mutex // guards everything below
	services  map[config.ServiceKey]*service
	byID      map[uint32]*service
	byDP      map[dataplane.ServiceKey]*service
	reals     map[uint32]*dest
	nextSvcID uint32
	freeReals []uint32
	nextReal  uint32
	timeouts  conntrack.Timeouts
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

func (s *Server) checkSupported(svc config.Service) error {
	if svc.FWMark != 0 {
		return fmt.Errorf("firewall-mark services (-f): %w yet", ErrUnsupported)
	}
	if svc.Persistent {
		return fmt.Errorf("persistence (-p): %w yet", ErrUnsupported)
	}
	if svc.OnePacket {
		return fmt.Errorf("one-packet scheduling (-o): %w yet", ErrUnsupported)
	}
	if len(svc.SchedFlags) > 0 {
		return fmt.Errorf("scheduler flags (-b): %w yet", ErrUnsupported)
	}
	return nil
}

// AddService adds a virtual service (ipvsadm -A).
func (s *Server) AddService(svc config.Service) error {
	if err := svc.Validate(); err != nil {
		return err
	}
	if err := s.checkSupported(svc); err != nil {
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
	sv := &service{cfg: svc, id: s.nextSvcID, sched: sc}
	if err := s.opts.Dataplane.SetService(sv.dpKey(), sv.id); err != nil {
		return err
	}
	s.nextSvcID++
	s.services[svc.ServiceKey] = sv
	s.byID[sv.id] = sv
	s.byDP[sv.dpKey()] = sv
	s.log.Info("service added", "service", svc.ServiceKey.String(), "scheduler", svc.Scheduler)
	return nil
}

// EditService changes a service's settings (ipvsadm -E).
func (s *Server) EditService(svc config.Service) error {
	if err := svc.Validate(); err != nil {
		return err
	}
	if err := s.checkSupported(svc); err != nil {
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
	sv.cfg = svc
	s.log.Info("service edited", "service", svc.ServiceKey.String(), "scheduler", svc.Scheduler)
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
	return s.deleteServiceLocked(sv)
}

func (s *Server) deleteServiceLocked(sv *service) error {
	if err := s.opts.Dataplane.DeleteService(sv.dpKey()); err != nil {
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
	delete(s.services, sv.cfg.ServiceKey)
	delete(s.byID, sv.id)
	delete(s.byDP, sv.dpKey())
	s.log.Info("service deleted", "service", sv.cfg.ServiceKey.String())
	return nil
}

// Clear removes every service (ipvsadm -C).
func (s *Server) Clear() error {
	s.mu.Lock()
	defer s.mu.Unlock()
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
	var doomed []dataplane.ConnKey
	err := s.opts.Dataplane.WalkConns(func(k dataplane.ConnKey, c dataplane.Conn) bool {
		if ids[c.RealID] {
			doomed = append(doomed, k)
		}
		return true
	})
	if err != nil {
		return err
	}
	for _, k := range doomed {
		if err := s.opts.Dataplane.DeleteConn(k); err != nil {
			return err
		}
	}
	return nil
}

func (s *Server) releaseDest(d *dest) {
	if err := s.opts.Dataplane.DeleteReal(d.realID); err != nil {
		s.log.Warn("delete real", "id", d.realID, "err", err)
	}
	delete(s.reals, d.realID)
	s.freeReals = append(s.freeReals, d.realID)
	if !s.addrInUse(d.cfg.Addr) && s.opts.Neighbors != nil {
		s.opts.Neighbors.Unwatch(d.cfg.Addr)
	}
}

func (s *Server) addrInUse(a netip.Addr) bool {
	for _, d := range s.reals {
		if d.cfg.Addr == a {
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

// checkDest validates a destination and refuses what is not built yet.
func checkDest(k config.ServiceKey, d config.Dest) error {
	if err := d.Validate(k); err != nil {
		return err
	}
	if d.Fwd != config.FwdRoute {
		return fmt.Errorf("forwarding method %s (%s): %w yet; use -g", d.Fwd, d.Fwd.Switch(), ErrUnsupported)
	}
	if d.UThreshold != 0 || d.LThreshold != 0 {
		return fmt.Errorf("connection thresholds (-x/-y): %w yet", ErrUnsupported)
	}
	return nil
}

// AddDest adds a real server to a service (ipvsadm -a).
func (s *Server) AddDest(k config.ServiceKey, d config.Dest) error {
	if err := checkDest(k, d); err != nil {
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
	ifindex, err := s.opts.Route(d.Addr)
	if err != nil {
		return fmt.Errorf("real server %v: %w (direct routing needs it on the director's L2 segment)", d.Addr, err)
	}
	if !s.directorIface(ifindex) {
		return fmt.Errorf("real server %v is reached through interface %d, which this director does not serve (xipvsd -i)", d.Addr, ifindex)
	}
	id, err := s.allocReal()
	if err != nil {
		return err
	}
	nd := &dest{cfg: d, realID: id, ifindex: ifindex,
		sd: &sched.Dest{ID: id, Addr: d.Addr, Port: d.Port, Weight: d.Weight}}
	var mac net.HardwareAddr
	if s.opts.Neighbors != nil {
		mac = s.opts.Neighbors.MAC(d.Addr)
	}
	if err := s.opts.Dataplane.SetReal(id, dataplane.Real{Addr: d.Addr, Ifindex: ifindex, MAC: mac, Fwd: dataplane.FwdRoute}); err != nil {
		s.freeReals = append(s.freeReals, id)
		return err
	}
	s.reals[id] = nd
	sv.dests = append([]*dest{nd}, sv.dests...) // list_add: to the front
	sv.sched.Update(sv.schedDests())
	if s.opts.Neighbors != nil && mac == nil {
		// Resolution reports back through OnNeighbor; do it without
		// holding mu.
		go s.opts.Neighbors.Watch(d.Addr, ifindex)
	}
	s.log.Info("real server added", "service", k.String(), "real", d.AddrPort().String(),
		"forward", d.Fwd.String(), "weight", d.Weight)
	return nil
}

// EditDest changes a real server's settings (ipvsadm -e).
func (s *Server) EditDest(k config.ServiceKey, d config.Dest) error {
	if err := checkDest(k, d); err != nil {
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
	x.cfg = d
	x.sd.Weight = d.Weight
	sv.sched.Update(sv.schedDests())
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
	if err := s.expireConns(map[uint32]bool{x.realID: true}); err != nil {
		return err
	}
	s.releaseDest(x)
	s.log.Info("real server deleted", "service", k.String(), "real", netip.AddrPortFrom(addr, port).String())
	return nil
}

// OnNeighbor updates every real at addr with its new MAC.
func (s *Server) OnNeighbor(addr netip.Addr, ifindex int, mac net.HardwareAddr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, d := range s.reals {
		if d.cfg.Addr != addr {
			continue
		}
		r := dataplane.Real{Addr: addr, Ifindex: d.ifindex, MAC: mac, Fwd: dataplane.FwdRoute}
		if err := s.opts.Dataplane.SetReal(id, r); err != nil {
			s.log.Warn("update real MAC", "real", addr, "err", err)
		}
	}
}

// NewFlow schedules a new connection: the slow path's handler.
func (s *Server) NewFlow(f dataplane.NewFlow) (dataplane.Decision, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sv, ok := s.byDP[dataplane.ServiceKey{VIP: f.Key.Dst, Port: f.Key.DstPort, Proto: f.Key.Proto}]
	if !ok {
		return dataplane.Decision{}, false
	}
	d := sv.sched.Schedule(sched.Flow{Src: f.Key.Src, Dst: f.Key.Dst, SrcPort: f.Key.SrcPort, DstPort: f.Key.DstPort, Proto: f.Key.Proto})
	if d == nil {
		return dataplane.Decision{}, false
	}
	// Counted as inactive until the next sweep sees its state.
	d.InactConns++
	return dataplane.Decision{RealID: d.ID, ServiceID: sv.id}, true
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
	s.log.Info("timeouts set", "tcp", s.timeouts.TCP[conntrack.StateEstablished],
		"tcpfin", s.timeouts.TCP[conntrack.StateFinWait], "udp", s.timeouts.UDP)
}

// Timeouts returns the tcp, tcpfin and udp timeouts.
func (s *Server) Timeouts() (tcp, tcpfin, udp time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.timeouts.TCP[conntrack.StateEstablished], s.timeouts.TCP[conntrack.StateFinWait], s.timeouts.UDP
}

// DestStatus is a destination with its connection counts.
type DestStatus struct {
	config.Dest
	ActiveConns int
	InactConns  int
}

// ServiceStatus is a service with its destinations.
type ServiceStatus struct {
	config.Service
	Dests []DestStatus
}

// Services returns every service and destination, in no set order.
func (s *Server) Services() []ServiceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ServiceStatus, 0, len(s.services))
	for _, sv := range s.services {
		st := ServiceStatus{Service: sv.cfg}
		for _, d := range sv.dests {
			st.Dests = append(st.Dests, DestStatus{Dest: d.cfg, ActiveConns: d.sd.ActiveConns, InactConns: d.sd.InactConns})
		}
		out = append(out, st)
	}
	return out
}

// Sweep expires idle connections and recounts ActiveConn/InActConn per
// real from the connection table.
func (s *Server) Sweep() error {
	s.mu.Lock()
	to := s.timeouts
	s.mu.Unlock()
	now := s.opts.Now()
	counts := map[uint32]*conntrack.Counts{}
	var expired []dataplane.ConnKey
	err := s.opts.Dataplane.WalkConns(func(k dataplane.ConnKey, c dataplane.Conn) bool {
		if to.Remaining(k.Proto, c.State, c.LastSeen, now) <= 0 {
			expired = append(expired, k)
			return true
		}
		n := counts[c.RealID]
		if n == nil {
			n = &conntrack.Counts{}
			counts[c.RealID] = n
		}
		n.Add(k.Proto, c.State)
		return true
	})
	if err != nil {
		return err
	}
	for _, k := range expired {
		// Re-read: the slow path may have renewed the entry since the walk.
		c, found, err := s.opts.Dataplane.LookupConn(k)
		if err != nil {
			return err
		}
		if !found || to.Remaining(k.Proto, c.State, c.LastSeen, now) > 0 {
			continue
		}
		if err := s.opts.Dataplane.DeleteConn(k); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, d := range s.reals {
		c := counts[id]
		if c == nil {
			c = &conntrack.Counts{}
		}
		d.sd.ActiveConns, d.sd.InactConns = c.Active, c.Inactive
	}
	return nil
}

// RunSweeper sweeps every interval until ctx ends.
func (s *Server) RunSweeper(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.Sweep(); err != nil {
				s.log.Warn("connection sweep", "err", err)
			}
		}
	}
}
