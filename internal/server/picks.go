package server

// picks.go: the picks XDP schedules new flows from (dataplane SetPicks).
// For rr, wrr and fo, the scheduler computes one period of its picks; XDP
// takes the n-th new flow to cycle[n % len]. Before any change to a
// service's reals, the scheduler is moved on by the picks XDP made
// (catchUp), so that the next cycle starts where XDP left off, as the
// kernel's rr and wrr go on from their cursor.
//
// For sh, dh and mh it is their table, each bucket holding what the
// scheduler gives every flow hashing there (sched.Hasher); XDP hashes the
// flow as the kernel does.
//
// For the least-connection family (lc, wlc, sed, nq), ovf and twos it is
// a lookahead: the picks the scheduler makes next with each counted as a
// new inactive connection, as this server counts the slow path's picks,
// up to where they repeat (sched.Lookaheader; twos's random picks never
// do: they use draws Go made ahead, sched.Consumer). XDP's picks are then
// exactly the ones Go would make for the same arrivals: the lookahead is
// computed again whenever Go's counts change otherwise, at every recount
// from the table (the sweep), every change to the service, and every
// slow-path pick of the service (XDP ran out of a lookahead that does not
// repeat), after the picks XDP made are counted.

import (
	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/sched"
)

// fastPicks is a service's pick sequence as installed in XDP.
type fastPicks struct {
	cycle []*sched.Dest
	// loop is where the sequence repeats from (0 for a cycle), or
	// dataplane.NoLoop.
	loop int
	// lookahead: the least-connection family's picks, each of which
	// counts (catchUp counts them; the scheduler is not moved).
	lookahead bool
	// hashed: a hashing scheduler's table (sh, dh, mh), no sequence:
	// nothing to catch up with.
	hashed bool
	// done is how many of the sequence's picks the scheduler has been
	// moved on by, or counted.
	done uint64
}

// counts returns how many of the sequence's picks from..to each real
// got, in time of the sequence's length however many picks that is (a
// SYN flood makes millions between two sweeps).
func (f *fastPicks) counts(from, to uint64) map[*sched.Dest]int {
	out := map[*sched.Dest]int{}
	n := uint64(len(f.cycle))
	for k := from; k < to && k < n; k++ {
		out[f.cycle[k]]++
	}
	start := max(from, n)
	if f.loop < 0 || start >= to {
		return out // past the end of one that does not repeat: none
	}
	l := uint64(f.loop)
	period := n - l
	full, rem := (to-start)/period, (to-start)%period
	if full > 0 {
		for _, d := range f.cycle[l:] {
			out[d] += int(full)
		}
	}
	off := (start - l) % period
	for j := uint64(0); j < rem; j++ {
		out[f.cycle[l+(off+j)%period]]++
	}
	return out
}

// catchUp moves sv's scheduler on by the picks XDP made from its
// sequence since the last catch-up, or counts them (a lookahead), and
// counts the other connections XDP bound to a real under a threshold
// (countXDP); s.mu is held. Call it before changing what the scheduler
// sees.
func (s *Server) catchUp(sv *service) {
	s.catchUpPicks(sv)
	s.countXDP(sv)
}

func (s *Server) catchUpPicks(sv *service) {
	if sv.fast == nil || sv.fast.hashed {
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
	if sv.fast.lookahead {
		s.countPicks(sv, sv.fast.done, used)
		sv.fast.done = used
		return
	}
	// A cycle's picks repeat, so whole cycles need not be replayed; but
	// the first whole one is, since it ends at a pick, where the
	// scheduler may not have started (at a real that was overloaded
	// then, or at the list's head): the picks repeat from there on, the
	// scheduler's position too.
	n, l := used-sv.fast.done, uint64(len(sv.fast.cycle))
	if n >= l {
		n = l + (n-l)%l
	}
	for i := uint64(0); i < n; i++ {
		sv.sched.Schedule(sched.Flow{})
	}
	sv.fast.done = used
}

// countPicks counts the lookahead's picks from..to as the slow path
// counts its own (one more inactive connection each: ip_vs_bind_dest);
// s.mu is held.
func (s *Server) countPicks(sv *service, from, to uint64) {
	if n := uint64(len(sv.fast.cycle)); sv.fast.loop < 0 && to > n {
		to = n // the rest went to the slow path, which counted them
	}
	if c, ok := sv.sched.(sched.Consumer); ok && to > from {
		c.Consumed(int(to - from))
	}
	for d, c := range sv.fast.counts(from, to) {
		d.InactConns += c
		if x := s.reals[d.ID]; x != nil {
			x.seqCounted += uint64(c) // not counted again by countXDP
		}
		if d.UThreshold != 0 && d.ActiveConns+d.InactConns >= d.UThreshold {
			d.Overloaded = true // ip_vs_bind_dest, as newFlow
		}
		sv.sched.Changed(d)
	}
}

// relook installs a fresh lookahead for sv after counting the picks XDP
// made from the last one, when sv schedules from one; s.mu is held.
func (s *Server) relook(sv *service) {
	if sv.fast == nil || !sv.fast.lookahead {
		return
	}
	s.catchUp(sv)
	s.syncPicks(sv)
}

// reschedule gives sv's scheduler its current reals and installs the
// scheduler's cycle in XDP, or leaves the service's new flows to the slow
// path when it has none; s.mu is held, catchUp was called before the
// change.
func (s *Server) reschedule(sv *service) {
	sv.sched.Update(sv.schedDests())
	s.syncRoom(sv)
	s.syncRing(sv)
	s.syncPicks(sv)
	s.syncLocal(sv)
	s.syncFlags(sv)
}

// hashKinds are the data plane's names of the schedulers' hashes.
var hashKinds = map[sched.HashKind]dataplane.PickKind{
	sched.HashSrc: dataplane.PickSH, sched.HashSrcPort: dataplane.PickSHPort, sched.HashDst: dataplane.PickDH,
	sched.HashMH: dataplane.PickMH, sched.HashMHPort: dataplane.PickMHPort,
}

// syncPicks installs or clears sv's pick sequence or table; s.mu is held.
func (s *Server) syncPicks(sv *service) {
	if h, ok := sv.sched.(sched.Hasher); ok && s.cyclable(sv) {
		kind, ids := sched.HashIDs(h, dataplane.PickUnavailable)
		if err := s.opts.Dataplane.SetHashPicks(sv.id, hashKinds[kind], ids); err != nil {
			s.log.Warn("installing the XDP hash table; the service's new flows go to the slow path", "service", sv.cfg.ServiceKey.String(), "err", err)
			sv.fast = nil
			_, _ = s.opts.Dataplane.ClearPicks(sv.id)
			return
		}
		sv.fast = &fastPicks{hashed: true}
		return
	}
	var cycle []*sched.Dest
	loop, lookahead := 0, false
	if c, ok := sv.sched.(sched.Cycler); ok && s.cyclable(sv) {
		cycle = c.Cycle(dataplane.MaxPickCycle)
	} else if la, ok := sv.sched.(sched.Lookaheader); ok && s.cyclable(sv) {
		cycle, loop = la.Lookahead(dataplane.MaxPickCycle)
		lookahead = true
		if loop < 0 {
			loop = dataplane.NoLoop
		}
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
	if _, err := s.opts.Dataplane.SetPicks(sv.id, ids, loop); err != nil {
		s.log.Warn("installing the XDP pick sequence; the service's new flows go to the slow path", "service", sv.cfg.ServiceKey.String(), "err", err)
		sv.fast = nil
		_, _ = s.opts.Dataplane.ClearPicks(sv.id)
		return
	}
	sv.fast = &fastPicks{cycle: cycle, loop: loop, lookahead: lookahead}
}

// cyclable reports whether XDP may schedule sv's new flows from a pick
// sequence or table: FULLNAT reals only with a ring of local ports, and
// not a service the daemon was told Go schedules (GoSchedules). A
// real under an upper threshold takes room for each pick (room.go).
// A persistent service's picks go to the clients XDP makes templates for
// (bpf/picks.h pick_persistent).
func (s *Server) cyclable(sv *service) bool {
	for _, ap := range s.opts.GoSchedules {
		if sv.cfg.FWMark == 0 && ap.Addr() == sv.cfg.Addr && ap.Port() == sv.cfg.Port {
			return false
		}
	}
	for _, sd := range sv.schedDests() {
		d := s.reals[sd.ID]
		if d == nil || (d.cfg.Fwd == config.FwdFullNAT && sv.ring == 0) {
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
