package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane/xsk"
	"golang.org/x/sys/unix"
)

// NewFlow is the first packet of a flow the fast path did not know.
type NewFlow struct {
	Key      ConnKey
	TCPFlags uint8
	Ifindex  int
	// SrcMAC is the frame's source: the client's previous hop, where a
	// NAT or FULLNAT connection's replies go back to.
	SrcMAC net.HardwareAddr
}

// TCP flag bits of NewFlow.TCPFlags.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPAck = 0x10
)

// Decision is where the slow path's handler sends a new flow.
type Decision struct {
	RealID    uint32
	ServiceID uint32
	// Out is, for NAT and FULLNAT, the tuple the client's packets leave
	// with: (client or local address, real server, client or local port,
	// real port). Zero for DR and TUN.
	Out     ConnKey
	FullNAT bool
}

// FlowHandler chooses a real server for a new flow; false drops the
// packet (no real server available). It is called with the flow lock
// held: at most one call runs at a time.
type FlowHandler func(NewFlow) (Decision, bool)

// SlowPathStats counts what the slow path did.
type SlowPathStats struct {
	Received   uint64 // frames read from AF_XDP sockets
	NewConns   uint64 // connections created
	Forwarded  uint64 // frames transmitted after Program.Run
	NoDest     uint64 // dropped: the handler found no real server
	Unparsable uint64 // dropped: not an IPv4 TCP/UDP frame
	Failed     uint64 // dropped: map, run or transmit error
}

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
	flowMu  sync.Mutex
	stop    chan struct{}
	wg      sync.WaitGroup

	received, newConns, forwarded, noDest, unparsable, failed atomic.Uint64
}

// StartSlowPath binds one AF_XDP socket per rx queue of every director
// interface, registers them in the XSKMAP and serves new flows with h
// until Close. Before this runs (and after Close) the fast path drops
// new flows, so clients retransmit rather than see a reset.
func (d *Dataplane) StartSlowPath(h FlowHandler) error {
	if d.slow != nil {
		return errors.New("slow path already started")
	}
	sp := &slowPath{d: d, handler: h, socks: map[int][]*xsk.Socket{}, stop: make(chan struct{})}
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
		go sp.serve(qs)
	}
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
		Received: sp.received.Load(), NewConns: sp.newConns.Load(), Forwarded: sp.forwarded.Load(),
		NoDest: sp.noDest.Load(), Unparsable: sp.unparsable.Load(), Failed: sp.failed.Load(),
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

func (sp *slowPath) serve(qs queueSock) {
	defer sp.wg.Done()
	for {
		select {
		case <-sp.stop:
			return
		default:
		}
		ready, err := qs.sock.Poll(100)
		if err != nil {
			sp.d.log.Error("slow path poll", "ifindex", qs.ifindex, "queue", qs.queue, "err", err)
			return
		}
		if !ready {
			continue
		}
		qs.sock.Receive(64, func(frame []byte) { sp.handle(qs, frame) })
	}
}

// handle forwards one new-flow frame: find or create its connection, run
// the director program on it (the same code as the fast path) and send
// what the program produced.
func (sp *slowPath) handle(qs queueSock, frame []byte) {
	sp.received.Add(1)
	key, flags, ok := parseFlow(frame)
	if !ok {
		sp.unparsable.Add(1)
		return
	}
	sp.flowMu.Lock()
	fwd, err := sp.ensureConn(NewFlow{Key: key, TCPFlags: flags, Ifindex: qs.ifindex, SrcMAC: append(net.HardwareAddr(nil), frame[6:12]...)})
	sp.flowMu.Unlock()
	if err != nil {
		sp.failed.Add(1)
		sp.d.log.Warn("slow path conn", "err", err)
		return
	}
	if !fwd {
		return
	}
	verdict, out, err := sp.d.run(frame, uint32(qs.ifindex), uint32(qs.queue))
	if err != nil {
		sp.failed.Add(1)
		sp.d.log.Warn("slow path run", "err", err)
		return
	}
	var tx *xsk.Socket
	switch verdict {
	case XDPTx:
		tx = qs.sock
	case XDPRedirect:
		// A redirect after the conn exists is toward another director
		// interface: the real's egress.
		c, found, _ := sp.d.LookupConn(key)
		if r, ok := sp.d.real(c.RealID); found && ok && r.Ifindex != qs.ifindex {
			if socks := sp.socks[r.Ifindex]; len(socks) > 0 {
				tx = socks[qs.queue%len(socks)]
			}
		}
	}
	if tx == nil {
		sp.failed.Add(1)
		return
	}
	if err := tx.Transmit(out); err != nil {
		sp.failed.Add(1)
		return
	}
	sp.forwarded.Add(1)
}

// ensureConn makes sure key has a connection entry; it reports false
// when the packet is to be dropped. A packet whose connection already
// exists (a burst of one new flow queued before the entry was written)
// follows that entry, so a burst goes to one real server.
func (sp *slowPath) ensureConn(f NewFlow) (bool, error) {
	c, found, err := sp.d.LookupConn(f.Key)
	if err != nil {
		return false, err
	}
	if found && !reusedBySyn(c, f) {
		return true, nil
	}
	dec, ok := sp.handler(f)
	if !ok {
		sp.noDest.Add(1)
		return false, nil
	}
	if err := sp.d.SetConns(f, dec, Now()); err != nil {
		return false, err
	}
	sp.newConns.Add(1)
	return true, nil
}

// Entry is one connection-table entry.
type Entry struct {
	Key  ConnKey
	Conn Conn
}

// Entries returns the entries of a new connection, in the order they
// are written: for NAT and FULLNAT the reply entry first (replies can
// come back as soon as the first packet leaves), then the forward entry.
// ifaceMAC is the MAC of the interface the flow came in on.
func Entries(f NewFlow, dec Decision, now time.Duration, ifaceMAC net.HardwareAddr) []Entry {
	fwd := Conn{RealID: dec.RealID, ServiceID: dec.ServiceID, LastSeen: now}
	if !dec.Out.Src.IsValid() {
		return []Entry{{f.Key, fwd}}
	}
	var flags ConnFlags
	if dec.FullNAT {
		flags = ConnFullNAT
	}
	fwd.Out, fwd.Flags = dec.Out, flags
	rep := Conn{RealID: dec.RealID, ServiceID: dec.ServiceID, LastSeen: now, Flags: flags | ConnReply,
		Out:     ConnKey{Src: f.Key.Dst, Dst: f.Key.Src, SrcPort: f.Key.DstPort, DstPort: f.Key.SrcPort},
		Ifindex: f.Ifindex, DstMAC: f.SrcMAC, SrcMAC: ifaceMAC}
	return []Entry{{fwd.Peer(f.Key.Proto), rep}, {f.Key, fwd}}
}

// SetConns writes the entries of a new connection (see Entries).
func (d *Dataplane) SetConns(f NewFlow, dec Decision, now time.Duration) error {
	d.realsMu.RLock()
	smac := d.ifaceMACs[f.Ifindex]
	d.realsMu.RUnlock()
	for _, e := range Entries(f, dec, now, smac) {
		if err := d.SetConn(e.Key, e.Conn); err != nil {
			return err
		}
	}
	return nil
}

// reusedBySyn mirrors conn_reused in bpf/conn.h: a SYN on a closing
// connection starts a new connection on the same tuple.
func reusedBySyn(c Conn, f NewFlow) bool {
	if f.Key.Proto != conntrack.ProtoTCP || f.TCPFlags&(TCPSyn|TCPAck) != TCPSyn {
		return false
	}
	switch c.State {
	case conntrack.StateFinWait, conntrack.StateTimeWait, conntrack.StateClose,
		conntrack.StateCloseWait, conntrack.StateLastAck:
		return true
	}
	return false
}

// parseFlow extracts the 5-tuple and TCP flags of an Ethernet/IPv4
// TCP or UDP frame.
func parseFlow(f []byte) (ConnKey, uint8, bool) {
	if len(f) < 14+20 || binary.BigEndian.Uint16(f[12:14]) != 0x0800 {
		return ConnKey{}, 0, false
	}
	ip := f[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < 20 || len(ip) < ihl {
		return ConnKey{}, 0, false
	}
	proto := ip[9]
	l4 := ip[ihl:]
	k := ConnKey{
		Src:   netip.AddrFrom4([4]byte(ip[12:16])),
		Dst:   netip.AddrFrom4([4]byte(ip[16:20])),
		Proto: proto,
	}
	var flags uint8
	switch proto {
	case conntrack.ProtoTCP:
		if len(l4) < 20 {
			return ConnKey{}, 0, false
		}
		flags = l4[13] & (TCPFin | TCPSyn | TCPRst | TCPAck)
	case conntrack.ProtoUDP:
		if len(l4) < 8 {
			return ConnKey{}, 0, false
		}
	default:
		return ConnKey{}, 0, false
	}
	k.SrcPort = binary.BigEndian.Uint16(l4[0:2])
	k.DstPort = binary.BigEndian.Uint16(l4[2:4])
	return k, flags, true
}
