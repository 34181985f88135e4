package daemon

// sync.go: the connection sync daemons (ipvsadm --start-daemon), a
// master and a backup at most, both at once for active-active pairs.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/api"
	"github.com/xipvs/xipvs/internal/connsync"
)

// syncDaemons holds the running sync daemons by role.
type syncDaemons struct {
	mu sync.Mutex
	by map[string]*connsync.Daemon
	// fromFile are the roles the configuration file runs (a reload
	// applies the file's sync_daemons to those by difference).
	fromFile map[string]config.SyncDaemon
	// byCommand are those xipvsadm started (--start-daemon, -R): saved
	// in the state file, started again by a restart.
	byCommand map[string]config.SyncDaemon
}

// commandDaemons are the sync daemons to save, master first.
func (b *backend) commandDaemons() []config.SyncDaemon {
	b.sync.mu.Lock()
	defer b.sync.mu.Unlock()
	var out []config.SyncDaemon
	for _, role := range []string{connsync.Master, connsync.Backup} {
		if d, ok := b.sync.byCommand[role]; ok {
			out = append(out, d)
		}
	}
	return out
}

// restoreDaemons starts the saved sync daemons whose role the
// configuration file did not start; one that cannot start (its interface
// gone) is logged, not fatal.
func (b *backend) restoreDaemons(saved []config.SyncDaemon) {
	for _, d := range saved {
		b.sync.mu.Lock()
		_, running := b.sync.by[d.Role]
		b.sync.mu.Unlock()
		if running {
			b.log.Warn("saved sync daemon not started: the configuration file runs that role", "role", d.Role)
			continue
		}
		if err := b.startDaemon(d); err != nil {
			b.log.Error("saved sync daemon not started", "role", d.Role, "err", err)
			continue
		}
		b.log.Info("saved sync daemon started again", "role", d.Role)
		b.sync.mu.Lock()
		if b.sync.byCommand == nil {
			b.sync.byCommand = map[string]config.SyncDaemon{}
		}
		b.sync.byCommand[d.Role] = d
		b.sync.mu.Unlock()
	}
}

// StartDaemon starts a master or backup sync daemon by command (one of
// each role may run) and saves it; if it cannot be saved it is stopped
// again and the error returned.
func (b *backend) StartDaemon(d config.SyncDaemon) error {
	if err := b.startDaemon(d); err != nil {
		return err
	}
	b.sync.mu.Lock()
	if b.sync.byCommand == nil {
		b.sync.byCommand = map[string]config.SyncDaemon{}
	}
	b.sync.byCommand[d.Role] = d
	b.sync.mu.Unlock()
	if err := b.srv.Save(); err != nil {
		b.sync.mu.Lock()
		delete(b.sync.byCommand, d.Role)
		b.sync.mu.Unlock()
		_ = b.stopDaemon(d.Role)
		return fmt.Errorf("sync daemon not started: %w", err)
	}
	return nil
}

// StopDaemon stops the sync daemon of role by command and saves that;
// if it cannot be saved the daemon is started again and the error
// returned.
func (b *backend) StopDaemon(role string) error {
	b.sync.mu.Lock()
	was, saved := b.sync.byCommand[role]
	b.sync.mu.Unlock()
	var cfg config.SyncDaemon
	if dm := b.running(role); dm != nil {
		cfg = dm.Config
	}
	if err := b.stopDaemon(role); err != nil {
		return err
	}
	if !saved {
		return nil
	}
	b.sync.mu.Lock()
	delete(b.sync.byCommand, role)
	b.sync.mu.Unlock()
	if err := b.srv.Save(); err != nil {
		if serr := b.startDaemon(cfg); serr == nil {
			b.sync.mu.Lock()
			b.sync.byCommand[role] = was
			b.sync.mu.Unlock()
		}
		return fmt.Errorf("sync daemon not stopped: %w", err)
	}
	return nil
}

// running returns the daemon of role, or nil.
func (b *backend) running(role string) *connsync.Daemon {
	b.sync.mu.Lock()
	defer b.sync.mu.Unlock()
	return b.sync.by[role]
}

// applySync runs the configuration file's sync daemons: those it adds
// are started, those it drops stopped, those it changes restarted.
func (b *backend) applySync(want []config.SyncDaemon) error {
	b.sync.mu.Lock()
	have := b.sync.fromFile
	b.sync.fromFile = map[string]config.SyncDaemon{}
	b.sync.mu.Unlock()
	keep := map[string]bool{}
	var errs []error
	for _, d := range want {
		if old, ok := have[d.Role]; ok && old == d {
			keep[d.Role] = true
			b.sync.mu.Lock()
			b.sync.fromFile[d.Role] = d
			b.sync.mu.Unlock()
			continue
		}
		if _, ok := have[d.Role]; ok {
			_ = b.stopDaemon(d.Role)
		}
		if err := b.startDaemon(d); err != nil {
			errs = append(errs, err)
			continue
		}
		keep[d.Role] = true
		b.sync.mu.Lock()
		b.sync.fromFile[d.Role] = d
		b.sync.mu.Unlock()
	}
	for role := range have {
		if !keep[role] {
			_ = b.stopDaemon(role)
		}
	}
	return errors.Join(errs...)
}

// startDaemon starts a master or backup sync daemon; one of each role
// may run.
func (b *backend) startDaemon(d config.SyncDaemon) error {
	c, err := connsync.Prepare(d)
	if err != nil {
		return &api.Error{Message: err.Error(), Status: http.StatusBadRequest}
	}
	b.sync.mu.Lock()
	defer b.sync.mu.Unlock()
	if b.sync.by == nil {
		b.sync.by = map[string]*connsync.Daemon{}
	}
	if _, ok := b.sync.by[c.Role]; ok {
		return &api.Error{Message: fmt.Sprintf("a %s sync daemon is already running (--stop-daemon %s first)", c.Role, c.Role), Status: http.StatusConflict}
	}
	var dm *connsync.Daemon
	if c.Role == connsync.Master {
		dm, err = connsync.StartMaster(c, b.syncSource, b.log)
	} else {
		dm, err = connsync.StartBackup(c, b.srv.InsertSynced, b.log)
	}
	if err != nil {
		return err
	}
	b.sync.by[c.Role] = dm
	return nil
}

// SyncEventSource is the data plane's sync events (dataplane/syncevents.go).
type SyncEventSource interface {
	SetSync(on bool, refresh time.Duration) error
	OpenSyncEvents() (*dataplane.SyncEvents, error)
}

// syncBatch bounds a batch of events handed to the master at once.
const syncBatch = 512

// syncRefresh is how long a live connection goes between two events:
// half the shorter of the TCP and UDP timeouts, at least 10 s
// (ip_vs_sync_conn_needed's min_diff), so that a backup's copy, whose
// timeout starts at the message, never expires while the master's lives;
// the short-lived TCP states are sent as they are entered.
func syncRefresh(tcp, udp time.Duration) time.Duration { return max(min(tcp, udp)/2, 10*time.Second) }

// syncSource feeds a master from the data plane's sync events: turned on
// while it runs, read as they come, each batch turned into records by
// the server and sent, at once when no more are waiting.
func (b *backend) syncSource(ctx context.Context, send func([]connsync.Conn)) error {
	if b.events == nil {
		return errors.New("this data plane writes no sync events")
	}
	ev, err := b.events.OpenSyncEvents()
	if err != nil {
		return err
	}
	defer ev.Close()
	tcp, _, udp := b.srv.Timeouts()
	refresh := syncRefresh(tcp, udp)
	if err := b.events.SetSync(true, refresh); err != nil {
		return err
	}
	defer b.events.SetSync(false, refresh)
	stop := context.AfterFunc(ctx, func() { ev.Close() })
	defer stop()
	batch := make([]dataplane.SyncEvent, 0, syncBatch)
	var out []connsync.Conn
	for {
		if len(batch) == 0 {
			ev.SetDeadline(time.Time{}) // wait for the next
		} else {
			ev.SetDeadline(time.Now().Add(20 * time.Millisecond))
		}
		e, err := ev.Read()
		switch {
		case err == nil:
			if batch = append(batch, e); len(batch) < syncBatch {
				continue
			}
		case errors.Is(err, dataplane.ErrNoEvent):
		case ctx.Err() != nil:
			return ctx.Err()
		default:
			return err
		}
		out = b.srv.SyncConns(batch, out[:0])
		batch = batch[:0]
		if len(out) > 0 {
			send(out)
		}
		// Changed timeouts change the refresh period.
		if t, _, u := b.srv.Timeouts(); syncRefresh(t, u) != refresh {
			refresh = syncRefresh(t, u)
			if err := b.events.SetSync(true, refresh); err != nil {
				return err
			}
		}
	}
}

// stopDaemon stops the sync daemon of role.
func (b *backend) stopDaemon(role string) error {
	b.sync.mu.Lock()
	dm, ok := b.sync.by[role]
	delete(b.sync.by, role)
	b.sync.mu.Unlock()
	if !ok {
		return &api.Error{Message: fmt.Sprintf("no %s sync daemon is running", role), Status: http.StatusNotFound}
	}
	dm.Stop()
	b.log.Info("sync daemon stopped", "role", role)
	return nil
}

// Daemons lists the running sync daemons, master first.
func (b *backend) Daemons() []api.SyncDaemon {
	b.sync.mu.Lock()
	defer b.sync.mu.Unlock()
	var out []api.SyncDaemon
	for _, dm := range b.sync.by {
		out = append(out, api.SyncDaemon{SyncDaemon: dm.Config, Stats: dm.Stats()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Role > out[j].Role }) // master, backup
	return out
}

// stopDaemons stops every sync daemon (xipvsd exiting).
func (b *backend) stopDaemons() {
	b.sync.mu.Lock()
	defer b.sync.mu.Unlock()
	for role, dm := range b.sync.by {
		dm.Stop()
		delete(b.sync.by, role)
	}
}

// runs reports whether a daemon with d's settings (defaults filled in)
// is running.
func (b *backend) runs(d config.SyncDaemon) bool {
	c, err := connsync.Prepare(d)
	if err != nil {
		return false
	}
	b.sync.mu.Lock()
	defer b.sync.mu.Unlock()
	dm, ok := b.sync.by[c.Role]
	return ok && dm.Config == c
}
