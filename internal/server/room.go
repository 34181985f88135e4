package server

// room.go: upper thresholds (-x) where XDP schedules new flows. IPVS
// binds a connection to a real (ip_vs_bind_dest) and marks it overloaded
// when its connections reach the threshold; the schedulers skip it until
// the count falls under the lower threshold. XDP's picks come from a
// sequence or a table Go computed ahead, and a real may reach its
// threshold between two of Go's computations; so each real under a
// threshold has a room in the data plane (dataplane SetRoom): how many
// more connections it may be given. XDP takes one for each connection it
// binds there, and a pick whose real has none left goes to Go. Go then
// counts the connections XDP bound (RealPicks), finds the real
// overloaded as IPVS would, schedules the flow without it, and installs
// picks without it. The room is stored again at every recount from the
// table, and Go takes one for each connection it binds itself.
//
// A lookahead (lc, wlc, sed, nq, ovf) already stops at the pick that
// reaches a threshold, and Go counts its picks from the sequence; the
// room matters there for connections that follow a template or an lblc
// entry, which the lookahead does not hold.

import (
	"github.com/xipvs/xipvs/dataplane"
)

// roomed reports whether one of sv's reals has an upper threshold.
func (sv *service) roomed() bool {
	for _, d := range sv.dests {
		if d.cfg.UThreshold != 0 {
			return true
		}
	}
	return false
}

// room is d's room under its upper threshold as Go counts it: the
// connections that take it to the threshold, the last of which overloads
// it (ip_vs_bind_dest); at least that one while it is not overloaded,
// as IPVS marks a real only when it binds a connection, however far a
// recount found it over.
func (d *dest) room() int64 {
	u := d.cfg.UThreshold
	if u == 0 {
		return dataplane.RoomUnlimited
	}
	if d.sd.Overloaded {
		return 0
	}
	return max(int64(u)-int64(d.sd.ActiveConns+d.sd.InactConns), 1)
}

// syncRoom stores the room of sv's reals from Go's counts; s.mu is held.
func (s *Server) syncRoom(sv *service) {
	if !sv.roomed() {
		return
	}
	for _, d := range sv.dests {
		if err := s.opts.Dataplane.SetRoom(d.realID, d.room()); err != nil {
			s.log.Warn("setting a real's room under its threshold", "real", d.cfg.Addr.String(), "err", err)
		}
	}
}

// countXDP counts the connections XDP bound to a roomed service's reals
// since they were last counted, as the slow path counts its own (one
// more inactive connection each, overloading a real that reaches its
// threshold), less those counted from a lookahead's sequence (catchUp,
// which runs first): what is left followed a template or an lblc entry.
// s.mu is held.
func (s *Server) countXDP(sv *service) {
	if !sv.roomed() {
		return
	}
	for _, d := range sv.dests {
		n, err := s.opts.Dataplane.RealPicks(d.realID)
		if err != nil {
			continue
		}
		seen := d.xdpSeen + d.seqCounted
		d.xdpSeen, d.seqCounted = n, 0
		if n <= seen {
			continue
		}
		d.sd.InactConns += int(n - seen)
		if u := d.cfg.UThreshold; u != 0 && uint32(d.sd.ActiveConns+d.sd.InactConns) >= u {
			d.sd.Overloaded = true // ip_vs_bind_dest
		}
		sv.sched.Changed(d.sd)
	}
}
