package server

// flow.go: scheduling a new flow, with persistence templates
// (ip_vs_core.c's ip_vs_schedule and ip_vs_sched_persist).

import (
	"net/netip"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/sched"
)

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
	if sv.portZeroTemplates() {
		vport = 0
	}
	return tmplKey{client: p.Addr(), vport: vport}
}

// portZeroTemplates reports whether sv's templates ignore the virtual
// port: firewall-mark, port-zero and FTP services, as in IPVS.
func (sv *service) portZeroTemplates() bool {
	return sv.cfg.FWMark != 0 || sv.cfg.Port == 0 || sv.cfg.Port == 21
}

// NewFlows schedules a batch of new connections, the slow path's
// handler: decs[i] for flows[i], a zero RealID where no real server can
// take the flow. The server's lock is taken once for the batch.
func (s *Server) NewFlows(flows []dataplane.NewFlow, decs []dataplane.Decision) {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range flows {
		decs[i] = s.newFlow(&flows[i], now)
	}
	// Services XDP schedules from a lookahead that ran out, or whose
	// real ran out of room: fresh picks from the counts as they are now,
	// this batch's picks counted.
	for sv := range s.relooks {
		if s.byID[sv.id] == sv {
			s.syncPicks(sv)
			if sv.local {
				s.syncLocal(sv) // a real overloaded lets its addresses go
			}
		}
		delete(s.relooks, sv)
	}
	// Services whose FULLNAT ring ran dry: filled again.
	for sv := range s.ringFills {
		if s.byID[sv.id] == sv && sv.ring != 0 {
			s.fillRing(sv)
		}
		delete(s.ringFills, sv)
	}
}

// NewFlow schedules one new connection (see NewFlows).
func (s *Server) NewFlow(f dataplane.NewFlow) (dataplane.Decision, bool) {
	decs := []dataplane.Decision{{}}
	s.NewFlows([]dataplane.NewFlow{f}, decs)
	return decs[0], decs[0].RealID != 0
}

// newFlow schedules f; s.mu is held.
func (s *Server) newFlow(f *dataplane.NewFlow, now time.Duration) dataplane.Decision {
	sv, ok := s.byDP[dataplane.ServiceKey{VIP: f.Key.Dst, Port: f.Key.DstPort, Proto: f.Key.Proto}]
	if !ok {
		// Every port of the VIP, as the data plane looks it up.
		if sv, ok = s.byDP[dataplane.ServiceKey{VIP: f.Key.Dst, Proto: f.Key.Proto}]; !ok {
			return dataplane.Decision{}
		}
	}
	if !s.relooks[sv] && ((sv.fast != nil && sv.fast.lookahead) || sv.dpf&dataplane.SvcRoom != 0) {
		// XDP's picks first, as they came first: the scheduler moved on
		// by them, and the connections they bound counted (a real out of
		// room is overloaded now, as IPVS finds it).
		s.catchUp(sv)
		s.relooks[sv] = true
	}
	flow := sched.Flow{Src: f.Key.Src, Dst: f.Key.Dst, SrcPort: f.Key.SrcPort, DstPort: f.Key.DstPort, Proto: f.Key.Proto, Now: now}
	d := s.schedule(sv, flow)
	if sv.local {
		s.localScheduled(sv, flow.Dst, now)
	}
	if d == nil {
		// ip_vs_leave: no real can take it; the client is told.
		return dataplane.Decision{Unreachable: true}
	}
	dec := dataplane.Decision{RealID: d.realID, ServiceID: sv.id, Persistent: sv.cfg.Persistent,
		SynProxy: sv.cfg.SynProxy, SynProxyAuto: sv.dpf&dataplane.SvcSynProxyAuto != 0}
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
				return dataplane.Decision{}
			}
			dec.Out.Src, dec.Out.SrcPort, dec.FullNAT = lip, lport, true
			if sv.ring != 0 {
				s.ringFills[sv] = true
			}
		}
	}
	// ip_vs_bind_dest: counted as inactive until the next sweep sees its
	// state; reaching the upper threshold overloads the real.
	d.sd.InactConns++
	d.conns++
	if sv.dpf&dataplane.SvcRoom != 0 {
		_ = s.opts.Dataplane.AddRoom(d.realID, -1) // XDP sees it bound
	}
	if u := d.cfg.UThreshold; u != 0 && uint32(d.sd.ActiveConns+d.sd.InactConns) >= u {
		d.sd.Overloaded = true
	}
	sv.sched.Changed(d.sd)
	return dec
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
	t := sv.templates[k]
	if t == nil {
		// One XDP made, for a new flow it scheduled.
		t = s.adoptTemplate(sv, k, timeout)
	}
	if t != nil {
		if s.templateGood(sv, t) {
			t.expires = f.Now + timeout
			s.writeTemplate(sv, k, t.dest, f.Now)
			return t.dest
		}
		delete(sv.templates, k)
		s.dropTemplate(sv, k)
	}
	sd := sv.sched.Schedule(f)
	if sd == nil {
		return nil
	}
	d := s.reals[sd.ID]
	sv.templates[k] = &template{dest: d, expires: f.Now + timeout}
	s.writeTemplate(sv, k, d, f.Now)
	return d
}

// templateGood is ip_vs_check_template: a deleted real (gone from the
// service), or with expire_quiescent_template a quiesced one, ends the
// template; a real failing its health check ends it too, and so does
// the sorry server once a real is back.
func (s *Server) templateGood(sv *service, t *template) bool {
	if t.dest.svc != sv || s.reals[t.dest.realID] != t.dest {
		return false
	}
	quiesced := s.opts.ExpireQuiescentTemplate && t.dest.cfg.Weight == 0
	return !quiesced && !t.dest.down && !(t.dest == sv.sorry && sv.anyUp())
}

// dpTemplate is template k of sv as the data plane keys it.
func (sv *service) dpTemplate(k tmplKey) dataplane.Template {
	return dataplane.Template{ServiceID: sv.id, Client: k.client, VPort: k.vport}
}

// adoptTemplate takes into sv's templates the data plane's template k
// (made by XDP), if it has one naming a real of sv; s.mu is held.
func (s *Server) adoptTemplate(sv *service, k tmplKey, timeout time.Duration) *template {
	u, ok, err := s.opts.Dataplane.LookupTemplate(sv.dpTemplate(k))
	if err != nil || !ok {
		return nil
	}
	d := s.reals[u.RealID]
	if d == nil || d.svc != sv {
		s.dropTemplate(sv, k)
		return nil
	}
	t := &template{dest: d, expires: u.LastUsed + timeout}
	sv.templates[k] = t
	return t
}

// writeTemplate gives the data plane template k of sv (XDP sends the
// client network's next new flows to d); s.mu is held.
func (s *Server) writeTemplate(sv *service, k tmplKey, d *dest, now time.Duration) {
	if err := s.opts.Dataplane.SetTemplate(sv.dpTemplate(k), dataplane.TemplateUse{RealID: d.realID, LastUsed: now}); err != nil {
		s.log.Warn("writing a persistence template", "service", sv.cfg.ServiceKey.String(), "err", err)
	}
}

// dropTemplate removes template k of sv from the data plane.
func (s *Server) dropTemplate(sv *service, k tmplKey) {
	if err := s.opts.Dataplane.DeleteTemplate(sv.dpTemplate(k)); err != nil {
		s.log.Warn("removing a persistence template", "service", sv.cfg.ServiceKey.String(), "err", err)
	}
}

// endTemplates ends sv's templates that name a real end says so of (all
// with end nil), in the server and in the data plane, where XDP may have
// made some the server has not seen yet; s.mu is held.
func (s *Server) endTemplates(sv *service, end func(*dest) bool) {
	for k, t := range sv.templates {
		if end == nil || end(t.dest) {
			delete(sv.templates, k)
		}
	}
	err := s.opts.Dataplane.DeleteTemplates(func(t dataplane.Template, u dataplane.TemplateUse) bool {
		if t.ServiceID != sv.id {
			return false
		}
		d := s.reals[u.RealID]
		return end == nil || d == nil || end(d)
	})
	if err != nil {
		s.log.Warn("ending persistence templates", "service", sv.cfg.ServiceKey.String(), "err", err)
	}
}
