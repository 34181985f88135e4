package dataplane

import (
	"github.com/xipvs/xipvs/dataplane/bpfobj"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane/xsk"
)

// NewFlow is the first packet of a flow the fast path did not know.
type NewFlow struct {
	Key      ConnKey
	TCPFlags uint8
	Ifindex  int
	// SrcMAC is the frame's source: the client's previous hop, where a
	// NAT or FULLNAT connection's replies go back to.
	SrcMAC [6]byte
}

// TCP flag bits of NewFlow.TCPFlags.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPAck = 0x10
)

// Decision is where the slow path's handler sends a new flow. A zero
// RealID drops the packet (no real server available).
type Decision struct {
	RealID    uint32
	ServiceID uint32
	// Out is, for NAT and FULLNAT, the tuple the client's packets leave
	// with: (client or local address, real server, client or local port,
	// real port). Zero for DR and TUN.
	Out     ConnKey
	FullNAT bool
	// Persistent marks a persistent service's connection (the sweep
	// lists the templates of those).
	Persistent bool
	// Unreachable (with RealID 0): the flow is a service's and no real
	// server can take it; the client is answered ICMP port unreachable,
	// rate-limited, as IPVS's ip_vs_leave does.
	Unreachable bool
	// SynProxy: the service's SYNs are proxied (-j enable); a flow that
	// reaches the slow path with an ACK carried a valid cookie.
	// SynProxyAuto: they are while the defence is engaged.
	SynProxy, SynProxyAuto bool
}

// FlowHandler decides a batch of new flows: decs[i] for flows[i]. Each
// slow-path worker calls it with its own batch; calls may run at once.
type FlowHandler func(flows []NewFlow, decs []Decision)

// SlowPathStats counts what the slow path did.
type SlowPathStats struct {
	Received  uint64 // frames read from AF_XDP sockets
	NewConns  uint64 // connections created
	Followed  uint64 // frames of a flow created moments before (a burst)
	Forwarded uint64 // frames transmitted
	NoDest    uint64 // dropped: the handler found no real server
	// PortUnreach counts the ICMP port unreachable answers to flows no
	// real could take (Decision.Unreachable); UnreachLimited those the
	// rate limit held back.
	PortUnreach, UnreachLimited uint64
	// The SYN proxy: handshakes opened to a real, completed, and failed
	// (the real answered RST or nothing; the client was reset).
	ProxyOpened, ProxyEstablished, ProxyFailed uint64
	Unparsable                                 uint64 // dropped: not a frame the director redirects
	// FragOrphans counts later fragments dropped because their datagram
	// has no connection (its first fragment made none, or was lost).
	FragOrphans uint64
	Failed      uint64 // dropped: map write or transmit failure
	Batches     uint64 // batches handled (Received/Batches is the mean size)
}

// batchSize is the most frames one worker takes from its RX ring at once.
const batchSize = 64

// recentAge is how long a worker remembers the flows it created: packets
// of one new flow queued before its entry was written follow it. The
// race lasts as long as a batch takes; a second covers any backlog.
const recentAge = time.Second

type queueSock struct {
	ifindex int
	queue   int
	sock    *xsk.Socket
}

type slowPath struct {
	d       *Dataplane
	handler FlowHandler
	socks   map[int][]*xsk.Socket // by ifindex, by rx queue
	all     []queueSock
	stop    chan struct{}
	wg      sync.WaitGroup

	received, newConns, followed, forwarded, noDest, unparsable, failed, batches atomic.Uint64
	fragOrphans                                                                  atomic.Uint64
	portUnreach, unreachLimited                                                  atomic.Uint64
	proxyOpened, proxyEstablished, proxyFailed                                   atomic.Uint64

	// proxy holds the SYN proxy's handshakes under way (synproxy.go).
	proxy    proxyTable
	proxyLog rate.Sometimes

	// unreach paces the port unreachable answers, as the kernel paces
	// ICMP (net.ipv4.icmp_msgs_per_sec 1000, burst 50).
	unreach *rate.Limiter
	// unreachLog paces the log line about them.
	unreachLog rate.Sometimes
}

// StartSlowPath binds one AF_XDP socket per rx queue of every director
// interface, registers them in the XSKMAP and serves new flows with h, a
// worker goroutine per socket, until Close. Before this runs (and after
// Close) the fast path drops new flows, so clients retransmit rather
// than see a reset.
func (d *Dataplane) StartSlowPath(h FlowHandler) error {
	if d.slow != nil {
		return errors.New("slow path already started")
	}
	sp := &slowPath{d: d, handler: h, socks: map[int][]*xsk.Socket{}, stop: make(chan struct{}),
		unreach: rate.NewLimiter(1000, 50), unreachLog: rate.Sometimes{Interval: 10 * time.Second},
		proxyLog: rate.Sometimes{Interval: 10 * time.Second}}
	for i := range d.ifaces {
		ifc := &d.ifaces[i]
		for q := 0; q < ifc.RxQueues; q++ {
			s, err := xsk.Open(xsk.Config{Ifindex: ifc.Index, QueueID: q})
			if err != nil && q > 0 && errors.Is(err, unix.EINVAL) {
				// IFLA_NUM_RX_QUEUES counts allocated queues; the
				// device uses fewer (real_num_rx_queues).
				ifc.RxQueues = q
				break
			}
			if err != nil {
				sp.close()
				return fmt.Errorf("af_xdp socket on %s queue %d: %w", ifc.Name, q, err)
			}
			sp.socks[ifc.Index] = append(sp.socks[ifc.Index], s)
			sp.all = append(sp.all, queueSock{ifc.Index, q, s})
			key := uint32(ifc.slot)*MaxQueues + uint32(q)
			if err := d.objs.Xsks.Put(key, uint32(s.FD())); err != nil {
				sp.close()
				return fmt.Errorf("xsks map %s queue %d: %w", ifc.Name, q, err)
			}
			d.log.Info("af_xdp socket bound", "interface", ifc.Name, "queue", q, "mode", s.Mode())
		}
	}
	for _, qs := range sp.all {
		sp.wg.Add(1)
		go sp.newWorker(qs).run()
	}
	sp.wg.Add(1)
	go sp.saveCounts()
	sp.wg.Add(1)
	go sp.housekeeping()
	d.slow = sp
	return nil
}

// SlowPathStats returns the slow path's counters.
func (d *Dataplane) SlowPathStats() SlowPathStats {
	sp := d.slow
	if sp == nil {
		return SlowPathStats{}
	}
	return SlowPathStats{
		Received: sp.received.Load(), NewConns: sp.newConns.Load(), Followed: sp.followed.Load(),
		Forwarded: sp.forwarded.Load(), NoDest: sp.noDest.Load(), Unparsable: sp.unparsable.Load(), FragOrphans: sp.fragOrphans.Load(),
		PortUnreach: sp.portUnreach.Load(), UnreachLimited: sp.unreachLimited.Load(),
		ProxyOpened: sp.proxyOpened.Load(), ProxyEstablished: sp.proxyEstablished.Load(), ProxyFailed: sp.proxyFailed.Load(),
		Failed: sp.failed.Load(), Batches: sp.batches.Load(),
	}
}

// saveCounts writes the slow path's counters to their pinned maps every
// second until the slow path stops.
func (sp *slowPath) saveCounts() {
	defer sp.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-sp.stop:
			return
		case <-t.C:
			if err := sp.d.saveSlowCounts(); err != nil {
				sp.d.log.Warn("saving the slow path's counters", "err", err)
			}
		}
	}
}

func (sp *slowPath) close() error {
	select {
	case <-sp.stop:
	default:
		close(sp.stop)
	}
	sp.wg.Wait()
	var err error
	for _, qs := range sp.all {
		ifc := sp.d.ifaceByIndex(qs.ifindex)
		if ifc != nil {
			key := uint32(ifc.slot)*MaxQueues + uint32(qs.queue)
			if e := sp.d.objs.Xsks.Delete(key); e != nil {
				err = errors.Join(err, fmt.Errorf("xsks map delete: %w", e))
			}
		}
		err = errors.Join(err, qs.sock.Close())
	}
	sp.all = nil
	return err
}

func (d *Dataplane) ifaceByIndex(idx int) *Interface {
	for i := range d.ifaces {
		if d.ifaces[i].Index == idx {
			return &d.ifaces[i]
		}
	}
	return nil
}

// recentFlows remembers the connections a worker created in the last
// recentAge, in a direct-mapped cache of recentSlots (a newer flow
// hashing to the same slot replaces an older one): bounded memory, no
// allocation, no lock (one worker owns it; a flow's packets all arrive
// on one rx queue).
type recentFlows struct {
	slots []recentSlot
}

type recentSlot struct {
	k    bpfobj.DirectorConnKey
	v    bpfobj.DirectorConnVal
	made int64 // monotonic ns; 0: empty
}

const recentSlots = 1 << 16

func newRecentFlows() recentFlows { return recentFlows{slots: make([]recentSlot, recentSlots)} }

func (r *recentFlows) slot(k *bpfobj.DirectorConnKey) *recentSlot {
	h := uint64(k.Saddr)*0x9e3779b97f4a7c15 ^ uint64(k.Daddr)*0xc2b2ae3d27d4eb4f ^
		(uint64(k.Sport)<<16|uint64(k.Dport)<<32|uint64(k.Proto))*0x165667b19e3779f9
	return &r.slots[(h>>32^h)&(recentSlots-1)]
}

func (r *recentFlows) get(k bpfobj.DirectorConnKey, now int64) (bpfobj.DirectorConnVal, bool) {
	s := r.slot(&k)
	if s.made != 0 && s.k == k && now-s.made < int64(recentAge) {
		return s.v, true
	}
	return bpfobj.DirectorConnVal{}, false
}

func (r *recentFlows) put(k bpfobj.DirectorConnKey, v bpfobj.DirectorConnVal, now int64) {
	*r.slot(&k) = recentSlot{k: k, v: v, made: now}
}

// worker serves one AF_XDP socket, a batch at a time.
type worker struct {
	sp     *slowPath
	qs     queueSock
	recent recentFlows

	frames []([]byte)
	pkts   []packet
	keys   []bpfobj.DirectorConnKey
	// fate of each frame: the forward entry it follows.
	vals   []bpfobj.DirectorConnVal
	follow []bool
	sched  []int // index into flows, or -1
	flows  []NewFlow
	decs   []Decision
	fwds   []bpfobj.DirectorConnVal // each flow's forward entry as written
	// The batch's map writes: reply entries before their forward entry.
	wkeys   []bpfobj.DirectorConnKey
	wvals   []bpfobj.DirectorConnVal
	txs     map[*xsk.Socket]*xsk.Tx
	inBatch map[bpfobj.DirectorConnKey]int // flows this batch decides, by key
	now     int64                   // the batch's time (Now)
	stats   [NumStats]uint64
	// The SYN proxy: which flows of the batch it opens (and whether it
	// has), and the frames it sends after the batch.
	proxyFlow, proxyDone []bool
	queued               []queuedFrame
	arena                []byte     // the queued frames' bytes, reused per batch
	scratch              [4096]byte // a frame bound for another socket
	// The batch's IPv6 frames (indexes into it), their new flows and
	// decisions, the entries written, what the worker created lately,
	// and the context a frame is replayed with (slowpath6.go).
	idx6      []int
	flows6    []NewFlow
	decs6     []Decision
	answered6 []bool // flows6[i]'s ICMPv6 answer is sent
	inBatch6  map[bpfobj.DirectorConnKey6]int
	wkeys6    []bpfobj.DirectorConnKey6
	wvals6    []bpfobj.DirectorConnVal6
	recent6   recent6
	replayCtx xdpMd
}

func (sp *slowPath) newWorker(qs queueSock) *worker {
	return &worker{sp: sp, qs: qs,
		recent: newRecentFlows(),
		frames: make([][]byte, batchSize), pkts: make([]packet, batchSize), keys: make([]bpfobj.DirectorConnKey, batchSize),
		vals: make([]bpfobj.DirectorConnVal, batchSize), follow: make([]bool, batchSize), sched: make([]int, batchSize),
		flows: make([]NewFlow, 0, batchSize), decs: make([]Decision, 0, batchSize), fwds: make([]bpfobj.DirectorConnVal, batchSize),
		txs: map[*xsk.Socket]*xsk.Tx{}, inBatch: map[bpfobj.DirectorConnKey]int{},
		proxyFlow: make([]bool, batchSize), proxyDone: make([]bool, batchSize),
		flows6: make([]NewFlow, 0, batchSize), decs6: make([]Decision, 0, batchSize), answered6: make([]bool, batchSize),
		inBatch6: map[bpfobj.DirectorConnKey6]int{}, recent6: newRecent6()}
}

func (w *worker) run() {
	defer w.sp.wg.Done()
	sock := w.qs.sock
	for {
		select {
		case <-w.sp.stop:
			return
		default:
		}
		n := sock.Peek(w.frames)
		if n == 0 {
			if _, err := sock.Poll(100); err != nil {
				w.sp.d.log.Error("slow path poll", "ifindex", w.qs.ifindex, "queue", w.qs.queue, "err", err)
				return
			}
			continue
		}
		w.batch(w.frames[:n])
		sock.Release()
	}
}

// batch handles frames: parse all, decide the new flows in one handler
// call, write their entries in one batched map update, transform every
// frame in Go into the TX ring of its egress socket, one kick per socket.
func (w *worker) batch(frames [][]byte) {
	sp, d := w.sp, w.sp.d
	sp.received.Add(uint64(len(frames)))
	sp.batches.Add(1)
	w.now = int64(Now())
	w.flows, w.decs = w.flows[:0], w.decs[:0]
	inBatch := w.inBatch
	clear(inBatch)
	w.idx6 = w.idx6[:0]
	for i, f := range frames {
		w.sched[i], w.follow[i] = -1, false
		if len(f) >= ethHLen && binary.BigEndian.Uint16(f[12:14]) == ethTypeIPv6 {
			w.idx6 = append(w.idx6, i)
			continue
		}
		p, res := parsePacket(f)
		if res == parsedLater {
			w.laterFragment(i, &p)
			continue
		}
		if res != parsedOK {
			sp.unparsable.Add(1)
			continue
		}
		w.pkts[i] = p
		k := bpfobj.DirectorConnKey{Saddr: le.Uint32(p.src[:]), Daddr: le.Uint32(p.dst[:]), Sport: be16(p.srcPort), Dport: be16(p.dstPort), Proto: p.proto}
		w.keys[i] = k
		if px := sp.proxy.get(k); px != nil {
			// A handshake under way: the real's answer, or the client
			// again (its ACK resent): the latter waits for its window.
			if k == px.rk {
				w.proxyAnswer(f, &p, px)
			}
			continue
		}
		if j, ok := inBatch[k]; ok {
			// A second packet of a flow this batch decides.
			w.sched[i] = j
			continue
		}
		if v, ok := w.recent.get(k, w.now); ok && w.stillFollows(k, &p, &v) {
			w.vals[i], w.follow[i] = v, true
			sp.followed.Add(1)
			continue
		}
		inBatch[k] = len(w.flows)
		w.sched[i] = len(w.flows)
		w.flows = append(w.flows, NewFlow{Key: ConnKey{Src: netip.AddrFrom4(p.src), Dst: netip.AddrFrom4(p.dst),
			SrcPort: p.srcPort, DstPort: p.dstPort, Proto: p.proto}, TCPFlags: p.flags, Ifindex: w.qs.ifindex, SrcMAC: [6]byte(f[6:12])})
	}
	if len(w.flows) > 0 {
		w.decide()
	}
	for i, f := range frames {
		var v bpfobj.DirectorConnVal
		switch {
		case len(w.idx6) > 0 && len(f) >= ethHLen && binary.BigEndian.Uint16(f[12:14]) == ethTypeIPv6:
			continue // batch6's
		case w.follow[i]:
			v = w.vals[i]
		case w.sched[i] >= 0 && w.pkts[i].fragment == fragLater:
			// Behind its first fragment in this batch: its connection,
			// if the first made one (a handshake the SYN proxy holds or
			// an ICMP answer is the first fragment's alone).
			if j := w.sched[i]; w.proxyFlow[j] || w.decs[j].RealID == 0 {
				sp.fragOrphans.Add(1)
				continue
			}
			v = w.fwdVal(w.sched[i])
		case w.sched[i] >= 0 && w.proxyFlow[w.sched[i]]:
			if j := w.sched[i]; !w.proxyDone[j] {
				w.proxyDone[j] = true
				w.proxyOpen(f, &w.pkts[i], j)
			}
			continue
		case w.sched[i] >= 0 && w.decs[w.sched[i]].RealID != 0:
			v = w.fwdVal(w.sched[i])
		case w.sched[i] >= 0 && w.decs[w.sched[i]].Unreachable:
			w.unreachable(f, &w.pkts[i])
			continue
		default:
			continue
		}
		w.transmit(f, &w.pkts[i], v)
	}
	if len(w.idx6) > 0 {
		w.batch6(frames)
	}
	for s, tx := range w.txs {
		n, err := tx.Flush()
		sp.forwarded.Add(uint64(n))
		if err != nil {
			sp.failed.Add(1)
			d.log.Warn("slow path transmit", "err", err)
		}
		delete(w.txs, s)
	}
	w.flushQueued()
	d.addStats(&w.stats)
	w.stats = [NumStats]uint64{}
}

// stillFollows reports whether a packet of a flow created moments ago
// follows that flow's connection. Only a bare SYN may start a new one on
// the same tuple (conn_reused: the old one is closing); that case costs
// one lookup.
func (w *worker) stillFollows(k bpfobj.DirectorConnKey, p *packet, v *bpfobj.DirectorConnVal) bool {
	if p.proto != protoTCP || p.flags&(TCPSyn|TCPAck) != TCPSyn {
		return true
	}
	cur, found, err := w.sp.d.lookupRaw(&k)
	if err != nil || !found {
		return false // gone: schedule afresh
	}
	if closing(conntrack.State(cur.State)) {
		return false
	}
	*v = cur
	return true
}

// laterFragment places frame i, a later fragment, behind its datagram's
// connection: one this batch decides, one made a moment ago, or one in
// the table. It never starts a flow.
func (w *worker) laterFragment(i int, p *packet) {
	sp := w.sp
	sport, dport, ok := sp.d.fragPorts4(p)
	if !ok {
		sp.fragOrphans.Add(1)
		return
	}
	p.srcPort, p.dstPort = be16(sport), be16(dport)
	w.pkts[i] = *p
	k := bpfobj.DirectorConnKey{Saddr: le.Uint32(p.src[:]), Daddr: le.Uint32(p.dst[:]), Sport: sport, Dport: dport, Proto: p.proto}
	w.keys[i] = k
	if j, ok := w.inBatch[k]; ok {
		w.sched[i] = j
		return
	}
	if v, ok := w.recent.get(k, w.now); ok {
		w.vals[i], w.follow[i] = v, true
		sp.followed.Add(1)
		return
	}
	if v, found, err := sp.d.lookupRaw(&k); err == nil && found && v.Flags&uint8(ConnReply) == 0 && v.Flags&uint8(ConnSPPending) == 0 {
		w.vals[i], w.follow[i] = v, true
		return
	}
	sp.fragOrphans.Add(1)
}

// closing is conn_reused's set of states a bare SYN starts over from.
func closing(s conntrack.State) bool {
	switch s {
	case conntrack.StateFinWait, conntrack.StateTimeWait, conntrack.StateClose,
		conntrack.StateCloseWait, conntrack.StateLastAck:
		return true
	}
	return false
}

// decide asks the handler about the batch's new flows and writes their
// entries with one batched update.
func (w *worker) decide() {
	sp, d := w.sp, w.sp.d
	w.decs = w.decs[:len(w.flows)]
	clear(w.decs)
	sp.handler(w.flows, w.decs)
	now := uint64(Now())
	w.wkeys, w.wvals = w.wkeys[:0], w.wvals[:0]
	for i := range w.flows {
		dec := &w.decs[i]
		w.proxyFlow[i], w.proxyDone[i] = false, false
		if dec.RealID == 0 {
			sp.noDest.Add(1)
			continue
		}
		f := &w.flows[i]
		ents, n := rawEntries(f, dec, now, d.ifaceMAC(f.Ifindex))
		if f.Key.Proto == protoTCP && f.TCPFlags&(TCPSyn|TCPAck|TCPRst) == TCPAck && n == 2 && d.proxying(dec) {
			// A valid cookie's ACK: the entries wait, pending, for the
			// handshake with the real (synproxy.go).
			w.proxyFlow[i] = true
			for j := range ents[:n] {
				ents[j].v.Flags |= uint8(ConnSPPending)
			}
			ents[1].v.State = uint8(conntrack.StateSynRecv)
			for _, e := range ents[:n] {
				w.wkeys, w.wvals = append(w.wkeys, e.k), append(w.wvals, e.v)
			}
			continue
		}
		// The first packet moves the state, as conn_update would in XDP.
		fwd := &ents[n-1].v
		r := d.realView(dec.RealID)
		dir := dirInputOnly
		if r.fwd == FwdMasq || r.fwd == FwdFullNAT {
			dir = dirInput
		}
		fwd.State = connState(fwd.State, f.Key.Proto, f.TCPFlags, dir)
		for _, e := range ents[:n] {
			w.wkeys, w.wvals = append(w.wkeys, e.k), append(w.wvals, e.v)
		}
	}
	if len(w.wkeys) == 0 {
		return
	}
	done, err := d.objs.Conns.BatchUpdate(w.wkeys, w.wvals, &ebpf.BatchOptions{ElemFlags: uint64(ebpf.UpdateAny)})
	if err != nil {
		sp.failed.Add(uint64(len(w.wkeys) - done))
		d.log.Warn("slow path: writing new connections", "written", done, "of", len(w.wkeys), "err", err)
	}
	// Remember what was written; a flow whose entries were not all
	// written is dropped (its client retransmits).
	j := 0
	for i := range w.flows {
		if w.decs[i].RealID == 0 {
			continue
		}
		n := 1
		if w.decs[i].Out.Src.IsValid() {
			n = 2
		}
		if j+n <= done {
			w.fwds[i] = w.wvals[j+n-1]
			if !w.proxyFlow[i] {
				w.recent.put(w.wkeys[j+n-1], w.wvals[j+n-1], w.now)
			}
			sp.newConns.Add(1)
		} else {
			w.decs[i].RealID = 0
			w.proxyFlow[i] = false
		}
		j += n
	}
}

// fwdVal is flow i's forward entry as written.
func (w *worker) fwdVal(i int) bpfobj.DirectorConnVal { return w.fwds[i] }

// transmit applies the director's transform to frame f of a connection
// whose forward entry is v and queues the result on its egress socket.
func (w *worker) transmit(f []byte, p *packet, v bpfobj.DirectorConnVal) {
	sp := w.sp
	r := sp.d.realView(v.RealId)
	sock := w.egressSock(r)
	if sock == nil {
		sp.failed.Add(1)
		return
	}
	// Straight into this worker's own TX ring; for another interface's
	// socket, into a scratch frame queued for after the batch (a worker
	// holds one socket's transmit lock at a time: flushQueued).
	own := sock == w.qs.sock
	var tx *xsk.Tx
	var buf []byte
	if own {
		tx = w.ownTx()
		buf = tx.Next()
	} else {
		buf = w.scratch[:]
	}
	if buf == nil || len(buf) < len(f)+ipipHLen {
		sp.failed.Add(1)
		return
	}
	// The entry was written with the first packet's state; transform
	// from the state before it, as XDP would have seen it.
	v.State = uint8(conntrack.StateNone)
	n, egress, stat := forwardFirst(buf, f, p, &v, r)
	w.stats[stat]++
	if n == 0 {
		return
	}
	switch {
	case own:
		tx.Commit(n)
	case egress == -1:
		// ICMP back out the ingress interface: this worker's socket.
		tx = w.ownTx()
		if b2 := tx.Next(); b2 != nil && len(b2) >= n {
			tx.Commit(copy(b2, buf[:n]))
		} else {
			w.stats[stat]--
			sp.failed.Add(1)
		}
	default:
		w.queue(sock, buf[:n])
	}
	if stat == StatFwd {
		sp.d.accountSlow(v.RealId, uint64(p.totLen))
	}
}

// ownTx is the batch's transmission on this worker's own socket.
func (w *worker) ownTx() *xsk.Tx {
	tx := w.txs[w.qs.sock]
	if tx == nil {
		tx = w.qs.sock.BeginTx()
		w.txs[w.qs.sock] = tx
	}
	return tx
}

// queue copies frame into the batch's arena, to be sent on sock after
// the batch.
func (w *worker) queue(sock *xsk.Socket, frame []byte) {
	start := len(w.arena)
	w.arena = append(w.arena, frame...)
	w.queued = append(w.queued, queuedFrame{sock, w.arena[start:len(w.arena):len(w.arena)]})
}

// unreachable answers frame f, a new flow no real server can take, with
// an ICMP port unreachable out the way it came, within the rate limit.
func (w *worker) unreachable(f []byte, p *packet) {
	sp := w.sp
	if !sp.unreach.Allow() {
		sp.unreachLimited.Add(1)
		return
	}
	tx := w.ownTx()
	buf := tx.Next()
	if buf == nil || len(buf) < len(f)+icmpFrameLen {
		sp.failed.Add(1)
		return
	}
	n, ok := icmpPortUnreachable(buf, copy(buf, f))
	if !ok {
		return // IP options: no quote of the usual size
	}
	tx.Commit(n)
	sp.portUnreach.Add(1)
	sp.unreachLog.Do(func() {
		sp.d.log.Warn("new flows to a service with no available real server: answered ICMP port unreachable",
			"service", fmt.Sprintf("%s:%d/%d", netip.AddrFrom4(p.dst), p.dstPort, p.proto),
			"client", netip.AddrFrom4(p.src), "answered", sp.portUnreach.Load(), "rate_limited", sp.unreachLimited.Load())
	})
}

// egressSock is the socket a real's packets leave by: its interface's,
// the queue matching this worker's where it has as many.
func (w *worker) egressSock(r *realView) *xsk.Socket {
	if !r.valid || r.ifindex == w.qs.ifindex {
		return w.qs.sock
	}
	socks := w.sp.socks[r.ifindex]
	if len(socks) == 0 {
		return nil
	}
	return socks[w.qs.queue%len(socks)]
}

// entry is a raw connection-table entry.
type entry struct {
	k bpfobj.DirectorConnKey
	v bpfobj.DirectorConnVal
}

// rawEntries builds the entries of a new connection in the order they
// are written: for NAT and FULLNAT the reply entry first (replies can
// come back as soon as the first packet leaves), then the forward entry.
// It returns them and how many there are.
func rawEntries(f *NewFlow, dec *Decision, now uint64, ifaceMAC [6]byte) ([2]entry, int) {
	var out [2]entry
	fk := f.Key.raw()
	fwd := bpfobj.DirectorConnVal{LastSeen: now, RealId: dec.RealID, SvcId: dec.ServiceID}
	if dec.Persistent {
		fwd.Flags = uint8(ConnPersist)
	}
	if f.Key.Proto == protoTCP && f.TCPFlags&(TCPSyn|TCPAck) == TCPSyn {
		fwd.Flags |= uint8(ConnSynSeen)
	}
	if !dec.Out.Src.IsValid() {
		out[0] = entry{fk, fwd}
		return out, 1
	}
	var flags uint8
	if dec.FullNAT {
		flags = uint8(ConnFullNAT)
	}
	fwd.Flags |= flags
	fwd.Nsaddr, fwd.Ndaddr = be32(dec.Out.Src), be32(dec.Out.Dst)
	fwd.Nsport, fwd.Ndport = be16(dec.Out.SrcPort), be16(dec.Out.DstPort)
	rep := bpfobj.DirectorConnVal{LastSeen: now, RealId: dec.RealID, SvcId: dec.ServiceID, Flags: flags | uint8(ConnReply),
		Nsaddr: fk.Daddr, Ndaddr: fk.Saddr, Nsport: fk.Dport, Ndport: fk.Sport,
		Ifindex: uint32(f.Ifindex), Dmac: f.SrcMAC, Smac: ifaceMAC}
	rk := bpfobj.DirectorConnKey{Saddr: fwd.Ndaddr, Daddr: fwd.Nsaddr, Sport: fwd.Ndport, Dport: fwd.Nsport, Proto: fk.Proto}
	out[0], out[1] = entry{rk, rep}, entry{fk, fwd}
	return out, 2
}

// Entry is one connection-table entry.
type Entry struct {
	Key  ConnKey
	Conn Conn
}

// Entries returns the entries of a new connection, in the order the slow
// path writes them (see rawEntries). ifaceMAC is the MAC of the
// interface the flow came in on.
func Entries(f NewFlow, dec Decision, now time.Duration, ifaceMAC net.HardwareAddr) []Entry {
	if f.Key.Src.Is6() {
		return entries6(&f, &dec, now, ifaceMAC)
	}
	var mac [6]byte
	copy(mac[:], ifaceMAC)
	ents, n := rawEntries(&f, &dec, uint64(now), mac)
	out := make([]Entry, n)
	for i, e := range ents[:n] {
		out[i] = Entry{connKeyFromRaw(e.k), connFromRaw(e.v)}
	}
	return out
}

// SetConns writes the entries of a new connection (see Entries).
func (d *Dataplane) SetConns(f NewFlow, dec Decision, now time.Duration) error {
	mac := d.ifaceMAC(f.Ifindex)
	for _, e := range Entries(f, dec, now, mac[:]) {
		if err := d.SetConn(e.Key, e.Conn); err != nil {
			return err
		}
	}
	return nil
}

// SetSynced writes the entries of a connection a sync master sent (see
// internal/connsync): those of a new flow f decided as dec, with the
// master's state on the forward entry and lastSeen as its age. They go
// where SetConn puts them: a connection that is not already in the
// established table goes to the embryonic LRU, so that a flood of sync
// messages can never fill the table that is never evicted.
//
// An ESTABLISHED connection's entries go to the established table, where
// nothing evicts them (a flood of synced or new embryonic entries in the
// LRU included); when that table is full, to the LRU.
func (d *Dataplane) SetSynced(f NewFlow, dec Decision, state conntrack.State, lastSeen time.Duration) error {
	mac := d.ifaceMAC(f.Ifindex)
	for _, e := range Entries(f, dec, lastSeen, mac[:]) {
		if e.Conn.Flags&ConnReply == 0 {
			e.Conn.State = state
		}
		var err error
		if state == conntrack.StateEstablished {
			err = d.setEstablished(e.Key, e.Conn)
		} else {
			err = d.SetConn(e.Key, e.Conn)
		}
		if err != nil {
			return fmt.Errorf("synced connection %v: %w", e.Key, err)
		}
	}
	return nil
}

// setEstablished writes an entry into the established table (and out of
// the LRU); a full established table leaves it to SetConn.
func (d *Dataplane) setEstablished(k ConnKey, c Conn) error {
	var err error
	if k.Src.Is6() {
		d.ipv6.Store(true)
		raw := k.raw6()
		if err = d.objs.EstConns6.Put(&raw, c.raw6()); err == nil {
			_ = d.objs.Conns6.Delete(&raw)
		}
	} else {
		raw := k.raw()
		if err = d.objs.EstConns.Put(&raw, c.raw()); err == nil {
			_ = d.objs.Conns.Delete(&raw)
		}
	}
	if errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.ENOSPC) {
		return d.SetConn(k, c)
	}
	return err
}
