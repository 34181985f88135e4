package slowpath

import (
	"encoding/binary"

	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// The Go twin of the director's transforms (bpf/director.bpf.c forward(),
// bpf/rewrite.h, bpf/csum.h, bpf/conn.h), applied by the slow path to the
// first packet of a new connection instead of running the program on it
// with BPF_PROG_RUN (one syscall, ~1.3 µs, per packet). It must leave the
// frame byte for byte as the program would: TestTransformMatchesXDP and
// FuzzTransform compare the two on every forwarding method.
//
// Checksums are summed as the C code sums them, over 16-bit words read as
// they lie in memory (little endian), so that incremental updates give
// the same bits.

var le = binary.LittleEndian

func csumFold(s uint32) uint16 {
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	return ^uint16(s)
}

func csumAdd32(s, w uint32) uint32 { return s + w&0xffff + w>>16 }

// csumReplace2 updates the checksum at b[0:2] for a 16-bit field going
// from -> to (csum_replace2).
func csumReplace2(b []byte, from, to uint16) {
	s := uint32(^le.Uint16(b))
	s += uint32(^from)
	s += uint32(to)
	le.PutUint16(b, csumFold(s))
}

// csumReplace4 is csum_replace4.
func csumReplace4(b []byte, from, to uint32) {
	s := uint32(^le.Uint16(b))
	s = csumAdd32(s, ^from)
	s = csumAdd32(s, to)
	le.PutUint16(b, csumFold(s))
}

// l4CsumReplace4 and l4CsumReplace2 keep a zero UDP checksum zero and
// send a computed zero as 0xffff (RFC 768), as the C code does.
func l4CsumReplace4(b []byte, from, to uint32, udp bool) {
	if udp && le.Uint16(b) == 0 {
		return
	}
	csumReplace4(b, from, to)
	if udp && le.Uint16(b) == 0 {
		le.PutUint16(b, 0xffff)
	}
}

func l4CsumReplace2(b []byte, from, to uint16, udp bool) {
	if udp && le.Uint16(b) == 0 {
		return
	}
	csumReplace2(b, from, to)
	if udp && le.Uint16(b) == 0 {
		le.PutUint16(b, 0xffff)
	}
}

// ipv4Csum is ipv4_csum over a 20-byte header whose check field is zero.
func ipv4Csum(h []byte) uint16 {
	var s uint32
	for i := 0; i < 20; i += 2 {
		s += uint32(le.Uint16(h[i:]))
	}
	return csumFold(s)
}

const (
	ipipHLen    = 20
	mssFloor    = 536
	tcpOptLenTo = 8
	ipDF        = 0x4000
	// icmpFrameLen is an ICMP fragmentation-needed frame: Ethernet, IP,
	// ICMP, the offending IP header and 8 bytes of it.
	icmpFrameLen = ethHLen + 20 + 8 + 20 + 8
)

// tcpDirInput and friends are the rows of IPVS's state tables (conn.h).
const (
	dirInput = iota
	dirOutput
	dirInputOnly
)

// tcpStates is conn.h's tcp_states: [direction][event: syn, fin, ack,
// rst][state].
var tcpStates = [3][4][11]uint8{
	{
		{3, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3},
		{6, 7, 2, 5, 5, 5, 6, 7, 8, 9, 5},
		{1, 1, 2, 1, 4, 5, 6, 7, 6, 9, 1},
		{6, 6, 6, 3, 6, 6, 6, 6, 8, 9, 3},
	},
	{
		{2, 1, 2, 3, 2, 2, 2, 2, 2, 9, 3},
		{5, 4, 2, 5, 4, 5, 6, 5, 8, 9, 5},
		{1, 1, 2, 1, 4, 5, 6, 7, 8, 1, 1},
		{6, 6, 2, 6, 6, 5, 6, 6, 6, 6, 6},
	},
	{
		{3, 1, 1, 3, 3, 3, 3, 3, 3, 3, 3},
		{6, 4, 2, 5, 4, 5, 6, 7, 8, 9, 5},
		{1, 1, 2, 1, 4, 5, 6, 7, 6, 9, 1},
		{6, 6, 6, 3, 6, 6, 6, 6, 8, 9, 6},
	},
}

// connState is conn_state: the state after a packet with TCP flags of
// direction dir.
func connState(state uint8, proto uint8, flags uint8, dir int) uint8 {
	if proto != protoTCP || state >= uint8(len(tcpStates[0][0])) {
		return state
	}
	var ev int
	switch {
	case flags&dataplane.TCPRst != 0:
		ev = 3
	case flags&dataplane.TCPSyn != 0:
		ev = 0
	case flags&dataplane.TCPFin != 0:
		ev = 1
	case flags&dataplane.TCPAck != 0:
		ev = 2
	default:
		return state
	}
	return tcpStates[dir][ev][state]
}

// forwardFirst is forward() of director.bpf.c for a packet p of frame
// in, whose connection entry c (forward entry) was just made: it moves
// c.State as conn_update would, writes the frame the program would send
// into out (at least len(in)+ipipHLen bytes) and returns its length, the
// interface it leaves by (0 when dropped) and the counter the program
// would count (STAT_*). A packet counted STAT_FORWARD is also accounted
// to the real by the caller.
func forwardFirst(out, in []byte, p *packet, c *bpfobj.DirectorConnVal, r *dataplane.RealView) (n, egress, stat int) {
	if !r.Valid {
		return 0, 0, dataplane.StatDropNoReal
	}
	if !r.MACValid {
		return 0, 0, dataplane.StatDropNoMAC
	}
	n = copy(out, in)
	f := out[:n]
	switch r.Fwd {
	case dataplane.FwdRoute:
		c.State = connState(c.State, p.proto, p.flags, dirInputOnly)
		setMACs(f, r.MAC, r.SrcMAC)
	case dataplane.FwdTunnel:
		c.State = connState(c.State, p.proto, p.flags, dirInputOnly)
		return forwardTun(out, n, p, r)
	case dataplane.FwdMasq, dataplane.FwdFullNAT:
		// The TOA option goes into the ACK completing the handshake
		// (SYN_RECV -> ESTABLISHED); a new connection's first packet
		// never is that ACK, so FULLNAT here is NAT on both ends.
		c.State = connState(c.State, p.proto, p.flags, dirInput)
		natRewrite(f, p, c)
		setMACs(f, r.MAC, r.SrcMAC)
	default:
		return 0, 0, dataplane.StatDropNoReal
	}
	return n, r.Ifindex, dataplane.StatFwd
}

func setMACs(f []byte, dst, src [6]byte) {
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
}

// natRewrite is nat_rewrite: the packet gets c's (nsaddr, ndaddr,
// nsport, ndport), checksums updated incrementally.
func natRewrite(f []byte, p *packet, c *bpfobj.DirectorConnVal) {
	if p.fragment == fragLater {
		// No transport header: the addresses alone (the first
		// fragment's checksum covers the change).
		ip := f[p.ip:]
		for i, a := range [2]uint32{c.Nsaddr, c.Ndaddr} {
			at := ip[12+4*i : 16+4*i]
			if old := le.Uint32(at); old != a {
				csumReplace4(ip[10:12], old, a)
				le.PutUint32(at, a)
			}
		}
		return
	}
	ip, l4 := f[p.ip:], f[p.l4:]
	udp := p.proto == protoUDP
	sum := l4[16:18]
	if udp {
		sum = l4[6:8]
	}
	saddr, daddr := le.Uint32(ip[12:16]), le.Uint32(ip[16:20])
	if saddr != c.Nsaddr {
		csumReplace4(ip[10:12], saddr, c.Nsaddr)
		l4CsumReplace4(sum, saddr, c.Nsaddr, udp)
		le.PutUint32(ip[12:16], c.Nsaddr)
	}
	if daddr != c.Ndaddr {
		csumReplace4(ip[10:12], daddr, c.Ndaddr)
		l4CsumReplace4(sum, daddr, c.Ndaddr, udp)
		le.PutUint32(ip[16:20], c.Ndaddr)
	}
	if sport := le.Uint16(l4[0:2]); sport != c.Nsport {
		l4CsumReplace2(sum, sport, c.Nsport, udp)
		le.PutUint16(l4[0:2], c.Nsport)
	}
	if dport := le.Uint16(l4[2:4]); dport != c.Ndport {
		l4CsumReplace2(sum, dport, c.Ndport, udp)
		le.PutUint16(l4[2:4], c.Ndport)
	}
}

// tcpOptsMax is TCPOPTS_MAX: the options xipvs_tcp_opts walks.
const tcpOptsMax = 12

// mssOffset is xipvs_tcp_opts's mss_off: the offset, from the TCP
// header th's start, of the value of its last MSS option among the
// first tcpOptsMax options; 0 if none.
func mssOffset(th []byte) int {
	if len(th) < 20 {
		return 0
	}
	end := int(th[12]>>4) * 4
	off, mss := 20, 0
	for i := 0; i < tcpOptsMax; i++ {
		if off+1 > end || off > 58 || off+1 > len(th) {
			return mss
		}
		kind := th[off]
		if kind == 0 {
			return mss
		}
		if kind == 1 {
			off++
			continue
		}
		if off+2 > end || off+2 > len(th) {
			return mss
		}
		l := int(th[off+1])
		if l < 2 || off+l > end {
			return mss
		}
		if kind == 2 && l == 4 {
			mss = off + 2
		}
		off += l
	}
	return mss
}

// clampMSS is clamp_mss: a SYN's MSS option lowered to min(mss - minus,
// max), not below mssFloor.
func clampMSS(f []byte, l4 int, max, minus uint16) {
	th := f[l4:]
	at := mssOffset(th)
	if at == 0 || at+2 > len(th) {
		return
	}
	mss := binary.BigEndian.Uint16(th[at:])
	want := uint16(0)
	if mss > minus {
		want = mss - minus
	}
	want = min(want, max)
	want = maxU16(want, mssFloor)
	if want >= mss {
		return
	}
	if at&1 == 1 {
		csumReplace2(th[16:18], mss, want)
	} else {
		nmss := want>>8 | want<<8 // htons, as read little endian
		csumReplace2(th[16:18], le.Uint16(th[at:]), nmss)
	}
	binary.BigEndian.PutUint16(th[at:], want)
}

func maxU16(a, b uint16) uint16 {
	if a > b {
		return a
	}
	return b
}

// forwardTun is forward_tun: MSS clamped on SYNs, a DF packet too big for
// the tunnel answered with ICMP fragmentation-needed (out the way it
// came), one without DF dropped, else the outer header.
func forwardTun(out []byte, n int, p *packet, r *dataplane.RealView) (int, int, int) {
	f := out[:n]
	totLen := int(binary.BigEndian.Uint16(f[p.ip+2:]))
	mtu := r.MTU
	if p.proto == protoTCP && p.flags&dataplane.TCPSyn != 0 && mtu > ipipHLen+40 {
		clampMSS(f, p.l4, uint16(mtu-ipipHLen-40), 0)
	}
	if mtu != 0 && totLen+ipipHLen > mtu {
		if binary.BigEndian.Uint16(f[p.ip+6:])&ipDF == 0 {
			return 0, 0, dataplane.StatDropTooBig
		}
		m, ok := icmpFragNeeded(out, n, uint16(mtu-ipipHLen))
		if !ok {
			return 0, 0, dataplane.StatDropAdjust
		}
		return m, -1, dataplane.StatICMPFragNeeded
	}
	// Room for the outer header: the packet moves back 20 bytes.
	copy(out[ipipHLen:], out[:n])
	n += ipipHLen
	f = out[:n]
	setMACs(f, r.MAC, r.SrcMAC)
	binary.BigEndian.PutUint16(f[12:14], 0x0800)
	outer, inner := f[ethHLen:ethHLen+20], f[ethHLen+20:]
	outer[0] = 0x45
	outer[1] = inner[1]
	binary.BigEndian.PutUint16(outer[2:4], uint16(int(binary.BigEndian.Uint16(inner[2:4]))+ipipHLen))
	copy(outer[4:6], inner[4:6])
	outer[6], outer[7] = inner[6]&(ipDF>>8), 0 // DF copied, no offset
	outer[8] = inner[8]
	outer[9] = 4 // IPPROTO_IPIP
	outer[10], outer[11] = 0, 0
	copy(outer[12:16], r.TunSrc[:])
	copy(outer[16:20], r.Addr[:])
	le.PutUint16(outer[10:12], ipv4Csum(outer))
	return n, r.Ifindex, dataplane.StatFwd
}

// icmpFragNeeded is icmp_frag_needed: the frame in out[:n] becomes an
// ICMP destination-unreachable, fragmentation-needed (next-hop MTU mtu)
// back to its sender, from the address it was sent to, quoting its IP
// header and 8 bytes. It needs a 20-byte IP header.
func icmpFragNeeded(out []byte, n int, mtu uint16) (int, bool) {
	return icmpUnreachable(out, n, 4, mtu)
}

// icmpPortUnreachable answers the frame in out[:n] with an ICMP port
// unreachable (type 3 code 3) from the address it was sent to, as IPVS's
// ip_vs_leave does for a new flow no real server can take.
func icmpPortUnreachable(out []byte, n int) (int, bool) {
	return icmpUnreachable(out, n, 3, 0)
}

// icmpUnreachable turns the frame in out[:n] into an ICMP destination
// unreachable with code (and next-hop mtu) back to its sender; see
// icmpFragNeeded.
func icmpUnreachable(out []byte, n int, code uint8, mtu uint16) (int, bool) {
	const grow = 20 + 8
	if n+grow < icmpFrameLen || out[ethHLen]&0x0f != 5 {
		return 0, false
	}
	// The original frame moves back grow bytes; the new headers go in
	// front of its IP header, then the frame is cut after 8 bytes of it.
	copy(out[grow:], out[:n])
	oeth, oip := out[grow:grow+ethHLen], out[grow+ethHLen:]
	var dmac, smac [6]byte
	copy(dmac[:], oeth[6:12])
	copy(smac[:], oeth[0:6])
	var saddr, daddr [4]byte
	copy(saddr[:], oip[16:20])
	copy(daddr[:], oip[12:16])
	f := out[:icmpFrameLen]
	setMACs(f, dmac, smac)
	binary.BigEndian.PutUint16(f[12:14], 0x0800)
	ip := f[ethHLen : ethHLen+20]
	ip[0], ip[1] = 0x45, 0xc0
	binary.BigEndian.PutUint16(ip[2:4], icmpFrameLen-ethHLen)
	ip[4], ip[5], ip[6], ip[7] = 0, 0, 0, 0
	ip[8], ip[9] = 64, 1
	ip[10], ip[11] = 0, 0
	copy(ip[12:16], saddr[:])
	copy(ip[16:20], daddr[:])
	le.PutUint16(ip[10:12], ipv4Csum(ip))
	icmp := f[ethHLen+20:]
	icmp[0], icmp[1] = 3, code
	icmp[2], icmp[3], icmp[4], icmp[5] = 0, 0, 0, 0
	binary.BigEndian.PutUint16(icmp[6:8], mtu)
	var s uint32
	for i := 0; i < 8+20+8; i += 2 {
		s += uint32(le.Uint16(icmp[i:]))
	}
	le.PutUint16(icmp[2:4], csumFold(s))
	return icmpFrameLen, true
}
