package server

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/internal/neigh"
)

// Config returns the running configuration: services sorted by key,
// each with its reals in list order.
func (s *Server) Config() *config.Config {
	s.mu.Lock()
	st := s.snapshotLocked()
	s.mu.Unlock()
	c := &config.Config{Marks: st.Marks, Timeouts: [3]int{
		int(st.Timeouts["tcp"]), int(st.Timeouts["tcpfin"]), int(st.Timeouts["udp"])}}
	for _, ss := range st.Services {
		sc := config.ServiceConfig{Service: ss.Config, LocalAddrs: ss.LocalAddrs}
		for _, d := range ss.Dests {
			sc.Dests = append(sc.Dests, d.Config)
		}
		c.Services = append(c.Services, sc)
	}
	slices.SortFunc(c.Services, func(a, b config.ServiceConfig) int { return keyCompare(a.Service.ServiceKey, b.Service.ServiceKey) })
	return c
}

func keyCompare(a, b config.ServiceKey) int {
	switch {
	case a.FWMark != b.FWMark:
		return cmpU(a.FWMark, b.FWMark)
	case a.Proto != b.Proto:
		return cmpU(uint32(a.Proto), uint32(b.Proto))
	case a.Addr != b.Addr:
		return a.Addr.Compare(b.Addr)
	}
	return cmpU(uint32(a.Port), uint32(b.Port))
}

func cmpU(a, b uint32) int {
	if a < b {
		return -1
	}
	if a > b {
		return 1
	}
	return 0
}

// apply makes the running configuration want, changing only what
// differs: a service or real present in both keeps its connections,
// counters and persistence. Everything is checked before anything
// changes; if a change still fails, what was done is undone and the
// error returned, so a failed reload or restore leaves the configuration
// as it was. cfgMu is held.
func (s *Server) apply(ctx context.Context, want *config.Config, before func() *config.Config) error {
	want = want.Clone()
	// One route lookup per real address and method, however many
	// services use it (the check depends on nothing else).
	type hopKey struct {
		addr netip.Addr
		fwd  config.Fwd
	}
	hops := map[hopKey]error{}
	route := func(d config.Dest) error {
		k := hopKey{d.Addr, d.Fwd}
		if err, ok := hops[k]; ok {
			return err
		}
		_, err := s.route(d)
		hops[k] = err
		return err
	}
	if err := precheck(want, route, s.opts.LocalAddress); err != nil {
		return err
	}
	old := before()
	n, err := s.reconcile(ctx, old, want)
	if err != nil {
		if _, rerr := s.reconcile(context.Background(), s.Config(), old); rerr != nil {
			return fmt.Errorf("%w (restoring the previous configuration failed too: %v)", err, rerr)
		}
		return err
	}
	s.log.Info("configuration applied", "changes", n, "services", len(want.Services))
	return nil
}

// Check validates a configuration as Reconcile would before applying it,
// routes to the real servers included (xipvsd --dry-run): route finds
// the next hop of an address, director tells the director's interfaces.
func Check(want *config.Config, route func(netip.Addr) (neigh.NextHop, error), director func(ifindex int) bool,
	localAddress func(netip.Addr) error) error {
	return precheck(want.Clone(), func(d config.Dest) error {
		hop, err := route(d.Addr)
		if err != nil {
			return fmt.Errorf("real server %v: %w", d.Addr, err)
		}
		return checkHop(d, hop, director)
	}, localAddress)
}

// precheck validates want as the operations would, and normalizes its
// services so they compare equal to running ones.
func precheck(want *config.Config, route func(config.Dest) error, localAddress func(netip.Addr) error) error {
	seen := map[config.ServiceKey]bool{}
	for i := range want.Services {
		sc := &want.Services[i]
		if err := normalize(&sc.Service); err != nil {
			return fmt.Errorf("service %s: %w", sc.Service.ServiceKey, err)
		}
		if seen[sc.Service.ServiceKey] {
			return fmt.Errorf("service %s: %w", sc.Service.ServiceKey, ErrServiceExists)
		}
		seen[sc.Service.ServiceKey] = true
		dseen := map[netip.AddrPort]bool{}
		for _, d := range sc.Dests {
			if err := d.Validate(sc.Service.ServiceKey); err != nil {
				return fmt.Errorf("service %s real %s: %w", sc.Service.ServiceKey, d.AddrPort(), err)
			}
			if dseen[d.AddrPort()] {
				return fmt.Errorf("service %s real %s: %w", sc.Service.ServiceKey, d.AddrPort(), ErrDestExists)
			}
			dseen[d.AddrPort()] = true
			if err := route(d); err != nil {
				return fmt.Errorf("service %s real %s: %w", sc.Service.ServiceKey, d.AddrPort(), err)
			}
		}
		for _, a := range sc.LocalAddrs {
			if err := checkLocalAddr(a, localAddress); err != nil {
				return fmt.Errorf("service %s: %w", sc.Service.ServiceKey, err)
			}
		}
	}
	for i, r := range want.Marks {
		if err := r.Validate(); err != nil {
			return err
		}
		for _, o := range want.Marks[:i] {
			if r == o || r.Overlaps(o) {
				return fmt.Errorf("%w: %s overlaps %s", ErrMarkOverlap, r, o)
			}
		}
	}
	for _, t := range want.Timeouts {
		if t < 0 {
			return fmt.Errorf("%w: negative timeout", config.ErrInvalid)
		}
	}
	return nil
}

func sameService(a, b config.Service) bool {
	return a.ServiceKey == b.ServiceKey && a.Scheduler == b.Scheduler && a.Persistent == b.Persistent &&
		a.Timeout == b.Timeout && a.Netmask == b.Netmask && a.OnePacket == b.OnePacket && a.SynProxy == b.SynProxy &&
		slices.Equal(a.SchedFlags, b.SchedFlags) && a.Check == b.Check && a.OnFailure == b.OnFailure && a.Sorry == b.Sorry
}

// reconcile applies the difference from have to want and counts the
// operations; it stops at the first error.
func (s *Server) reconcile(ctx context.Context, have, want *config.Config) (int, error) {
	n := 0
	step := func(err error) error {
		if err == nil {
			n++
			err = ctx.Err()
		}
		return err
	}
	// Services that go, with their reals and connections.
	for _, hs := range have.Services {
		if want.Find(hs.Service.ServiceKey) < 0 {
			if err := step(s.deleteService(hs.Service.ServiceKey)); err != nil {
				return n, err
			}
		}
	}
	// Port groups: removed ones first, so a changed range can be re-added.
	for _, r := range have.Marks {
		if !slices.Contains(want.Marks, r) {
			if err := step(s.deleteMarks(r.Mark, []config.MarkRule{r})); err != nil {
				return n, err
			}
		}
	}
	var add []config.MarkRule
	for _, r := range want.Marks {
		if !slices.Contains(have.Marks, r) {
			add = append(add, r)
		}
	}
	if len(add) > 0 {
		if err := step(s.addMarks(add)); err != nil {
			return n, err
		}
	}
	for _, ws := range want.Services {
		k := ws.Service.ServiceKey
		var hs config.ServiceConfig
		if i := have.Find(k); i >= 0 {
			hs = have.Services[i]
			if !sameService(hs.Service, ws.Service) {
				if err := step(s.editService(ws.Service)); err != nil {
					return n, err
				}
			}
		} else if err := step(s.addService(ws.Service)); err != nil {
			return n, err
		}
		for _, d := range hs.Dests {
			if ws.FindDest(d.Addr, d.Port) < 0 {
				if err := step(s.deleteDest(k, d.Addr, d.Port)); err != nil {
					return n, err
				}
			}
		}
		// Added in reverse, as each goes to the front of the list.
		for i := len(ws.Dests) - 1; i >= 0; i-- {
			d := ws.Dests[i]
			j := hs.FindDest(d.Addr, d.Port)
			var err error
			switch {
			case j < 0:
				err = step(s.addDest(k, d))
			case hs.Dests[j] != d:
				err = step(s.editDest(k, d))
			}
			if err != nil {
				return n, err
			}
		}
		for _, a := range hs.LocalAddrs {
			if !slices.Contains(ws.LocalAddrs, a) {
				if err := step(s.deleteLocalAddr(k, a)); err != nil {
					return n, err
				}
			}
		}
		for _, a := range ws.LocalAddrs {
			if !slices.Contains(hs.LocalAddrs, a) {
				if err := step(s.addLocalAddr(k, a)); err != nil {
					return n, err
				}
			}
		}
	}
	var t [3]time.Duration
	changed := false
	for i, v := range want.Timeouts {
		if v > 0 && v != have.Timeouts[i] {
			t[i], changed = time.Duration(v)*time.Second, true
		}
	}
	if changed {
		s.setTimeouts(t[0], t[1], t[2])
		n++
	}
	return n, nil
}
