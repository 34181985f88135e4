package dataplane

import (
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"github.com/xipvs/xipvs/dataplane/xsk"
)

// The IPv6 slow path. An IPv6 frame the program handed over is decided
// on its own (not batched as IPv4's are): its connection is looked up
// first (a packet of a flow decided a moment ago follows it), else the
// handler decides and the entries are written; then the frame is run
// through the program's replay entry, which forwards it as a hit, and
// what comes out is sent.

const (
	ethTypeIPv6 = 0x86dd
	ip6HLen     = 40
)

// packet6 is what the slow path reads of an IPv6 frame (parse_ipv6 and
// parse_l4 of bpf/parse.h).
type packet6 struct {
	l4      int // offset of the TCP/UDP header
	totLen  int // header and payload, as IPVS counts
	proto   uint8
	flags   uint8
	src     [16]byte
	dst     [16]byte
	srcPort uint16
	dstPort uint16
}

// parsePacket6 parses an IPv6 frame as the program does; ok is false for
// anything the program would pass (malformed, fragments, extension
// headers it does not skip, not TCP or UDP).
func parsePacket6(f []byte) (p packet6, ok bool) {
	if len(f) < ethHLen+ip6HLen || binary.BigEndian.Uint16(f[12:14]) != ethTypeIPv6 || f[ethHLen]>>4 != 6 {
		return p, false
	}
	ip := f[ethHLen:]
	plen := int(binary.BigEndian.Uint16(ip[4:6]))
	if plen == 0 || ip6HLen+plen > len(ip) {
		return p, false
	}
	next, off, ext := ip[6], ip6HLen, 0
	for i := 0; i < 4; i++ {
		if next != 0 && next != 43 && next != 60 {
			break // not hop-by-hop, routing or destination options
		}
		if off+8 > len(ip) {
			return p, false
		}
		if next == 43 && ip[off+3] != 0 {
			return p, false // segments left
		}
		hl := (int(ip[off+1]) + 1) * 8
		if ext += hl; ext > plen {
			return p, false
		}
		next, off = ip[off], off+hl
	}
	if next != protoTCP && next != protoUDP {
		return p, false
	}
	l4, l4Len := ip[off:], plen-ext
	switch next {
	case protoTCP:
		if len(l4) < 20 || int(l4[12]>>4)*4 < 20 || int(l4[12]>>4)*4 > l4Len {
			return p, false
		}
		p.flags = l4[13] & (TCPFin | TCPSyn | TCPRst | TCPAck)
	case protoUDP:
		if len(l4) < 8 {
			return p, false
		}
		if ulen := int(binary.BigEndian.Uint16(l4[4:6])); ulen < 8 || ulen > l4Len || binary.BigEndian.Uint16(l4[6:8]) == 0 {
			return p, false
		}
	}
	p.l4, p.totLen, p.proto = ethHLen+off, ip6HLen+plen, next
	copy(p.src[:], ip[8:24])
	copy(p.dst[:], ip[24:40])
	p.srcPort = binary.BigEndian.Uint16(l4[0:2])
	p.dstPort = binary.BigEndian.Uint16(l4[2:4])
	return p, true
}

// slow6 handles one IPv6 frame of the slow path.
func (w *worker) slow6(f []byte) {
	sp, d := w.sp, w.sp.d
	p, ok := parsePacket6(f)
	if !ok {
		sp.unparsable.Add(1)
		return
	}
	k := ConnKey{Src: netip.AddrFrom16(p.src), Dst: netip.AddrFrom16(p.dst), SrcPort: p.srcPort, DstPort: p.dstPort, Proto: p.proto}
	c, found, err := d.LookupConn(k)
	if err != nil {
		sp.failed.Add(1)
		return
	}
	bareSYN := p.proto == protoTCP && p.flags&(TCPSyn|TCPAck) == TCPSyn
	if found && c.Flags&ConnReply == 0 && !(bareSYN && closing(c.State)) {
		sp.followed.Add(1)
		w.transmit6(f, c.RealID)
		return
	}
	// Its own one-flow batch: w.flows and w.decs hold the IPv4 flows the
	// batch is still collecting.
	w.flow6[0] = NewFlow{Key: k, TCPFlags: p.flags, Ifindex: w.qs.ifindex, SrcMAC: [6]byte(f[6:12])}
	w.dec6[0] = Decision{}
	sp.handler(w.flow6[:], w.dec6[:])
	flows, dec := w.flow6[:], w.dec6[0]
	if dec.RealID == 0 {
		sp.noDest.Add(1)
		return
	}
	mac := d.ifaceMAC(w.qs.ifindex)
	// The entries as they are before the first packet: its replay moves
	// the state on, as a hit would.
	ents := Entries(flows[0], dec, Now(), mac[:])
	for _, e := range ents {
		// A new connection's entries go to the embryonic table, as the
		// IPv4 batch writes them (XDP dropped any established entry of
		// a reused tuple before handing the packet over).
		if err := d.objs.Conns6.Put(e.Key.raw6(), e.Conn.raw6()); err != nil {
			sp.failed.Add(1)
			d.log.Warn("slow path: writing a new IPv6 connection", "err", err)
			return
		}
	}
	sp.newConns.Add(1)
	w.transmit6(f, dec.RealID)
}

// transmit6 sends frame f of an IPv6 connection whose entries are in
// the tables: it runs f through xipvs_replay6 (BPF_PROG_RUN, as received
// on the worker's interface and queue), which transforms it as the hit
// path would (and counts it), and sends what comes out: toward the real
// (XDP_REDIRECT, or XDP_TX on the real's own interface) or back the way
// it came (XDP_TX: a Packet Too Big). A dropped frame the program has
// counted.
func (w *worker) transmit6(f []byte, realID uint32) {
	sp := w.sp
	w.replayCtx = xdpMd{DataEnd: uint32(len(f)), IngressIfindex: uint32(w.qs.ifindex), RxQueueIndex: uint32(w.qs.queue)}
	opts := ebpf.RunOptions{Data: f, DataOut: w.scratch[:], Context: &w.replayCtx}
	ret, err := sp.d.objs.XipvsReplay6.Run(&opts)
	if err != nil {
		sp.failed.Add(1)
		sp.d.log.Warn("slow path: replaying an IPv6 frame", "err", err)
		return
	}
	var sock *xsk.Socket
	switch Verdict(ret) {
	case XDPTx:
		sock = w.qs.sock
	case XDPRedirect:
		sock = w.egressSock(sp.d.realView(realID))
	default:
		return
	}
	out := opts.DataOut
	if sock == nil {
		sp.failed.Add(1)
		return
	}
	if sock != w.qs.sock {
		w.queue(sock, out)
		return
	}
	tx := w.ownTx()
	buf := tx.Next()
	if buf == nil || len(buf) < len(out) {
		sp.failed.Add(1)
		return
	}
	tx.Commit(copy(buf, out))
}

// entries6 is rawEntries for an IPv6 flow, in the model's types: the
// forward entry, and for NAT the reply entry before it.
func entries6(f *NewFlow, dec *Decision, now time.Duration, ifaceMAC net.HardwareAddr) []Entry {
	fwd := Conn{RealID: dec.RealID, ServiceID: dec.ServiceID, LastSeen: now}
	if dec.Persistent {
		fwd.Flags = ConnPersist
	}
	if f.Key.Proto == protoTCP && f.TCPFlags&(TCPSyn|TCPAck) == TCPSyn {
		fwd.Flags |= ConnSynSeen
	}
	if !dec.Out.Src.IsValid() {
		return []Entry{{f.Key, fwd}}
	}
	var fullnat ConnFlags
	if dec.FullNAT {
		fullnat = ConnFullNAT
	}
	fwd.Out, fwd.Flags = dec.Out, fwd.Flags|fullnat
	rep := Conn{RealID: dec.RealID, ServiceID: dec.ServiceID, LastSeen: now, Flags: ConnReply | fullnat,
		Out:     ConnKey{Src: f.Key.Dst, Dst: f.Key.Src, SrcPort: f.Key.DstPort, DstPort: f.Key.SrcPort},
		Ifindex: f.Ifindex, DstMAC: append(net.HardwareAddr(nil), f.SrcMAC[:]...), SrcMAC: append(net.HardwareAddr(nil), ifaceMAC...)}
	return []Entry{{fwd.Peer(f.Key.Proto), rep}, {f.Key, fwd}}
}
