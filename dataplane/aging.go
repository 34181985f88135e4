package dataplane

// aging.go: established connections age by Go's deadline index
// (bpf/aging.h), not by a walk of the table every second: an idle table
// costs nothing, and what aging costs follows the connections that come,
// change and end, as IPVS's per-connection timers do.
//
// XDP counts a connection when it promotes it (est_live: ActiveConn,
// InActConn; its template's controls) and sends an event with its key,
// state and a stamp. The index files the key under the second its state's
// timeout ends. When that second comes, the reaper (sweep.bpf.c
// xipvs_reap) judges it with the kernel's own clock and last_seen: ended,
// or how long until it is due, and the index files it again then. A
// later event stamps the entry anew, so an index entry it superseded is
// dropped, not judged twice. The sweep walks only the embryonic tables,
// and the established ones at a full pass (SweepArgs.Full) as a safety
// net. A bpf_timer per connection was tried first: this kernel's
// bpf_timer_init fails with ENOMEM for nearly every connection past the
// first few hundred.

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// ageSlots is the index's horizon in one-second slots: a deadline further
// away is filed at the horizon and judged again there.
const ageSlots = 4096

type ageKey4 struct {
	k     bpfobj.DirectorConnKey
	stamp uint16
}

type ageKey6 struct {
	k     bpfobj.DirectorConnKey6
	stamp uint16
}

type ageSlot struct {
	v4 []ageKey4
	v6 []ageKey6
}

// agingState is Go's side of aging: aging_conf as written, the deadline
// index, and what feeds it. The sweeper owns it (Sweep), but for pending.
type agingState struct {
	on       atomic.Bool
	timeouts conntrack.Timeouts
	events   *ringbuf.Reader // age_events
	rec      ringbuf.Record
	slots    [ageSlots]ageSlot
	next     int64 // the next second the index looks at; 0: not started
	held     int   // entries filed
	lost     uint64
	rebuild  bool // the index must be rebuilt from the tables
	// gcPercent is the garbage collector's pace paceGC set (0: none yet).
	gcPercent int
	mem       []byte
	reap      []bpfobj.SweepReapSlot // reap_slots, memory-mapped
	// The embryonic walk (Sweep): when it last ran and what it found,
	// and what was created since (XDP's STAT_EMB_NEW, Go's embWrites).
	embNext    time.Duration // no walk before, unless one is due
	embEmpty   bool          // the last walk found no embryonic entry
	embCreated uint64        // creations when it ran
	embCounts  map[uint32]conntrack.Counts
	embOwned   []Template
	// pending are the connections Go wrote into the established table
	// (a sync backup's), filed by the next Sweep.
	pendingMu sync.Mutex
	pending4  []ageKey4
	pending6  []ageKey6
}

// IndexAging reports whether established connections age by the index.
func (d *Dataplane) IndexAging() bool { return d.aging.on.Load() }

func (d *Dataplane) writeAging(on bool, to conntrack.Timeouts) error {
	v := bpfobj.DirectorAgingCfg{UdpTimeout: uint64(to.UDP)}
	for i := range v.TcpTimeout {
		v.TcpTimeout[i] = uint64(to.TCP[i])
	}
	if on {
		v.On = 1
	}
	if err := d.objs.AgingConf.Put(uint32(0), &v); err != nil {
		return fmt.Errorf("aging_conf: %w", err)
	}
	d.aging.on.Store(on)
	d.aging.timeouts = to
	return nil
}

// addLiveCounts adds the established connections' counts (est_live,
// summed over the CPUs) of the configured reals to out.
func (d *Dataplane) addLiveCounts(out map[uint32]conntrack.Counts) error {
	d.realsMu.RLock()
	ids := make([]uint32, 0, len(d.reals))
	for id := range d.reals {
		ids = append(ids, id)
	}
	d.realsMu.RUnlock()
	var per []bpfobj.DirectorLiveCount
	for _, id := range ids {
		if err := d.objs.EstLive.Lookup(id, &per); err != nil {
			return fmt.Errorf("read est_live: %w", err)
		}
		var act, inact int64
		for _, c := range per {
			act += c.Active
			inact += c.Inactive
		}
		// A CPU's share may be negative; the sum is not, unless an end
		// came after the real's counts were reset for a new real.
		if act > 0 || inact > 0 {
			n := out[id]
			n.Active += int(max(act, 0))
			n.Inactive += int(max(inact, 0))
			out[id] = n
		}
	}
	return nil
}

// resetLive zeroes real id's established counts: the id goes to a new
// real.
func (d *Dataplane) resetLive(id uint32) error {
	zero := make([]bpfobj.DirectorLiveCount, ebpf.MustPossibleCPU())
	if err := d.objs.EstLive.Update(id, zero, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("reset established counts of real %d: %w", id, err)
	}
	return nil
}

// file puts a key into the index at second sec (clamped to the index's
// window).
func (a *agingState) file4(sec int64, k ageKey4) {
	s := &a.slots[a.slotOf(sec)]
	s.v4 = append(s.v4, k)
	a.held++
}

func (a *agingState) file6(sec int64, k ageKey6) {
	s := &a.slots[a.slotOf(sec)]
	s.v6 = append(s.v6, k)
	a.held++
}

func (a *agingState) slotOf(sec int64) int64 {
	sec = min(max(sec, a.next), a.next+ageSlots-1)
	return sec % ageSlots
}

// secondsAfter is the second now + d ends in, rounded up.
func secondsAfter(now, d time.Duration) int64 {
	return int64((now + d + time.Second - 1) / time.Second)
}

// indexWritten files connection k, which Go wrote into the established
// table as c, for the reaper to count and judge at the next sweep.
func (d *Dataplane) indexWritten(k ConnKey, c Conn) {
	a := &d.aging
	a.pendingMu.Lock()
	defer a.pendingMu.Unlock()
	if k.Src.Is6() {
		a.pending6 = append(a.pending6, ageKey6{k: k.Raw6(), stamp: c.Stamp})
	} else {
		a.pending4 = append(a.pending4, ageKey4{k: k.Raw(), stamp: c.Stamp})
	}
}

// ageResult is what one turn of the index did.
type ageResult struct {
	Released []LocalPort
	Judged   int
	Expired  uint64
}

// ageTurn files what XDP and Go told the index since the last turn, then
// has the reaper judge every connection filed under a second that has
// come, and files again those not yet due. The first turn, and one after
// lost events, builds the index from the tables.
func (d *Dataplane) ageTurn(now time.Duration) (ageResult, error) {
	a := &d.aging
	var res ageResult
	if a.reap == nil {
		if err := d.openAging(); err != nil {
			return res, err
		}
	}
	nowSec := int64(now / time.Second)
	if a.next == 0 {
		a.next, a.rebuild = nowSec, true
	}
	if lost := d.statCounter(StatAgeLost); lost != a.lost {
		a.lost, a.rebuild = lost, true
	}
	if err := d.drainAgeEvents(now); err != nil {
		return res, err
	}
	if a.rebuild {
		if err := d.rebuildIndex(now); err != nil {
			return res, err
		}
	}
	a.pendingMu.Lock()
	for _, k := range a.pending4 {
		a.file4(nowSec, k)
	}
	for _, k := range a.pending6 {
		a.file6(nowSec, k)
	}
	a.pending4, a.pending6 = nil, nil
	a.pendingMu.Unlock()
	if nowSec%60 == 0 {
		a.paceGC()
	}
	for ; a.next <= nowSec; a.next++ {
		s := &a.slots[a.next%ageSlots]
		v4, v6 := s.v4, s.v6
		s.v4, s.v6 = nil, nil
		a.held -= len(v4) + len(v6)
		if err := d.judge(now, v4, nil, &res); err != nil {
			return res, err
		}
		if err := d.judge(now, nil, v6, &res); err != nil {
			return res, err
		}
	}
	return res, nil
}

// judge has the reaper judge v4 (or v6) in batches of REAP_MAX and files
// again those not yet due.
func (d *Dataplane) judge(now time.Duration, v4 []ageKey4, v6 []ageKey6, res *ageResult) error {
	a := &d.aging
	n := len(v4) + len(v6)
	for off := 0; off < n; off += len(a.reap) {
		m := min(len(a.reap), n-off)
		out, err := d.reapBatch(now, m, func(i int, s *bpfobj.SweepReapSlot) {
			if v4 != nil {
				setReapKey(s, &v4[off+i].k, v4[off+i].stamp, 0)
			} else {
				setReapKey(s, &v6[off+i].k, v6[off+i].stamp, 1)
			}
		})
		if err != nil {
			return err
		}
		res.Judged += m
		res.Expired += out.Expired
		res.Released = append(res.Released, out.Released...)
		for i, left := range out.Left {
			if left == 0 {
				continue
			}
			sec := secondsAfter(now, left)
			if v4 != nil {
				a.file4(sec, v4[off+i])
			} else {
				a.file6(sec, v6[off+i])
			}
		}
	}
	return nil
}

func setReapKey[K any](s *bpfobj.SweepReapSlot, k *K, stamp uint16, v6 uint8) {
	*s = bpfobj.SweepReapSlot{Stamp: stamp, V6: v6}
	copy(s.Key[:], unsafe.Slice((*byte)(unsafe.Pointer(k)), unsafe.Sizeof(*k)))
}

// reapOut is one reaper run's result.
type reapOut struct {
	Left     []time.Duration // per slot: until due; 0 ended, gone or stale
	Released []LocalPort
	Expired  uint64
}

// reapBatch has the reaper judge m connections (m <= REAP_MAX), slot i
// written by fill.
func (d *Dataplane) reapBatch(now time.Duration, m int, fill func(i int, s *bpfobj.SweepReapSlot)) (reapOut, error) {
	a := &d.aging
	if _, err := d.sweeper(); err != nil {
		return reapOut{}, err
	}
	if a.reap == nil {
		if err := d.openAging(); err != nil {
			return reapOut{}, err
		}
	}
	m = min(m, len(a.reap))
	for i := 0; i < m; i++ {
		fill(i, &a.reap[i])
	}
	args := bpfobj.SweepReapArgs{Now: uint64(now), N: uint32(m)}
	var out bpfobj.SweepReapArgs
	ret, err := d.sweep.objs.XipvsReap.Run(&ebpf.RunOptions{Context: args, ContextOut: &out})
	if err != nil {
		return reapOut{}, fmt.Errorf("run reaper: %w", err)
	}
	if ret != 0 {
		return reapOut{}, errors.New("run reaper: aging by the index is off")
	}
	res := reapOut{Expired: out.Expired, Left: make([]time.Duration, m)}
	for i := range res.Left {
		res.Left[i] = time.Duration(a.reap[i].Left)
	}
	res.Released, err = d.readReleased(int(out.Released))
	return res, err
}

// drainAgeEvents files the connections XDP promoted or moved since the
// last turn, at their state's timeout from now.
func (d *Dataplane) drainAgeEvents(now time.Duration) error {
	a := &d.aging
	a.events.SetDeadline(time.Now())
	for {
		if err := a.events.ReadInto(&a.rec); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			}
			return fmt.Errorf("read age_events: %w", err)
		}
		var e bpfobj.DirectorAgeEvent
		if len(a.rec.RawSample) < int(unsafe.Sizeof(e)) {
			return fmt.Errorf("aging event of %d bytes", len(a.rec.RawSample))
		}
		e = *(*bpfobj.DirectorAgeEvent)(unsafe.Pointer(&a.rec.RawSample[0]))
		if a.rebuild {
			continue // the walk finds it
		}
		if e.V6 != 0 {
			k := ageKey6{stamp: e.Stamp}
			*(*[40]byte)(unsafe.Pointer(&k.k)) = e.Key
			a.file6(secondsAfter(now, a.timeouts.Timeout(k.k.Proto, conntrack.State(e.State))), k)
		} else {
			k := ageKey4{stamp: e.Stamp}
			*(*[16]byte)(unsafe.Pointer(&k.k)) = [16]byte(e.Key[:16])
			a.file4(secondsAfter(now, a.timeouts.Timeout(k.k.Proto, conntrack.State(e.State))), k)
		}
	}
}

// rebuildIndex files every established forward entry at its deadline
// from a walk of the tables: at the first turn (a restart adopted them)
// and after lost events.
func (d *Dataplane) rebuildIndex(now time.Duration) (err error) {
	a := &d.aging
	start := time.Now()
	defer func() {
		if err == nil {
			d.log.Info("aging index built from the established tables", "connections", a.held, "took", time.Since(start).Round(time.Millisecond))
		}
	}()
	for i := range a.slots {
		a.slots[i] = ageSlot{}
	}
	a.held, a.rebuild = 0, false
	a.pendingMu.Lock()
	a.pending4, a.pending6 = nil, nil // the walk finds them
	a.pendingMu.Unlock()
	due := func(c Conn, proto uint8) int64 {
		return secondsAfter(c.LastSeen, a.timeouts.Timeout(proto, c.State))
	}
	err = walkRaw(d.objs.EstConns, func(k *bpfobj.DirectorConnKey, v *bpfobj.DirectorConnVal) {
		if ConnFlags(v.Flags)&ConnReply == 0 {
			a.file4(due(Conn{LastSeen: time.Duration(v.LastSeen), State: conntrack.State(v.State)}, k.Proto), ageKey4{k: *k, stamp: v.Hits})
		}
	})
	if err == nil && d.ipv6.Load() {
		err = walkRaw(d.objs.EstConns6, func(k *bpfobj.DirectorConnKey6, v *bpfobj.DirectorConnVal6) {
			if ConnFlags(v.Flags)&ConnReply == 0 {
				a.file6(due(Conn{LastSeen: time.Duration(v.LastSeen), State: conntrack.State(v.State)}, k.Proto), ageKey6{k: *k, stamp: v.Hits})
			}
		})
	}
	if err != nil {
		return err
	}
	// A table of millions grew its slots by doubling: each is cut to
	// its length, and the memory the growth left behind goes back to
	// the system at once rather than at the scavenger's pace.
	for i := range a.slots {
		s := &a.slots[i]
		if cap(s.v4) > len(s.v4)+len(s.v4)/8+64 {
			s.v4 = slices.Clone(s.v4)
		}
		if cap(s.v6) > len(s.v6)+len(s.v6)/8+64 {
			s.v6 = slices.Clone(s.v6)
		}
	}
	debug.FreeOSMemory()
	a.paceGC()
	return nil
}

// indexHeadroom is the heap the garbage collector may let grow above
// what lives while the index is large (its entries hold no pointers:
// a collection does not scan them).
const indexHeadroom = 64 << 20

// paceGC keeps xipvsd's memory within indexHeadroom of what lives when
// the index holds millions of entries: at the default pace, a listing of
// ten million connections would let the heap grow by as much again as
// the index.
func (a *agingState) paceGC() {
	live := uint64(a.held) * uint64(unsafe.Sizeof(ageKey4{}))
	pct := 100
	if live > indexHeadroom {
		pct = max(10, int(100*indexHeadroom/live))
	}
	if pct != a.gcPercent {
		debug.SetGCPercent(pct)
		a.gcPercent = pct
	}
}

// walkRaw calls fn for every entry of m, read in batches.
func walkRaw[K, V any](m *ebpf.Map, fn func(*K, *V)) error {
	const chunk = 1 << 14
	keys, vals := make([]K, chunk), make([]V, chunk)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := 0; i < n; i++ {
			fn(&keys[i], &vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("walk %s: %w", m, err)
		}
	}
}

// openAging maps reap_slots and opens the event ring.
func (d *Dataplane) openAging() error {
	a := &d.aging
	m := d.sweep.objs.ReapSlots
	size := (int(m.MaxEntries())*int(unsafe.Sizeof(bpfobj.SweepReapSlot{})) + unix.Getpagesize() - 1) &^ (unix.Getpagesize() - 1)
	mem, err := unix.Mmap(m.FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map reap_slots: %w", err)
	}
	rd, err := ringbuf.NewReader(d.objs.AgeEvents)
	if err != nil {
		_ = unix.Munmap(mem)
		return fmt.Errorf("open age_events: %w", err)
	}
	a.mem, a.events = mem, rd
	a.reap = unsafe.Slice((*bpfobj.SweepReapSlot)(unsafe.Pointer(&mem[0])), int(m.MaxEntries()))
	return nil
}

// IndexHeld is how many connections the deadline index holds.
func (d *Dataplane) IndexHeld() int { return d.aging.held }

func (a *agingState) Close() error {
	var err error
	if a.events != nil {
		err = a.events.Close()
		a.events = nil
	}
	if a.mem != nil {
		err = errors.Join(err, unix.Munmap(a.mem))
		a.mem, a.reap = nil, nil
	}
	return err
}

// statCounter is global counter i summed over the CPUs.
func (d *Dataplane) statCounter(i int) uint64 {
	var per []uint64
	if err := d.objs.Stats.Lookup(uint32(i), &per); err != nil {
		return 0
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n
}
