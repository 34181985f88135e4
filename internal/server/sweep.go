package server

// sweep.go: aging connections, recounting ActiveConn/InActConn and
// expiring persistence templates (ip_vs_conn.c's expiry timers).

import (
	"context"
	"time"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
)

// orphanReplyAge is how long a reply entry without its forward entry is
// kept (a new connection writes the reply entry just before the forward
// one).
const orphanReplyAge = 10 * time.Second

// entry is one connection-table entry as a sweep read it.
type entry struct {
	k dataplane.ConnKey
	c dataplane.Conn
}

// sweep is one pass over the connection table. Its steps run in order;
// only begin and finish hold the server's lock, the rest reads and
// writes the data plane alone.
type sweep struct {
	now time.Duration
	to  conntrack.Timeouts
	// persistent are the persistent services by id, each with the
	// templates that still control a live connection.
	persistent map[uint32]*persistSweep
	counts     map[uint32]*conntrack.Counts // live connections per real id
	expired    []entry                      // idle past their timeout at walk time
	// paired are NAT and FULLNAT forward entries, judged with their
	// reply entries once the walk has seen both.
	paired   []entry
	replies  map[dataplane.ConnKey]dataplane.Conn
	owned    map[dataplane.ConnKey]bool // reply entries a forward entry points to
	releases []entry                    // deleted reply entries: their local ports go back
}

type persistSweep struct {
	sv    *service
	owned map[tmplKey]bool
}

// Sweep expires idle connections, recounts ActiveConn/InActConn per real
// from the connection table, clears overload flags as connections go
// (ip_vs_unbind_dest) and ages persistence templates.
func (s *Server) Sweep() error {
	sw := s.beginSweep()
	dp := s.opts.Dataplane
	if err := sw.walk(dp); err != nil {
		return err
	}
	sw.judgePairs()
	if err := sw.expire(dp); err != nil {
		return err
	}
	if err := sw.dropOrphans(dp); err != nil {
		return err
	}
	s.finishSweep(sw)
	return nil
}

// beginSweep takes what the sweep needs of the configuration.
func (s *Server) beginSweep() *sweep {
	s.mu.Lock()
	defer s.mu.Unlock()
	sw := &sweep{to: s.timeouts, persistent: map[uint32]*persistSweep{}, counts: map[uint32]*conntrack.Counts{},
		replies: map[dataplane.ConnKey]dataplane.Conn{}, owned: map[dataplane.ConnKey]bool{}}
	for id, sv := range s.byID {
		if sv.cfg.Persistent {
			sw.persistent[id] = &persistSweep{sv: sv, owned: map[tmplKey]bool{}}
		}
	}
	sw.now = s.opts.Now()
	return sw
}

// walk reads the table: DR and TUN entries are judged at once, NAT and
// FULLNAT pairs are set aside for judgePairs.
func (sw *sweep) walk(dp Dataplane) error {
	return dp.WalkConns(func(k dataplane.ConnKey, c dataplane.Conn) bool {
		switch {
		case c.Flags&dataplane.ConnReply != 0:
			sw.replies[k] = c
		case c.Rewrites():
			sw.paired = append(sw.paired, entry{k, c})
		default:
			sw.consider(k, c, c.LastSeen)
		}
		return true
	})
}

// consider expires a connection last seen at last, or counts it as live
// for its real and its persistence template.
func (sw *sweep) consider(k dataplane.ConnKey, c dataplane.Conn, last time.Duration) {
	if sw.to.Remaining(k.Proto, c.State, last, sw.now) <= 0 {
		sw.expired = append(sw.expired, entry{k, c})
		return
	}
	n := sw.counts[c.RealID]
	if n == nil {
		n = &conntrack.Counts{}
		sw.counts[c.RealID] = n
	}
	n.Add(k.Proto, c.State)
	if p := sw.persistent[c.ServiceID]; p != nil {
		p.owned[p.sv.templateKey(k.Src, k.DstPort)] = true
	}
}

// judgePairs judges each NAT or FULLNAT connection by the later of its
// two entries' last-seen times: it is idle only when both directions are.
func (sw *sweep) judgePairs() {
	for _, e := range sw.paired {
		last := e.c.LastSeen
		rk := e.c.Peer(e.k.Proto)
		if r, ok := sw.replies[rk]; ok && r.Peer(e.k.Proto) == e.k {
			sw.owned[rk] = true
			last = max(last, r.LastSeen)
		}
		sw.consider(e.k, e.c, last)
	}
}

// expire deletes the expired connections (with their reply entries),
// each re-read first: the slow path may have renewed it since the walk,
// and traffic may have refreshed it.
func (sw *sweep) expire(dp Dataplane) error {
	for _, e := range sw.expired {
		c, found, err := dp.LookupConn(e.k)
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
			if r, hasReply, err = dp.LookupConn(rk); err != nil {
				return err
			}
			hasReply = hasReply && r.Flags&dataplane.ConnReply != 0 && r.Peer(e.k.Proto) == e.k
			if hasReply {
				last = max(last, r.LastSeen)
			}
		}
		if sw.to.Remaining(e.k.Proto, c.State, last, sw.now) > 0 {
			continue
		}
		if err := dp.DeleteConn(e.k); err != nil {
			return err
		}
		if hasReply {
			if err := dp.DeleteConn(rk); err != nil {
				return err
			}
			sw.releases = append(sw.releases, entry{rk, r})
		}
	}
	return nil
}

// dropOrphans deletes reply entries no forward entry points to (their
// tuple was reused by a new connection, or the forward entry was
// evicted) once they have been idle for orphanReplyAge.
func (sw *sweep) dropOrphans(dp Dataplane) error {
	for rk, r := range sw.replies {
		if sw.owned[rk] || sw.now-r.LastSeen < orphanReplyAge {
			continue
		}
		if _, found, err := dp.LookupConn(r.Peer(rk.Proto)); err != nil {
			return err
		} else if found {
			continue // written since the walk
		}
		if err := dp.DeleteConn(rk); err != nil {
			return err
		}
		sw.releases = append(sw.releases, entry{rk, r})
	}
	return nil
}

// finishSweep gives the server what the sweep found: freed local ports,
// connection counts per real (clearing overload flags) and template ages.
func (s *Server) finishSweep(sw *sweep) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range sw.releases {
		s.releaseLocal(e.k, e.c)
	}
	s.recount(sw.counts)
	s.ageTemplates(sw.persistent, sw.now)
}

// recount sets every real's ActiveConn/InActConn from counts and clears
// its overload flag once under its threshold (ip_vs_unbind_dest); s.mu
// is held.
func (s *Server) recount(counts map[uint32]*conntrack.Counts) {
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
}

// ageTemplates expires a template whose timeout has run out and that
// controls no connection; one that still does is re-armed for another
// timeout, as ip_vs_conn_expire does. s.mu is held.
func (s *Server) ageTemplates(persistent map[uint32]*persistSweep, now time.Duration) {
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

// RunSweeper sweeps every interval until ctx ends.
func (s *Server) RunSweeper(ctx context.Context, interval time.Duration) {
	every(ctx, interval, func() {
		if err := s.Sweep(); err != nil {
			s.log.Warn("connection sweep", "err", err)
		}
	})
}
