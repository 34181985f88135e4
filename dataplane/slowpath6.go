package dataplane

import (
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"github.com/xipvs/xipvs/conntrack"
)

// The IPv6 slow path. An IPv6 frame the program handed over is decided
// on its own (not batched as IPv4's are): its connection is looked up
// first (a packet of a flow decided a moment ago follows it), else the
// handler decides, the entries are written and the frame is transformed
// here as forward6 of bpf/director6.h would, into the egress socket.

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
		w.transmit6(f, &p, c)
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
	ents := Entries(flows[0], dec, Now(), mac[:])
	fwd := &ents[len(ents)-1].Conn
	dir := dirInputOnly
	if fwd.Rewrites() {
		dir = dirInput
	}
	first := *fwd // the state before the first packet, as XDP saw it
	fwd.State = conntrack.State(connState(uint8(fwd.State), p.proto, p.flags, dir))
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
	w.transmit6(f, &p, first)
}

// transmit6 sends frame f of the IPv6 connection whose forward entry is c
// as forward6 would: new MACs, and for NAT the entry's tuple.
func (w *worker) transmit6(f []byte, p *packet6, c Conn) {
	sp := w.sp
	r := sp.d.realView(c.RealID)
	switch {
	case !r.valid || (r.fwd != FwdRoute && r.fwd != FwdMasq):
		w.stats[StatDropNoReal]++
		return
	case !r.macValid:
		w.stats[StatDropNoMAC]++
		return
	}
	sock := w.egressSock(r)
	if sock == nil {
		sp.failed.Add(1)
		return
	}
	own := sock == w.qs.sock
	var buf []byte
	if own {
		buf = w.ownTx().Next()
	} else {
		buf = w.scratch[:]
	}
	if buf == nil || len(buf) < len(f) {
		sp.failed.Add(1)
		return
	}
	n := copy(buf, f)
	out := buf[:n]
	if r.fwd == FwdMasq {
		nat6Rewrite(out, p, c.Out)
	}
	setMACs(out, r.mac, r.srcMAC)
	if own {
		w.ownTx().Commit(n)
	} else {
		w.queue(sock, out)
	}
	w.stats[StatFwd]++
	sp.d.accountSlow(c.RealID, uint64(p.totLen))
}

// nat6Rewrite is nat6_rewrite: the packet gets the tuple out, the
// TCP/UDP checksum updated incrementally (the pseudo-header holds the
// addresses; IPv6 has no header checksum).
func nat6Rewrite(f []byte, p *packet6, out ConnKey) {
	ip, l4 := f[ethHLen:], f[p.l4:]
	udp := p.proto == protoUDP
	sum := l4[16:18]
	if udp {
		sum = l4[6:8]
	}
	src, dst := out.Src.As16(), out.Dst.As16()
	for i := 0; i < 16; i += 4 {
		l4CsumReplace4(sum, le.Uint32(ip[8+i:]), le.Uint32(src[i:]), udp)
		l4CsumReplace4(sum, le.Uint32(ip[24+i:]), le.Uint32(dst[i:]), udp)
	}
	copy(ip[8:24], src[:])
	copy(ip[24:40], dst[:])
	if sport := be16(out.SrcPort); le.Uint16(l4[0:2]) != sport {
		l4CsumReplace2(sum, le.Uint16(l4[0:2]), sport, udp)
		le.PutUint16(l4[0:2], sport)
	}
	if dport := be16(out.DstPort); le.Uint16(l4[2:4]) != dport {
		l4CsumReplace2(sum, le.Uint16(l4[2:4]), dport, udp)
		le.PutUint16(l4[2:4], dport)
	}
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
	fwd.Out = dec.Out
	rep := Conn{RealID: dec.RealID, ServiceID: dec.ServiceID, LastSeen: now, Flags: ConnReply,
		Out:     ConnKey{Src: f.Key.Dst, Dst: f.Key.Src, SrcPort: f.Key.DstPort, DstPort: f.Key.SrcPort},
		Ifindex: f.Ifindex, DstMAC: append(net.HardwareAddr(nil), f.SrcMAC[:]...), SrcMAC: append(net.HardwareAddr(nil), ifaceMAC...)}
	return []Entry{{fwd.Peer(f.Key.Proto), rep}, {f.Key, fwd}}
}
