package server

// picks.go: the pick cycles XDP schedules rr and wrr services' new flows
// from (dataplane SetPicks). The scheduler computes one period of its
// picks; XDP takes the n-th new flow to cycle[n % len]. Before any change
// to a service's reals, the scheduler is moved on by the picks XDP made
// (catchUp), so that the next cycle starts where XDP left off, as the
// kernel's rr and wrr go on from their cursor.

import (
	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/sched"
)

// fastPicks is a service's cycle as installed in XDP.
type fastPicks struct {
	cycle []*sched.Dest
	// done is how many of the cycle's picks the scheduler has been
	// moved on by.
	done uint64
}

// catchUp moves sv's scheduler on by the picks XDP made from its cycle
// since the last catch-up; s.mu is held. Call it before changing what
// the scheduler sees.
func (s *Server) catchUp(sv *service) {
	if sv.fast == nil {
		return
	}
	used, err := s.opts.Dataplane.PickCursor(sv.id)
	if err != nil {
		s.log.Warn("reading the XDP pick cursor", "service", sv.cfg.ServiceKey.String(), "err", err)
		return
	}
	if used <= sv.fast.done {
		return
	}
	n := (used - sv.fast.done) % uint64(len(sv.fast.cycle))
	for i := uint64(0); i < n; i++ {
		sv.sched.Schedule(sched.Flow{})
	}
	sv.fast.done = used
}

// reschedule gives sv's scheduler its current reals and installs the
// scheduler's cycle in XDP, or leaves the service's new flows to the slow
// path when it has none; s.mu is held, catchUp was called before the
// change.
func (s *Server) reschedule(sv *service) {
	sv.sched.Update(sv.schedDests())
	s.syncPicks(sv)
	s.syncFlags(sv)
}

// syncPicks installs or clears sv's pick cycle; s.mu is held.
func (s *Server) syncPicks(sv *service) {
	var cycle []*sched.Dest
	if c, ok := sv.sched.(sched.Cycler); ok && s.cyclable(sv) {
		cycle = c.Cycle(dataplane.MaxPickCycle)
	}
	if cycle == nil {
		if sv.fast != nil {
			if _, err := s.opts.Dataplane.ClearPicks(sv.id); err != nil {
				s.log.Warn("clearing the XDP pick cycle", "service", sv.cfg.ServiceKey.String(), "err", err)
			}
			sv.fast = nil
		}
		return
	}
	ids := make([]uint32, len(cycle))
	for i, d := range cycle {
		ids[i] = d.ID
	}
	if _, err := s.opts.Dataplane.SetPicks(sv.id, ids); err != nil {
		s.log.Warn("installing the XDP pick cycle; the service's new flows go to the slow path", "service", sv.cfg.ServiceKey.String(), "err", err)
		sv.fast = nil
		_, _ = s.opts.Dataplane.ClearPicks(sv.id)
		return
	}
	sv.fast = &fastPicks{cycle: cycle}
}

// cyclable reports whether XDP may schedule sv's new flows from a cycle:
// not persistent (templates live in Go), no FULLNAT real (local ports are
// Go's) and no connection thresholds (they follow connection counts).
func (s *Server) cyclable(sv *service) bool {
	if sv.cfg.Persistent {
		return false
	}
	for _, sd := range sv.schedDests() {
		d := s.reals[sd.ID]
		if d == nil || d.cfg.Fwd == config.FwdFullNAT || d.cfg.UThreshold != 0 || d.cfg.LThreshold != 0 {
			return false
		}
	}
	return true
}

// dropStalePicks clears the pick cycles of services the server does not
// have (left by a previous run); s.mu is held.
func (s *Server) dropStalePicks() error {
	ids, err := s.opts.Dataplane.PickServices()
	if err != nil {
		return err
	}
	for _, id := range ids {
		if sv := s.byID[id]; sv == nil || sv.fast == nil {
			if _, err := s.opts.Dataplane.ClearPicks(id); err != nil {
				return err
			}
		}
	}
	return nil
}
