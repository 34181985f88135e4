package server

// sync.go: connection synchronization (IPVS's sync daemon): the
// master's view of the connection table and the backup's insertion of
// what a master sent, bound to this director's own configuration.

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/connsync"
)

// SyncConns turns the data plane's sync events (dataplane.SyncEvent:
// written by XDP when IPVS would sync a connection, bpf/sync.h) into the
// records a master sends: TCP in the states IPVS syncs (ESTABLISHED,
// FIN_WAIT, TIME_WAIT, CLOSE, CLOSE_WAIT) and UDP, with the forwarding
// method and the state's timeout as IPVS sends them. An event of a real
// this director no longer has, or of a state IPVS does not sync, gives
// no record. One lock for the batch; nothing walks the table.
func (s *Server) SyncConns(events []dataplane.SyncEvent, out []connsync.Conn) []connsync.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range events {
		if c, ok := s.syncConnOf(e); ok {
			out = append(out, c)
		}
	}
	return out
}

// syncConnOf is event e's record; s.mu is held.
func (s *Server) syncConnOf(e dataplane.SyncEvent) (connsync.Conn, bool) {
	k := e.Key
	if e.Flags&dataplane.ConnReply != 0 || (k.Proto == conntrack.ProtoTCP && !syncedState(e.State)) {
		return connsync.Conn{}, false
	}
	d := s.reals[e.RealID]
	if d == nil {
		return connsync.Conn{}, false
	}
	sc := connsync.Conn{Proto: k.Proto, State: uint16(e.State), Flags: ipvsFwd(d.cfg.Fwd), FWMark: d.svc.cfg.FWMark,
		Client: netip.AddrPortFrom(k.Src, k.SrcPort), Virtual: netip.AddrPortFrom(k.Dst, k.DstPort),
		Timeout: uint32(s.timeouts.Timeout(k.Proto, e.State) / time.Second)}
	dport := d.cfg.Port
	if e.Out.Src.IsValid() {
		dport = e.Out.DstPort
	}
	if dport == 0 {
		dport = k.DstPort
	}
	sc.Dest = netip.AddrPortFrom(d.cfg.Addr, dport)
	if k.Proto == conntrack.ProtoUDP {
		sc.State = 0 // IP_VS_UDP_S_NORMAL
	}
	if e.Flags&dataplane.ConnFullNAT != 0 {
		sc.Local = netip.AddrPortFrom(e.Out.Src, e.Out.SrcPort)
	}
	return sc, true
}

// syncedState reports whether IPVS synchronizes a TCP connection in
// state st (ip_vs_sync_conn_needed).
func syncedState(st conntrack.State) bool {
	switch st {
	case conntrack.StateEstablished, conntrack.StateFinWait, conntrack.StateTimeWait,
		conntrack.StateClose, conntrack.StateCloseWait:
		return true
	}
	return false
}

// ipvsFwd is IPVS's IP_VS_CONN_F_* forwarding method of f; FULLNAT,
// which IPVS lacks, travels as masquerading with xipvs's local address
// option.
func ipvsFwd(f config.Fwd) uint32 { return uint32(f.Method().Sync) }

// Errors of InsertSynced: the connection is skipped and counted.
var (
	ErrSyncNoService = errors.New("no such service here")
	ErrSyncNoDest    = errors.New("no such real server in the service here")
	ErrSyncMethod    = errors.New("forwarding method differs from this director's")
	ErrSyncNoLocal   = errors.New("FULLNAT local address not among the service's here")
	ErrSyncNoRoute   = errors.New("no route (or MAC yet) toward the client for NAT replies")
	ErrSyncMoves     = errors.New("would move a live connection of this director to another real")
)

// syncedWriter is what a data plane needs to take synced connections.
type syncedWriter interface {
	SetSynced(f dataplane.NewFlow, dec dataplane.Decision, state conntrack.State, lastSeen time.Duration) error
}

// InsertSynced adds a connection a sync master sent to this director's
// table, bound to its own configuration: the service (by address and
// port, or by firewall mark) and the real must exist here with the same
// forwarding method, else it is skipped with an error saying why. Its
// age is set so that it expires when the master's would, and a FULLNAT
// connection's local port is reserved in this director's pool.
func (s *Server) InsertSynced(c connsync.Conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.insertSyncedLocked(c)
}

// maxSyncPending bounds the NAT connections waiting for their client's
// next hop to resolve.
const maxSyncPending = 65536

// syncLiveIdle is how recently an entry must have been seen, in a state
// other than ESTABLISHED, for a synced record not to move it.
const syncLiveIdle = 10 * time.Second

// syncLive reports whether an entry is a live connection a synced record
// must not move to another real: ESTABLISHED, or seen within
// syncLiveIdle (a tuple the master reused is closed or idle here).
func (s *Server) syncLive(c dataplane.Conn) bool {
	if c.State == conntrack.StateEstablished {
		return true
	}
	return s.opts.Now()-c.LastSeen < syncLiveIdle
}

// insertSyncedLocked is InsertSynced; s.mu is held.
func (s *Server) insertSyncedLocked(c connsync.Conn) error {
	w, ok := s.opts.Dataplane.(syncedWriter)
	if !ok {
		return fmt.Errorf("this data plane cannot take synced connections")
	}
	var sv *service
	if c.FWMark != 0 {
		sv = s.services[config.ServiceKey{FWMark: c.FWMark, Proto: config.TCP, V6: c.V6()}]
	} else {
		sv = s.services[config.ServiceKey{Proto: config.Proto(c.Proto), Addr: c.Virtual.Addr(), Port: c.Virtual.Port()}]
		if sv == nil { // a port-zero service
			sv = s.services[config.ServiceKey{Proto: config.Proto(c.Proto), Addr: c.Virtual.Addr()}]
		}
	}
	if sv == nil {
		return ErrSyncNoService
	}
	_, d := sv.findDest(c.Dest.Addr(), c.Dest.Port())
	if d == nil {
		_, d = sv.findDest(c.Dest.Addr(), 0)
	}
	if d == nil {
		return ErrSyncNoDest
	}
	if ipvsFwd(d.cfg.Fwd) != c.Flags&connsync.FlagFwdMask || (d.cfg.Fwd == config.FwdFullNAT) != c.Local.IsValid() {
		return ErrSyncMethod
	}
	key := dataplane.ConnKey{Src: c.Client.Addr(), Dst: c.Virtual.Addr(), SrcPort: c.Client.Port(), DstPort: c.Virtual.Port(), Proto: c.Proto}
	if old, found, err := s.opts.Dataplane.LookupConn(key); err == nil && found && old.RealID != d.realID && s.syncLive(old) {
		// The kernel lets a master's record replace a connection to
		// another real (the master reused the tuple); a record that
		// would move one this director is forwarding is refused.
		return ErrSyncMoves
	}
	f := dataplane.NewFlow{Key: key, TCPFlags: dataplane.TCPAck}
	dec := dataplane.Decision{RealID: d.realID, ServiceID: sv.id, Persistent: sv.cfg.Persistent}
	if d.cfg.Fwd.Rewrites() {
		// The replies go back toward the client through this director's
		// next hop to it.
		hop, err := s.opts.Route(key.Src)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrSyncNoRoute, err)
		}
		via := hop.Via(key.Src)
		if s.opts.Neighbors == nil {
			return ErrSyncNoRoute
		}
		mac := s.opts.Neighbors.MAC(via)
		if mac == nil {
			// Resolved in the background: OnNeighbor inserts it then.
			if s.syncPendingN >= maxSyncPending {
				return ErrSyncNoRoute
			}
			if s.syncPending == nil {
				s.syncPending = map[netip.Addr][]connsync.Conn{}
			}
			s.syncPending[via] = append(s.syncPending[via], c)
			s.syncPendingN++
			// (Not under s.mu: the MAC may arrive at once, through
			// OnNeighbor.)
			go s.opts.Neighbors.Watch(via, hop.Ifindex)
			return nil
		}
		f.Ifindex = hop.Ifindex
		copy(f.SrcMAC[:], mac)
		dec.Out = dataplane.ConnKey{Src: key.Src, Dst: d.cfg.Addr, SrcPort: key.SrcPort, DstPort: c.Dest.Port()}
		if d.cfg.Fwd == config.FwdFullNAT {
			la := c.Local.Addr()
			found := false
			for _, a := range sv.laddrs {
				found = found || a == la
			}
			if !found {
				return ErrSyncNoLocal
			}
			s.pool(la, c.Proto).take(c.Local.Port())
			dec.Out.Src, dec.Out.SrcPort, dec.FullNAT = la, c.Local.Port(), true
		}
	}
	state := conntrack.State(c.State)
	now := s.opts.Now()
	lastSeen := now
	if full := s.timeouts.Timeout(c.Proto, state); c.Timeout > 0 && time.Duration(c.Timeout)*time.Second < full {
		// The clock starts at boot: on a backup up for less than the
		// time the connection has been idle, it is stamped at boot and
		// lives longer than the master said, never more than a full
		// timeout (a negative stamp would read as the far future and
		// never expire).
		lastSeen = max(now-(full-time.Duration(c.Timeout)*time.Second), 0)
	}
	return w.SetSynced(f, dec, state, lastSeen)
}

// retrySynced inserts the synced connections that waited for via's MAC;
// s.mu is held.
func (s *Server) retrySynced(via netip.Addr) {
	pending := s.syncPending[via]
	if len(pending) == 0 {
		return
	}
	delete(s.syncPending, via)
	s.syncPendingN -= len(pending)
	for _, c := range pending {
		if err := s.insertSyncedLocked(c); err != nil {
			s.log.Warn("synced connection skipped", "client", c.Client.String(), "virtual", c.Virtual.String(), "err", err)
		}
	}
}
