package slowpath

import (
	"encoding/binary"

	"github.com/xipvs/xipvs/dataplane"
)

// packet is what the director reads of one frame: the Go twin of
// struct pkt and the parsers of bpf/parse.h, with the same rule for what
// is well formed, so the slow path sees a frame exactly as XDP did.
type packet struct {
	ip, l4 int // offsets of the IP and TCP/UDP headers
	ihl    int // IP header length in bytes
	totLen int // IP total length
	proto  uint8
	flags  uint8 // TCP_F_* (TCPFin, TCPSyn, TCPRst, TCPAck)
	// fragment is fragFirst (the transport header, and more to come)
	// or fragLater (no transport header: the ports are its first
	// fragment's, as XDP noted them); 0 for a whole datagram.
	fragment uint8
	fragID   uint16 // the IP identification, as XDP reads it (little endian)
	src      [4]byte
	dst      [4]byte
	srcPort  uint16
	dstPort  uint16
}

// Outcomes of parsePacket.
const (
	parsedOK        = iota
	parsedNotIPv4   // not IPv4, or not TCP/UDP: XDP passes it
	parsedMalformed // XDP passes it (STAT_PASS_MALFORMED)
	parsedLater     // a later fragment: no transport header (ports from frags)
)

// packet.fragment (pkt.fragment in bpf/parse.h).
const (
	fragFirst = 1
	fragLater = 2
)

const ethHLen = 14

// parsePacket parses an Ethernet frame as process() in director.bpf.c
// does.
func parsePacket(f []byte) (packet, int) {
	var p packet
	if len(f) < ethHLen || binary.BigEndian.Uint16(f[12:14]) != 0x0800 {
		return p, parsedNotIPv4
	}
	ip := f[ethHLen:]
	if len(ip) < 20 || ip[0]>>4 != 4 || ip[0]&0x0f < 5 {
		return p, parsedMalformed
	}
	p.ip, p.ihl = ethHLen, int(ip[0]&0x0f)*4
	p.totLen = int(binary.BigEndian.Uint16(ip[2:4]))
	if p.ihl > len(ip) || p.totLen < p.ihl || p.totLen > len(ip) {
		return p, parsedMalformed
	}
	if !ipv4HeaderOK(ip[:p.ihl]) {
		return p, parsedMalformed
	}
	p.proto = ip[9]
	copy(p.src[:], ip[12:16])
	copy(p.dst[:], ip[16:20])
	if p.proto != protoTCP && p.proto != protoUDP {
		return p, parsedNotIPv4
	}
	p.fragID = le.Uint16(ip[4:6])
	switch fo := binary.BigEndian.Uint16(ip[6:8]); {
	case fo&0x1fff != 0:
		p.fragment = fragLater
		return p, parsedLater
	case fo&0x2000 != 0:
		p.fragment = fragFirst
	}
	p.l4 = p.ip + p.ihl
	l4, l4Len := f[p.l4:], p.totLen-p.ihl
	switch p.proto {
	case protoTCP:
		if len(l4) < 20 {
			return p, parsedMalformed
		}
		doff := int(l4[12]>>4) * 4
		if doff < 20 || doff > l4Len {
			return p, parsedMalformed
		}
		p.flags = l4[13] & (dataplane.TCPFin | dataplane.TCPSyn | dataplane.TCPRst | dataplane.TCPAck)
	case protoUDP:
		if len(l4) < 8 {
			return p, parsedMalformed
		}
		// A first fragment's UDP length is the whole datagram's.
		if ulen := int(binary.BigEndian.Uint16(l4[4:6])); ulen < 8 || (ulen > l4Len && p.fragment != fragFirst) {
			return p, parsedMalformed
		}
	}
	p.srcPort = binary.BigEndian.Uint16(l4[0:2])
	p.dstPort = binary.BigEndian.Uint16(l4[2:4])
	return p, parsedOK
}

const (
	protoTCP = 6
	protoUDP = 17
)

// ipv4HeaderOK is ipv4_hdr_ok (bpf/parse.h): the header checksum right
// and the options as ip_options_compile takes them from a received
// packet (within the header, record-route and timestamp pointers where
// they may point, no source route).
func ipv4HeaderOK(h []byte) bool {
	var s uint32
	for i := 0; i+1 < len(h); i += 2 {
		s += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for s > 0xffff {
		s = s&0xffff + s>>16
	}
	if s != 0xffff {
		return false
	}
	o := h[20:]
	for i := 0; i < len(o); {
		switch o[i] {
		case 0: // end of options
			return true
		case 1: // no-op
			i++
			continue
		}
		if len(o)-i < 2 {
			return false
		}
		l := int(o[i+1])
		if l < 2 || l > len(o)-i {
			return false
		}
		switch o[i] {
		case 0x83, 0x89: // loose and strict source route
			return false
		case 7: // record route
			if l < 3 || o[i+2] < 4 {
				return false
			}
		case 0x44: // timestamp
			if l < 4 || o[i+2] < 5 {
				return false
			}
		}
		i += l
	}
	return true
}
