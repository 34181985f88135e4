package server

// dest.go: real servers (ipvsadm -a, -e, -d): their routes, real ids and
// reals-map entries (ip_vs_ctl.c's destination half, ip_vs_bind_dest).

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/neigh"
	"github.com/xipvs/xipvs/sched"
)

type dest struct {
	cfg    config.Dest
	svc    *service
	realID uint32
	hop    neigh.NextHop
	sd     *sched.Dest
	// conns counts connections scheduled to d (its traffic counters
	// are the data plane's); est estimates its rates.
	conns uint64
	est   conntrack.Estimator
	// down is set while the real fails its health check; reason and
	// since describe the last transition.
	down   bool
	reason string
	since  time.Time
	// localOK: an lblc real that may keep its destination addresses
	// (local.go), as written to the data plane.
	localOK bool
	// xdpSeen is how many connections XDP had bound to d when Go last
	// counted them, and seqCounted how many Go counted since from a
	// lookahead's sequence (room.go).
	xdpSeen, seqCounted uint64
}

// weight is what the scheduler sees: the configured weight, or 0 while
// the real fails its health check.
func (d *dest) weight() int {
	if d.down {
		return 0
	}
	return d.cfg.Weight
}

// via is the address whose MAC the data plane sends d's packets to.
func (d *dest) via() netip.Addr { return d.hop.Via(d.cfg.Addr) }

// dpFwd is the data plane's code for a forwarding method.
func dpFwd(f config.Fwd) dataplane.Fwd { return dataplane.Fwd(f.Method().Code) }

// real is d as the data plane's reals map holds it.
func (d *dest) real(mac net.HardwareAddr) dataplane.Real {
	return dataplane.Real{Addr: d.cfg.Addr, Ifindex: d.hop.Ifindex, MAC: mac, Fwd: dpFwd(d.cfg.Fwd),
		MTU: d.hop.MTU, TunnelSrc: d.hop.Src, Port: d.cfg.Port, LocalOK: d.localOK}
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

// expireConns deletes the connections of the given real ids: a deleted
// real's connections are expired, as IPVS does with expire_nodest_conn=1,
// so an id is never reused while connections still name it. In a batch
// the walk waits for the end of it (every caller then releases the reals,
// which the batch records).
func (s *Server) expireConns(ids map[uint32]bool) error {
	if len(ids) == 0 || s.batch != nil {
		return nil
	}
	type entry struct {
		k dataplane.ConnKey
		c dataplane.Conn
	}
	var doomed []entry
	err := s.opts.Dataplane.WalkConns(func(k dataplane.ConnKey, c dataplane.Conn) bool {
		if ids[c.RealID] {
			doomed = append(doomed, entry{k, c})
		}
		return true
	})
	if err != nil {
		return err
	}
	for _, e := range doomed {
		if err := s.opts.Dataplane.DeleteConn(e.k); err != nil {
			return err
		}
		s.releaseLocal(e.k, e.c)
	}
	return nil
}

func (s *Server) releaseDest(d *dest) {
	if err := s.opts.Dataplane.DeleteReal(d.realID); err != nil {
		s.log.Warn("delete real", "id", d.realID, "err", err)
	}
	delete(s.reals, d.realID)
	if d.svc != nil && (d.svc.cfg.Persistent || d.svc.local) {
		// No template (or lblc entry) may name the id once it is free
		// for another real.
		s.endTemplates(d.svc, func(t *dest) bool { return t == d })
	}
	if s.batch != nil {
		// Its connections are expired at the end of the batch; the id
		// is free after that.
		s.batch.doomed[d.realID] = d
	} else {
		s.freeReals = append(s.freeReals, d.realID)
	}
	if !s.viaInUse(d.via()) && s.opts.Neighbors != nil {
		s.opts.Neighbors.Unwatch(d.via())
	}
}

func (s *Server) viaInUse(a netip.Addr) bool {
	for _, d := range s.reals {
		if d.via() == a {
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

// route finds how the director reaches real d: direct routing needs it
// on-link; TUN, NAT and FULLNAT reals may sit behind a router, and TUN
// needs a source address for the outer header. The egress must be a
// director interface.
func (s *Server) route(d config.Dest) (neigh.NextHop, error) {
	hop, err := s.opts.Route(d.Addr)
	if err != nil {
		return hop, fmt.Errorf("real server %v: %w", d.Addr, err)
	}
	return hop, checkHop(d, hop, s.directorIface)
}

// checkHop checks that d can be forwarded by its method over hop, from
// an interface the director serves.
func checkHop(d config.Dest, hop neigh.NextHop, director func(ifindex int) bool) error {
	if d.Fwd == config.FwdRoute && hop.Gateway.IsValid() {
		return fmt.Errorf("real server %v is reached via %v: direct routing (-g) needs it on the director's L2 segment; use -i, -m or -b",
			d.Addr, hop.Gateway)
	}
	if !director(hop.Ifindex) {
		return fmt.Errorf("real server %v is reached through interface %d, which this director does not serve (xipvsd -i)", d.Addr, hop.Ifindex)
	}
	if d.Fwd == config.FwdTunnel {
		if !hop.Src.IsValid() || hop.Src.Is4() != d.Addr.Is4() {
			return fmt.Errorf("real server %v: no %s source address on the route to it for the tunnel's outer header", d.Addr, family(d.Addr))
		}
		// IPv6 routers never fragment: a tunnel that cannot carry
		// IPv6's minimum MTU (1280) inside would lose packets.
		if d.Addr.Is6() && hop.MTU != 0 && hop.MTU < 1280+40 {
			return fmt.Errorf("real server %v: the route to it has MTU %d; an IPv6 tunnel needs at least 1320 (1280 inside)", d.Addr, hop.MTU)
		}
	}
	return nil
}

// addDest adds a real server to a service (ipvsadm -a).
func (s *Server) addDest(k config.ServiceKey, d config.Dest) error {
	if err := d.Validate(k); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.allowed(config.Command{Op: config.OpAddDest, Service: config.Service{ServiceKey: k}, Dest: d}); err != nil {
		return err
	}
	sv := s.services[k]
	if err := synProxyFits(sv.cfg, d.Fwd); err != nil {
		return err
	}
	s.catchUp(sv)
	nd, err := s.newDest(sv, d)
	if err != nil {
		return err
	}
	sv.dests = append([]*dest{nd}, sv.dests...) // list_add: to the front
	s.reschedule(sv)
	s.changed()
	s.logChange("real server added", "service", k.String(), "real", d.AddrPort().String(),
		"forward", d.Fwd.String(), "weight", d.Weight)
	return nil
}

// newDest routes d, gives it a real id and installs it with zeroed
// counters; s.mu is held. The caller puts it where it belongs.
func (s *Server) newDest(sv *service, d config.Dest) (*dest, error) {
	hop, err := s.route(d)
	if err != nil {
		return nil, err
	}
	if hop.Src.IsValid() && hop.Src == sv.cfg.Addr {
		// IPv6 source selection prefers the VIP (a /128 matches any
		// destination longer than the director's own /64 does): health
		// checks and tunnel headers would then leave from the VIP, and a
		// DR or TUN real, which holds the VIP, answers itself.
		s.log.Warn("the director's route to this real server has the VIP as its source address; add the VIP with preferred_lft 0 so that the kernel never picks it as a source (ip -6 addr add VIP/128 dev IFACE preferred_lft 0)",
			"service", sv.cfg.ServiceKey.String(), "real", d.Addr.String())
	}
	id, err := s.allocReal()
	if err != nil {
		return nil, err
	}
	nd, err := s.installDest(sv, d, id, hop)
	if err != nil {
		s.freeReals = append(s.freeReals, id)
		return nil, err
	}
	s.startDestStats(nd)
	return nd, nil
}

// installDest writes real id for d of sv into the data plane (with its
// MAC if the neighbour table has it, else resolution is started) and
// registers it; s.mu is held. The caller puts it in sv's list.
func (s *Server) installDest(sv *service, d config.Dest, id uint32, hop neigh.NextHop) (*dest, error) {
	nd := &dest{cfg: d, svc: sv, realID: id, hop: hop,
		sd: &sched.Dest{ID: id, Addr: d.Addr, Port: d.Port, Weight: d.Weight, LastWeight: d.Weight, UThreshold: int(d.UThreshold)}}
	if c := checkOf(sv, nd); c.Enabled() && c.StartDown {
		// keepalived's alpha: no flows before the first check passes.
		nd.down, nd.reason, nd.since = true, "not checked yet (start down)", time.Now()
		nd.sd.Weight = 0
	}
	if err := s.writeReal(nd); err != nil {
		return nil, err
	}
	s.reals[id] = nd
	// Connections XDP bound to the id before (an adopted real's): counted
	// in the table already.
	nd.xdpSeen, _ = s.opts.Dataplane.RealPicks(id)
	return nd, nil
}

// writeReal writes d's reals-map entry, with the next hop's MAC if the
// neighbour table has it; otherwise resolution starts and OnNeighbor
// fills it in. s.mu is held.
func (s *Server) writeReal(d *dest) error {
	var mac net.HardwareAddr
	if s.opts.Neighbors != nil {
		mac = s.opts.Neighbors.MAC(d.via())
	}
	if err := s.opts.Dataplane.SetReal(d.realID, d.real(mac)); err != nil {
		return err
	}
	if s.opts.Neighbors != nil && mac == nil {
		// Without holding mu: the answer may come back at once.
		via, ifindex := d.via(), d.hop.Ifindex
		go s.opts.Neighbors.Watch(via, ifindex)
	}
	return nil
}

// editDest changes a real server's settings (ipvsadm -e).
func (s *Server) editDest(k config.ServiceKey, d config.Dest) error {
	if err := d.Validate(k); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.allowed(config.Command{Op: config.OpEditDest, Service: config.Service{ServiceKey: k}, Dest: d}); err != nil {
		return err
	}
	sv := s.services[k]
	_, x := sv.findDest(d.Addr, d.Port)
	if err := synProxyFits(sv.cfg, d.Fwd); err != nil {
		return err
	}
	s.catchUp(sv)
	// __ip_vs_update_dest: last_weight keeps the latest non-zero weight;
	// removing or raising the upper threshold clears the overload flag.
	if d.Weight != 0 {
		x.sd.LastWeight = d.Weight
	}
	if d.UThreshold == 0 || d.UThreshold > x.cfg.UThreshold {
		x.sd.Overloaded = false
	}
	if d.Fwd != x.cfg.Fwd {
		// -e may change the forwarding method: new connections use the
		// new one; established ones keep their entries.
		hop, err := s.route(d)
		if err != nil {
			return err
		}
		old, oldHop := x.cfg, x.hop
		x.cfg, x.hop = d, hop
		if err := s.writeReal(x); err != nil {
			x.cfg, x.hop = old, oldHop
			return err
		}
	}
	x.cfg = d
	x.sd.Weight = x.weight()
	x.sd.UThreshold = int(d.UThreshold)
	s.reschedule(sv)
	if s.opts.ExpireQuiescentTemplate && d.Weight == 0 {
		// expire_quiescent_template: a quiesced real's clients move on.
		s.endTemplates(sv, func(t *dest) bool { return t == x })
	}
	s.changed()
	s.logChange("real server edited", "service", k.String(), "real", d.AddrPort().String(), "weight", d.Weight)
	return nil
}

// deleteDest removes a real server and expires its connections
// (ipvsadm -d).
func (s *Server) deleteDest(k config.ServiceKey, addr netip.Addr, port uint16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.allowed(config.Command{Op: config.OpDelDest, Service: config.Service{ServiceKey: k}, Dest: config.Dest{Addr: addr, Port: port}}); err != nil {
		return err
	}
	sv := s.services[k]
	i, x := sv.findDest(addr, port)
	s.catchUp(sv)
	sv.dests = slices.Delete(sv.dests, i, i+1)
	s.reschedule(sv)
	s.endTemplates(sv, func(d *dest) bool { return d == x })
	if err := s.expireConns(map[uint32]bool{x.realID: true}); err != nil {
		return err
	}
	s.retireDestLocked(x)
	s.releaseDest(x)
	s.changed()
	s.logChange("real server deleted", "service", k.String(), "real", netip.AddrPortFrom(addr, port).String())
	return nil
}

// OnNeighbor updates every real at addr with its new MAC.
func (s *Server) OnNeighbor(addr netip.Addr, ifindex int, mac net.HardwareAddr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, d := range s.reals {
		if d.via() != addr || d.hop.Ifindex != ifindex {
			continue
		}
		if err := s.opts.Dataplane.SetReal(id, d.real(mac)); err != nil {
			s.log.Warn("update real MAC", "real", d.cfg.Addr, "via", addr, "err", err)
		}
	}
	s.retrySynced(addr)
}

// family names a's address family as an error message does.
func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}
