package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/sched"
	"golang.org/x/sys/unix"
)

// State is the configuration with the ids the data plane's maps refer
// to: what a restarted xipvsd needs to adopt pinned maps.
type State struct {
	Version  int                `json:"version"`
	Services []ServiceState     `json:"services"`
	Marks    []config.MarkRule  `json:"marks,omitempty"`
	Timeouts map[string]float64 `json:"timeouts"` // seconds: tcp, tcpfin, udp
	// SyncDaemons are the connection sync daemons started by command
	// (xipvsadm --start-daemon, -R), which a restart starts again; the
	// daemon adds them when it saves (the server runs none).
	SyncDaemons []config.SyncDaemon `json:"sync_daemons,omitempty"`
}

// ServiceState is a service with its id and its reals in list order.
type ServiceState struct {
	ID     uint32         `json:"id"`
	Config config.Service `json:"config"`
	Dests  []DestState    `json:"dests"`
	// LocalAddrs are the FULLNAT local addresses (--add-laddr).
	LocalAddrs []netip.Addr `json:"local_addrs,omitempty"`
}

// DestState is a real with the id of its reals-map entry.
type DestState struct {
	RealID uint32      `json:"real_id"`
	Config config.Dest `json:"config"`
}

// stateVersion is the version of the state file this xipvsd writes.
// Version 1 (xipvs 0.1) spelled the service and real fields by their Go
// names and the forwarding method by number; ReadStateFile converts it
// (state_v1.go).
const stateVersion = 2

// snapshotLocked captures the configuration; s.mu is held.
func (s *Server) snapshotLocked() State {
	st := State{Version: stateVersion, Marks: append([]config.MarkRule(nil), s.marks...),
		Timeouts: map[string]float64{
			"tcp":    s.timeouts.TCP[conntrack.StateEstablished].Seconds(),
			"tcpfin": s.timeouts.TCP[conntrack.StateFinWait].Seconds(),
			"udp":    s.timeouts.UDP.Seconds(),
		}}
	for _, sv := range s.services {
		ss := ServiceState{ID: sv.id, Config: sv.cfg, LocalAddrs: slices.Clone(sv.laddrs)}
		for _, d := range sv.dests {
			ss.Dests = append(ss.Dests, DestState{RealID: d.realID, Config: d.cfg})
		}
		st.Services = append(st.Services, ss)
	}
	return st
}

// changed marks the configuration changed; s.mu is held. Every change
// runs in a batch (commit), which saves it once at its end.
func (s *Server) changed() {
	if s.batch != nil {
		s.batch.dirty = true
	}
}

// persistLocked gives the configuration to Options.Persist; s.mu is
// held.
func (s *Server) persistLocked() error {
	if s.opts.Persist == nil {
		return nil
	}
	if err := s.opts.Persist(s.snapshotLocked()); err != nil {
		return fmt.Errorf("%w: %w", ErrNotSaved, err)
	}
	return nil
}

// Save writes the running configuration again (what Options.Persist
// adds of its own, such as the sync daemons, changed).
func (s *Server) Save() error {
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	if s.opts.Reserve != nil {
		if err := s.opts.Reserve(commandGrowth); err != nil {
			return fmt.Errorf("%w: no room for it: %w", ErrNotSaved, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.persistLocked()
}

// WriteStateFile writes st to path durably and atomically (StateFile's
// Save).
func WriteStateFile(path string, st State) error {
	return (&StateFile{Path: path}).Save(st)
}

// StateFile is where a daemon keeps its configuration. Save writes it
// durably and atomically: a temporary file written and synced, renamed
// over Path, the directory synced; a crash at any point leaves the old
// file or the new one, whole. Reserve makes room for the next Save
// before a change is made, so that a full disk fails the change, not its
// saving. Not safe for concurrent use (the server saves under its lock).
type StateFile struct {
	Path string
	// size is the last state saved; reserved the temporary file's
	// allocated size.
	size, reserved int
}

func (f *StateFile) tmp() string { return f.Path + ".tmp" }

// Reserve allocates room for a state grow bytes larger than the last one
// in the temporary file the next Save writes (fallocate); a file system
// that cannot allocate ahead is not an error (Save then finds out).
func (f *StateFile) Reserve(grow int) error {
	if f.size == 0 {
		if fi, err := os.Stat(f.Path); err == nil {
			f.size = int(fi.Size())
		}
	}
	n := f.size + grow
	if n <= f.reserved {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(f.Path), 0o700); err != nil {
		return err
	}
	fd, err := os.OpenFile(f.tmp(), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer fd.Close()
	err = unix.Fallocate(int(fd.Fd()), 0, 0, int64(n))
	switch {
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS):
		return nil
	case err != nil:
		return fmt.Errorf("reserve %d bytes for %s: %w", n, f.tmp(), err)
	}
	f.reserved = n
	return nil
}

// Save writes st.
func (f *StateFile) Save(st State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	path, tmp := f.Path, f.tmp()
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// Into the room Reserve made, if it did, cut to size.
	fd, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	f.reserved = 0
	_, err = fd.Write(b)
	if err == nil {
		err = fd.Truncate(int64(len(b)))
	}
	if err == nil {
		err = fd.Sync()
	}
	if cerr := fd.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	f.size = len(b)
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// ReadStateFile reads a state file; a missing file is an empty state.
func ReadStateFile(path string) (State, error) {
	var st State
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return State{Version: stateVersion}, nil
	}
	if err != nil {
		return st, err
	}
	var v struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return st, fmt.Errorf("state file %s: %w", path, err)
	}
	switch v.Version {
	case 1:
		st, err = readStateV1(b)
	case stateVersion:
		err = json.Unmarshal(b, &st)
	default:
		return st, fmt.Errorf("state file %s: version %d, this xipvsd reads 1 and %d", path, v.Version, stateVersion)
	}
	if err != nil {
		return st, fmt.Errorf("state file %s: %w", path, err)
	}
	return st, nil
}

// Adopter is what Restore needs of the data plane beyond Dataplane.
type Adopter interface {
	ServiceKeys() ([]dataplane.ServiceKey, error)
	RealIDs() ([]uint32, error)
}

// Restore rebuilds the configuration of a previous daemon with the same
// service and real ids, so that the connections in adopted maps keep
// their meaning, then removes from the maps whatever the state does not
// name (services keys, reals, and connections to unknown reals). An
// empty state therefore starts clean over adopted maps.
func (s *Server) Restore(st State, dp Adopter) error {
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.services) != 0 {
		return fmt.Errorf("restore: the server already has services")
	}
	// What the maps hold now: syncKeys replaces or removes all of it.
	keys, err := dp.ServiceKeys()
	if err != nil {
		return err
	}
	stale := &service{}
	for _, k := range keys {
		s.byDP[k] = stale
	}
	usedReal := map[uint32]bool{}
	for _, ss := range st.Services {
		svc := ss.Config
		if err := normalize(&svc); err != nil {
			return fmt.Errorf("restore service %s: %w", svc.ServiceKey, err)
		}
		sc, err := sched.New(svc.Scheduler)
		if err != nil {
			return fmt.Errorf("restore service %s: %w", svc.ServiceKey, ErrNoScheduler)
		}
		sv := &service{cfg: svc, id: ss.ID, sched: sc, templates: map[tmplKey]*template{},
			laddrs: slices.Clone(ss.LocalAddrs)}
		sv.setSchedFlags()
		for _, ds := range ss.Dests {
			d := ds.Config
			if ds.RealID == 0 || ds.RealID >= dataplane.MaxReals || usedReal[ds.RealID] {
				return fmt.Errorf("restore real %v: bad id %d", d.Addr, ds.RealID)
			}
			hop, err := s.route(d)
			if err != nil {
				s.log.Warn("restore: real server no longer reachable as configured; dropped",
					"service", svc.ServiceKey.String(), "real", d.AddrPort().String(), "err", err)
				continue
			}
			nd, err := s.installDest(sv, d, ds.RealID, hop)
			if err != nil {
				return err
			}
			usedReal[ds.RealID] = true
			sv.dests = append(sv.dests, nd)
		}
		sv.sched.Update(sv.schedDests())
		s.services[svc.ServiceKey] = sv
		s.byID[sv.id] = sv
		if sv.id >= s.nextSvcID {
			s.nextSvcID = sv.id + 1
		}
	}
	s.marks = append([]config.MarkRule(nil), st.Marks...)
	if err := s.syncKeys(); err != nil {
		return err
	}
	// Real ids: the highest in use bounds the allocator, gaps are free.
	ids, err := dp.RealIDs()
	if err != nil {
		return err
	}
	for _, id := range ids {
		if !usedReal[id] {
			if err := s.opts.Dataplane.DeleteReal(id); err != nil {
				return err
			}
		}
	}
	for id := range usedReal {
		if id >= s.nextReal {
			s.nextReal = id + 1
		}
	}
	for id := uint32(1); id < s.nextReal; id++ {
		if !usedReal[id] {
			s.freeReals = append(s.freeReals, id)
		}
	}
	for _, sv := range s.services {
		if err := s.setSorry(sv); err != nil {
			s.log.Warn("restore: sorry server not installed", "service", sv.cfg.ServiceKey.String(), "err", err)
		}
	}
	// Connections of reals this configuration does not have go at the
	// first sweep, in its walk (none of their own here: at 10M
	// connections a walk from Go takes seconds); XDP drops their
	// packets meanwhile, as it does any connection's whose real is gone.
	s.dropStale = true
	if err := s.dropStalePicks(); err != nil {
		return err
	}
	if err := s.rebuildPools(); err != nil {
		return err
	}
	if t := st.Timeouts; t != nil {
		sec := func(v float64) time.Duration { return time.Duration(v * float64(time.Second)) }
		if t["tcp"] > 0 {
			s.timeouts.TCP[conntrack.StateEstablished] = sec(t["tcp"])
		}
		if t["tcpfin"] > 0 {
			s.timeouts.TCP[conntrack.StateFinWait] = sec(t["tcpfin"])
		}
		if t["udp"] > 0 {
			s.timeouts.UDP = sec(t["udp"])
		}
	}
	s.log.Info("state restored", "services", len(s.services), "reals", len(s.reals))
	return nil
}
