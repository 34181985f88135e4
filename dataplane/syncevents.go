package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// Connection sync from events (bpf/sync.h): while SetSync says a master
// runs, XDP writes an event to a ring for each connection IPVS would sync
// on its packet (entering a synced state, or still in one after the
// refresh period), and the master reads them (SyncEvents): no walk of
// the table, and a cost per change.

// SyncEvent is a connection as the master syncs it.
type SyncEvent struct {
	Key       ConnKey
	State     conntrack.State
	RealID    uint32
	ServiceID uint32
	Flags     ConnFlags
	// Out is the tuple toward the real (NAT, FULLNAT; zero otherwise).
	Out ConnKey
}

// SetSync turns the events on or off; a live connection's event is
// written again after refresh (whole seconds, at least one).
func (d *Dataplane) SetSync(on bool, refresh time.Duration) error {
	cfg := bpfobj.DirectorSyncCfg{RefreshS: uint32(max(refresh/time.Second, 1))}
	if on {
		cfg.On = 1
	}
	if err := d.objs.SyncConf.Put(uint32(0), &cfg); err != nil {
		return fmt.Errorf("set sync events: %w", err)
	}
	return nil
}

// SyncEvents reads the events; one reader at a time. Close it to stop.
type SyncEvents struct {
	rd  *ringbuf.Reader
	rec ringbuf.Record
}

// OpenSyncEvents opens the event ring for reading.
func (d *Dataplane) OpenSyncEvents() (*SyncEvents, error) {
	rd, err := ringbuf.NewReader(d.objs.SyncEvents)
	if err != nil {
		return nil, fmt.Errorf("open the sync events: %w", err)
	}
	return &SyncEvents{rd: rd}, nil
}

// ErrNoEvent is Read's error when the deadline passed with no event.
var ErrNoEvent = errors.New("no sync event before the deadline")

// Read returns the next event, waiting until the deadline (SetDeadline;
// none: until one comes or the reader is closed).
func (s *SyncEvents) Read() (SyncEvent, error) {
	if err := s.rd.ReadInto(&s.rec); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return SyncEvent{}, ErrNoEvent
		}
		return SyncEvent{}, err
	}
	var raw bpfobj.DirectorSyncEvent
	if len(s.rec.RawSample) < int(unsafe.Sizeof(raw)) {
		return SyncEvent{}, fmt.Errorf("sync event of %d bytes", len(s.rec.RawSample))
	}
	raw = *(*bpfobj.DirectorSyncEvent)(unsafe.Pointer(&s.rec.RawSample[0]))
	return syncEventFromRaw(&raw), nil
}

// SetDeadline bounds the next Reads' wait.
func (s *SyncEvents) SetDeadline(t time.Time) { s.rd.SetDeadline(t) }

// Close stops the reader (a Read waiting returns).
func (s *SyncEvents) Close() error { return s.rd.Close() }

func syncEventFromRaw(r *bpfobj.DirectorSyncEvent) SyncEvent {
	addr := func(b [16]byte) netip.Addr {
		if r.V6 != 0 {
			return netip.AddrFrom16(b)
		}
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	e := SyncEvent{Key: ConnKey{Src: addr(r.Saddr), Dst: addr(r.Daddr), SrcPort: fromBE16(r.Sport), DstPort: fromBE16(r.Dport), Proto: r.Proto},
		State: conntrack.State(r.State), RealID: r.RealId, ServiceID: r.SvcId, Flags: ConnFlags(r.Flags)}
	if r.Nsaddr != ([16]byte{}) {
		e.Out = ConnKey{Src: addr(r.Nsaddr), Dst: addr(r.Ndaddr), SrcPort: fromBE16(r.Nsport), DstPort: fromBE16(r.Ndport)}
	}
	return e
}

// SyncEventOf is the event XDP writes for forward entry c of connection
// k (what a test or the Go slow path hands the master as XDP would).
func SyncEventOf(k ConnKey, c Conn) SyncEvent {
	return SyncEvent{Key: k, State: c.State, RealID: c.RealID, ServiceID: c.ServiceID, Flags: c.Flags, Out: c.Out}
}
