package server

// sweep.go: aging connections, recounting ActiveConn/InActConn and
// expiring persistence templates (ip_vs_conn.c's expiry timers). The pass
// over the connection table runs in the kernel (dataplane Sweep); the
// server gives it the timeouts and persistent services and applies what
// it found: freed FULLNAT ports, counts per real, live templates.

import (
	"context"
	"net/netip"
	"time"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/sched"
)

// orphanReplyAge is how long a reply entry without its forward entry is
// kept (a new connection writes the reply entry just before the forward
// one).
const orphanReplyAge = 10 * time.Second

// fullSweepEvery is how often a sweep walks the established tables too,
// when they age by the deadline index: the safety net that counts the
// entries Go wrote (a sync backup's) and ends what the index missed. At
// ten million connections a full pass costs a few seconds of CPU: about
// 1% of a core at this period.
const fullSweepEvery = 10 * time.Minute

// Sweep expires idle connections, recounts ActiveConn/InActConn per real
// from the connection table, clears overload flags as connections go
// (ip_vs_unbind_dest) and ages persistence templates.
func (s *Server) Sweep() error {
	args := s.beginSweep()
	start := time.Now()
	res, err := s.opts.Dataplane.Sweep(args)
	if err != nil {
		return err
	}
	if args.Full {
		s.log.Info("full connection sweep", "entries", res.Seen, "ended", res.Expired, "took", time.Since(start).Round(time.Millisecond))
	}
	s.finishSweep(args, res)
	s.reclaimPorts()
	return nil
}

// beginSweep gathers what the sweep needs of the configuration.
func (s *Server) beginSweep() dataplane.SweepArgs {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := dataplane.SweepArgs{Timeouts: s.timeouts, OrphanAge: orphanReplyAge, Persistent: map[uint32]dataplane.SweepPersist{}}
	for id, sv := range s.byID {
		if sv.cfg.Persistent {
			a.Persistent[id] = dataplane.SweepPersist{MaskBits: sv.cfg.Netmask.Bits(), PortZero: sv.portZeroTemplates()}
		}
	}
	a.Now = s.opts.Now()
	if s.nextFull == 0 || a.Now >= s.nextFull {
		a.Full, s.nextFull = true, a.Now+fullSweepEvery
	}
	if s.dropStale {
		a.DropStale, a.Reals = true, make(map[uint32]bool, len(s.reals))
		for id := range s.reals {
			a.Reals[id] = true
		}
	}
	// The connections XDP bound before the walk are in its counts, but
	// one that reached a threshold overloaded its real (ip_vs_bind_dest),
	// which the recount clears only under the lower one: counted now.
	for _, sv := range s.byID {
		if sv.roomed() {
			s.catchUp(sv)
		}
	}
	return a
}

// finishSweep gives the server what the sweep found: freed local ports,
// connection counts per real (clearing overload flags) and template ages.
func (s *Server) finishSweep(a dataplane.SweepArgs, res dataplane.SweepResult) {
	owned := map[uint32]map[tmplKey]bool{}
	for _, t := range res.Owned {
		if owned[t.ServiceID] == nil {
			owned[t.ServiceID] = map[tmplKey]bool{}
		}
		owned[t.ServiceID][tmplKey{client: t.Client, vport: t.VPort}] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if a.DropStale {
		s.dropStale = false
	}
	for _, p := range res.Released {
		if pool := s.pools[poolKey{p.Addr, p.Proto}]; pool != nil {
			pool.release(p.Port)
		}
	}
	for _, sv := range s.byID {
		if sv.ring != 0 {
			s.fillRing(sv) // the ports XDP took since, with those freed
		}
	}
	// The picks XDP made from lookaheads since they were last counted:
	// the table's counts replace what they add, but a pick that reached
	// an upper threshold overloaded its real (ip_vs_bind_dest), which
	// the recount clears only below the lower one.
	// So are the picks XDP made from a cycle of a service with
	// thresholds, before the recount changes the flags they were made
	// under.
	for _, sv := range s.byID {
		if sv.fast != nil && (sv.fast.lookahead || sv.roomed()) {
			s.catchUp(sv)
		}
	}
	changed := s.recount(res.Counts)
	for sv := range changed {
		if sv.local {
			s.syncLocal(sv) // lblc's overload test reads active connections
		}
	}
	s.ageTemplates(a.Persistent, owned, a.Now)
	// Lookaheads start again from the table's counts, which hold the
	// connections XDP made from the last ones (those made since the walk
	// passed them are seen at the next sweep, as the slow path's): Go's
	// next pick is made from them. One whose counts did not move and
	// from which XDP took nothing since the catch-up above is what Go
	// would install again.
	for _, sv := range s.byID {
		roomed := sv.roomed()
		if roomed {
			s.syncRoom(sv)
		}
		if sv.fast == nil && changed[sv] {
			// No lookahead, as no real was available: one may be now
			// (a recount clears overload flags); likewise a cycle or
			// table of a service with thresholds.
			if _, ok := sv.sched.(sched.Lookaheader); (ok || roomed) && s.cyclable(sv) {
				s.syncPicks(sv)
			}
			continue
		}
		if sv.fast != nil && !sv.fast.lookahead && roomed && changed[sv] {
			// A real the recount took out of overload is picked again.
			s.syncPicks(sv)
			continue
		}
		if sv.fast == nil || !sv.fast.lookahead {
			continue
		}
		used, err := s.opts.Dataplane.PickCursor(sv.id)
		if err != nil || (used == sv.fast.done && !changed[sv]) {
			continue
		}
		sv.fast.done = used
		s.syncPicks(sv)
	}
}

// recount sets every real's ActiveConn/InActConn from counts and clears
// its overload flag once under its threshold (ip_vs_unbind_dest), and
// returns the services whose reals changed; s.mu is held.
func (s *Server) recount(counts map[uint32]conntrack.Counts) map[*service]bool {
	svcs := map[*service]bool{}
	for id, d := range s.reals {
		c := counts[id]
		changed := d.sd.ActiveConns != c.Active || d.sd.InactConns != c.Inactive
		d.sd.ActiveConns, d.sd.InactConns = c.Active, c.Inactive
		if d.sd.Overloaded && underThreshold(d) {
			d.sd.Overloaded = false
			changed = true
		}
		if changed {
			d.svc.sched.Changed(d.sd)
			svcs[d.svc] = true
		}
	}
	return svcs
}

// ageTemplates expires a template whose timeout has run out and that
// controls no connection; one that still does is re-armed for another
// timeout, as ip_vs_conn_expire does. Only the services the sweep was
// run for are aged. s.mu is held.
func (s *Server) ageTemplates(swept map[uint32]dataplane.SweepPersist, owned map[uint32]map[tmplKey]bool, now time.Duration) {
	// The data plane's templates: those XDP made, and when XDP last
	// renewed any (a new connection followed it).
	uses := map[uint32]map[tmplKey]dataplane.TemplateUse{}
	locals := map[uint32]map[netip.Addr]dataplane.TemplateUse{}
	var stale []dataplane.Template
	err := s.opts.Dataplane.Templates(func(t dataplane.Template, u dataplane.TemplateUse) {
		if sv := s.byID[t.ServiceID]; sv != nil && sv.local {
			if locals[t.ServiceID] == nil {
				locals[t.ServiceID] = map[netip.Addr]dataplane.TemplateUse{}
			}
			locals[t.ServiceID][t.Client] = u // an lblc entry
			return
		}
		if sv := s.byID[t.ServiceID]; sv == nil || !sv.cfg.Persistent {
			stale = append(stale, t) // its service is gone or no longer persistent
			return
		}
		if uses[t.ServiceID] == nil {
			uses[t.ServiceID] = map[tmplKey]dataplane.TemplateUse{}
		}
		uses[t.ServiceID][tmplKey{client: t.Client, vport: t.VPort}] = u
	})
	if err != nil {
		s.log.Warn("reading the data plane's persistence templates", "err", err)
	}
	for _, t := range stale {
		_ = s.opts.Dataplane.DeleteTemplate(t)
	}
	for id, sv := range s.byID {
		if sv.local {
			s.ageLocal(sv, locals[id], now)
		}
	}
	for id := range swept {
		sv := s.byID[id]
		if sv == nil || !sv.cfg.Persistent {
			continue // deleted or changed meanwhile
		}
		timeout := time.Duration(sv.cfg.Timeout) * time.Second
		for k, u := range uses[id] {
			t := sv.templates[k]
			if t == nil {
				if t = s.adoptTemplate(sv, k, timeout); t == nil {
					continue
				}
			}
			if e := u.LastUsed + timeout; e > t.expires {
				t.expires = e
			}
		}
		for k, t := range sv.templates {
			if !s.templateGood(sv, t) {
				// Ended where IPVS would find it invalid; XDP may have
				// made it in the instant its real's state changed.
				delete(sv.templates, k)
				s.dropTemplate(sv, k)
				continue
			}
			if now < t.expires {
				continue
			}
			if owned[id][k] || uses[id][k].Controls > 0 {
				// A connection follows it: it lives (ip_vs_conn_expire
				// of a template with n_control).
				t.expires = now + timeout
				continue
			}
			delete(sv.templates, k)
			s.dropTemplate(sv, k)
		}
	}
}

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

// RunSweeper sweeps every interval until ctx ends. A sweep that takes
// more than half the interval (a table of millions of connections on a
// slow machine) stretches the wait to twice its time, so sweeping never
// takes more than half a core; the stretch is logged when it starts and
// ends.
func (s *Server) RunSweeper(ctx context.Context, interval time.Duration) {
	wait, stretched := interval, false
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		start := time.Now()
		if err := s.Sweep(); err != nil {
			s.log.Warn("connection sweep", "err", err)
		}
		took := time.Since(start)
		wait = max(interval, 2*took)
		if long := wait > interval; long != stretched {
			stretched = long
			s.log.Info("connection sweep interval", "interval", wait.Round(time.Millisecond), "sweep_took", took.Round(time.Millisecond))
		}
	}
}
