// Package sched holds the IPVS schedulers: pure Go, no kernel and no I/O.
// Each scheduler chooses exactly as the Linux kernel's
// net/netfilter/ipvs/ip_vs_<name>.c does, over destinations kept in the
// kernel's list order (a new destination goes to the front of the list).
package sched

import (
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"time"
)

// Dest is a destination (real server) as a scheduler sees it. The service
// owns it; schedulers keep pointers between calls of Update.
type Dest struct {
	ID     uint32
	Addr   netip.Addr
	Port   uint16
	Weight int
	// LastWeight is IPVS's last_weight: the latest non-zero weight (the
	// weight given at add time even when 0). mh builds its table from it
	// so that quiescing a real does not move other clients.
	LastWeight  int
	ActiveConns int
	InactConns  int
	// Overloaded is IPVS's IP_VS_DEST_F_OVERLOAD: set by the upper
	// connection threshold; an overloaded destination is skipped.
	Overloaded bool
	// UThreshold is the upper connection threshold (-x), 0 for none:
	// the owner overloads the destination when a new connection brings
	// its active and inactive connections to it (ip_vs_bind_dest), and
	// a lookahead does the same with its picks.
	UThreshold int

	// slot is the position a scheduler's Update gave the destination
	// (a destination belongs to one service, so to one scheduler).
	slot int
}

// Available reports whether the destination may take a new connection.
func (d *Dest) Available() bool { return d.Weight > 0 && !d.Overloaded }

// Flow is what a scheduler may look at of a new connection's first packet.
type Flow struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto            uint8
	// Now is the time of the packet on a monotonic clock; lblc and lblcr
	// age their tables with it.
	Now time.Duration
}

// Scheduler picks a destination for each new connection of one service.
// Calls are serialised by the service owner.
type Scheduler interface {
	// Name is the ipvsadm name (-s NAME).
	Name() string
	// Update gives the service's destinations in the kernel's list order;
	// it is called after every add, delete or edit of a destination.
	Update(dests []*Dest)
	// Schedule returns the destination for a new flow, or nil when none
	// is available.
	Schedule(f Flow) *Dest
	// Changed tells the scheduler that d's connection counts or overload
	// flag changed (weights change through Update).
	Changed(d *Dest)
}

// noCounts is embedded by schedulers that read counts only when they
// schedule.
type noCounts struct{}

func (noCounts) Changed(*Dest) {}

var (
	regMu    sync.RWMutex
	registry = map[string]func() Scheduler{}
	// flagTable caches each flagged scheduler's flag names (flags.go).
	flagTable map[string][2]string
)

// Register makes a scheduler available under its ipvsadm name.
func Register(name string, factory func() Scheduler) {
	regMu.Lock()
	defer regMu.Unlock()
	registry[name] = factory
	flagTable = nil
}

// New returns a fresh scheduler by ipvsadm name.
func New(name string) (Scheduler, error) {
	regMu.RLock()
	f, ok := registry[name]
	regMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknown, name)
	}
	return f(), nil
}

// Names lists the registered scheduler names, sorted.
func Names() []string {
	regMu.RLock()
	defer regMu.RUnlock()
	out := make([]string, 0, len(registry))
	for n := range registry {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// ErrUnknown is returned by New for a name no scheduler has.
var ErrUnknown = fmt.Errorf("unknown scheduler")

// indexOf returns the position of d in dests or -1.
func indexOf(dests []*Dest, d *Dest) int {
	for i, x := range dests {
		if x == d {
			return i
		}
	}
	return -1
}

// survivingPredecessor finds where a list cursor at old[pos] lands when
// old[pos] leaves the list: the kernel moves it to the previous entry,
// or the list head (-1).
func survivingPredecessor(old []*Dest, pos int, now []*Dest) int {
	for i := pos - 1; i >= 0; i-- {
		if j := indexOf(now, old[i]); j >= 0 {
			return j
		}
	}
	return -1
}
