package testutil

import (
	"errors"
	"net/netip"
	"time"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
)

// FakeDataplane is an in-memory data plane for the server's tests and
// the daemon's: its maps are Go maps. One director interface, eth0
// (ifindex 2).
type FakeDataplane struct {
	Services map[dataplane.ServiceKey]uint32
	SvcFlags map[dataplane.ServiceKey]dataplane.SvcFlags
	Reals    map[uint32]dataplane.Real
	Conns    map[dataplane.ConnKey]dataplane.Conn
	// Picks are the services' pick cycles; Cursors how many flows a
	// test has XDP take from each.
	Picks map[uint32][]uint32
	Loops map[uint32]int // where each service's picks repeat from
	// HashPicks and HashKinds are the hashing schedulers' tables.
	HashPicks map[uint32][]uint32
	HashKinds map[uint32]dataplane.PickKind
	// Tmpls are the persistence templates "XDP" holds.
	Tmpls map[dataplane.Template]dataplane.TemplateUse
	// Rings are the FULLNAT rings' ports; Laddrs the local address ids.
	Rings   map[uint32]map[uint8][]dataplane.LocalSlot
	Laddrs  map[uint32]netip.Addr
	Cursors map[uint32]uint64
	// Rooms are the reals' room under their thresholds; XDPPicks how
	// many connections a test has "XDP" bind to each real (TakeRoom).
	Rooms    map[uint32]int64
	XDPPicks map[uint32]uint64
}

// NewFakeDataplane returns an empty FakeDataplane.
func NewFakeDataplane() *FakeDataplane {
	return &FakeDataplane{Services: map[dataplane.ServiceKey]uint32{}, SvcFlags: map[dataplane.ServiceKey]dataplane.SvcFlags{}, Reals: map[uint32]dataplane.Real{},
		Conns: map[dataplane.ConnKey]dataplane.Conn{}, Picks: map[uint32][]uint32{}, Cursors: map[uint32]uint64{},
		Rooms: map[uint32]int64{}, XDPPicks: map[uint32]uint64{}}
}

// SetRoom stores a real's room.
func (f *FakeDataplane) SetRoom(id uint32, room int64) error { f.Rooms[id] = room; return nil }

// AddRoom adds to a real's room.
func (f *FakeDataplane) AddRoom(id uint32, n int64) error { f.Rooms[id] += n; return nil }

// RealPicks is how many connections "XDP" bound to a real.
func (f *FakeDataplane) RealPicks(id uint32) (uint64, error) { return f.XDPPicks[id], nil }

// Bind is XDP binding a new connection to real id of a service whose
// flags are flags, as bpf/picks.h does: with SvcRoom, only while the
// real has room (takeRoom; a template's follower spends it whatever
// is left). It reports whether XDP bound it (false: Go decides).
func (f *FakeDataplane) Bind(id uint32, flags dataplane.SvcFlags, follower bool) bool {
	if flags&dataplane.SvcRoom != 0 {
		if !follower && f.Rooms[id] <= 0 {
			return false
		}
		f.Rooms[id]--
	}
	f.XDPPicks[id]++
	return true
}

func (f *FakeDataplane) Interfaces() []dataplane.Interface {
	return []dataplane.Interface{{Name: "eth0", Index: 2}}
}
func (f *FakeDataplane) SetService(k dataplane.ServiceKey, id uint32, flags dataplane.SvcFlags) error {
	f.Services[k] = id
	f.SvcFlags[k] = flags
	return nil
}
func (f *FakeDataplane) DeleteService(k dataplane.ServiceKey) error {
	if _, ok := f.Services[k]; !ok {
		return errors.New("no such key")
	}
	delete(f.Services, k)
	return nil
}
func (f *FakeDataplane) SetReal(id uint32, r dataplane.Real) error { f.Reals[id] = r; return nil }
func (f *FakeDataplane) DeleteReal(id uint32) error                { delete(f.Reals, id); return nil }
func (f *FakeDataplane) WalkConns(fn func(dataplane.ConnKey, dataplane.Conn) bool) error {
	for k, c := range f.Conns {
		if !fn(k, c) {
			break
		}
	}
	return nil
}
func (f *FakeDataplane) LookupConn(k dataplane.ConnKey) (dataplane.Conn, bool, error) {
	c, ok := f.Conns[k]
	return c, ok, nil
}
func (f *FakeDataplane) DeleteConn(k dataplane.ConnKey) error { delete(f.Conns, k); return nil }

// ServiceKeys lists the services map's keys (server.Adopter).
func (f *FakeDataplane) ServiceKeys() ([]dataplane.ServiceKey, error) {
	var out []dataplane.ServiceKey
	for k := range f.Services {
		out = append(out, k)
	}
	return out, nil
}

// RealIDs lists the reals map's ids (server.Adopter).
func (f *FakeDataplane) RealIDs() ([]uint32, error) {
	var out []uint32
	for id := range f.Reals {
		out = append(out, id)
	}
	return out, nil
}

// SetPicks records a service's pick sequence (Picks, Loops).
func (f *FakeDataplane) SetPicks(svcID uint32, picks []uint32, loop int) (uint64, error) {
	if f.Picks == nil {
		f.Picks = map[uint32][]uint32{}
	}
	if f.Loops == nil {
		f.Loops = map[uint32]int{}
	}
	used := f.Cursors[svcID]
	f.Picks[svcID] = append([]uint32(nil), picks...)
	f.Loops[svcID] = loop
	delete(f.Cursors, svcID)
	delete(f.HashPicks, svcID)
	return used, nil
}

// SetHashPicks records a service's hash table (HashPicks, HashKinds).
func (f *FakeDataplane) SetHashPicks(svcID uint32, kind dataplane.PickKind, table []uint32) error {
	if f.HashPicks == nil {
		f.HashPicks = map[uint32][]uint32{}
		f.HashKinds = map[uint32]dataplane.PickKind{}
	}
	f.HashPicks[svcID] = append([]uint32(nil), table...)
	f.HashKinds[svcID] = kind
	delete(f.Picks, svcID)
	return nil
}

// ClearPicks forgets a service's pick cycle or table.
func (f *FakeDataplane) ClearPicks(svcID uint32) (uint64, error) {
	used := f.Cursors[svcID]
	delete(f.Picks, svcID)
	delete(f.HashPicks, svcID)
	delete(f.Cursors, svcID)
	return used, nil
}

// PickCursor is how many flows the test says XDP took from the cycle
// (Cursors).
func (f *FakeDataplane) PickCursor(svcID uint32) (uint64, error) { return f.Cursors[svcID], nil }

// PickServices lists the services with a cycle.
func (f *FakeDataplane) PickServices() ([]uint32, error) {
	var out []uint32
	for id := range f.Picks {
		out = append(out, id)
	}
	for id := range f.HashPicks {
		out = append(out, id)
	}
	return out, nil
}

// Sweep runs the sweep's Go model over Conns.
func (f *FakeDataplane) Sweep(a dataplane.SweepArgs) (dataplane.SweepResult, error) {
	return dataplane.SweepTable(f.Conns, a), nil
}

// SetSynced stores a synced connection's entries as the data plane
// does (dataplane.Entries, the state on the forward entry).
func (f *FakeDataplane) SetSynced(fl dataplane.NewFlow, dec dataplane.Decision, state conntrack.State, lastSeen time.Duration) error {
	for _, e := range dataplane.Entries(fl, dec, lastSeen, []byte{2, 0, 0, 0, 0, 2}) {
		if e.Conn.Flags&dataplane.ConnReply == 0 {
			e.Conn.State = state
		}
		f.Conns[e.Key] = e.Conn
	}
	return nil
}

// LookupTemplate finds a template (Templates).
func (f *FakeDataplane) LookupTemplate(t dataplane.Template) (dataplane.TemplateUse, bool, error) {
	u, ok := f.Tmpls[t]
	return u, ok, nil
}

// SetTemplate records a template (Templates).
func (f *FakeDataplane) SetTemplate(t dataplane.Template, u dataplane.TemplateUse) error {
	if f.Tmpls == nil {
		f.Tmpls = map[dataplane.Template]dataplane.TemplateUse{}
	}
	f.Tmpls[t] = u
	return nil
}

// DeleteTemplate forgets a template.
func (f *FakeDataplane) DeleteTemplate(t dataplane.Template) error {
	delete(f.Tmpls, t)
	return nil
}

// DeleteTemplates forgets the templates end says so of.
func (f *FakeDataplane) DeleteTemplates(end func(dataplane.Template, dataplane.TemplateUse) bool) error {
	for t, u := range f.Tmpls {
		if end(t, u) {
			delete(f.Tmpls, t)
		}
	}
	return nil
}

// Templates calls fn for every template.
func (f *FakeDataplane) Templates(fn func(dataplane.Template, dataplane.TemplateUse)) error {
	for t, u := range f.Tmpls {
		fn(t, u)
	}
	return nil
}

// FakeRingSlots is how many slots a fake FULLNAT ring has per protocol.
const FakeRingSlots = 64

// FNATRings: 16 rings.
func (f *FakeDataplane) FNATRings() int { return 16 }

// MaxLocalAddrs: 64 local address ids.
func (f *FakeDataplane) MaxLocalAddrs() uint32 { return 64 }

// SetLocalAddr names a local address.
func (f *FakeDataplane) SetLocalAddr(id uint32, a netip.Addr) error {
	if f.Laddrs == nil {
		f.Laddrs = map[uint32]netip.Addr{}
	}
	f.Laddrs[id] = a
	return nil
}

// FillRing fills the ring up to FakeRingSlots ports per protocol.
func (f *FakeDataplane) FillRing(ring uint32, proto uint8, next func() (dataplane.LocalSlot, bool)) (int, error) {
	if f.Rings == nil {
		f.Rings = map[uint32]map[uint8][]dataplane.LocalSlot{}
	}
	if f.Rings[ring] == nil {
		f.Rings[ring] = map[uint8][]dataplane.LocalSlot{}
	}
	n := 0
	for len(f.Rings[ring][proto]) < FakeRingSlots {
		s, ok := next()
		if !ok {
			break
		}
		f.Rings[ring][proto] = append(f.Rings[ring][proto], s)
		n++
	}
	return n, nil
}

// TakeFromRing is XDP taking a port from a ring (false: none).
func (f *FakeDataplane) TakeFromRing(ring uint32, proto uint8) (dataplane.LocalSlot, bool) {
	slots := f.Rings[ring][proto]
	if len(slots) == 0 {
		return dataplane.LocalSlot{}, false
	}
	f.Rings[ring][proto] = slots[1:]
	return slots[0], true
}

// TakeRingPort takes a port out of a ring.
func (f *FakeDataplane) TakeRingPort(ring uint32, proto uint8) (dataplane.LocalSlot, bool, error) {
	s, ok := f.TakeFromRing(ring, proto)
	return s, ok, nil
}

// DrainRing empties a ring.
func (f *FakeDataplane) DrainRing(ring uint32) (map[uint8][]dataplane.LocalSlot, error) {
	out := f.Rings[ring]
	delete(f.Rings, ring)
	if out == nil {
		out = map[uint8][]dataplane.LocalSlot{}
	}
	return out, nil
}

// RingPorts lists the ports in the rings.
func (f *FakeDataplane) RingPorts(fn func(uint32, uint8, dataplane.LocalSlot)) error {
	for r, byProto := range f.Rings {
		for p, slots := range byProto {
			for _, s := range slots {
				fn(r, p, s)
			}
		}
	}
	return nil
}

// OnLo is a data plane harness as a director serving lo, where
// BPF_PROG_RUN's frames come in (the server checks that a real's
// interface is one of the director's).
type OnLo struct{ *dataplane.Harness }

// Interfaces is lo alone.
func (OnLo) Interfaces() []dataplane.Interface { return []dataplane.Interface{{Name: "lo", Index: 1}} }
