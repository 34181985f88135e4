package slowpath

import (
	"hash/maphash"
	"time"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// The slow path's code over both address families, generic in the raw
// connection key K and value V (bpfobj's DirectorConnKey[6] and
// DirectorConnVal[6]): the flows a worker created lately (recent), the
// placement of a batch's frame (place: behind a flow of the batch, one
// made moments before, a later fragment's connection, or new), and the
// decision of a batch's new flows with the batched write of their
// entries (decide). Each family brings what differs (family): how its
// entries are built, written and looked up, and what its first packet
// does to them; its loop (slowpath.go, slowpath6.go) keeps its parse and
// transmit steps.

// recentAge is how long a worker remembers the flows it created: packets
// of one new flow queued before its entry was written follow it. The
// race lasts as long as a batch takes; a second covers any backlog.
const recentAge = time.Second

// recent remembers the connections a worker created in the last
// recentAge, in a direct-mapped cache (a newer flow hashing to the same
// slot replaces an older one): bounded memory, no allocation, no lock
// (one worker owns it; a flow's packets all arrive on one rx queue).
type recent[K comparable, V any] struct {
	hash  func(K) uint64
	slots []recentSlot[K, V]
}

type recentSlot[K comparable, V any] struct {
	k    K
	v    V
	made int64 // monotonic ns; 0: empty
}

// newRecent makes a cache of n slots (a power of two), hashing keys with
// the family's hash.
func newRecent[K comparable, V any](n int, hash func(K) uint64) recent[K, V] {
	return recent[K, V]{hash: hash, slots: make([]recentSlot[K, V], n)}
}

func (r *recent[K, V]) slot(k K) *recentSlot[K, V] {
	return &r.slots[r.hash(k)&uint64(len(r.slots)-1)]
}

// get returns the forward entry of flow k if the worker created it lately.
func (r *recent[K, V]) get(k K, now int64) (V, bool) {
	s := r.slot(k)
	if s.made != 0 && s.k == k && now-s.made < int64(recentAge) {
		return s.v, true
	}
	var zero V
	return zero, false
}

func (r *recent[K, V]) put(k K, v V, now int64) {
	*r.slot(k) = recentSlot[K, V]{k: k, v: v, made: now}
}

// family is what the shared code needs of an address family.
type family[K comparable, V any] struct {
	// name goes in log lines ("" or "IPv6 ").
	name string
	// hash places a key in the recent cache: a multiply-xor of the key's
	// words for IPv4 (1.8 ns, every slow-path frame looks), maphash for
	// IPv6's 40 bytes.
	hash func(K) uint64
	// entries builds a new connection's raw entries, the forward entry
	// last (dataplane.RawEntries).
	entries func(f *dataplane.NewFlow, dec *dataplane.Decision, now uint64, mac [6]byte) ([2]dataplane.RawEntry[K, V], int)
	// write writes entries in one batched update, returning how many
	// were written (in order).
	write func(d Director, keys []K, vals []V) (int, error)
	// lookup finds an entry in the tables; meta reads its flags and state.
	lookup func(d Director, k K) (V, bool, error)
	meta   func(v V) (flags, state uint8)
	// first readies a new flow's n entries for writing, as its first
	// packet leaves them; it reports whether the SYN proxy holds the
	// flow (its entries written pending) instead of forwarding it.
	first func(w *worker, f *dataplane.NewFlow, dec *dataplane.Decision, ents [2]dataplane.RawEntry[K, V], n int) (_ [2]dataplane.RawEntry[K, V], held bool)
}

// flows is one family's new flows of a batch and what became of them.
type flows[K comparable, V any] struct {
	fam     *family[K, V]
	flows   []dataplane.NewFlow
	decs    []dataplane.Decision
	fwds    []V    // each flow's forward entry as written
	held    []bool // the SYN proxy holds the flow
	inBatch map[K]int
	// The batch's map writes: reply entries before their forward entry.
	wkeys  []K
	wvals  []V
	recent recent[K, V]
}

func newFlows[K comparable, V any](fam *family[K, V], recentSlots int) flows[K, V] {
	return flows[K, V]{fam: fam, flows: make([]dataplane.NewFlow, 0, batchSize), decs: make([]dataplane.Decision, 0, batchSize),
		fwds: make([]V, batchSize), held: make([]bool, batchSize), inBatch: map[K]int{}, recent: newRecent[K, V](recentSlots, fam.hash)}
}

// reset empties b for the next batch.
func (b *flows[K, V]) reset() {
	b.flows, b.decs = b.flows[:0], b.decs[:0]
	clear(b.inBatch)
}

// add notes the new flow of frame f, parsed as key k and flow nf; it
// returns its index in the batch's flows.
func (b *flows[K, V]) add(k K, nf dataplane.NewFlow) int {
	j := len(b.flows)
	b.inBatch[k] = j
	b.flows = append(b.flows, nf)
	return j
}

// place finds what frame i of the batch follows, by its family's raw key
// k: a flow this batch decides (w.sched[i]), or one the worker created
// lately (returned, with true), or, for a later fragment, its first
// fragment's connection in the table (returned; none: an orphan,
// dropped). Anything else is a new flow of the batch, nf (a later
// fragment never starts one). Keys, flows and values go by value: what
// goes by pointer through the family's functions would be allocated on
// the heap for every frame.
func place[K comparable, V any](w *worker, b *flows[K, V], i int, k K, nf dataplane.NewFlow, later bool) (V, bool) {
	sp := w.sp
	var none V
	if j, ok := b.inBatch[k]; ok {
		w.sched[i] = j // a second packet of a flow this batch decides
		return none, false
	}
	if v, ok := b.recent.get(k, w.now); ok {
		if later {
			sp.followed.Add(1)
			return v, true
		}
		if cur, ok := stillFollows(w, b.fam, k, nf.Key.Proto, nf.TCPFlags, v); ok {
			sp.followed.Add(1)
			return cur, true
		}
	}
	if later {
		if v, ok := lookupLive(sp.d, b.fam, k); ok {
			if flags, _ := b.fam.meta(v); flags&uint8(dataplane.ConnSPPending) == 0 {
				return v, true
			}
		}
		sp.fragOrphans.Add(1)
		return none, false
	}
	w.sched[i] = b.add(k, nf)
	return none, false
}

// lookupLive finds k's entry in the tables, if it is not a reply entry.
func lookupLive[K comparable, V any](d Director, fam *family[K, V], k K) (V, bool) {
	v, found, err := fam.lookup(d, k)
	if flags, _ := fam.meta(v); err != nil || !found || flags&uint8(dataplane.ConnReply) != 0 {
		return v, false
	}
	return v, true
}

// stillFollows reports whether a packet (protocol proto, TCP flags) of a
// flow created moments ago, whose forward entry was v, follows that
// connection, and returns the entry, refreshed from the table when it
// was looked up. Only a bare SYN may start a new one on the same tuple
// (conn_reused: the old one is closing); that case costs one lookup.
func stillFollows[K comparable, V any](w *worker, fam *family[K, V], k K, proto, flags uint8, v V) (V, bool) {
	if proto != protoTCP || flags&(dataplane.TCPSyn|dataplane.TCPAck) != dataplane.TCPSyn {
		return v, true
	}
	cur, ok := lookupLive(w.sp.d, fam, k) // gone: schedule afresh
	if _, state := fam.meta(cur); !ok || closing(conntrack.State(state)) {
		return v, false
	}
	return cur, true
}

// decide asks the handler about the batch's new flows of one family and
// writes their entries with one batched update. A flow whose entries were
// not all written is dropped (its client retransmits).
func decide[K comparable, V any](w *worker, b *flows[K, V]) {
	sp, d, fam := w.sp, w.sp.d, b.fam
	b.decs = b.decs[:len(b.flows)]
	clear(b.decs)
	sp.handler(b.flows, b.decs)
	now := uint64(dataplane.Now())
	b.wkeys, b.wvals = b.wkeys[:0], b.wvals[:0]
	for i := range b.flows {
		dec := &b.decs[i]
		b.held[i] = false
		if dec.RealID == 0 {
			sp.noDest.Add(1)
			continue
		}
		f := &b.flows[i]
		ents, n := fam.entries(f, dec, now, d.IfaceMAC(f.Ifindex))
		ents, b.held[i] = fam.first(w, f, dec, ents, n)
		for _, e := range ents[:n] {
			b.wkeys, b.wvals = append(b.wkeys, e.K), append(b.wvals, e.V)
		}
	}
	if len(b.wkeys) == 0 {
		return
	}
	done, err := fam.write(d, b.wkeys, b.wvals)
	if err != nil {
		sp.failed.Add(uint64(len(b.wkeys) - done))
		sp.log.Warn("slow path: writing new "+fam.name+"connections", "written", done, "of", len(b.wkeys), "err", err)
	}
	j := 0
	for i := range b.flows {
		if b.decs[i].RealID == 0 {
			continue
		}
		n := 1
		if b.decs[i].Out.Src.IsValid() {
			n = 2
		}
		if j+n <= done {
			b.fwds[i] = b.wvals[j+n-1]
			if !b.held[i] {
				b.recent.put(b.wkeys[j+n-1], b.wvals[j+n-1], w.now)
			}
			sp.newConns.Add(1)
		} else {
			b.decs[i].RealID = 0
			b.held[i] = false
		}
		j += n
	}
}

// ipv4 and ipv6 are the two families.
var (
	ipv4 = &family[bpfobj.DirectorConnKey, bpfobj.DirectorConnVal]{
		entries: dataplane.RawEntries,
		hash:    hash4,
		write:   Director.WriteConns,
		lookup: func(d Director, k bpfobj.DirectorConnKey) (bpfobj.DirectorConnVal, bool, error) {
			return d.LookupRaw(&k)
		},
		meta:  func(v bpfobj.DirectorConnVal) (uint8, uint8) { return v.Flags, v.State },
		first: first4,
	}
	ipv6 = &family[bpfobj.DirectorConnKey6, bpfobj.DirectorConnVal6]{
		name:    "IPv6 ",
		hash:    hash6,
		entries: dataplane.RawEntries6,
		write:   Director.WriteConns6,
		lookup: func(d Director, k bpfobj.DirectorConnKey6) (bpfobj.DirectorConnVal6, bool, error) {
			return d.LookupRaw6(&k)
		},
		meta:  func(v bpfobj.DirectorConnVal6) (uint8, uint8) { return v.Flags, v.State },
		first: first6,
	}
)

func hash4(k bpfobj.DirectorConnKey) uint64 {
	h := uint64(k.Saddr)*0x9e3779b97f4a7c15 ^ uint64(k.Daddr)*0xc2b2ae3d27d4eb4f ^
		(uint64(k.Sport)<<16|uint64(k.Dport)<<32|uint64(k.Proto))*0x165667b19e3779f9
	return h>>32 ^ h
}

var seed6 = maphash.MakeSeed()

func hash6(k bpfobj.DirectorConnKey6) uint64 { return maphash.Comparable(seed6, k) }

// first4: the first packet moves the state, as conn_update would in XDP;
// a valid cookie's ACK (the SYN proxy's, synproxy.go) leaves the entries
// pending, the forward one in SYN_RECV, for the handshake with the real.
func first4(w *worker, f *dataplane.NewFlow, dec *dataplane.Decision, ents [2]dataplane.RawEntry4, n int) ([2]dataplane.RawEntry4, bool) {
	if f.Key.Proto == protoTCP && f.TCPFlags&(dataplane.TCPSyn|dataplane.TCPAck|dataplane.TCPRst) == dataplane.TCPAck && n == 2 && w.sp.d.Proxying(dec) {
		for j := range ents[:n] {
			ents[j].V.Flags |= uint8(dataplane.ConnSPPending)
		}
		ents[1].V.State = uint8(conntrack.StateSynRecv)
		return ents, true
	}
	fwd := &ents[n-1].V
	dir := dirInputOnly
	if r := w.sp.d.RealView(dec.RealID); r.Fwd == dataplane.FwdMasq || r.Fwd == dataplane.FwdFullNAT {
		dir = dirInput
	}
	fwd.State = connState(fwd.State, f.Key.Proto, f.TCPFlags, dir)
	return ents, false
}

// first6: the entries are written as they are before the first packet:
// its replay moves the state on, as a hit would (XDP dropped any
// established entry of a reused tuple before handing the packet over).
// DR's first packet only needs new MACs (transmit6 gives them, with no
// replay), so its entry takes its state after it here.
func first6(w *worker, f *dataplane.NewFlow, dec *dataplane.Decision, ents [2]dataplane.RawEntry6, n int) ([2]dataplane.RawEntry6, bool) {
	if w.sp.d.RealView(dec.RealID).Fwd == dataplane.FwdRoute {
		v := &ents[n-1].V
		v.State = connState(v.State, f.Key.Proto, f.TCPFlags, dirInputOnly)
	}
	return ents, false
}
