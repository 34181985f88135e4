package slowpath

import (
	"encoding/binary"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/dataplane/xsk"
)

// The IPv6 slow path. A batch's IPv6 frames are decided together, as
// IPv4's are (one handler call, one batched map update; a packet of a
// flow created a moment ago follows it); then each frame is run through
// the program's replay entry, which forwards it as a hit would, and what
// comes out is sent.

const (
	ethTypeIPv6 = 0x86dd
	ip6HLen     = 40
)

// packet6 is what the slow path reads of an IPv6 frame (parse_ipv6 and
// parse_l4 of bpf/parse.h).
type packet6 struct {
	l4       int // offset of the TCP/UDP header (0 in a later fragment)
	totLen   int // header and payload, as IPVS counts
	proto    uint8
	flags    uint8
	fragment uint8  // fragFirst, fragLater or 0 (packet.fragment)
	fragID   uint32 // a fragment header's identification, as XDP reads it
	src      [16]byte
	dst      [16]byte
	srcPort  uint16
	dstPort  uint16
}

// ipv6MaxExt is IPV6_MAX_EXT: the extension headers the program walks.
const ipv6MaxExt = 16

// parsePacket6 parses an IPv6 frame as the program does (parse_ipv6,
// xipvs_ipv6_ext, parse_l4); ok is false for anything the program would
// pass (malformed, a routing header with segments left, more extension
// headers than it walks, not TCP or UDP). A later fragment has no ports:
// the caller finds them (fragPorts6).
func parsePacket6(f []byte) (p packet6, ok bool) {
	if len(f) < ethHLen+ip6HLen || binary.BigEndian.Uint16(f[12:14]) != ethTypeIPv6 || f[ethHLen]>>4 != 6 {
		return p, false
	}
	ip := f[ethHLen:]
	plen := int(binary.BigEndian.Uint16(ip[4:6]))
	if plen == 0 || ip6HLen+plen > len(ip) {
		return p, false
	}
	next, off, done := ip[6], ip6HLen, false
	for i := 0; i <= ipv6MaxExt && !done; i++ {
		switch next {
		case 0, 43, 60, 44: // hop-by-hop, routing, destination options, fragment
		default:
			done = true
			continue
		}
		if (next == 0 && i > 0) || off+8 > ip6HLen+plen {
			return p, false // hop-by-hop not first; truncated
		}
		h := ip[off : off+8]
		hl := (int(h[1]) + 1) * 8
		if next == 44 {
			hl = 8
			p.fragID = le.Uint32(h[4:8])
			if fo := binary.BigEndian.Uint16(h[2:4]); fo&^7 != 0 {
				p.fragment, next, off = fragLater, h[0], off+hl
				break
			} else if fo&1 != 0 {
				p.fragment = fragFirst
			}
		} else if next == 43 && h[3] != 0 {
			return p, false // segments left: not for us yet
		}
		if off += hl; off > ip6HLen+plen {
			return p, false
		}
		next = h[0]
	}
	if !done && p.fragment != fragLater || ethHLen+off > 1024 {
		return p, false // more headers than the walk takes: the kernel's
	}
	if next != protoTCP && next != protoUDP {
		return p, false
	}
	p.totLen, p.proto = ip6HLen+plen, next
	copy(p.src[:], ip[8:24])
	copy(p.dst[:], ip[24:40])
	if p.fragment == fragLater {
		return p, true
	}
	l4, l4Len := ip[off:], ip6HLen+plen-off
	switch next {
	case protoTCP:
		if len(l4) < 20 || int(l4[12]>>4)*4 < 20 || int(l4[12]>>4)*4 > l4Len {
			return p, false
		}
		p.flags = l4[13] & (dataplane.TCPFin | dataplane.TCPSyn | dataplane.TCPRst | dataplane.TCPAck)
	case protoUDP:
		if len(l4) < 8 {
			return p, false
		}
		ulen := int(binary.BigEndian.Uint16(l4[4:6]))
		if ulen < 8 || (ulen > l4Len && p.fragment != fragFirst) || binary.BigEndian.Uint16(l4[6:8]) == 0 {
			return p, false
		}
	}
	p.l4 = ethHLen + off
	p.srcPort = binary.BigEndian.Uint16(l4[0:2])
	p.dstPort = binary.BigEndian.Uint16(l4[2:4])
	return p, true
}

// batch6 handles a batch's IPv6 frames (w.idx6 into frames) as batch
// does IPv4's: the new flows decided in one handler call and their
// entries written in one batched update; then every frame that has a
// connection is sent through the replay program (transmit6).
func (w *worker) batch6(frames [][]byte) {
	sp := w.sp
	w.b6.reset()
	for _, i := range w.idx6 {
		f := frames[i]
		w.sched[i], w.follow[i] = -1, false
		p, ok := parsePacket6(f)
		if !ok {
			sp.unparsable.Add(1)
			continue
		}
		if p.fragment == fragLater {
			sport, dport, ok := sp.fragPorts6(&p)
			if !ok {
				sp.fragOrphans.Add(1)
				continue
			}
			p.srcPort, p.dstPort = dataplane.NetPort(sport), dataplane.NetPort(dport)
		}
		k := dataplane.ConnKey{Src: netip.AddrFrom16(p.src), Dst: netip.AddrFrom16(p.dst), SrcPort: p.srcPort, DstPort: p.dstPort, Proto: p.proto}
		v, follow := place(w, &w.b6, i, k.Raw6(), dataplane.NewFlow{Key: k, TCPFlags: p.flags, Ifindex: w.qs.ifindex, SrcMAC: [6]byte(f[6:12])},
			p.fragment == fragLater)
		w.follow[i], w.vals[i].RealId = follow, v.RealId
	}
	if len(w.b6.flows) > 0 {
		decide(w, &w.b6)
		clear(w.answered6)
	}
	for _, i := range w.idx6 {
		switch j := w.sched[i]; {
		case w.follow[i]:
			w.transmit6(frames[i], w.vals[i].RealId)
		case j >= 0 && w.b6.decs[j].RealID != 0:
			w.transmit6(frames[i], w.b6.decs[j].RealID)
		case j >= 0 && w.b6.decs[j].Unreachable && !w.answered6[j] && !laterFrag6(frames[i]):
			w.answered6[j] = true
			w.unreachable(frames[i], w.b6.flows[j].Key)
		}
	}
}

// icmp6Quote is how much of a packet an ICMPv6 error quotes: what fits
// the minimum MTU (1280) after its own headers.
const icmp6Quote = 1280 - ip6HLen - 8

// icmp6PortUnreachable turns the IPv6 frame in out[:n] into an ICMPv6
// destination unreachable, port unreachable (type 1, code 4) back to its
// sender from the address it was sent to, quoting as much of the packet
// as fits the minimum MTU. out must have room for the 48 bytes the
// headers add.
func icmp6PortUnreachable(out []byte, n int) (int, bool) {
	const grow = ip6HLen + 8
	if n < ethHLen+ip6HLen {
		return 0, false
	}
	q := min(n-ethHLen, icmp6Quote)
	if len(out) < ethHLen+grow+q {
		return 0, false
	}
	var dmac, smac [6]byte
	copy(dmac[:], out[6:12])
	copy(smac[:], out[0:6])
	var src, dst [16]byte
	copy(src[:], out[ethHLen+24:ethHLen+40]) // from the address it was sent to
	copy(dst[:], out[ethHLen+8:ethHLen+24])
	copy(out[ethHLen+grow:], out[ethHLen:ethHLen+q])
	f := out[:ethHLen+grow+q]
	setMACs(f, dmac, smac)
	binary.BigEndian.PutUint16(f[12:14], ethTypeIPv6)
	ip := f[ethHLen : ethHLen+ip6HLen]
	binary.BigEndian.PutUint32(ip[0:4], 0x60000000)
	binary.BigEndian.PutUint16(ip[4:6], uint16(8+q))
	ip[6], ip[7] = 58, 64 // ICMPv6, hop limit
	copy(ip[8:24], src[:])
	copy(ip[24:40], dst[:])
	icmp := f[ethHLen+ip6HLen:]
	icmp[0], icmp[1] = 1, 4
	clear(icmp[2:8])
	// The pseudo-header (addresses, length, next header), then the
	// message, summed as the BPF code sums: 16-bit loads as they lie.
	var s uint32
	for i := 8; i < ip6HLen; i += 2 {
		s += uint32(le.Uint16(ip[i:]))
	}
	var word [4]byte
	binary.BigEndian.PutUint32(word[:], uint32(len(icmp)))
	s += uint32(le.Uint16(word[0:])) + uint32(le.Uint16(word[2:]))
	binary.BigEndian.PutUint32(word[:], 58)
	s += uint32(le.Uint16(word[0:])) + uint32(le.Uint16(word[2:]))
	for i := 0; i+1 < len(icmp); i += 2 {
		s += uint32(le.Uint16(icmp[i:]))
	}
	if len(icmp)%2 == 1 {
		s += uint32(icmp[len(icmp)-1])
	}
	le.PutUint16(icmp[2:4], csumFold(s))
	return len(f), true
}

// transmit6 sends frame f of an IPv6 connection to real realID whose
// entries are in the tables: it runs f through
// xipvs_replay6 (BPF_PROG_RUN, as received
// on the worker's interface and queue), which transforms it as the hit
// path would (and counts it), and sends what comes out: toward the real
// (XDP_REDIRECT, or XDP_TX on the real's own interface) or back the way
// it came (XDP_TX: a Packet Too Big). A dropped frame the program has
// counted.
func (w *worker) transmit6(f []byte, realID uint32) {
	sp := w.sp
	if r := sp.d.RealView(realID); r.Valid && r.MACValid && r.Fwd == dataplane.FwdRoute {
		w.route6(f, realID, r)
		return
	}
	w.replayCtx = dataplane.XDPContext{DataEnd: uint32(len(f)), IngressIfindex: uint32(w.qs.ifindex), RxQueueIndex: uint32(w.qs.queue)}
	opts := ebpf.RunOptions{Data: f, DataOut: w.scratch[:], Context: &w.replayCtx}
	ret, err := sp.d.Replay6(&opts)
	if err != nil {
		sp.failed.Add(1)
		sp.log.Warn("slow path: replaying an IPv6 frame", "err", err)
		return
	}
	var sock *xsk.Socket
	switch dataplane.Verdict(ret) {
	case dataplane.XDPTx:
		sock = w.qs.sock
	case dataplane.XDPRedirect:
		sock = w.egressSock(sp.d.RealView(realID))
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

// route6 sends frame f of a DR connection to real r: new MACs only, as
// forward6 does (its entry already holds the state after the packet).
func (w *worker) route6(f []byte, realID uint32, r *dataplane.RealView) {
	sp := w.sp
	sock := w.egressSock(r)
	if sock == nil {
		sp.failed.Add(1)
		return
	}
	var buf []byte
	own := sock == w.qs.sock
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
	setMACs(buf[:n], r.MAC, r.SrcMAC)
	if own {
		w.ownTx().Commit(n)
	} else {
		w.queue(sock, buf[:n])
	}
	w.stats[dataplane.StatFwd]++
	sp.d.AccountSlow(realID, uint64(ip6HLen+int(binary.BigEndian.Uint16(f[ethHLen+4:]))))
}
