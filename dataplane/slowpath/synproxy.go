package slowpath

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/dataplane/bpfobj"
	"github.com/xipvs/xipvs/dataplane/xsk"
)

// The SYN proxy's Go half (bpf/synproxy.h has the XDP half). XDP answers
// a SYN-proxied service's SYNs with cookie SYN-ACKs of window 0 and sends
// a client's ACK here only when its cookie is valid. The slow path then
// schedules the connection as any other, writes its entries marked
// pending (XDP hands their packets here), and opens the connection to
// the real with the client's own options, decoded from the ACK's TSecr.
// On the real's SYN-ACK it writes the connection's adjustments (seqadjs:
// the real's ISN, timestamp clock and window scale against what the
// client was told), makes the entries ordinary, acknowledges the real
// (with TOA for FULLNAT) and opens the client's window; XDP forwards the
// rest. A real that does not answer in 3 s (3 SYNs) or answers RST gets
// the client a RST.

// TCP option kinds.
const (
	optEOL      = 0
	optNOP      = 1
	optMSS      = 2
	optWScale   = 3
	optSACKPerm = 4
	optTS       = 8
	optTOA      = 254
)

// Cookie timestamp bits (bpf/consts.h TS_OPT_*).
const (
	tsOptWScale   = 0xf
	tsOptSACK     = 0x10
	tsOptMSSShift = 5
)

// cookieMSS is the kernel's IPv4 SYN cookie MSS table (syncookies.c),
// which the cookie's TSval bits index.
var cookieMSS = [4]uint16{536, 1300, 1440, 1460}

// tcpOpts are the options of one TCP header that the proxy needs.
type tcpOpts struct {
	ts           bool
	tsval, tsecr uint32
	wscale       uint8 // tsOptWScale: none
	sackOK       bool
	mss          uint16
}

// parseTCPOpts reads th's options (th: the TCP header with its options).
func parseTCPOpts(th []byte) tcpOpts {
	o := tcpOpts{wscale: tsOptWScale}
	doff := int(th[12]>>4) * 4
	if doff > len(th) {
		doff = len(th)
	}
	for off := 20; off < doff; {
		kind := th[off]
		if kind == optEOL {
			break
		}
		if kind == optNOP {
			off++
			continue
		}
		if off+2 > doff {
			break
		}
		l := int(th[off+1])
		if l < 2 || off+l > doff {
			break
		}
		switch {
		case kind == optMSS && l == 4:
			o.mss = binary.BigEndian.Uint16(th[off+2:])
		case kind == optWScale && l == 3:
			o.wscale = min(th[off+2], 14)
		case kind == optSACKPerm && l == 2:
			o.sackOK = true
		case kind == optTS && l == 10:
			o.ts = true
			o.tsval = binary.BigEndian.Uint32(th[off+2:])
			o.tsecr = binary.BigEndian.Uint32(th[off+6:])
		}
		off += l
	}
	return o
}

// tcpFrame is a TCP segment the proxy builds.
type tcpFrame struct {
	dstMAC, srcMAC [6]byte
	src, dst       [4]byte
	sport, dport   uint16
	seq, ack       uint32
	flags          uint8 // the flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10)
	window         uint16
	opts           []byte // a multiple of 4 bytes
}

// buildTCP writes f into out (Ethernet, a 20-byte IP header with DF,
// TCP) with its checksums and returns its length.
func buildTCP(out []byte, f *tcpFrame) int {
	tcpLen := 20 + len(f.opts)
	n := ethHLen + 20 + tcpLen
	b := out[:n]
	copy(b[0:6], f.dstMAC[:])
	copy(b[6:12], f.srcMAC[:])
	binary.BigEndian.PutUint16(b[12:14], 0x0800)
	ip := b[ethHLen : ethHLen+20]
	ip[0], ip[1] = 0x45, 0
	binary.BigEndian.PutUint16(ip[2:4], uint16(20+tcpLen))
	binary.BigEndian.PutUint16(ip[4:6], 0)
	binary.BigEndian.PutUint16(ip[6:8], 0x4000)
	ip[8], ip[9] = 64, protoTCP
	ip[10], ip[11] = 0, 0
	copy(ip[12:16], f.src[:])
	copy(ip[16:20], f.dst[:])
	le.PutUint16(ip[10:12], ipv4Csum(ip))
	th := b[ethHLen+20:]
	binary.BigEndian.PutUint16(th[0:2], f.sport)
	binary.BigEndian.PutUint16(th[2:4], f.dport)
	binary.BigEndian.PutUint32(th[4:8], f.seq)
	binary.BigEndian.PutUint32(th[8:12], f.ack)
	th[12], th[13] = byte(tcpLen/4)<<4, f.flags
	binary.BigEndian.PutUint16(th[14:16], f.window)
	th[16], th[17], th[18], th[19] = 0, 0, 0, 0
	copy(th[20:], f.opts)
	var s uint32
	s = csumAdd32(s, le.Uint32(f.src[:]))
	s = csumAdd32(s, le.Uint32(f.dst[:]))
	var w [2]byte
	w[1] = protoTCP
	s += uint32(le.Uint16(w[:]))
	binary.BigEndian.PutUint16(w[:], uint16(tcpLen))
	s += uint32(le.Uint16(w[:]))
	for i := 0; i+1 < tcpLen; i += 2 {
		s += uint32(le.Uint16(th[i:]))
	}
	le.PutUint16(th[16:18], csumFold(s))
	return n
}

// proxied is a SYN-proxied connection whose handshake with its real is
// under way.
type proxied struct {
	fk, rk    bpfobj.DirectorConnKey
	fwd, rep  bpfobj.DirectorConnVal
	client    dataplane.ConnKey // as it reached the director (client -> VIP)
	out       dataplane.ConnKey // as it leaves toward the real
	fullnat   bool
	realID    uint32
	clientISN uint32 // the client's initial sequence number
	cookieISN uint32 // ours, the SYN cookie
	opts      tcpOpts
	ourTSval  uint32 // the TSval of our SYN-ACK (the ACK's TSecr)
	window    uint16 // the client's ACK's window, raw
	wscale    uint8  // the window scale our SYN-ACK advertised
	// The way back to the client: where its ACK came in.
	ifindex           int
	clientMAC, ifMAC  [6]byte
	started, lastSent time.Time
	tries             int
}

// proxyTable holds the handshakes under way, by both connection keys.
type proxyTable struct {
	mu sync.Mutex
	m  map[bpfobj.DirectorConnKey]*proxied
	n  atomic.Int64 // entries, read without the lock
}

// proxyLimit bounds the handshakes under way: only clients with valid
// cookies get here, so it is a bound on memory, not a defence.
const proxyLimit = 65536

// proxyTimeout is how long a real has to answer; a SYN is resent every
// proxyRetry.
const (
	proxyRetry   = time.Second
	proxyTimeout = 3 * time.Second
)

func (t *proxyTable) get(k bpfobj.DirectorConnKey) *proxied {
	if t.n.Load() == 0 {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[k]
}

func (t *proxyTable) put(p *proxied) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) >= 2*proxyLimit {
		return false
	}
	if t.m == nil {
		t.m = map[bpfobj.DirectorConnKey]*proxied{}
	}
	t.m[p.fk], t.m[p.rk] = p, p
	t.n.Store(int64(len(t.m)))
	return true
}

// take removes p; it reports false if another worker took it first.
func (t *proxyTable) take(p *proxied) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m[p.rk] != p {
		return false
	}
	delete(t.m, p.fk)
	delete(t.m, p.rk)
	t.n.Store(int64(len(t.m)))
	return true
}

// proxyOpen starts the handshake with the real for flow i of the batch,
// whose ACK (frame f, parsed p) carried a valid cookie: the entries were
// written pending; the SYN goes out after the batch.
func (w *worker) proxyOpen(f []byte, p *packet, i int) {
	sp := w.sp
	f2 := &w.b4.flows[i]
	dec := &w.b4.decs[i]
	th := f[p.l4 : p.totLen+p.ip]
	o := parseTCPOpts(th)
	px := &proxied{
		client: f2.Key, out: dec.Out, fullnat: dec.FullNAT, realID: dec.RealID,
		clientISN: binary.BigEndian.Uint32(th[4:8]) - 1,
		cookieISN: binary.BigEndian.Uint32(th[8:12]) - 1,
		window:    binary.BigEndian.Uint16(th[14:16]),
		ifindex:   f2.Ifindex, clientMAC: f2.SrcMAC, ifMAC: sp.d.IfaceMAC(f2.Ifindex),
		started: time.Now(),
		wscale:  sp.d.DefenceWScale(),
	}
	// The client's SYN options, from our SYN-ACK's TSval echoed back.
	px.opts = tcpOpts{wscale: tsOptWScale, mss: cookieMSS[0]}
	if o.ts {
		px.ourTSval = o.tsecr
		px.opts.ts, px.opts.tsval = true, o.tsval
		px.opts.wscale = uint8(o.tsecr & tsOptWScale)
		px.opts.sackOK = o.tsecr&tsOptSACK != 0
		px.opts.mss = cookieMSS[(o.tsecr>>tsOptMSSShift)&3]
	}
	if px.opts.wscale == tsOptWScale {
		px.wscale = 0 // no scaling on either side
	}
	ents, n := dataplane.RawEntries(f2, dec, uint64(w.now), px.ifMAC)
	if n != 2 {
		sp.proxyFailed.Add(1)
		return
	}
	px.rk, px.rep = ents[0].K, ents[0].V
	px.fk, px.fwd = ents[1].K, w.b4.fwds[i]
	if !sp.proxy.put(px) {
		sp.proxyFailed.Add(1)
		return
	}
	sp.proxyOpened.Add(1)
	w.proxySYN(px)
}

// proxySYN queues the SYN to px's real: the client's, with its options.
func (w *worker) proxySYN(px *proxied) {
	r := w.sp.d.RealView(px.realID)
	if !r.Valid || !r.MACValid {
		return // the resend or the timeout takes it from here
	}
	var opts []byte
	opts = append(opts, optMSS, 4, byte(px.opts.mss>>8), byte(px.opts.mss))
	if px.opts.sackOK {
		opts = append(opts, optSACKPerm, 2)
	} else {
		opts = append(opts, optNOP, optNOP)
	}
	if px.opts.ts {
		opts = append(opts, optTS, 10, 0, 0, 0, 0, 0, 0, 0, 0)
		binary.BigEndian.PutUint32(opts[len(opts)-8:], px.opts.tsval)
	} else {
		opts = append(opts, optNOP, optNOP)
	}
	if px.opts.wscale != tsOptWScale {
		opts = append(opts, optNOP, optWScale, 3, px.opts.wscale)
	}
	for len(opts)%4 != 0 {
		opts = append(opts, optNOP)
	}
	win := uint32(px.window)
	if px.opts.wscale != tsOptWScale {
		win <<= px.opts.wscale
	}
	t := &tcpFrame{dstMAC: r.MAC, srcMAC: r.SrcMAC, src: px.out.Src.As4(), dst: px.out.Dst.As4(),
		sport: px.out.SrcPort, dport: px.out.DstPort, seq: px.clientISN, flags: dataplane.TCPSyn,
		window: uint16(min(win, 0xffff)), opts: opts}
	w.queueBuilt(w.egressSock(r), t)
	px.lastSent = time.Now()
	px.tries++
}

// proxyAnswer handles the real's answer to px's SYN (frame f, parsed p).
func (w *worker) proxyAnswer(f []byte, p *packet, px *proxied) {
	sp := w.sp
	th := f[p.l4 : p.ip+p.totLen]
	ack := binary.BigEndian.Uint32(th[8:12])
	switch {
	case p.flags&dataplane.TCPRst != 0:
		if !sp.proxy.take(px) {
			return
		}
		sp.proxyFailed.Add(1)
		w.proxyReset(px)
		w.proxyForget(px)
	case p.flags&(dataplane.TCPSyn|dataplane.TCPAck) == dataplane.TCPSyn|dataplane.TCPAck && ack == px.clientISN+1:
		if !sp.proxy.take(px) {
			return
		}
		w.proxyEstablish(px, th)
	}
}

// proxyEstablish completes px on the real's SYN-ACK th.
func (w *worker) proxyEstablish(px *proxied, th []byte) {
	sp, d := w.sp, w.sp.d
	realISN := binary.BigEndian.Uint32(th[4:8])
	ro := parseTCPOpts(th)
	adj := bpfobj.DirectorSeqadj{Delta: px.cookieISN - realISN}
	ts := px.opts.ts && ro.ts
	if ts {
		adj.Tsoff = px.ourTSval - ro.tsval
	}
	if px.wscale != 0 {
		realScale := uint8(0)
		if ro.wscale != tsOptWScale {
			realScale = ro.wscale
		}
		adj.Wshift = int8(realScale) - int8(px.wscale)
	}
	fwd, rep := px.fwd, px.rep
	fwd.Flags = fwd.Flags&^uint8(dataplane.ConnSPPending) | uint8(dataplane.ConnSynProxy)
	rep.Flags = rep.Flags&^uint8(dataplane.ConnSPPending) | uint8(dataplane.ConnSynProxy)
	fwd.State = uint8(conntrack.StateEstablished)
	now := uint64(dataplane.Now())
	fwd.LastSeen, rep.LastSeen = now, now
	if _, err := d.WriteSeqadjs([]bpfobj.DirectorConnKey{px.fk, px.rk}, []bpfobj.DirectorSeqadj{adj, adj}); err != nil {
		sp.proxyFailed.Add(1)
		sp.log.Warn("SYN proxy: writing a connection's adjustments", "err", err)
		w.proxyReset(px)
		w.proxyForget(px)
		return
	}
	if _, err := d.WriteConns([]bpfobj.DirectorConnKey{px.rk, px.fk}, []bpfobj.DirectorConnVal{rep, fwd}); err != nil {
		sp.proxyFailed.Add(1)
		sp.log.Warn("SYN proxy: writing a connection", "err", err)
		w.proxyReset(px)
		w.proxyForget(px)
		return
	}
	sp.proxyEstablished.Add(1)

	// The handshake's last ACK to the real, as the client would have
	// sent it; with TOA for FULLNAT (the toa module reads it there).
	r := d.RealView(px.realID)
	var opts []byte
	if ts {
		opts = append(opts, optNOP, optNOP, optTS, 10, 0, 0, 0, 0, 0, 0, 0, 0)
		binary.BigEndian.PutUint32(opts[4:], px.opts.tsval)
		binary.BigEndian.PutUint32(opts[8:], ro.tsval)
	}
	if px.fullnat {
		c := px.client.Src.As4()
		opts = append(opts, optTOA, 8, byte(px.client.SrcPort>>8), byte(px.client.SrcPort), c[0], c[1], c[2], c[3])
	}
	if r.Valid && r.MACValid {
		w.queueBuilt(w.egressSock(r), &tcpFrame{dstMAC: r.MAC, srcMAC: r.SrcMAC,
			src: px.out.Src.As4(), dst: px.out.Dst.As4(), sport: px.out.SrcPort, dport: px.out.DstPort,
			seq: px.clientISN + 1, ack: realISN + 1, flags: dataplane.TCPAck, window: px.window, opts: opts})
	}
	// The client's window opens: the real's, in the scale the client
	// was told.
	win := uint32(binary.BigEndian.Uint16(th[14:16]))
	if px.wscale != 0 {
		win = (win + 1<<px.wscale - 1) >> px.wscale
	}
	opts = nil
	if ts {
		opts = append(opts, optNOP, optNOP, optTS, 10, 0, 0, 0, 0, 0, 0, 0, 0)
		binary.BigEndian.PutUint32(opts[4:], ro.tsval+adj.Tsoff)
		binary.BigEndian.PutUint32(opts[8:], px.opts.tsval)
	}
	w.queueBuilt(w.ifaceSock(px.ifindex), &tcpFrame{dstMAC: px.clientMAC, srcMAC: px.ifMAC,
		src: px.client.Dst.As4(), dst: px.client.Src.As4(), sport: px.client.DstPort, dport: px.client.SrcPort,
		seq: px.cookieISN + 1, ack: px.clientISN + 1, flags: dataplane.TCPAck, window: uint16(max(win, 1)), opts: opts})
}

// proxyReset tells px's client the connection is gone.
func (w *worker) proxyReset(px *proxied) {
	w.queueBuilt(w.ifaceSock(px.ifindex), &tcpFrame{dstMAC: px.clientMAC, srcMAC: px.ifMAC,
		src: px.client.Dst.As4(), dst: px.client.Src.As4(), sport: px.client.DstPort, dport: px.client.SrcPort,
		seq: px.cookieISN + 1, ack: px.clientISN + 1, flags: dataplane.TCPRst | dataplane.TCPAck})
}

// proxyForget closes px's entries: CLOSE and no longer pending (a stray
// packet is forwarded as it is and answered by the real, never taken
// for a new flow here), so that the sweep removes them within the CLOSE
// timeout and frees a FULLNAT local port the way it frees every other.
func (w *worker) proxyForget(px *proxied) {
	fwd, rep := px.fwd, px.rep
	fwd.State = uint8(conntrack.StateClose)
	fwd.Flags &^= uint8(dataplane.ConnSPPending)
	rep.Flags &^= uint8(dataplane.ConnSPPending)
	now := uint64(dataplane.Now())
	fwd.LastSeen, rep.LastSeen = now, now
	_, _ = w.sp.d.WriteConns([]bpfobj.DirectorConnKey{px.rk, px.fk}, []bpfobj.DirectorConnVal{rep, fwd})
}

// ifaceSock is the socket to send out of interface ifindex by: this
// worker's own when it is that interface's.
func (w *worker) ifaceSock(ifindex int) *xsk.Socket {
	if ifindex == w.qs.ifindex {
		return w.qs.sock
	}
	socks := w.sp.socks[ifindex]
	if len(socks) == 0 {
		return nil
	}
	return socks[w.qs.queue%len(socks)]
}

// queueBuilt builds t into the worker's queue for sock, sent after the
// batch (see flushQueued).
func (w *worker) queueBuilt(sock *xsk.Socket, t *tcpFrame) {
	if sock == nil {
		w.sp.failed.Add(1)
		return
	}
	var buf [ethHLen + 20 + 60]byte
	w.queue(sock, buf[:buildTCP(buf[:], t)])
}

// queuedFrame is a frame a worker sends after its batch.
type queuedFrame struct {
	sock  *xsk.Socket
	frame []byte
}

// flushQueued sends the queued frames, one socket at a time (a worker
// never holds two sockets' transmit locks: two workers sending to each
// other's interfaces cannot deadlock).
func (w *worker) flushQueued() {
	for len(w.queued) > 0 {
		sock := w.queued[0].sock
		tx := sock.BeginTx()
		rest := w.queued[:0]
		for _, q := range w.queued {
			if q.sock != sock {
				rest = append(rest, q)
				continue
			}
			if b := tx.Next(); b != nil && len(b) >= len(q.frame) {
				tx.Commit(copy(b, q.frame))
			} else {
				w.sp.failed.Add(1)
			}
		}
		n, err := tx.Flush()
		w.sp.forwarded.Add(uint64(n))
		if err != nil {
			w.sp.failed.Add(1)
		}
		w.queued = rest
	}
	w.arena = w.arena[:0]
}

// proxyExpire resends the SYNs of handshakes a real has not answered
// and gives up on those past proxyTimeout (the client gets a RST). The
// slow path's expiry goroutine runs it with its own worker.
func (sp *SlowPath) proxyExpire(w *worker) {
	if sp.proxy.n.Load() == 0 {
		return
	}
	now := time.Now()
	var due, dead []*proxied
	sp.proxy.mu.Lock()
	for k, px := range sp.proxy.m {
		if k != px.rk {
			continue
		}
		switch {
		case now.Sub(px.started) >= proxyTimeout:
			dead = append(dead, px)
		case now.Sub(px.lastSent) >= proxyRetry:
			due = append(due, px)
		}
	}
	sp.proxy.mu.Unlock()
	for _, px := range due {
		w.proxySYN(px)
	}
	for _, px := range dead {
		if sp.proxy.take(px) {
			sp.proxyFailed.Add(1)
			w.proxyReset(px)
			w.proxyForget(px)
			sp.proxyLog.Do(func() {
				sp.log.Warn("SYN proxy: a real did not answer the handshake; the client was reset",
					"real", netip.AddrPortFrom(px.out.Dst, px.out.DstPort).String(), "client", px.client.Src.String())
			})
		}
	}
	w.flushQueued()
}
