package config

import (
	"fmt"
	"net/netip"
	"slices"
)

// ipvsadm's rules for what a command may name, written once: Config.Apply
// (ipvsadm -R and every rules file) and the daemon's commands (one
// xipvsadm line at a time, over the running services) both ask Allowed,
// and both change port groups with MergeMarks and RemoveMarks.

// Table is what the rules read of a configuration: a Config, or the
// daemon's running services.
type Table interface {
	HasService(k ServiceKey) bool
	HasDest(k ServiceKey, addr netip.Addr, port uint16) bool
	HasLaddr(k ServiceKey, a netip.Addr) bool
}

// Allowed reports whether cmd may run on t: the service it adds must not
// exist, the one it edits or deletes must; the real or local address it
// adds must not be the service's yet, the one it edits or deletes must.
// The errors are ipvsadm's (and DPVS's, for local addresses).
func Allowed(t Table, cmd *Command) error {
	k := cmd.Service.ServiceKey
	switch cmd.Op {
	case OpAddService:
		if t.HasService(k) {
			return ErrServiceExists
		}
	case OpEditService, OpDelService:
		if !t.HasService(k) {
			return ErrNoService
		}
	case OpAddDest, OpEditDest, OpDelDest:
		if !t.HasService(k) {
			return ErrSvcNotDefined
		}
		has := t.HasDest(k, cmd.Dest.Addr, cmd.Dest.Port)
		if cmd.Op == OpAddDest && has {
			return ErrDestExists
		}
		if cmd.Op != OpAddDest && !has {
			return ErrNoDest
		}
	case OpAddLaddr, OpDelLaddr:
		if !t.HasService(k) {
			return ErrSvcNotDefined
		}
		has := t.HasLaddr(k, cmd.LocalAddr)
		if cmd.Op == OpAddLaddr && has {
			return fmt.Errorf("%w: %v on %s", ErrLaddrExists, cmd.LocalAddr, k)
		}
		if cmd.Op == OpDelLaddr && !has {
			return fmt.Errorf("%w: %v on %s", ErrNoLaddr, cmd.LocalAddr, k)
		}
	}
	return nil
}

// HasService reports whether c has service k.
func (c *Config) HasService(k ServiceKey) bool { return c.Find(k) >= 0 }

// HasDest reports whether service k of c has the real addr:port.
func (c *Config) HasDest(k ServiceKey, addr netip.Addr, port uint16) bool {
	i := c.Find(k)
	return i >= 0 && c.Services[i].FindDest(addr, port) >= 0
}

// HasLaddr reports whether service k of c has local address a.
func (c *Config) HasLaddr(k ServiceKey, a netip.Addr) bool {
	i := c.Find(k)
	return i >= 0 && slices.Contains(c.Services[i].LocalAddrs, a)
}

// RemoveMarks returns have without the given rules, each of which must
// be there, or with no rules without every rule of mark (xipvsadm
// --del-mark); have is not changed.
func RemoveMarks(have []MarkRule, mark uint32, rules []MarkRule) ([]MarkRule, error) {
	for _, r := range rules {
		if !slices.Contains(have, r) {
			return nil, fmt.Errorf("%w: %s", ErrNoMark, r)
		}
	}
	var keep []MarkRule
	for _, o := range have {
		gone := slices.Contains(rules, o) || (len(rules) == 0 && o.Mark == mark)
		if !gone {
			keep = append(keep, o)
		}
	}
	if len(keep) == len(have) {
		return nil, fmt.Errorf("%w: mark %d", ErrNoMark, mark)
	}
	return keep, nil
}
