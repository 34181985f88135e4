package server

// commands.go: every configuration command, as the API, xipvsadm -R and
// reloads reach it. Each holds cfgMu for its whole run, so commands,
// restores and reloads never interleave.

import (
	"net/netip"
	"time"

	"github.com/xipvs/xipvs/config"
)

// locked runs fn holding cfgMu.
func (s *Server) locked(fn func() error) error {
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	return fn()
}

// AddService adds a virtual service (ipvsadm -A).
func (s *Server) AddService(svc config.Service) error {
	return s.locked(func() error { return s.addService(svc) })
}

// EditService changes a service's settings (ipvsadm -E).
func (s *Server) EditService(svc config.Service) error {
	return s.locked(func() error { return s.editService(svc) })
}

// DeleteService removes a service, its destinations and their
// connections (ipvsadm -D).
func (s *Server) DeleteService(k config.ServiceKey) error {
	return s.locked(func() error { return s.deleteService(k) })
}

// Clear removes every service (ipvsadm -C).
func (s *Server) Clear() error { return s.locked(s.clear) }

// AddDest adds a real server to a service (ipvsadm -a).
func (s *Server) AddDest(k config.ServiceKey, d config.Dest) error {
	return s.locked(func() error { return s.addDest(k, d) })
}

// EditDest changes a real server's settings (ipvsadm -e).
func (s *Server) EditDest(k config.ServiceKey, d config.Dest) error {
	return s.locked(func() error { return s.editDest(k, d) })
}

// DeleteDest removes a real server and expires its connections
// (ipvsadm -d).
func (s *Server) DeleteDest(k config.ServiceKey, addr netip.Addr, port uint16) error {
	return s.locked(func() error { return s.deleteDest(k, addr, port) })
}

// AddMarks binds ports to firewall marks for -f services (xipvsadm
// --add-mark). All rules are checked before any is applied.
func (s *Server) AddMarks(rules []config.MarkRule) error {
	return s.locked(func() error { return s.addMarks(rules) })
}

// DeleteMarks removes port-group rules (xipvsadm --del-mark): the given
// rules, each of which must exist, or with no rules every rule of mark.
func (s *Server) DeleteMarks(mark uint32, rules []config.MarkRule) error {
	return s.locked(func() error { return s.deleteMarks(mark, rules) })
}

// AddLocalAddr adds a FULLNAT local address to a service (--add-laddr).
func (s *Server) AddLocalAddr(k config.ServiceKey, addr netip.Addr) error {
	return s.locked(func() error { return s.addLocalAddr(k, addr) })
}

// DeleteLocalAddr removes a FULLNAT local address (--del-laddr).
func (s *Server) DeleteLocalAddr(k config.ServiceKey, addr netip.Addr) error {
	return s.locked(func() error { return s.deleteLocalAddr(k, addr) })
}

// SetTimeouts changes the tcp, tcpfin and udp timeouts (ipvsadm --set);
// a zero leaves that timeout unchanged, as in ipvsadm.
func (s *Server) SetTimeouts(tcp, tcpfin, udp time.Duration) {
	_ = s.locked(func() error { s.setTimeouts(tcp, tcpfin, udp); return nil })
}

// Reconcile makes the running configuration want by difference, all or
// nothing (see apply): a reload.
func (s *Server) Reconcile(want *config.Config) error {
	return s.locked(func() error { return s.apply(want) })
}

// ApplyLines applies the lines of an ipvsadm rules file (ipvsadm -R) to
// the running configuration: the result is computed on a copy, then
// applied by difference, all or nothing.
func (s *Server) ApplyLines(lines []config.Line) error {
	return s.locked(func() error {
		want, err := config.ApplyLines(s.Config(), lines)
		if err != nil {
			return err
		}
		return s.apply(want)
	})
}
