package server

// status.go: read-only views: services with counts and counters,
// connections (-Lnc), timeouts, templates.

import (
	"net/netip"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
)

// Timeouts returns the tcp, tcpfin and udp timeouts.
func (s *Server) Timeouts() (tcp, tcpfin, udp time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.timeouts.TCP[conntrack.StateEstablished], s.timeouts.TCP[conntrack.StateFinWait], s.timeouts.UDP
}

// DestStatus is a destination with its connection counts, counters and
// rates.
type DestStatus struct {
	config.Dest
	ActiveConns int
	InactConns  int
	// PersistConns counts the persistence templates naming the real.
	PersistConns int
	Stats        conntrack.Stats
	Rates        conntrack.Rates
	Health       HealthStatus
}

// ServiceStatus is a service with its destinations, counters and rates.
type ServiceStatus struct {
	config.Service
	Dests []DestStatus
	Stats conntrack.Stats
	Rates conntrack.Rates
	// SorryActive is set while the sorry server takes new flows.
	SorryActive bool
}

// Services returns every service and destination, in no set order.
func (s *Server) Services() []ServiceStatus {
	traffic := s.readTraffic()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ServiceStatus, 0, len(s.services))
	for _, sv := range s.services {
		persist := map[*dest]int{}
		for _, t := range sv.templates {
			persist[t.dest]++
		}
		per := make(map[*dest]conntrack.Stats, len(sv.dests))
		st := ServiceStatus{Service: sv.cfg, Rates: sv.est.Rates()}
		for _, d := range sv.dests {
			per[d] = destStats(d, traffic[d])
			st.Dests = append(st.Dests, DestStatus{Dest: d.cfg, ActiveConns: d.sd.ActiveConns, InactConns: d.sd.InactConns,
				PersistConns: persist[d], Stats: per[d], Rates: d.est.Rates(), Health: s.healthOf(sv, d)})
		}
		st.Stats = s.serviceStatsLocked(sv, per)
		st.SorryActive = sv.sorry != nil && !sv.anyUp()
		out = append(out, st)
	}
	return out
}

// Templates returns the number of persistence templates of a service.
func (s *Server) Templates(k config.ServiceKey) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sv := s.services[k]; sv != nil {
		return len(sv.templates)
	}
	return 0
}

// ConnStatus is one connection as ipvsadm -c lists it.
type ConnStatus struct {
	Proto   uint8
	Expire  time.Duration // time left before it is aged out
	State   string        // IPVS state name; "UDP" for UDP, as /proc/net/ip_vs_conn
	Client  netip.AddrPort
	Virtual netip.AddrPort
	Real    netip.AddrPort
}

// WalkConns calls fn for every connection (ipvsadm -Lnc) as the walk
// of the tables reaches it, until fn returns false: nothing is gathered,
// so a listing of any size takes one batch of the walk's memory.
func (s *Server) WalkConns(fn func(ConnStatus) bool) error {
	s.mu.Lock()
	to := s.timeouts
	reals := make(map[uint32]netip.AddrPort, len(s.reals))
	for id, d := range s.reals {
		reals[id] = d.cfg.AddrPort()
	}
	s.mu.Unlock()
	now := s.opts.Now()
	return s.opts.Dataplane.WalkConns(func(k dataplane.ConnKey, c dataplane.Conn) bool {
		if c.Flags&dataplane.ConnReply != 0 {
			return true // listed with its forward entry
		}
		left := to.Remaining(k.Proto, c.State, c.LastSeen, now)
		if left < 0 {
			left = 0
		}
		state := c.State.String()
		if k.Proto == conntrack.ProtoUDP {
			state = "UDP"
		}
		real, known := reals[c.RealID]
		if c.Rewrites() {
			real, known = netip.AddrPortFrom(c.Out.Dst, c.Out.DstPort), true
		}
		if !known {
			return true // a real no longer configured: gone at the next sweep
		}
		if real.Port() == 0 {
			// -g/-i reals of port-zero and -f services: the client's port.
			real = netip.AddrPortFrom(real.Addr(), k.DstPort)
		}
		return fn(ConnStatus{Proto: k.Proto, Expire: left, State: state,
			Client: netip.AddrPortFrom(k.Src, k.SrcPort), Virtual: netip.AddrPortFrom(k.Dst, k.DstPort), Real: real})
	})
}

// VIPState is a VIP's health across its services, for the BGP speaker.
type VIPState struct {
	// Healthy and Reals count the reals of the VIP's services that pass
	// their checks (or have none), and all of them.
	Healthy, Reals int
	// Sorry: some service of the VIP has a sorry server to take its new
	// flows while no real is healthy.
	Sorry bool
}

// Up reports whether the VIP can take new flows: a service of it has a
// healthy real or a sorry server.
func (v VIPState) Up() bool { return v.Healthy > 0 || v.Sorry }

// VIPs returns the health of every VIP that has an address service
// (firewall-mark services have no VIP of their own).
func (s *Server) VIPs() map[netip.Addr]VIPState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[netip.Addr]VIPState{}
	for k, sv := range s.services {
		if k.FWMark != 0 {
			continue
		}
		v := out[k.Addr]
		for _, d := range sv.dests {
			v.Reals++
			if !d.down {
				v.Healthy++
			}
		}
		v.Sorry = v.Sorry || sv.sorry != nil
		out[k.Addr] = v
	}
	return out
}
