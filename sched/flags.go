package sched

import (
	"errors"
	"fmt"
)

// Flags are ipvsadm's scheduler flags (--sched-flags, -b on -A/-E). The
// kernel has three generic bits, flag-1..flag-3; a scheduler that reads
// them names them after itself (sh-fallback, sh-port; mh-fallback,
// mh-port).
type Flags uint8

// Scheduler flag bits (IP_VS_SVC_F_SCHED1..3 shifted down).
const (
	FlagFallback Flags = 1 << iota // flag-1: sh-fallback, mh-fallback
	FlagPort                       // flag-2: sh-port, mh-port
	Flag3                          // flag-3: no scheduler uses it
)

// Flagged is implemented by schedulers that read scheduler flags. Names
// gives the names of flag-1 and flag-2 for the scheduler.
type Flagged interface {
	SetFlags(Flags)
	FlagNames() [2]string
}

// Errors of ParseFlags, with ipvsadm's wording.
var (
	ErrBadFlag          = errors.New("invalid scheduler flag")
	ErrIncompatibleFlag = errors.New("incompatible scheduler flag")
)

var genericFlags = [3]string{"flag-1", "flag-2", "flag-3"}

// flagNames returns the names of the three bits for scheduler, and the
// names other schedulers give them (accepted only for their owner). The
// table is made once from the registered schedulers (Register resets it).
func flagNames(scheduler string) (own [3]string, foreign map[string]bool) {
	regMu.Lock()
	if flagTable == nil {
		flagTable = map[string][2]string{}
		for name, f := range registry {
			if fl, ok := f().(Flagged); ok {
				flagTable[name] = fl.FlagNames()
			}
		}
	}
	table := flagTable
	regMu.Unlock()
	own = genericFlags
	foreign = map[string]bool{}
	for name, n := range table {
		if name == scheduler {
			own[0], own[1] = n[0], n[1]
		} else {
			foreign[n[0]], foreign[n[1]] = true, true
		}
	}
	return own, foreign
}

// ParseFlags turns --sched-flags names into bits for scheduler: flag-1..3
// for every scheduler, and a scheduler's own names (sh-port) only for it,
// as ipvsadm does.
func ParseFlags(scheduler string, names []string) (Flags, error) {
	own, foreign := flagNames(scheduler)
	var f Flags
next:
	for _, n := range names {
		for i := range own {
			if n == own[i] || n == genericFlags[i] {
				f |= 1 << i
				continue next
			}
		}
		if foreign[n] {
			return 0, fmt.Errorf("%w `%s'", ErrIncompatibleFlag, n)
		}
		return 0, fmt.Errorf("%w `%s'", ErrBadFlag, n)
	}
	return f, nil
}

// Names returns the names of the set bits for scheduler, in ipvsadm's
// order and spelling (as ipvsadm -L and -S print them).
func (f Flags) Names(scheduler string) []string {
	own, _ := flagNames(scheduler)
	var out []string
	for i, n := range own {
		if f&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}

// Known reports whether name is a registered scheduler.
func Known(name string) bool {
	regMu.RLock()
	defer regMu.RUnlock()
	_, ok := registry[name]
	return ok
}
