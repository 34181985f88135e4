package slowpath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/dataplane/bpfobj"
	"github.com/xipvs/xipvs/dataplane/xsk"
)

// FlowHandler decides a batch of new flows: decs[i] for flows[i]. Each
// slow-path worker calls it with its own batch; calls may run at once.
type FlowHandler func(flows []dataplane.NewFlow, decs []dataplane.Decision)

// Stats counts what the slow path did.
type Stats struct {
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

type queueSock struct {
	ifindex int
	queue   int
	sock    *xsk.Socket
}

// Director is what the slow path reaches of the data plane
// (dataplane.Dataplane): the registration of its sockets, the batched
// writes and raw lookups of connection entries, the real servers and
// interfaces as the transforms read them, the IPv6 replay program, the
// fragment ports XDP noted, the counters of what it forwarded itself, and
// the defence it engages.
type Director interface {
	Interfaces() []dataplane.Interface
	SetXSK(ifindex, queue, fd int) error
	DeleteXSK(ifindex, queue int) error
	TrimRxQueues(ifindex, n int)

	WriteConns(keys []bpfobj.DirectorConnKey, vals []bpfobj.DirectorConnVal) (int, error)
	WriteConns6(keys []bpfobj.DirectorConnKey6, vals []bpfobj.DirectorConnVal6) (int, error)
	WriteSeqadjs(keys []bpfobj.DirectorConnKey, vals []bpfobj.DirectorSeqadj) (int, error)
	LookupRaw(k *bpfobj.DirectorConnKey) (bpfobj.DirectorConnVal, bool, error)
	LookupRaw6(k *bpfobj.DirectorConnKey6) (bpfobj.DirectorConnVal6, bool, error)
	FragPorts(k *bpfobj.DirectorFragKey) (sport, dport uint16, ok bool)
	Replay6(opts *ebpf.RunOptions) (uint32, error)

	RealView(id uint32) *dataplane.RealView
	IfaceMAC(ifindex int) [6]byte

	AccountSlow(id uint32, bytes uint64)
	AddSlowStats(s *[dataplane.NumStats]uint64)
	SaveSlowCounts() error
	Counters() ([dataplane.NumStats]uint64, error)

	Defence() dataplane.Defence
	Engaged() bool
	Engage(on bool, reason string)
	DefenceWScale() uint8
	Proxying(dec *dataplane.Decision) bool
}

var _ Director = (*dataplane.Dataplane)(nil)

// SlowPath is the running slow path: a worker per AF_XDP socket.
type SlowPath struct {
	d       Director
	log     *slog.Logger
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

// Start binds one AF_XDP socket per rx queue of every director
// interface, registers them in the XSKMAP and serves new flows with h, a
// worker goroutine per socket, until Close. Before this runs (and after
// Close) the fast path drops new flows, so clients retransmit rather
// than see a reset.
func Start(d Director, h FlowHandler, log *slog.Logger) (*SlowPath, error) {
	sp := &SlowPath{d: d, log: log, handler: h, socks: map[int][]*xsk.Socket{}, stop: make(chan struct{}),
		unreach: rate.NewLimiter(1000, 50), unreachLog: rate.Sometimes{Interval: 10 * time.Second},
		proxyLog: rate.Sometimes{Interval: 10 * time.Second}}
	for _, ifc := range d.Interfaces() {
		for q := 0; q < ifc.RxQueues; q++ {
			s, err := xsk.Open(xsk.Config{Ifindex: ifc.Index, QueueID: q})
			if err != nil && q > 0 && errors.Is(err, unix.EINVAL) {
				// IFLA_NUM_RX_QUEUES counts allocated queues; the
				// device uses fewer (real_num_rx_queues).
				d.TrimRxQueues(ifc.Index, q)
				break
			}
			if err != nil {
				_ = sp.Close()
				return nil, fmt.Errorf("af_xdp socket on %s queue %d: %w", ifc.Name, q, err)
			}
			sp.socks[ifc.Index] = append(sp.socks[ifc.Index], s)
			sp.all = append(sp.all, queueSock{ifc.Index, q, s})
			if err := d.SetXSK(ifc.Index, q, s.FD()); err != nil {
				_ = sp.Close()
				return nil, fmt.Errorf("xsks map %s queue %d: %w", ifc.Name, q, err)
			}
			log.Info("af_xdp socket bound", "interface", ifc.Name, "queue", q, "mode", s.Mode())
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
	return sp, nil
}

// Stats returns the slow path's counters (zero for a nil SlowPath).
func (sp *SlowPath) Stats() Stats {
	if sp == nil {
		return Stats{}
	}
	return Stats{
		Received: sp.received.Load(), NewConns: sp.newConns.Load(), Followed: sp.followed.Load(),
		Forwarded: sp.forwarded.Load(), NoDest: sp.noDest.Load(), Unparsable: sp.unparsable.Load(), FragOrphans: sp.fragOrphans.Load(),
		PortUnreach: sp.portUnreach.Load(), UnreachLimited: sp.unreachLimited.Load(),
		ProxyOpened: sp.proxyOpened.Load(), ProxyEstablished: sp.proxyEstablished.Load(), ProxyFailed: sp.proxyFailed.Load(),
		Failed: sp.failed.Load(), Batches: sp.batches.Load(),
	}
}

// saveCounts writes the slow path's counters to their pinned maps every
// second until the slow path stops.
func (sp *SlowPath) saveCounts() {
	defer sp.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-sp.stop:
			return
		case <-t.C:
			if err := sp.d.SaveSlowCounts(); err != nil {
				sp.log.Warn("saving the slow path's counters", "err", err)
			}
		}
	}
}

// Close stops the workers, unregisters and closes the sockets, and saves
// the counters of what the slow path forwarded. Stop the slow path before
// closing the data plane.
func (sp *SlowPath) Close() error {
	if sp == nil {
		return nil
	}
	select {
	case <-sp.stop:
		return nil
	default:
		close(sp.stop)
	}
	sp.wg.Wait()
	var err error
	for _, qs := range sp.all {
		if e := sp.d.DeleteXSK(qs.ifindex, qs.queue); e != nil {
			err = errors.Join(err, fmt.Errorf("xsks map delete: %w", e))
		}
		err = errors.Join(err, qs.sock.Close())
	}
	sp.all = nil
	return errors.Join(err, sp.d.SaveSlowCounts())
}

// worker serves one AF_XDP socket, a batch at a time.
type worker struct {
	sp *SlowPath
	qs queueSock

	frames []([]byte)
	pkts   []packet
	keys   []bpfobj.DirectorConnKey
	// fate of each frame: the forward entry it follows, or the index
	// of its flow in the batch's new flows of its family.
	vals   []bpfobj.DirectorConnVal
	follow []bool
	sched  []int // index into b4.flows or b6.flows, or -1
	// The batch's new flows, by family (family.go).
	b4    flows[bpfobj.DirectorConnKey, bpfobj.DirectorConnVal]
	b6    flows[bpfobj.DirectorConnKey6, bpfobj.DirectorConnVal6]
	txs   map[*xsk.Socket]*xsk.Tx
	now   int64 // the batch's time (Now)
	stats [dataplane.NumStats]uint64
	// The SYN proxy: whether it has opened each held flow (b4.held), and
	// the frames it sends after the batch.
	proxyDone []bool
	queued    []queuedFrame
	arena     []byte     // the queued frames' bytes, reused per batch
	scratch   [4096]byte // a frame bound for another socket
	// The batch's IPv6 frames (indexes into it), which of their flows
	// was answered ICMPv6, and the context a frame is replayed with
	// (slowpath6.go).
	idx6      []int
	answered6 []bool // b6.flows[i]'s ICMPv6 answer is sent
	replayCtx dataplane.XDPContext
}

// The recent caches' sizes (slots).
const (
	recentSlots4 = 1 << 16
	recentSlots6 = 1 << 12
)

func (sp *SlowPath) newWorker(qs queueSock) *worker {
	return &worker{sp: sp, qs: qs,
		frames: make([][]byte, batchSize), pkts: make([]packet, batchSize), keys: make([]bpfobj.DirectorConnKey, batchSize),
		vals: make([]bpfobj.DirectorConnVal, batchSize), follow: make([]bool, batchSize), sched: make([]int, batchSize),
		b4: newFlows(ipv4, recentSlots4), b6: newFlows(ipv6, recentSlots6),
		txs: map[*xsk.Socket]*xsk.Tx{}, proxyDone: make([]bool, batchSize), answered6: make([]bool, batchSize)}
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
				w.sp.log.Error("slow path poll", "ifindex", w.qs.ifindex, "queue", w.qs.queue, "err", err)
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
	w.now = int64(dataplane.Now())
	w.b4.reset()
	w.idx6 = w.idx6[:0]
	for i, f := range frames {
		w.sched[i], w.follow[i] = -1, false
		if len(f) >= ethHLen && binary.BigEndian.Uint16(f[12:14]) == ethTypeIPv6 {
			w.idx6 = append(w.idx6, i)
			continue
		}
		p, res := parsePacket(f)
		if res == parsedLater {
			// No transport header: the ports XDP noted of its first
			// fragment; it follows that one's connection.
			sport, dport, ok := sp.fragPorts4(&p)
			if !ok {
				sp.fragOrphans.Add(1)
				continue
			}
			p.srcPort, p.dstPort = dataplane.NetPort(sport), dataplane.NetPort(dport)
			w.pkts[i] = p
			k := w.key4(&p)
			w.keys[i] = k
			w.vals[i], w.follow[i] = place(w, &w.b4, i, k, dataplane.NewFlow{}, true)
			continue
		}
		if res != parsedOK {
			sp.unparsable.Add(1)
			continue
		}
		w.pkts[i] = p
		k := w.key4(&p)
		w.keys[i] = k
		if px := sp.proxy.get(k); px != nil {
			// A handshake under way: the real's answer, or the client
			// again (its ACK resent): the latter waits for its window.
			if k == px.rk {
				w.proxyAnswer(f, &p, px)
			}
			continue
		}
		w.vals[i], w.follow[i] = place(w, &w.b4, i, k, w.newFlow4(f, &p), false)
	}
	if len(w.b4.flows) > 0 {
		clear(w.proxyDone[:len(w.b4.flows)])
		decide(w, &w.b4)
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
			if j := w.sched[i]; w.b4.held[j] || w.b4.decs[j].RealID == 0 {
				sp.fragOrphans.Add(1)
				continue
			}
			v = w.b4.fwds[w.sched[i]]
		case w.sched[i] >= 0 && w.b4.held[w.sched[i]]:
			if j := w.sched[i]; !w.proxyDone[j] {
				w.proxyDone[j] = true
				w.proxyOpen(f, &w.pkts[i], j)
			}
			continue
		case w.sched[i] >= 0 && w.b4.decs[w.sched[i]].RealID != 0:
			v = w.b4.fwds[w.sched[i]]
		case w.sched[i] >= 0 && w.b4.decs[w.sched[i]].Unreachable:
			w.unreachable(f, w.b4.flows[w.sched[i]].Key)
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
			sp.log.Warn("slow path transmit", "err", err)
		}
		delete(w.txs, s)
	}
	w.flushQueued()
	d.AddSlowStats(&w.stats)
	w.stats = [dataplane.NumStats]uint64{}
}

// key4 is IPv4 packet p's connection key.
func (w *worker) key4(p *packet) bpfobj.DirectorConnKey {
	return bpfobj.DirectorConnKey{Saddr: le.Uint32(p.src[:]), Daddr: le.Uint32(p.dst[:]),
		Sport: dataplane.NetPort(p.srcPort), Dport: dataplane.NetPort(p.dstPort), Proto: p.proto}
}

// newFlow4 is frame f (parsed p) as a new flow.
func (w *worker) newFlow4(f []byte, p *packet) dataplane.NewFlow {
	return dataplane.NewFlow{Key: dataplane.ConnKey{Src: netip.AddrFrom4(p.src), Dst: netip.AddrFrom4(p.dst),
		SrcPort: p.srcPort, DstPort: p.dstPort, Proto: p.proto}, TCPFlags: p.flags, Ifindex: w.qs.ifindex, SrcMAC: [6]byte(f[6:12])}
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

// transmit applies the director's transform to frame f of a connection
// whose forward entry is v and queues the result on its egress socket.
func (w *worker) transmit(f []byte, p *packet, v bpfobj.DirectorConnVal) {
	sp := w.sp
	r := sp.d.RealView(v.RealId)
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
	if stat == dataplane.StatFwd {
		sp.d.AccountSlow(v.RealId, uint64(p.totLen))
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

// unreachable answers frame f, a new flow k no real server can take, with
// an ICMP or ICMPv6 port unreachable out the way it came, within one rate
// limit for both (ip_vs_leave's icmp_send and icmpv6_send).
func (w *worker) unreachable(f []byte, k dataplane.ConnKey) {
	sp := w.sp
	if !sp.unreach.Allow() {
		sp.unreachLimited.Add(1)
		return
	}
	answer, room := icmpPortUnreachable, icmpFrameLen
	if k.Src.Is6() {
		answer, room = icmp6PortUnreachable, ip6HLen+8
	}
	tx := w.ownTx()
	buf := tx.Next()
	if buf == nil || len(buf) < len(f)+room {
		sp.failed.Add(1)
		return
	}
	n, ok := answer(buf, copy(buf, f))
	if !ok {
		return // IPv4 options: no quote of the usual size
	}
	tx.Commit(n)
	sp.portUnreach.Add(1)
	sp.unreachLog.Do(func() {
		sp.log.Warn("new flows to a service with no available real server: answered ICMP port unreachable",
			"service", fmt.Sprintf("%s/%d", netip.AddrPortFrom(k.Dst, k.DstPort), k.Proto),
			"client", k.Src, "answered", sp.portUnreach.Load(), "rate_limited", sp.unreachLimited.Load())
	})
}

// egressSock is the socket a real's packets leave by: its interface's,
// the queue matching this worker's where it has as many.
func (w *worker) egressSock(r *dataplane.RealView) *xsk.Socket {
	if !r.Valid || r.Ifindex == w.qs.ifindex {
		return w.qs.sock
	}
	socks := w.sp.socks[r.Ifindex]
	if len(socks) == 0 {
		return nil
	}
	return socks[w.qs.queue%len(socks)]
}
