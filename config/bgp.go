package config

// bgp.go: the BGP speaker's settings, from the YAML file's bgp: section
// or xipvsd's --bgp-* flags.

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// BGP is the BGP speaker's configuration: xipvsd announces each VIP to
// every peer while the VIP has a service with a healthy real (or a sorry
// server), and the prefixes of Announce always.
type BGP struct {
	ASN      uint32     `json:"asn"`
	RouterID netip.Addr `json:"router_id"`
	// ListenPort accepts sessions on this TCP port too; 0 connects out
	// only (the default, so a routing daemon on the host keeps port 179).
	ListenPort uint16    `json:"listen_port,omitempty"`
	Peers      []BGPPeer `json:"peers"`
	// NextHop and NextHop6 are the routes' next hops; unset, the
	// session's local address (IPv4 routes), or NextHop6 must be set for
	// IPv6 routes over IPv4 sessions.
	NextHop  netip.Addr `json:"next_hop,omitzero"`
	NextHop6 netip.Addr `json:"next_hop6,omitzero"`
	// Communities are standard communities (ASN:VALUE) on every route.
	Communities []uint32 `json:"communities,omitempty"`
	// MED, if set, is every route's multi-exit discriminator.
	MED *uint32 `json:"med,omitempty"`
	// Announce are prefixes announced whatever the health of the
	// services (a fwmark service's VIPs, an anycast DNS address...).
	Announce []netip.Prefix `json:"announce,omitempty"`
	// Drain is how long xipvsd keeps forwarding after it withdrew its
	// routes on SIGTERM, for the routers to move the flows elsewhere.
	Drain time.Duration `json:"drain"`
}

// BGPPeer is a BGP neighbour.
type BGPPeer struct {
	Addr netip.Addr `json:"addr"`
	ASN  uint32     `json:"asn"`
	// Port is the peer's BGP port (179).
	Port uint16 `json:"port,omitempty"`
	// Password turns on TCP MD5 signatures (RFC 2385).
	Password string `json:"password,omitempty"`
	// HoldTime is proposed to the peer (RFC 4271: 0, or 3 s and more);
	// keepalives go every third of it.
	HoldTime time.Duration `json:"hold_time"`
	// Multihop is the TTL of an eBGP session to a peer more than one hop
	// away (0: directly connected).
	Multihop uint8 `json:"multihop,omitempty"`
	// BFD runs BFD (RFC 5880, single hop) with the peer, so that a lost
	// director is noticed in BFDInterval x 3 rather than the hold time.
	BFD         bool          `json:"bfd,omitempty"`
	BFDInterval time.Duration `json:"bfd_interval,omitempty"`
}

// BGP defaults.
const (
	DefaultBGPHoldTime        = 9 * time.Second
	DefaultBGPDrain           = 5 * time.Second
	DefaultBFDInterval        = 300 * time.Millisecond
	DefaultBGPPort     uint16 = 179
)

// Equal reports whether b and o are the same configuration.
func (b *BGP) Equal(o *BGP) bool {
	if b == nil || o == nil {
		return b == o
	}
	return b.ASN == o.ASN && b.RouterID == o.RouterID && b.ListenPort == o.ListenPort &&
		slices.Equal(b.Peers, o.Peers) && b.SameRoutes(o) && slices.Equal(b.Announce, o.Announce) && b.Drain == o.Drain
}

// SameRoutes reports whether b and o give routes the same attributes.
func (b *BGP) SameRoutes(o *BGP) bool {
	return b.NextHop == o.NextHop && b.NextHop6 == o.NextHop6 && slices.Equal(b.Communities, o.Communities) &&
		(b.MED == nil) == (o.MED == nil) && (b.MED == nil || *b.MED == *o.MED)
}

// SetDefaults fills in what was left out.
func (b *BGP) SetDefaults() {
	for i := range b.Peers {
		p := &b.Peers[i]
		if p.Port == 0 {
			p.Port = DefaultBGPPort
		}
		if p.BFD && p.BFDInterval == 0 {
			p.BFDInterval = DefaultBFDInterval
		}
	}
}

// Validate checks b; the error names the offending setting.
func (b *BGP) Validate() error {
	if b.ASN == 0 {
		return invalid("bgp: no local ASN (asn, --bgp-asn)")
	}
	if !b.RouterID.Is4() || b.RouterID.IsUnspecified() {
		return invalid("bgp: router id %v: want a non-zero IPv4 address (router_id, --bgp-router-id)", b.RouterID)
	}
	if len(b.Peers) == 0 {
		return invalid("bgp: no peer (peers, --bgp-peer)")
	}
	seen := map[netip.Addr]bool{}
	for _, p := range b.Peers {
		if !p.Addr.IsValid() || p.Addr.IsUnspecified() || p.Addr.IsMulticast() || p.Addr.Zone() != "" {
			return invalid("bgp: peer address %v: want a unicast address", p.Addr)
		}
		if seen[p.Addr] {
			return invalid("bgp: peer %v given twice", p.Addr)
		}
		seen[p.Addr] = true
		if p.ASN == 0 {
			return invalid("bgp: peer %v: no ASN", p.Addr)
		}
		if h := p.HoldTime; h != 0 && (h < 3*time.Second || h > 65535*time.Second || h%time.Second != 0) {
			return invalid("bgp: peer %v: hold time %v: want 0 or 3 to 65535 whole seconds (RFC 4271)", p.Addr, h)
		}
		if p.BFD && (p.BFDInterval < 10*time.Millisecond || p.BFDInterval > 60*time.Second) {
			return invalid("bgp: peer %v: BFD interval %v: want 10ms to 60s", p.Addr, p.BFDInterval)
		}
		if p.BFD && p.Multihop > 0 {
			return invalid("bgp: peer %v: BFD is single hop here; drop multihop or bfd", p.Addr)
		}
	}
	if b.NextHop.IsValid() && (!b.NextHop.Is4() || b.NextHop.IsUnspecified()) {
		return invalid("bgp: next_hop %v: want an IPv4 address", b.NextHop)
	}
	if b.NextHop6.IsValid() && (!b.NextHop6.Is6() || b.NextHop6.Is4In6() || b.NextHop6.IsUnspecified()) {
		return invalid("bgp: next_hop6 %v: want an IPv6 address", b.NextHop6)
	}
	for _, p := range b.Announce {
		if p != p.Masked() {
			return invalid("bgp: announce %v: host bits set (%v)", p, p.Masked())
		}
	}
	if b.Drain < 0 || b.Drain > 10*time.Minute {
		return invalid("bgp: drain %v: want 0 to 10m", b.Drain)
	}
	return nil
}

// HostPrefix is a VIP's route: a /32 or a /128.
func HostPrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen())
}

// FileBGP is the YAML file's bgp: section (durations in seconds or Go's
// form: 9, 500ms).
//
//	bgp:
//	  asn: 65001
//	  router_id: 10.0.0.2
//	  peers:
//	    - {addr: 10.0.0.1, asn: 65000, hold_time: 9, bfd: true}
//	  next_hop: 10.0.0.2
//	  communities: ["65000:100"]
//	  med: 10
//	  announce: [192.0.2.53]
//	  drain: 5
type FileBGP struct {
	ASN         uint32        `yaml:"asn"`
	RouterID    string        `yaml:"router_id"`
	ListenPort  uint16        `yaml:"listen_port"`
	Peers       []FileBGPPeer `yaml:"peers"`
	NextHop     string        `yaml:"next_hop"`
	NextHop6    string        `yaml:"next_hop6"`
	Communities []string      `yaml:"communities"`
	MED         *uint32       `yaml:"med"`
	Announce    []string      `yaml:"announce"`
	Drain       string        `yaml:"drain"`
}

// FileBGPPeer is a peer in the bgp: section.
type FileBGPPeer struct {
	Addr        string `yaml:"addr"`
	ASN         uint32 `yaml:"asn"`
	Port        uint16 `yaml:"port"`
	Password    string `yaml:"password"`
	HoldTime    string `yaml:"hold_time"`
	Multihop    uint8  `yaml:"multihop"`
	BFD         bool   `yaml:"bfd"`
	BFDInterval string `yaml:"bfd_interval"`
}

// parse turns the section into a validated BGP.
func (f *FileBGP) parse() (*BGP, error) {
	b := &BGP{ASN: f.ASN, ListenPort: f.ListenPort, MED: f.MED, Drain: DefaultBGPDrain}
	var err error
	if b.RouterID, err = optAddr("router_id", f.RouterID); err != nil {
		return nil, err
	}
	if b.NextHop, err = optAddr("next_hop", f.NextHop); err != nil {
		return nil, err
	}
	if b.NextHop6, err = optAddr("next_hop6", f.NextHop6); err != nil {
		return nil, err
	}
	for _, c := range f.Communities {
		v, err := ParseCommunity(c)
		if err != nil {
			return nil, err
		}
		b.Communities = append(b.Communities, v)
	}
	for _, a := range f.Announce {
		p, err := ParseAnnounce(a)
		if err != nil {
			return nil, err
		}
		b.Announce = append(b.Announce, p)
	}
	if f.Drain != "" {
		if b.Drain, err = parseSeconds(f.Drain); err != nil {
			return nil, invalid("bgp: drain: %v", err)
		}
	}
	for i, fp := range f.Peers {
		p := BGPPeer{ASN: fp.ASN, Port: fp.Port, Password: fp.Password, Multihop: fp.Multihop, BFD: fp.BFD, HoldTime: DefaultBGPHoldTime}
		if p.Addr, err = netip.ParseAddr(fp.Addr); err != nil {
			return nil, invalid("bgp: peers[%d]: address %q: %v", i, fp.Addr, err)
		}
		p.Addr = p.Addr.Unmap()
		if fp.HoldTime != "" {
			if p.HoldTime, err = parseSeconds(fp.HoldTime); err != nil {
				return nil, invalid("bgp: peers[%d]: hold_time: %v", i, err)
			}
		}
		if fp.BFDInterval != "" {
			if p.BFDInterval, err = parseSeconds(fp.BFDInterval); err != nil {
				return nil, invalid("bgp: peers[%d]: bfd_interval: %v", i, err)
			}
		}
		b.Peers = append(b.Peers, p)
	}
	b.SetDefaults()
	return b, b.Validate()
}

func optAddr(name, s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, invalid("bgp: %s %q is not an IP address", name, s)
	}
	return a.Unmap(), nil
}

// ParseCommunity reads a standard community, ASN:VALUE (each 0-65535),
// or one of RFC 1997's names: no-export, no-advertise, no-export-subconfed.
func ParseCommunity(s string) (uint32, error) {
	switch strings.ToLower(s) {
	case "no-export":
		return 0xFFFFFF01, nil
	case "no-advertise":
		return 0xFFFFFF02, nil
	case "no-export-subconfed":
		return 0xFFFFFF03, nil
	}
	hi, lo, ok := strings.Cut(s, ":")
	a, err1 := strconv.ParseUint(hi, 10, 16)
	v, err2 := strconv.ParseUint(lo, 10, 16)
	if !ok || err1 != nil || err2 != nil {
		return 0, invalid("bgp: community %q: want ASN:VALUE, each 0 to 65535", s)
	}
	return uint32(a)<<16 | uint32(v), nil
}

// FormatCommunity writes a community as ParseCommunity reads it.
func FormatCommunity(c uint32) string {
	return strconv.FormatUint(uint64(c>>16), 10) + ":" + strconv.FormatUint(uint64(c&0xffff), 10)
}

// ParseAnnounce reads a prefix to announce: an address (a /32 or /128)
// or a prefix.
func ParseAnnounce(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p != p.Masked() {
			return netip.Prefix{}, invalid("bgp: announce %v: host bits set (%v)", p, p.Masked())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, invalid("bgp: announce %q: want an address or a prefix", s)
	}
	return HostPrefix(a), nil
}

// ParseBGPPeer reads --bgp-peer's ADDR,ASN[,hold_time=S][,password=P]
// [,port=N][,multihop=TTL][,bfd][,bfd_interval=D].
func ParseBGPPeer(s string) (BGPPeer, error) {
	parts := strings.Split(s, ",")
	if len(parts) < 2 {
		return BGPPeer{}, invalid("--bgp-peer %q: want ADDR,ASN[,hold_time=S][,password=P][,port=N][,multihop=TTL][,bfd][,bfd_interval=D]", s)
	}
	fp := FileBGPPeer{Addr: strings.TrimSpace(parts[0])}
	asn, err := strconv.ParseUint(strings.TrimSpace(parts[1]), 10, 32)
	if err != nil {
		return BGPPeer{}, invalid("--bgp-peer %q: ASN %q is not a number", s, parts[1])
	}
	fp.ASN = uint32(asn)
	for _, kv := range parts[2:] {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		var n uint64
		switch k {
		case "hold_time":
			fp.HoldTime = v
		case "password":
			fp.Password = v
		case "port", "multihop":
			bits := 16
			if k == "multihop" {
				bits = 8
			}
			if n, err = strconv.ParseUint(v, 10, bits); err != nil {
				return BGPPeer{}, invalid("--bgp-peer %q: %s %q", s, k, v)
			}
			if k == "port" {
				fp.Port = uint16(n)
			} else {
				fp.Multihop = uint8(n)
			}
		case "bfd":
			fp.BFD = true
		case "bfd_interval":
			fp.BFDInterval = v
		default:
			return BGPPeer{}, invalid("--bgp-peer %q: unknown setting %q", s, k)
		}
	}
	b, err := (&FileBGP{ASN: 1, RouterID: "0.0.0.1", Peers: []FileBGPPeer{fp}}).parse()
	if err != nil {
		return BGPPeer{}, fmt.Errorf("--bgp-peer %q: %w", s, err)
	}
	return b.Peers[0], nil
}
