package dataplane

// Test hooks, compiled into this package's tests only.

import (
	"net/netip"
)

// AddrSlot is the prefilter slot an address folds into.
func AddrSlot(a netip.Addr) uint32 { return addrSlot(a) }

// The prefilter's flags.
const (
	AddrVIP       = addrVIP
	AddrNATSource = addrNATSource
)
