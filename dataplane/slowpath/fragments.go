package slowpath

import "github.com/xipvs/xipvs/dataplane/bpfobj"

// fragPorts4 is the ports XDP noted for later fragment p's datagram, as
// a connection key holds them.
func (sp *SlowPath) fragPorts4(p *packet) (sport, dport uint16, ok bool) {
	k := bpfobj.DirectorFragKey{Id: uint32(p.fragID), Proto: p.proto}
	copy(k.Saddr[:4], p.src[:])
	copy(k.Daddr[:4], p.dst[:])
	return sp.d.FragPorts(&k)
}

// fragPorts6 is fragPorts4 for IPv6.
func (sp *SlowPath) fragPorts6(p *packet6) (sport, dport uint16, ok bool) {
	k := bpfobj.DirectorFragKey{Saddr: p.src, Daddr: p.dst, Id: p.fragID, Proto: p.proto}
	return sp.d.FragPorts(&k)
}

// laterFrag6 reports whether IPv6 frame f is a later fragment (the ICMP
// answer to a flow no real could take is its first fragment's alone).
func laterFrag6(f []byte) bool {
	p, ok := parsePacket6(f)
	return ok && p.fragment == fragLater
}
