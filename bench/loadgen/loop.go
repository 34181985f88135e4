package loadgen

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xipvs/xipvs/dataplane/xsk"
)

// Loop is a closed-loop load generator on one link, which needs no live
// frames: a few frames are seeded through a Sender's AF_XDP sockets into the
// subject on the far end of the link, and loadgen_loop, attached on the
// near end where the subject's forwarded frames land, counts each one
// and sends it straight back to the subject as the next flow of its slot
// (XDP_TX). The load then runs at the speed of the slowest hop: the
// subject, or the loop's own bounce. A frame the subject drops is
// replaced by the seeder once its slot has made no trip for
// Loop.Revive.
//
// One Loop runs at a time per Programs: the flows, the slots and the
// counts live in its maps.
type Loop struct {
	g       *Programs
	xs      []*xsk.Socket
	slots   uint32
	w       *writer
	flows   Flows
	revived atomic.Uint64

	mu     sync.Mutex
	stop   chan struct{}
	done   chan error
	gen    uint16
	tended []loopTend
}

// loopTend is what the seeder last saw of a slot.
type loopTend struct {
	k    uint64
	seen time.Time
}

// LoopRevive is how long a slot may make no trip before the seeder
// replaces its frame: longer than any subject holds a frame (the Go slow
// path's queue drains in milliseconds).
const LoopRevive = 200 * time.Millisecond

// DefaultSlots is the number of frames a loop keeps in flight: enough to
// keep every hop busy, few enough that a veth's 256-frame ring never
// overflows with all of them in it.
const DefaultSlots = 192

// AttachLoop attaches loadgen_loop natively to ifindex, in the calling
// thread's network namespace: the near end of a loop, and a sink for
// frames that are not the loop's.
func (g *Programs) AttachLoop(ifindex int) (*Attachment, error) {
	return g.attach(g.objs.LoadgenLoop, ifindex)
}

// NewLoop prepares a loop of slots frames through the link whose near
// end is the sender's interface (where AttachLoop attached), seeded
// through the sender's AF_XDP sockets: frames seeded through queue q
// arrive on the subject's receive queue q. Close the loop before the
// sender.
func (s *Sender) NewLoop(slots int) (*Loop, error) {
	if s.method != AFXDP {
		return nil, fmt.Errorf("loop: seeds through AF_XDP, not %s", s.method)
	}
	if slots <= 0 || slots > int(loadgenLoopConstLOOP_MAX_SLOTS) {
		return nil, fmt.Errorf("loop: %d slots, want 1 to %d", slots, loadgenLoopConstLOOP_MAX_SLOTS)
	}
	return &Loop{g: s.g, xs: s.xs, slots: uint32(slots)}, nil
}

// Start makes f the loop's flows (tagged: the template's payload must
// have room for the tag), seeds every slot and starts replacing lost
// frames. A running loop is stopped first.
func (l *Loop) Start(f Flows) error {
	if _, err := l.Stop(); err != nil {
		return err
	}
	f.Tagged = true
	w, err := newWriter(f)
	if err != nil {
		return err
	}
	if err := l.g.SetFlows(f); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w, l.flows = w, f
	l.gen++ // frames of an earlier run are stale
	keys := make([]uint32, l.slots)
	vals := make([]loadgenLoopSlot, l.slots)
	for i := range keys {
		keys[i] = uint32(i)
		vals[i] = loadgenLoopSlot{Gen: l.gen}
	}
	if _, err := l.g.objs.LoopSlots.BatchUpdate(keys, vals, nil); err != nil {
		return fmt.Errorf("loop slots: %w", err)
	}
	zero := uint32(0)
	if err := l.g.objs.LoopConfig.Put(zero, loadgenLoopCfg{Start: f.Start, Slots: l.slots, On: 1}); err != nil {
		return fmt.Errorf("loop config: %w", err)
	}
	l.tended = make([]loopTend, l.slots)
	now := time.Now()
	// Slot s goes out by queue s % queues.
	for qi, xs := range l.xs {
		var mine []uint32
		for s := uint32(qi); s < l.slots; s += uint32(len(l.xs)) {
			mine = append(mine, s)
			l.tended[s].seen = now
		}
		if err := l.seed(xs, mine, 0, l.gen); err != nil {
			return err
		}
	}
	l.stop, l.done = make(chan struct{}), make(chan error, 1)
	go l.tend(l.stop, l.done)
	return nil
}

// seed sends the frames of slots on their k-th trip under generation gen.
func (l *Loop) seed(xs *xsk.Socket, slots []uint32, k uint64, gen uint16) error {
	for len(slots) > 0 {
		q, err := transmit(xs, uint64(len(slots)), func(buf []byte, i uint64) int {
			s := slots[i]
			n := l.flows.Start + k*uint64(l.slots) + uint64(s)
			return l.w.write(buf, l.w.flow(n), Tag{Slot: s, Gen: gen})
		})
		if err != nil {
			return fmt.Errorf("loop: seed: %w", err)
		}
		slots = slots[q:]
	}
	return nil
}

// tend replaces the frames of slots that made no trip for LoopRevive,
// until stop is closed.
func (l *Loop) tend(stop chan struct{}, done chan error) {
	t := time.NewTicker(LoopRevive / 4)
	defer t.Stop()
	keys := make([]uint32, l.slots)
	vals := make([]loadgenLoopSlot, l.slots)
	for {
		select {
		case <-stop:
			done <- nil
			return
		case now := <-t.C:
			if err := l.reviveIdle(now, keys, vals); err != nil {
				done <- err
				return
			}
		}
	}
}

func (l *Loop) reviveIdle(now time.Time, keys []uint32, vals []loadgenLoopSlot) error {
	var cursor ebpf.MapBatchCursor
	n, err := l.g.objs.LoopSlots.BatchLookup(&cursor, keys, vals, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("loop slots: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := 0; i < n; i++ {
		s := keys[i]
		if s >= l.slots {
			continue
		}
		v, t := vals[i], &l.tended[s]
		if v.K != t.k {
			t.k, t.seen = v.K, now
			continue
		}
		if now.Sub(t.seen) < LoopRevive {
			continue
		}
		// The frame is lost (or late: then it is dropped as stale when
		// it comes back, having made at most one more trip, whose flow
		// the skip leaves unused).
		nv := loadgenLoopSlot{K: v.K + 16, Gen: v.Gen + 1}
		if err := l.g.objs.LoopSlots.Put(s, nv); err != nil {
			return fmt.Errorf("loop slot %d: %w", s, err)
		}
		if err := l.seed(l.xs[int(s)%len(l.xs)], []uint32{s}, nv.K, nv.Gen); err != nil {
			return err
		}
		t.k, t.seen = nv.K, now
		l.revived.Add(1)
	}
	return nil
}

// LoopStats are what a loop did between Start and Stop.
type LoopStats struct {
	// Looped frames were sent back to the subject; Stale ones came back
	// after their slot had been reseeded; Revived counts the reseeds.
	Looped, Stale, Revived uint64
}

// Stop stops the loop: the frames in flight are dropped when they come
// back. It returns what the loop did since Start.
func (l *Loop) Stop() (LoopStats, error) {
	l.mu.Lock()
	stop, done := l.stop, l.done
	l.stop, l.done = nil, nil
	l.mu.Unlock()
	if stop == nil {
		return LoopStats{}, nil
	}
	zero := uint32(0)
	err := l.g.objs.LoopConfig.Put(zero, loadgenLoopCfg{})
	close(stop)
	err = errors.Join(err, <-done)
	st, serr := l.g.loopCounts()
	st.Revived = l.revived.Swap(0)
	return st, errors.Join(err, serr)
}

// loopCounts reads and zeroes the loop's counters, summed over CPUs.
func (g *Programs) loopCounts() (LoopStats, error) {
	var st LoopStats
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return st, err
	}
	zero := make([]uint64, ncpu)
	for k, dst := range map[loadgenLoopCounter]*uint64{
		loadgenLoopCounterLOOP_LOOPED: &st.Looped, loadgenLoopCounterLOOP_STALE: &st.Stale,
	} {
		var vs []uint64
		if err := g.objs.LoopCounts.Lookup(uint32(k), &vs); err != nil {
			return st, fmt.Errorf("loop counts: %w", err)
		}
		for _, v := range vs {
			*dst += v
		}
		if err := g.objs.LoopCounts.Put(uint32(k), zero); err != nil {
			return st, fmt.Errorf("loop counts: %w", err)
		}
	}
	return st, nil
}

// Close stops the loop.
func (l *Loop) Close() error {
	_, err := l.Stop()
	return err
}
