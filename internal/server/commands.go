package server

// commands.go: every configuration command, as the API, xipvsadm -R and
// reloads reach it. Each holds cfgMu for its whole run, so commands,
// restores and reloads never interleave.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/xipvs/xipvs/config"
)

// batch defers, while one change applies (a command, or a restore or
// reload and all its steps), the work its steps would otherwise repeat:
// the state file is written once at the end (so a kill -9 in the middle
// restarts with the old configuration, never a mix), and the connections
// of deleted reals are expired in one walk of the table, their ids freed
// after it.
type batch struct {
	dirty  bool
	doomed map[uint32]*dest
}

// beginBatch starts a batch; cfgMu and s.mu are not held.
func (s *Server) beginBatch() {
	s.mu.Lock()
	s.batch = &batch{doomed: map[uint32]*dest{}}
	s.mu.Unlock()
}

// endBatch expires the deleted reals' connections and frees their ids.
func (s *Server) endBatch() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.batch
	s.batch = nil
	if len(b.doomed) == 0 {
		return nil
	}
	ids := map[uint32]bool{}
	for id := range b.doomed {
		ids[id] = true
	}
	err := s.expireConns(ids)
	for id := range b.doomed {
		s.freeReals = append(s.freeReals, id)
	}
	return err
}

// commit runs one change (fn) in a batch and saves the result before it
// returns: a change is acknowledged only once it is on disk. If saving
// fails the change is undone (the configuration reconciled back to what
// it was before fn) and the error says so; a real that fn deleted comes
// back for new connections, but the connections its deletion expired do
// not. cfgMu is held.
func (s *Server) commit(grow int, fn func(before func() *config.Config) error) error {
	var old *config.Config
	before := func() *config.Config {
		if old == nil {
			old = s.Config()
		}
		return old
	}
	if s.opts.Persist != nil {
		before()
	}
	if s.opts.Reserve != nil {
		if err := s.opts.Reserve(grow); err != nil {
			return fmt.Errorf("%w: no room for it: %w; nothing was changed", ErrNotSaved, err)
		}
	}
	s.beginBatch()
	err := fn(before)
	s.mu.Lock()
	dirty := s.batch.dirty
	var perr error
	if dirty {
		perr = s.persistLocked()
	}
	s.mu.Unlock()
	if perr != nil {
		s.log.Error("saving state: the change is undone", "err", perr)
		if _, rerr := s.reconcile(context.Background(), s.Config(), before()); rerr != nil {
			perr = fmt.Errorf("%w (undoing the change failed too: %v)", perr, rerr)
		} else {
			perr = fmt.Errorf("%w; the change was undone", perr)
		}
	}
	err = errors.Join(err, perr, s.endBatch())
	if dirty && s.opts.Changed != nil {
		s.opts.Changed()
	}
	return err
}

// logChange logs one configuration change, at debug level inside a batch
// (which logs its summary once); s.mu is held.
func (s *Server) logChange(msg string, args ...any) {
	if s.batch != nil {
		s.log.Debug(msg, args...)
		return
	}
	s.log.Info(msg, args...)
}

// locked runs the change fn holding cfgMu, and commits it.
func (s *Server) locked(fn func() error) error { return s.lockedGrow(commandGrowth, fn) }

// shrinking runs a change that only removes (the state it saves is no
// larger), holding cfgMu, and commits it.
func (s *Server) shrinking(fn func() error) error { return s.lockedGrow(0, fn) }

func (s *Server) lockedGrow(grow int, fn func() error) error {
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	return s.commit(grow, func(func() *config.Config) error { return fn() })
}

// commandGrowth bounds what one command adds to the saved state (a
// service with its settings, or a real): the room commit reserves
// beyond the last state's size.
const commandGrowth = 16 << 10

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
	return s.shrinking(func() error { return s.deleteService(k) })
}

// Clear removes every service (ipvsadm -C).
func (s *Server) Clear() error { return s.shrinking(s.clear) }

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
	return s.shrinking(func() error { return s.deleteDest(k, addr, port) })
}

// AddMarks binds ports to firewall marks for -f services (xipvsadm
// --add-mark). All rules are checked before any is applied.
func (s *Server) AddMarks(rules []config.MarkRule) error {
	return s.locked(func() error { return s.addMarks(rules) })
}

// DeleteMarks removes port-group rules (xipvsadm --del-mark): the given
// rules, each of which must exist, or with no rules every rule of mark.
func (s *Server) DeleteMarks(mark uint32, rules []config.MarkRule) error {
	return s.shrinking(func() error { return s.deleteMarks(mark, rules) })
}

// AddLocalAddr adds a FULLNAT local address to a service (--add-laddr).
func (s *Server) AddLocalAddr(k config.ServiceKey, addr netip.Addr) error {
	return s.locked(func() error { return s.addLocalAddr(k, addr) })
}

// DeleteLocalAddr removes a FULLNAT local address (--del-laddr).
func (s *Server) DeleteLocalAddr(k config.ServiceKey, addr netip.Addr) error {
	return s.shrinking(func() error { return s.deleteLocalAddr(k, addr) })
}

// SetTimeouts changes the tcp, tcpfin and udp timeouts (ipvsadm --set);
// a zero leaves that timeout unchanged, as in ipvsadm.
func (s *Server) SetTimeouts(tcp, tcpfin, udp time.Duration) {
	_ = s.locked(func() error { s.setTimeouts(tcp, tcpfin, udp); return nil })
}

// Reconcile makes the running configuration want by difference, all or
// nothing (see apply): a reload.
func (s *Server) Reconcile(want *config.Config) error {
	return s.ReconcileContext(context.Background(), want)
}

// ReconcileContext is Reconcile, abandoned (and undone) when ctx ends.
func (s *Server) ReconcileContext(ctx context.Context, want *config.Config) error {
	return s.lockedCtx(ctx, func() error { return s.applyBatch(ctx, want) })
}

// ApplyLines applies the lines of an ipvsadm rules file (ipvsadm -R) to
// the running configuration: the result is computed on a copy, then
// applied by difference, all or nothing. A restore abandoned by its
// client (ctx ends) stops and leaves the configuration as it was.
func (s *Server) ApplyLines(ctx context.Context, lines []config.Line) error {
	return s.lockedCtx(ctx, func() error {
		want, err := config.ApplyLines(s.Config(), lines)
		if err != nil {
			return err
		}
		return s.applyBatch(ctx, want)
	})
}

// applyBatch is apply, committed.
func (s *Server) applyBatch(ctx context.Context, want *config.Config) error {
	// The room the wanted configuration takes, saved: its own size and
	// the ids and indentation of the state file.
	grow := 0
	if s.opts.Reserve != nil {
		if b, err := json.Marshal(want); err == nil {
			grow = 2*len(b) + commandGrowth
		}
	}
	return s.commit(grow, func(before func() *config.Config) error { return s.apply(ctx, want, before) })
}

// lockedCtx runs fn holding cfgMu, unless ctx ends first (a client that
// gave up waiting for another command's lock).
func (s *Server) lockedCtx(ctx context.Context, fn func() error) error {
	got := make(chan struct{})
	go func() {
		s.cfgMu.Lock()
		close(got)
	}()
	select {
	case <-got:
	case <-ctx.Done():
		go func() {
			<-got
			s.cfgMu.Unlock()
		}()
		return fmt.Errorf("abandoned while waiting for another configuration change: %w", ctx.Err())
	}
	defer s.cfgMu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	return fn()
}
