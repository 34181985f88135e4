package server

// service.go: virtual services (ipvsadm -A, -E, -D, -C) and the keys they
// claim in the data plane's services map (ip_vs_ctl.c's service half).

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/sched"
)

type service struct {
	cfg   config.Service
	id    uint32
	dests []*dest // the kernel's list order: newest first
	sched sched.Scheduler
	// templates are the persistence templates of a persistent service.
	templates map[tmplKey]*template
	// local: XDP serves the entries of its lblc table (local.go).
	local bool
	// ring: its FULLNAT local ports' ring in XDP (fnat.go), 0 for none.
	ring uint32
	// laddrs are the FULLNAT local addresses, used in turn.
	laddrs    []netip.Addr
	laddrNext int
	// retired holds the counters of reals deleted from the service.
	retired conntrack.Stats
	est     conntrack.Estimator
	// sorry is the sorry server's real, when configured.
	sorry *dest
	// fast is the pick cycle XDP schedules the service's new flows
	// from, if it has one (picks.go).
	fast *fastPicks
	// dpf are the data plane flags its keys were written with.
	dpf dataplane.SvcFlags
}

// synProxyFits refuses a DR or TUN real on a SYN-proxied service: the
// proxy must see the real's replies to finish the handshake.
func synProxyFits(svc config.Service, fwd config.Fwd) error {
	if svc.SynProxy && !fwd.Rewrites() {
		return fmt.Errorf("%w: synproxy (-j enable) needs NAT (-m) or FULLNAT (-b) reals: the director must see the real's replies, and a %s real answers the client directly",
			config.ErrInvalid, fwd)
	}
	return nil
}

// dataplaneFlags are the data plane flags sv's keys should carry: the SYN
// proxy always (-j enable), or while the defence is engaged for a TCP
// service whose every real (sorry server included) is NAT or FULLNAT, and
// the MSS room for TOA when a real is FULLNAT.
func (sv *service) dataplaneFlags() dataplane.SvcFlags {
	var f dataplane.SvcFlags
	if sv.cfg.SynProxy {
		f |= dataplane.SvcSynProxy
	}
	all := sv.cfg.Proto == config.TCP && sv.cfg.FWMark == 0 && len(sv.dests) > 0
	check := func(d *dest) {
		if !d.cfg.Fwd.Rewrites() {
			all = false
		}
		if d.cfg.Fwd == config.FwdFullNAT {
			f |= dataplane.SvcTOARoom
		}
	}
	for _, d := range sv.dests {
		check(d)
	}
	if sv.sorry != nil {
		check(sv.sorry)
	}
	if all {
		f |= dataplane.SvcSynProxyAuto
	}
	if sv.cfg.Persistent {
		f |= dataplane.SvcPersist | dataplane.SvcPersistMask(sv.cfg.Netmask.Bits())
		if sv.portZeroTemplates() {
			f |= dataplane.SvcTmplPort0
		}
	}
	return f
}

// syncFlags rewrites sv's keys when its data plane flags change (a real
// added, removed or edited, -j switched); s.mu is held.
func (s *Server) syncFlags(sv *service) {
	f := sv.dataplaneFlags()
	if sv.local {
		f |= dataplane.SvcLocal
		if sv.sched.Name() == "lblcr" {
			f |= dataplane.SvcLocalSet
		}
	}
	f |= dataplane.SvcRing(sv.ring)
	if sv.roomed() {
		f |= dataplane.SvcRoom
	}
	if f == sv.dpf {
		return
	}
	sv.dpf = f
	write := func(k dataplane.ServiceKey) {
		if err := s.opts.Dataplane.SetService(k, sv.id, f); err != nil {
			s.log.Warn("updating a service's data plane flags", "service", sv.cfg.ServiceKey.String(), "err", err)
		}
	}
	if sv.cfg.FWMark == 0 {
		if k := sv.serviceKey(); s.byDP[k] == sv {
			write(k)
		}
		return
	}
	for k, owner := range s.byDP {
		if owner == sv {
			write(k)
		}
	}
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
	if svc.IsV6() && svc.SynProxy {
		return fmt.Errorf("synproxy (-j enable) on an IPv6 service: %w yet", ErrUnsupported)
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
		if r.Addr.Is6() != sv.cfg.IsV6() {
			continue // a rule binds only addresses of its service's family
		}
		k := dataplane.ServiceKey{VIP: r.Addr, Proto: uint8(r.Proto)}
		for p := int(r.PortLo); p <= int(r.PortHi); p++ {
			k.Port = uint16(p)
			want[k] = sv
		}
		if len(want) > s.serviceKeys() {
			return nil, fmt.Errorf("%w: services and port groups would claim more than %d ports (xipvsd --service-table-size)", ErrFull, s.serviceKeys())
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
		sv.dpf = sv.dataplaneFlags()
		if err := s.opts.Dataplane.SetService(k, sv.id, sv.dpf); err != nil {
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

// serviceKey is the data plane key of a -t/-u service.
func (sv *service) serviceKey() dataplane.ServiceKey {
	return dataplane.ServiceKey{VIP: sv.cfg.Addr, Port: sv.cfg.Port, Proto: uint8(sv.cfg.Proto)}
}

// syncServiceKey installs, or with on false removes, the key of a -t/-u
// service: one map write, where syncKeys recomputes every key (what a
// -f service, or a port group, needs). A key a port group's service holds
// stays its: a firewall-mark service wins, as in IPVS.
func (s *Server) syncServiceKey(sv *service, on bool) error {
	k := sv.serviceKey()
	owner := s.byDP[k]
	if owner != nil && owner != sv && owner.cfg.FWMark != 0 {
		return nil
	}
	if !on {
		if owner != sv {
			return nil
		}
		if err := s.opts.Dataplane.DeleteService(k); err != nil {
			return err
		}
		delete(s.byDP, k)
		return nil
	}
	if owner == nil && len(s.byDP) >= s.serviceKeys() {
		return fmt.Errorf("%w: services and port groups would claim more than %d ports (xipvsd --service-table-size)", ErrFull, s.serviceKeys())
	}
	sv.dpf = sv.dataplaneFlags()
	if err := s.opts.Dataplane.SetService(k, sv.id, sv.dpf); err != nil {
		return err
	}
	s.byDP[k] = sv
	return nil
}

// syncServiceKeys brings sv's keys in: its own for a -t/-u service, all
// of them for a -f one.
func (s *Server) syncServiceKeys(sv *service, on bool) error {
	if sv.cfg.FWMark == 0 {
		return s.syncServiceKey(sv, on)
	}
	return s.syncKeys()
}

// addService adds a virtual service (ipvsadm -A).
func (s *Server) addService(svc config.Service) error {
	if err := normalize(&svc); err != nil {
		return err
	}
	sc, err := sched.New(svc.Scheduler)
	if err != nil {
		return ErrNoScheduler
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.allowed(config.Command{Op: config.OpAddService, Service: svc}); err != nil {
		return err
	}
	if len(s.services) >= s.serviceKeys() {
		return fmt.Errorf("%w: more than %d services (xipvsd --service-table-size)", ErrFull, s.serviceKeys())
	}
	sv := &service{cfg: svc, id: s.nextSvcID, sched: sc, templates: map[tmplKey]*template{}}
	sv.setSchedFlags()
	s.services[svc.ServiceKey] = sv
	s.byID[sv.id] = sv
	if err := s.syncServiceKeys(sv, true); err != nil {
		delete(s.services, svc.ServiceKey)
		delete(s.byID, sv.id)
		_ = s.syncServiceKeys(sv, false)
		return err
	}
	s.nextSvcID++
	if err := s.setSorry(sv); err != nil {
		s.log.Warn("sorry server not installed", "service", svc.ServiceKey.String(), "err", err)
	}
	s.changed()
	s.logChange("service added", "service", svc.ServiceKey.String(), "scheduler", svc.Scheduler,
		"persistent", svc.Timeout, "flags", svc.SchedFlags)
	return nil
}

// editService changes a service's settings (ipvsadm -E).
func (s *Server) editService(svc config.Service) error {
	if err := normalize(&svc); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.allowed(config.Command{Op: config.OpEditService, Service: svc}); err != nil {
		return err
	}
	sv := s.services[svc.ServiceKey]
	for _, d := range sv.dests {
		if err := synProxyFits(svc, d.cfg.Fwd); err != nil {
			return err
		}
	}
	s.catchUp(sv)
	if svc.Scheduler != sv.cfg.Scheduler {
		sc, err := sched.New(svc.Scheduler)
		if err != nil {
			return ErrNoScheduler
		}
		sc.Update(sv.schedDests())
		sv.sched = sc
	}
	if (sv.cfg.Persistent || svc.Persistent) && (!svc.Persistent || svc.Netmask != sv.cfg.Netmask) {
		// Templates keyed on the old netmask (or no longer wanted); an
		// lblc service's entries stay (syncLocal ends them if need be).
		s.endTemplates(sv, nil)
	}
	oldSorry := sv.cfg.Sorry
	sv.cfg = svc
	sv.setSchedFlags()
	if svc.Sorry != oldSorry {
		if err := s.setSorry(sv); err != nil {
			s.log.Warn("sorry server not installed", "service", svc.ServiceKey.String(), "err", err)
		}
	}
	s.reschedule(sv)
	s.changed()
	s.logChange("service edited", "service", svc.ServiceKey.String(), "scheduler", svc.Scheduler,
		"persistent", svc.Timeout, "flags", svc.SchedFlags)
	return nil
}

// deleteService removes a service, its destinations and their
// connections (ipvsadm -D).
func (s *Server) deleteService(k config.ServiceKey) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.allowed(config.Command{Op: config.OpDelService, Service: config.Service{ServiceKey: k}}); err != nil {
		return err
	}
	sv := s.services[k]
	defer s.changed()
	return s.deleteServiceLocked(sv)
}

func (s *Server) deleteServiceLocked(sv *service) error {
	if _, err := s.opts.Dataplane.ClearPicks(sv.id); err != nil {
		return err
	}
	if sv.cfg.Persistent || sv.local {
		s.endTemplates(sv, nil)
	}
	if sv.ring != 0 {
		s.dropRing(sv)
	}
	sv.fast = nil
	delete(s.services, sv.cfg.ServiceKey)
	delete(s.byID, sv.id)
	if err := s.syncServiceKeys(sv, false); err != nil {
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
	s.logChange("service deleted", "service", sv.cfg.ServiceKey.String())
	return nil
}

// clear removes every service (ipvsadm -C).
func (s *Server) clear() error {
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

// setTimeouts changes the tcp, tcpfin and udp timeouts (ipvsadm --set);
// a zero leaves that timeout unchanged, as in ipvsadm.
func (s *Server) setTimeouts(tcp, tcpfin, udp time.Duration) {
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
	s.logChange("timeouts set", "tcp", s.timeouts.TCP[conntrack.StateEstablished],
		"tcpfin", s.timeouts.TCP[conntrack.StateFinWait], "udp", s.timeouts.UDP)
}
