package daemon

// sync.go: the connection sync daemons (ipvsadm --start-daemon), a
// master and a backup at most, both at once for active-active pairs.

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"

	"github.com/xipvs/xipvs/config"
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
			_ = b.StopDaemon(d.Role)
		}
		if err := b.StartDaemon(d); err != nil {
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
			_ = b.StopDaemon(role)
		}
	}
	return errors.Join(errs...)
}

// StartDaemon starts a master or backup sync daemon; one of each role
// may run.
func (b *backend) StartDaemon(d config.SyncDaemon) error {
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

// syncSource is the master's view of the connection table.
func (b *backend) syncSource() ([]connsync.Record, error) {
	cs, err := b.srv.SyncConns()
	out := make([]connsync.Record, len(cs))
	for i, c := range cs {
		out[i] = connsync.Record{Conn: c.Conn, LastSeen: c.LastSeen}
	}
	return out, err
}

// StopDaemon stops the sync daemon of role.
func (b *backend) StopDaemon(role string) error {
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
