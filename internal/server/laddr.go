package server

import (
	"fmt"
	"net/netip"
	"slices"

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
}

func (p *portPool) isUsed(port uint16) bool { return p.used[port/64]&(1<<(port%64)) != 0 }

func (p *portPool) take(port uint16) bool {
	if p.isUsed(port) {
		return false
	}
	p.used[port/64] |= 1 << (port % 64)
	p.inUse++
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
	for i := 0; i < n; i++ {
		a := sv.laddrs[(sv.laddrNext+i)%n]
		if port, ok := s.pool(a, proto).alloc(); ok {
			sv.laddrNext = (sv.laddrNext + i + 1) % n
			return a, port, nil
		}
	}
	s.portsExhausted++
	return netip.Addr{}, 0, fmt.Errorf("service %s: every local port of its %d local address(es) is in use", sv.cfg.ServiceKey, n)
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

// LocalPortsInUse returns how many local ports of addr are allocated,
// over both protocols.
func (s *Server) LocalPortsInUse(addr netip.Addr) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, p := range s.pools {
		if k.addr == addr {
			n += p.inUse
		}
	}
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
	sv, ok := s.services[k]
	if !ok {
		return ErrSvcNotDefined
	}
	if slices.Contains(sv.laddrs, addr) {
		return fmt.Errorf("%w: %v on %s", ErrLaddrExists, addr, k)
	}
	sv.laddrs = append(sv.laddrs, addr)
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
	sv, ok := s.services[k]
	if !ok {
		return ErrSvcNotDefined
	}
	i := slices.Index(sv.laddrs, addr)
	if i < 0 {
		return fmt.Errorf("%w: %v on %s", ErrNoLaddr, addr, k)
	}
	sv.laddrs = slices.Delete(sv.laddrs, i, i+1)
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

// rebuildPools marks the local ports of the FULLNAT connections in the
// (adopted) connection table as in use. s.mu is held.
func (s *Server) rebuildPools() error {
	return s.opts.Dataplane.WalkConns(func(k dataplane.ConnKey, c dataplane.Conn) bool {
		if c.Flags&dataplane.ConnReply != 0 && c.Flags&dataplane.ConnFullNAT != 0 {
			s.pool(k.Dst, k.Proto).take(k.DstPort)
		}
		return true
	})
}
