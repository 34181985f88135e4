package server

import (
	"net/netip"
	"slices"

	"github.com/xipvs/xipvs/config"
)

// running is the running services as ipvsadm's rules (config.Allowed)
// read them; s.mu is held.
type running struct{ s *Server }

func (r running) HasService(k config.ServiceKey) bool {
	_, ok := r.s.services[k]
	return ok
}

func (r running) HasDest(k config.ServiceKey, addr netip.Addr, port uint16) bool {
	sv := r.s.services[k]
	if sv == nil {
		return false
	}
	_, x := sv.findDest(addr, port)
	return x != nil
}

func (r running) HasLaddr(k config.ServiceKey, a netip.Addr) bool {
	sv := r.s.services[k]
	return sv != nil && slices.Contains(sv.laddrs, a)
}

// allowed is config.Allowed for cmd over the running services: ipvsadm's
// rules for what a command may name, the same a rules file is held to;
// s.mu is held.
func (s *Server) allowed(cmd config.Command) error { return config.Allowed(running{s}, &cmd) }
