package server

// local.go: lblc's entries in XDP. An lblc service sends each destination
// address to the real its entry names while that real may keep it
// (ip_vs_lblc_schedule's hit), and otherwise schedules by wlc and makes
// the entry anew. XDP takes the hits: the server writes every entry of
// Go's table into the data plane's template map (a port-zero template
// of the service keyed by the address, dataplane.LocalEntry) and marks
// the reals that may keep their addresses (dataplane.Real.LocalOK, from
// sched.Locality.LocalUsable: weight and active connections, refreshed
// at every change and recount). A miss or a real that may not keep its
// address goes to the slow path, where Go's lblc decides and the entry
// it makes is written back. The data plane renews an entry's last use;
// the sweep brings those uses into Go's table before its garbage
// collection, and makes the data plane's entries Go's again.

import (
	"net/netip"
	"time"

	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/sched"
)

// localOf returns sv's lblc or lblcr table when XDP may serve its
// entries: not persistent (a template decides first) and no FULLNAT real
// without a ring (cyclable).
func (s *Server) localOf(sv *service) (sched.Locality, bool) {
	loc, ok := sv.sched.(sched.Locality)
	if !ok || sv.cfg.Persistent || !s.cyclable(sv) {
		return nil, false
	}
	return loc, true
}

// syncLocal starts or stops serving sv's lblc entries in XDP and marks
// the reals that may keep their addresses; s.mu is held.
func (s *Server) syncLocal(sv *service) {
	loc, ok := s.localOf(sv)
	if sv.local && !ok {
		sv.local = false
		s.endTemplates(sv, nil) // its entries
	}
	if ok && !sv.local {
		sv.local = true
		loc.LocalEntries(func(a netip.Addr, d *sched.Dest, lastuse time.Duration) {
			s.writeLocal(sv, a, d, lastuse)
		})
	}
	for _, d := range sv.dests {
		usable := sv.local && loc.LocalUsable(d.sd)
		if usable == d.localOK {
			continue
		}
		d.localOK = usable
		if err := s.writeReal(d); err != nil {
			s.log.Warn("marking an lblc real", "service", sv.cfg.ServiceKey.String(), "real", d.cfg.Addr, "err", err)
		}
	}
}

// writeLocal writes sv's entry for destination address a (nil d: none).
func (s *Server) writeLocal(sv *service, a netip.Addr, d *sched.Dest, lastuse time.Duration) {
	t := dataplane.LocalEntry(sv.id, a)
	var err error
	if d == nil {
		err = s.opts.Dataplane.DeleteTemplate(t)
	} else {
		err = s.opts.Dataplane.SetTemplate(t, dataplane.TemplateUse{RealID: d.ID, LastUsed: lastuse})
	}
	if err != nil {
		s.log.Warn("writing an lblc entry; its address's flows go to the slow path", "service", sv.cfg.ServiceKey.String(), "addr", a, "err", err)
	}
}

// localScheduled writes the entry Go's lblc made or kept for a flow to
// destination a the slow path scheduled at now; s.mu is held.
func (s *Server) localScheduled(sv *service, a netip.Addr, now time.Duration) {
	d, _ := sv.sched.(sched.Locality).LocalEntry(a)
	s.writeLocal(sv, a, d, now)
}

// ageLocal gives sv's lblc table the last uses XDP made of its entries
// (uses: the data plane's entries of sv) and the entries a restarted
// xipvsd finds there, runs its garbage collection, and makes the data
// plane's entries what Go's table holds; s.mu is held.
func (s *Server) ageLocal(sv *service, uses map[netip.Addr]dataplane.TemplateUse, now time.Duration) {
	loc := sv.sched.(sched.Locality)
	for a, u := range uses {
		d, ok := loc.LocalEntry(a)
		if !ok {
			// Kept in the pinned map across a restart of xipvsd: the
			// entry goes on, if its real is still the service's.
			if r := s.reals[u.RealID]; r != nil && r.svc == sv {
				loc.AdoptLocal(a, r.sd, u.LastUsed)
			}
			continue
		}
		if d.ID == u.RealID {
			loc.LocalUsed(a, u.LastUsed)
		}
	}
	loc.CollectLocal(now)
	for a, u := range uses {
		if d, ok := loc.LocalEntry(a); !ok || d.ID != u.RealID {
			s.writeLocal(sv, a, nil, 0)
		}
	}
	loc.LocalEntries(func(a netip.Addr, d *sched.Dest, lastuse time.Duration) {
		if u, ok := uses[a]; !ok || u.RealID != d.ID {
			s.writeLocal(sv, a, d, lastuse)
		}
	})
}
