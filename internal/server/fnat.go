package server

// fnat.go: FULLNAT new flows in XDP. A service with FULLNAT reals and
// local addresses gets a ring (dataplane FillRing): slots the server
// fills with local ports taken from its pools ahead of need, one of
// which XDP takes for each new FULLNAT connection it opens itself
// (bpf/picks.h fnat_claim, an atomic exchange: no port goes twice). A
// port in a slot is taken in its pool like any other, and freed the same
// way: by the sweep when its connection expires, or by the reclaim walk
// when no entry holds it (reclaimPorts keeps the ports sitting in
// slots). The ring is refilled after every slow-path batch that drew on
// its service (XDP ran dry), at every sweep and at every change; drained
// (its ports freed) when the service loses its FULLNAT reals, a local
// address or itself, and at a restart (rebuildPools).

import (
	"net/netip"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/dataplane"
)

// wantsRing reports whether sv's FULLNAT flows may be opened in XDP: a
// FULLNAT real and a local address of the VIP's family.
func (sv *service) wantsRing() bool {
	fnat := sv.sorry != nil && sv.sorry.cfg.Fwd == config.FwdFullNAT
	for _, d := range sv.dests {
		fnat = fnat || d.cfg.Fwd == config.FwdFullNAT
	}
	if !fnat {
		return false
	}
	for _, a := range sv.laddrs {
		if a.Is6() == sv.cfg.IsV6() {
			return true
		}
	}
	return false
}

// ringProtos are the protocols sv's ring holds ports of.
func (sv *service) ringProtos() []uint8 {
	switch {
	case sv.cfg.FWMark != 0:
		return []uint8{6, 17}
	case sv.cfg.Proto == config.UDP:
		return []uint8{17}
	default:
		return []uint8{6}
	}
}

// syncRing gives sv a ring, fills it, or drains and frees it, as sv is
// now; s.mu is held. The service's data plane flags follow (syncFlags).
func (s *Server) syncRing(sv *service) {
	want := sv.wantsRing()
	if !want {
		if sv.ring != 0 {
			s.dropRing(sv)
		}
		return
	}
	if sv.ring == 0 {
		if s.rings == nil {
			s.rings = make([]*service, s.opts.Dataplane.FNATRings())
		}
		for r := 1; r < len(s.rings); r++ {
			if s.rings[r] == nil {
				s.rings[r], sv.ring = sv, uint32(r)
				break
			}
		}
		if sv.ring == 0 {
			s.log.Warn("no FULLNAT ring left: the service's new FULLNAT connections go to the slow path", "service", sv.cfg.ServiceKey.String(), "rings", len(s.rings)-1)
			return
		}
	}
	s.fillRing(sv)
}

// fillRing fills sv's ring from its local addresses' pools; s.mu is held.
func (s *Server) fillRing(sv *service) {
	is6 := sv.cfg.IsV6()
	family := func(a netip.Addr) bool { return a.Is6() == is6 }
	for _, proto := range sv.ringProtos() {
		_, err := s.opts.Dataplane.FillRing(sv.ring, proto, func() (dataplane.LocalSlot, bool) {
			a, port, ok := s.takeLocal(sv, proto, family)
			if !ok {
				return dataplane.LocalSlot{}, false
			}
			id := s.laddrID(a)
			if id == 0 {
				s.pool(a, proto).release(port)
				return dataplane.LocalSlot{}, false
			}
			return dataplane.LocalSlot{AddrID: id, Port: port}, true
		})
		if err != nil {
			s.log.Warn("filling a FULLNAT ring: new FULLNAT connections go to the slow path", "service", sv.cfg.ServiceKey.String(), "err", err)
			return
		}
	}
}

// laddrID names local address a for the rings (0: no id left).
func (s *Server) laddrID(a netip.Addr) uint32 {
	if id, ok := s.laddrIDs[a]; ok {
		return id
	}
	id := uint32(len(s.laddrIDs) + 1)
	if id >= s.opts.Dataplane.MaxLocalAddrs() {
		return 0
	}
	if err := s.opts.Dataplane.SetLocalAddr(id, a); err != nil {
		s.log.Warn("naming a FULLNAT local address", "laddr", a, "err", err)
		return 0
	}
	s.laddrIDs[a], s.laddrOf[id] = id, a
	return id
}

// dropRing drains sv's ring, frees the ports that were in it (XDP can no
// longer take them) and the ring; s.mu is held.
func (s *Server) dropRing(sv *service) {
	ring := sv.ring
	sv.ring = 0
	s.rings[ring] = nil
	left, err := s.opts.Dataplane.DrainRing(ring)
	if err != nil {
		s.log.Warn("draining a FULLNAT ring; its ports are freed by the next reclaim", "service", sv.cfg.ServiceKey.String(), "err", err)
	}
	for proto, slots := range left {
		for _, sl := range slots {
			if a, ok := s.laddrOf[sl.AddrID]; ok {
				s.pool(a, proto).release(sl.Port)
			}
		}
	}
}

// drainAllRings empties every ring a previous xipvsd left (its ports are
// in no connection) and waits for any XDP run that took one before to be
// done with writing its connection, so that the walk that follows sees
// it (rebuildPools).
func (s *Server) drainAllRings() {
	for r := 1; r < s.opts.Dataplane.FNATRings(); r++ {
		if _, err := s.opts.Dataplane.DrainRing(uint32(r)); err != nil {
			s.log.Warn("draining the FULLNAT rings", "err", err)
			return
		}
	}
	time.Sleep(10 * time.Millisecond)
}

// ringPorts marks the ports sitting in the rings in each pool's bitmap
// of fresh (to be kept) ports, for reclaimPorts; s.mu is held.
func (s *Server) ringPorts() {
	err := s.opts.Dataplane.RingPorts(func(_ uint32, proto uint8, sl dataplane.LocalSlot) {
		if a, ok := s.laddrOf[sl.AddrID]; ok {
			if p := s.pools[poolKey{a, proto}]; p != nil && p.fresh != nil {
				p.fresh[sl.Port/64] |= 1 << (sl.Port % 64)
			}
		}
	})
	if err != nil {
		s.log.Warn("reading the FULLNAT rings", "err", err)
	}
}
