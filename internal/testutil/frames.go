package testutil

import (
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Frame describes a test frame; zero fields take defaults.
type Frame struct {
	SrcMAC, DstMAC     net.HardwareAddr
	Src, Dst           netip.Addr
	SrcPort, DstPort   uint16
	Proto              layers.IPProtocol // TCP (default) or UDP
	SYN, ACK, FIN, RST bool
	Payload            []byte
	FragOffset         uint16
	MoreFragments      bool
	NoDF               bool   // clear Don't Fragment
	TOS                uint8  // IP TOS / DSCP
	TTL                uint8  // 0: 64
	ID                 uint16 // 0: 0x1234
	MSS                uint16 // non-zero: a TCP MSS option
	Timestamps         bool   // a TCP timestamps option (NOP, NOP, TS)
	TCPOptions         []layers.TCPOption
	NoUDPChecksum      bool // send UDP without a checksum (0)
	// IPOptions are IPv4 options (the header padded to 4 bytes).
	IPOptions []layers.IPv4Option
	// Seq, AckNum and Window replace the TCP defaults (1000, 2000 with
	// ACK, 65535) when non-zero; ECE and CWR set those flags.
	Seq, AckNum uint32
	Window      uint16
}

// Build serialises f with gopacket, lengths and checksums computed: an
// IPv4 frame, or an IPv6 one when Src is an IPv6 address.
func (f Frame) Build() []byte {
	if f.SrcMAC == nil {
		f.SrcMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	}
	if f.DstMAC == nil {
		f.DstMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	}
	if f.Proto == 0 {
		f.Proto = layers.IPProtocolTCP
	}
	if f.TTL == 0 {
		f.TTL = 64
	}
	if f.ID == 0 {
		f.ID = 0x1234
	}
	eth := &layers.Ethernet{SrcMAC: f.SrcMAC, DstMAC: f.DstMAC, EthernetType: layers.EthernetTypeIPv4}
	var ip interface {
		gopacket.NetworkLayer
		gopacket.SerializableLayer
	}
	if f.Src.Is6() {
		// IPv6: TTL is the hop limit, TOS the traffic class; no
		// fragment fields (a fragment needs an extension header).
		eth.EthernetType = layers.EthernetTypeIPv6
		ip = &layers.IPv6{Version: 6, HopLimit: f.TTL, TrafficClass: f.TOS, NextHeader: f.Proto,
			SrcIP: f.Src.AsSlice(), DstIP: f.Dst.AsSlice()}
	} else {
		ip4 := &layers.IPv4{Version: 4, IHL: 5, TTL: f.TTL, TOS: f.TOS, Id: f.ID, Protocol: f.Proto,
			SrcIP: f.Src.AsSlice(), DstIP: f.Dst.AsSlice(), FragOffset: f.FragOffset, Options: f.IPOptions}
		switch {
		case f.MoreFragments:
			ip4.Flags = layers.IPv4MoreFragments
		case !f.NoDF:
			ip4.Flags = layers.IPv4DontFragment
		}
		ip = ip4
	}
	var l4 gopacket.SerializableLayer
	switch f.Proto {
	case layers.IPProtocolUDP:
		u := &layers.UDP{SrcPort: layers.UDPPort(f.SrcPort), DstPort: layers.UDPPort(f.DstPort)}
		_ = u.SetNetworkLayerForChecksum(ip)
		l4 = u
	default:
		t := &layers.TCP{SrcPort: layers.TCPPort(f.SrcPort), DstPort: layers.TCPPort(f.DstPort),
			Seq: 1000, Ack: 0, SYN: f.SYN, ACK: f.ACK, FIN: f.FIN, RST: f.RST, Window: 65535}
		if f.ACK {
			t.Ack = 2000
		}
		if f.Seq != 0 {
			t.Seq = f.Seq
		}
		if f.AckNum != 0 {
			t.Ack = f.AckNum
		}
		if f.Window != 0 {
			t.Window = f.Window
		}
		if f.MSS != 0 {
			t.Options = append(t.Options, layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionLength: 4,
				OptionData: []byte{byte(f.MSS >> 8), byte(f.MSS)}})
		}
		if f.Timestamps {
			t.Options = append(t.Options, layers.TCPOption{OptionType: layers.TCPOptionKindNop},
				layers.TCPOption{OptionType: layers.TCPOptionKindNop},
				layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10,
					OptionData: []byte{0, 0, 0x10, 0, 0, 0, 0x20, 0}})
		}
		t.Options = append(t.Options, f.TCPOptions...)
		_ = t.SetNetworkLayerForChecksum(ip)
		l4 = t
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, l4, gopacket.Payload(f.Payload)); err != nil {
		panic(err)
	}
	out := append([]byte(nil), buf.Bytes()...)
	if f.NoUDPChecksum && f.Proto == layers.IPProtocolUDP && f.Src.Is4() {
		out[14+20+6], out[14+20+7] = 0, 0
	}
	return out
}

// IPIP wraps frame's IP packet in an outer IPv4 header (protocol 4) with
// the given fields, as a TUN director must produce it; the Ethernet
// header is replaced by one with dst and src.
func IPIP(frame []byte, dst, src net.HardwareAddr, outerSrc, outerDst netip.Addr, tos, ttl uint8, id uint16, df bool) []byte {
	eth := &layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TOS: tos, TTL: ttl, Id: id, Protocol: layers.IPProtocolIPv4,
		SrcIP: outerSrc.AsSlice(), DstIP: outerDst.AsSlice()}
	if df {
		ip.Flags = layers.IPv4DontFragment
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, gopacket.Payload(frame[14:])); err != nil {
		panic(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// ChecksumsValid decodes an Ethernet/IPv4 or IPv6 frame and reports
// whether its checksums (IPv4 header, TCP/UDP/ICMP) are correct.
func ChecksumsValid(frame []byte) bool {
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if ip6, ok := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6); ok {
		return checksumsValid6(frame, ip6)
	}
	ip, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if !ok {
		return false
	}
	hdr := frame[14 : 14+int(ip.IHL)*4]
	if fold(sum(hdr)) != 0xffff {
		return false
	}
	l4 := frame[14+int(ip.IHL)*4 : 14+int(ip.Length)]
	if ip.Protocol == layers.IPProtocolICMPv4 {
		// No pseudo header; a quoted IP header must be whole too.
		if fold(sum(l4)) != 0xffff {
			return false
		}
		if len(l4) >= 8+20 && l4[8]>>4 == 4 {
			qlen := int(l4[8]&0xf) * 4
			return len(l4) >= 8+qlen && fold(sum(l4[8:8+qlen])) == 0xffff
		}
		return true
	}
	if ip.Protocol == layers.IPProtocolUDP && len(l4) >= 8 && l4[6] == 0 && l4[7] == 0 {
		return true // UDP checksum not used
	}
	var pseudo []byte
	pseudo = append(pseudo, ip.SrcIP.To4()...)
	pseudo = append(pseudo, ip.DstIP.To4()...)
	pseudo = append(pseudo, 0, byte(ip.Protocol), byte(len(l4)>>8), byte(len(l4)))
	return fold(sum(pseudo)+sum(l4)) == 0xffff
}

// checksumsValid6 checks an IPv6 frame's TCP, UDP or ICMPv6 checksum
// (IPv6 has no header checksum); the upper layer must follow the IPv6
// header directly. A UDP checksum of zero is invalid over IPv6.
func checksumsValid6(frame []byte, ip *layers.IPv6) bool {
	end := 14 + 40 + int(ip.Length)
	if end > len(frame) {
		return false
	}
	next := ip.NextHeader
	if next != layers.IPProtocolTCP && next != layers.IPProtocolUDP && next != layers.IPProtocolICMPv6 {
		return false
	}
	l4 := frame[14+40 : end]
	if next == layers.IPProtocolUDP && len(l4) >= 8 && l4[6] == 0 && l4[7] == 0 {
		return false
	}
	var pseudo []byte
	pseudo = append(pseudo, ip.SrcIP.To16()...)
	pseudo = append(pseudo, ip.DstIP.To16()...)
	pseudo = append(pseudo, byte(len(l4)>>24), byte(len(l4)>>16), byte(len(l4)>>8), byte(len(l4)), 0, 0, 0, byte(next))
	return fold(sum(pseudo)+sum(l4)) == 0xffff
}

// ICMPv6Error builds an ICMPv6 error frame of type typ and code from src
// to dst quoting quoted (an IPv6 packet, as much of it as given); word is
// the 32 bits after the checksum (Packet Too Big: the MTU).
func ICMPv6Error(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, typ, code uint8, word uint32, quoted []byte) []byte {
	eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, code)}
	_ = icmp.SetNetworkLayerForChecksum(ip)
	body := append([]byte{byte(word >> 24), byte(word >> 16), byte(word >> 8), byte(word)}, quoted...)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, icmp, gopacket.Payload(body)); err != nil {
		panic(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// ICMPError builds an ICMP error frame of type typ and code from src to
// dst quoting quoted (an IP packet, as much of it as given); mtu is the
// next-hop MTU of a fragmentation-needed error.
func ICMPError(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, typ, code uint8, mtu uint16, quoted []byte) []byte {
	eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, TOS: 0xc0, Protocol: layers.IPProtocolICMPv4,
		SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code), Seq: mtu}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, icmp, gopacket.Payload(quoted)); err != nil {
		panic(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// Quote is what an ICMP error quotes of frame: its IP header and the
// first 8 bytes after it.
func Quote(frame []byte) []byte {
	hl := int(frame[14]&0xf) * 4
	return append([]byte(nil), frame[14:14+hl+8]...)
}

// Requote gives a quoted IP packet other addresses and ports, its IP
// header checksum recomputed and its TCP/UDP checksum left as it was (a
// translated ICMP error's quote, as IPVS makes it).
func Requote(q []byte, src, dst netip.Addr, sport, dport uint16) []byte {
	out := append([]byte(nil), q...)
	hl := int(out[0]&0xf) * 4
	s, d := src.As4(), dst.As4()
	copy(out[12:16], s[:])
	copy(out[16:20], d[:])
	out[hl], out[hl+1], out[hl+2], out[hl+3] = byte(sport>>8), byte(sport), byte(dport>>8), byte(dport)
	out[10], out[11] = 0, 0
	c := ^fold(sum(out[:hl]))
	out[10], out[11] = byte(c>>8), byte(c)
	return out
}

func sum(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
