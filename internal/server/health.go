package server

import (
	"net/netip"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/internal/health"
)

// setSorry installs sv's sorry server as a real of its own (scheduled
// only while no real of sv passes its check), replacing any previous
// one; s.mu is held.
func (s *Server) setSorry(sv *service) error {
	s.catchUp(sv)
	if sv.sorry != nil {
		_ = s.expireConns(map[uint32]bool{sv.sorry.realID: true})
		s.releaseDest(sv.sorry)
		sv.sorry = nil
	}
	if !sv.cfg.Sorry.IsSet() {
		s.reschedule(sv)
		return nil
	}
	d := config.Dest{Addr: sv.cfg.Sorry.Addr.Addr(), Port: sv.cfg.Sorry.Addr.Port(), Fwd: sv.cfg.Sorry.Fwd, Weight: 1}
	nd, err := s.newDest(sv, d)
	if err != nil {
		return err
	}
	sv.sorry = nd
	s.reschedule(sv)
	return nil
}

// checkOf is the check that applies to d: its own, else its service's.
func checkOf(sv *service, d *dest) config.Check {
	c := sv.cfg.Check
	if d.cfg.Check.Type != "" {
		c = d.cfg.Check
	}
	return c
}

// HealthTargets lists every real with a health check, and how to check
// it, for health.Monitor.Set.
func (s *Server) HealthTargets() map[health.Key]health.Target {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[health.Key]health.Target{}
	for k, sv := range s.services {
		for _, d := range sv.dests {
			c := checkOf(sv, d)
			if !c.Enabled() {
				continue
			}
			port := d.cfg.Port
			if c.Port != 0 {
				port = c.Port
			}
			if port == 0 {
				port = k.Port
			}
			out[health.Key{Service: k, Real: d.cfg.AddrPort()}] = health.Target{
				Addr: netip.AddrPortFrom(d.cfg.Addr, port), Check: c.WithDefaults()}
		}
	}
	return out
}

// Healthy reports whether a real is up as far as its check goes (true
// for an unknown or unchecked real): where a restarted check starts.
func (s *Server) Healthy(k health.Key) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sv, ok := s.services[k.Service]; ok {
		if _, d := sv.findDest(k.Real.Addr(), k.Real.Port()); d != nil {
			return !d.down
		}
	}
	return true
}

// SetHealth records a health transition of a real: a failing real is
// quiesced (weight 0) or removed from scheduling per its service's
// on-failure, its persistence templates end, and while no real of the
// service is up the sorry server takes new flows. Established
// connections are not touched. Logged once per transition.
func (s *Server) SetHealth(k health.Key, up bool, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sv, ok := s.services[k.Service]
	if !ok {
		return
	}
	_, d := sv.findDest(k.Real.Addr(), k.Real.Port())
	if d == nil || d.down == !up {
		return
	}
	wasUp := sv.anyUp()
	s.catchUp(sv)
	d.down, d.reason, d.since = !up, reason, time.Now()
	d.sd.Weight = d.weight()
	// The picks first, so that XDP makes no new template for d.
	s.reschedule(sv)
	if !up {
		s.endTemplates(sv, func(t *dest) bool { return t == d })
	}
	if sv.sorry != nil && !wasUp && sv.anyUp() {
		// A real is back: the sorry server's clients move on.
		s.endTemplates(sv, func(t *dest) bool { return t == sv.sorry })
	}
	action := sv.cfg.OnFailure
	if action == "" {
		action = config.OnFailureQuiesce
	}
	if up {
		s.log.Info("real server healthy", "service", k.Service.String(), "real", k.Real.String(), "weight", d.cfg.Weight)
	} else {
		s.log.Warn("real server failed its check", "service", k.Service.String(), "real", k.Real.String(),
			"reason", reason, "action", action)
	}
	if sv.sorry != nil && wasUp != sv.anyUp() {
		if wasUp {
			s.log.Warn("every real server is down: the sorry server takes new flows", "service", k.Service.String(),
				"sorry", sv.cfg.Sorry.Addr.String())
		} else {
			s.log.Info("a real server is back: the sorry server stops taking new flows", "service", k.Service.String())
		}
	}
}

// HealthStatus is a real's health as listings show it.
type HealthStatus struct {
	Checked bool      `json:"checked"`
	Up      bool      `json:"up"`
	Reason  string    `json:"reason,omitempty"`
	Since   time.Time `json:"since,omitzero"`
}

func (s *Server) healthOf(sv *service, d *dest) HealthStatus {
	return HealthStatus{Checked: checkOf(sv, d).Enabled(), Up: !d.down, Reason: d.reason, Since: d.since}
}
