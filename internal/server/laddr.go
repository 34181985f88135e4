package server

import (
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/dataplane"
)

// Local ports FULLNAT allocates on a local address. Below 1024 is left to
// privileged services; the pool is shared by every service that uses the
// local address, per protocol.
const (
	LocalPortMin = 1024
	LocalPortMax = 65535
)

// ErrNoLaddr and friends are the local-address errors (DPVS's wording).
var (
	ErrLaddrExists = config.ErrLaddrExists
	ErrNoLaddr     = config.ErrNoLaddr
)

type poolKey struct {
	addr  netip.Addr
	proto uint8
}

// portPool hands out the local ports of one (local address, protocol):
// next-fit over a bitmap, so a released port is reused last.
type portPool struct {
	used  [65536 / 64]uint64
	next  int
	inUse int
	// fresh are the ports taken while a reclaim walks the table (nil
	// otherwise): its walk may have passed their connections' entries
	// before they were written.
	fresh *[65536 / 64]uint64
}

func (p *portPool) isUsed(port uint16) bool { return p.used[port/64]&(1<<(port%64)) != 0 }

func (p *portPool) take(port uint16) bool {
	if p.isUsed(port) {
		return false
	}
	p.used[port/64] |= 1 << (port % 64)
	p.inUse++
	if p.fresh != nil {
		p.fresh[port/64] |= 1 << (port % 64)
	}
	return true
}

func (p *portPool) release(port uint16) {
	if p.isUsed(port) {
		p.used[port/64] &^= 1 << (port % 64)
		p.inUse--
	}
}

// alloc returns a free port, or false when all are taken.
func (p *portPool) alloc() (uint16, bool) {
	const n = LocalPortMax - LocalPortMin + 1
	if p.inUse >= n {
		return 0, false
	}
	if p.next < LocalPortMin || p.next > LocalPortMax {
		p.next = LocalPortMin
	}
	for i := 0; i < n; i++ {
		port := p.next
		p.next++
		if p.next > LocalPortMax {
			p.next = LocalPortMin
		}
		if port%64 == 0 && p.used[port/64] == ^uint64(0) && port+63 <= LocalPortMax {
			p.next = port + 64 // a full word: skip it
			if p.next > LocalPortMax {
				p.next = LocalPortMin
			}
			i += 63
			continue
		}
		if p.take(uint16(port)) {
			return uint16(port), true
		}
	}
	return 0, false
}

func (s *Server) pool(addr netip.Addr, proto uint8) *portPool {
	k := poolKey{addr, proto}
	p := s.pools[k]
	if p == nil {
		p = &portPool{}
		s.pools[k] = p
	}
	return p
}

// allocLocal picks the local address and port of a new FULLNAT
// connection: the service's local addresses in turn, the first with a
// free port. s.mu is held.
func (s *Server) allocLocal(sv *service, proto uint8) (netip.Addr, uint16, error) {
	n := len(sv.laddrs)
	if n == 0 {
		return netip.Addr{}, 0, fmt.Errorf("service %s has FULLNAT reals but no local address (xipvsadm --add-laddr)", sv.cfg.ServiceKey)
	}
	if a, port, ok := s.takeLocal(sv, proto, nil); ok {
		return a, port, nil
	}
	if sv.ring != 0 {
		// The last free ports may be waiting in XDP's ring.
		if sl, ok, _ := s.opts.Dataplane.TakeRingPort(sv.ring, proto); ok {
			if a, ok := s.laddrOf[sl.AddrID]; ok {
				return a, sl.Port, nil
			}
		}
	}
	s.portsExhausted++
	s.reclaimWanted = true
	return netip.Addr{}, 0, fmt.Errorf("service %s: every local port of its %d local address(es) is in use", sv.cfg.ServiceKey, n)
}

// reclaimEvery is how often at most the server walks the table for local
// ports no connection holds (reclaimPorts) while a pool is over half full;
// one that ran out is reclaimed at the next sweep at least reclaimMin
// after the last, and ten times as long as the last walk took.
const (
	reclaimEvery = time.Minute
	reclaimMin   = time.Second
)

// reclaimPorts frees the local ports that no connection holds any more.
// The sweep frees the port of each FULLNAT connection it expires, but an
// embryonic connection evicted from its LRU table to make room (a SYN
// flood, a table smaller than the load) leaves no entry for it: without
// this its port would stay taken for good. When a pool is over half full
// (at most every reclaimEvery) or ran out, the table is walked (without
// s.mu) for the FULLNAT reply entries, and each pool keeps the ports an
// entry holds plus those taken since the walk began; the rest are free.
func (s *Server) reclaimPorts() {
	s.mu.Lock()
	now := s.opts.Now()
	since := now - s.lastReclaim
	pressed := false
	for _, p := range s.pools {
		if p.inUse*2 > LocalPortMax-LocalPortMin+1 {
			pressed = true
		}
	}
	if !(s.reclaimWanted && since >= max(reclaimMin, 10*s.reclaimTook)) && !(pressed && since >= reclaimEvery) {
		s.mu.Unlock()
		return
	}
	s.lastReclaim, s.reclaimWanted = now, false
	pools := map[poolKey]*portPool{}
	for k, p := range s.pools {
		p.fresh = new([65536 / 64]uint64)
		pools[k] = p
	}
	s.ringPorts() // in XDP's rings: taken, in no connection yet
	s.mu.Unlock()

	live := map[poolKey]*[65536 / 64]uint64{}
	err := s.opts.Dataplane.WalkConns(func(k dataplane.ConnKey, c dataplane.Conn) bool {
		if c.Flags&dataplane.ConnReply != 0 && c.Flags&dataplane.ConnFullNAT != 0 {
			pk := poolKey{k.Dst, k.Proto}
			if live[pk] == nil {
				live[pk] = new([65536 / 64]uint64)
			}
			live[pk][k.DstPort/64] |= 1 << (k.DstPort % 64)
		}
		return true
	})

	s.mu.Lock()
	defer s.mu.Unlock()
	s.reclaimTook = s.opts.Now() - now
	freed := 0
	for k, p := range pools {
		fresh := p.fresh
		p.fresh = nil
		if err != nil || s.pools[k] != p {
			continue
		}
		l := live[k]
		n := 0
		for i := range p.used {
			keep := fresh[i]
			if l != nil {
				keep |= l[i]
			}
			p.used[i] &= keep // a port released meanwhile stays free
			n += bits.OnesCount64(p.used[i])
		}
		freed += p.inUse - n
		p.inUse = n
	}
	if err != nil {
		s.log.Warn("walking the table for local ports no connection holds", "err", err)
		return
	}
	if freed > 0 {
		s.portsReclaimed += uint64(freed)
		s.log.Warn("local ports held by no connection freed (their embryonic connections were evicted from the full table)", "ports", freed)
	}
}

// LocalPortsReclaimed counts the local ports reclaimPorts freed.
func (s *Server) LocalPortsReclaimed() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.portsReclaimed
}

// takeLocal takes a free port of sv's local addresses in turn (those of
// which ok says so, nil: all); s.mu is held.
func (s *Server) takeLocal(sv *service, proto uint8, ok func(netip.Addr) bool) (netip.Addr, uint16, bool) {
	n := len(sv.laddrs)
	for i := 0; i < n; i++ {
		a := sv.laddrs[(sv.laddrNext+i)%n]
		if ok != nil && !ok(a) {
			continue
		}
		if port, free := s.pool(a, proto).alloc(); free {
			sv.laddrNext = (sv.laddrNext + i + 1) % n
			return a, port, true
		}
	}
	return netip.Addr{}, 0, false
}

// releaseLocal frees the local port of a FULLNAT reply entry (keyed by
// real -> local address). s.mu is held.
func (s *Server) releaseLocal(k dataplane.ConnKey, c dataplane.Conn) {
	if c.Flags&dataplane.ConnReply == 0 || c.Flags&dataplane.ConnFullNAT == 0 {
		return
	}
	if p := s.pools[poolKey{k.Dst, k.Proto}]; p != nil {
		p.release(k.DstPort)
	}
}

// LocalPortsExhausted counts new FULLNAT connections refused because no
// local port was free.
func (s *Server) LocalPortsExhausted() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.portsExhausted
}

// LocalPortsInUse returns how many local ports of addr are allocated to
// connections (not those waiting in XDP's rings), over both protocols.
func (s *Server) LocalPortsInUse(addr netip.Addr) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, p := range s.pools {
		if k.addr == addr {
			n += p.inUse
		}
	}
	// Not the ports waiting in XDP's rings for a connection.
	_ = s.opts.Dataplane.RingPorts(func(_ uint32, _ uint8, sl dataplane.LocalSlot) {
		if s.laddrOf[sl.AddrID] == addr {
			n--
		}
	})
	return n
}

// addLocalAddr adds a FULLNAT local address to a service (DPVS's
// ipvsadm --add-laddr -z ADDR -t VIP:PORT).
func (s *Server) addLocalAddr(k config.ServiceKey, addr netip.Addr) error {
	if err := checkLocalAddr(addr, s.opts.LocalAddress); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.allowed(config.Command{Op: config.OpAddLaddr, Service: config.Service{ServiceKey: k}, LocalAddr: addr}); err != nil {
		return err
	}
	sv := s.services[k]
	sv.laddrs = append(sv.laddrs, addr)
	s.catchUp(sv)
	s.reschedule(sv) // a ring of local ports for XDP
	s.changed()
	s.logChange("local address added", "service", k.String(), "laddr", addr.String())
	return nil
}

// checkLocalAddr refuses a local address that is not a unicast address
// of the director (onDirector, when set, says which are).
func checkLocalAddr(addr netip.Addr, onDirector func(netip.Addr) error) error {
	if !addr.IsValid() || addr.IsUnspecified() || addr.IsMulticast() || addr == netip.AddrFrom4([4]byte{255, 255, 255, 255}) ||
		addr.Is4In6() || addr.Zone() != "" || (addr.Is6() && addr.IsLinkLocalUnicast()) {
		return fmt.Errorf("%w: local address %v must be a unicast IPv4 or global IPv6 address", config.ErrInvalid, addr)
	}
	if onDirector != nil {
		if err := onDirector(addr); err != nil {
			return fmt.Errorf("%w: local address %v: %v", config.ErrInvalid, addr, err)
		}
	}
	return nil
}

// deleteLocalAddr removes a local address from a service. Connections
// already using it keep it until they end.
func (s *Server) deleteLocalAddr(k config.ServiceKey, addr netip.Addr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.allowed(config.Command{Op: config.OpDelLaddr, Service: config.Service{ServiceKey: k}, LocalAddr: addr}); err != nil {
		return err
	}
	sv := s.services[k]
	i := slices.Index(sv.laddrs, addr)
	sv.laddrs = slices.Delete(sv.laddrs, i, i+1)
	if sv.ring != 0 {
		s.dropRing(sv) // none of its ports may be given out any more
	}
	s.catchUp(sv)
	s.reschedule(sv)
	s.changed()
	s.logChange("local address deleted", "service", k.String(), "laddr", addr.String())
	return nil
}

// LocalAddrs returns a service's local addresses in the order added.
func (s *Server) LocalAddrs(k config.ServiceKey) ([]netip.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sv, ok := s.services[k]
	if !ok {
		return nil, ErrSvcNotDefined
	}
	return slices.Clone(sv.laddrs), nil
}

// anyLocalAddr reports whether a service has a FULLNAT local address.
func (s *Server) anyLocalAddr() bool {
	for _, sv := range s.services {
		if len(sv.laddrs) > 0 {
			return true
		}
	}
	return false
}

// rebuildPools marks the local ports of the FULLNAT connections in the
// (adopted) connection table as in use. s.mu is held.
func (s *Server) rebuildPools() error {
	s.drainAllRings()
	if !s.anyLocalAddr() {
		return nil // no FULLNAT local address: no walk of the table
	}
	return s.opts.Dataplane.WalkConns(func(k dataplane.ConnKey, c dataplane.Conn) bool {
		if c.Flags&dataplane.ConnReply != 0 && c.Flags&dataplane.ConnFullNAT != 0 {
			s.pool(k.Dst, k.Proto).take(k.DstPort)
		}
		return true
	})
}
