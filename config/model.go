// Package config holds the xipvs model (virtual services and their
// destinations), its validation, and the parsers of user input: ipvsadm
// arguments. User input is parsed into these types and Validate()d before
// anything acts on it.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/xipvs/xipvs/sched"
)

// Proto is a virtual service's transport protocol.
type Proto uint8

// Protocols, numbered as in the IP header.
const (
	TCP Proto = 6
	UDP Proto = 17
)

// String is the name ipvsadm -L prints.
func (p Proto) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	default:
		return "PROTO(" + strconv.Itoa(int(p)) + ")"
	}
}

// ServiceKey identifies a virtual service.
type ServiceKey struct {
	Proto Proto      `json:"proto"`
	Addr  netip.Addr `json:"addr,omitzero"`
	Port  uint16     `json:"port"`
	// FWMark, when non-zero, names a firewall-mark service instead of
	// (Proto, Addr, Port).
	FWMark uint32 `json:"fwmark,omitempty"`
	// V6 makes a firewall-mark service an IPv6 one (ipvsadm -f MARK -6);
	// an address service's family is its address's.
	V6 bool `json:"v6,omitempty"`
}

// IsV6 reports whether the service is an IPv6 one.
func (k ServiceKey) IsV6() bool {
	if k.FWMark != 0 {
		return k.V6
	}
	return k.Addr.Is6()
}

// MaskBits is the longest persistence netmask of the service's family:
// 32, or 128 for IPv6.
func (k ServiceKey) MaskBits() int {
	if k.IsV6() {
		return 128
	}
	return 32
}

// String is the service as ipvsadm -Ln names it: "TCP  1.2.3.4:80".
func (k ServiceKey) String() string {
	if k.FWMark != 0 {
		if k.V6 {
			return "FWM  " + strconv.FormatUint(uint64(k.FWMark), 10) + " IPv6"
		}
		return "FWM  " + strconv.FormatUint(uint64(k.FWMark), 10)
	}
	return k.Proto.String() + "  " + netip.AddrPortFrom(k.Addr, k.Port).String()
}

// Service is a virtual service's settings.
type Service struct {
	ServiceKey
	Scheduler string `json:"scheduler"`
	// Persistent enables persistence with Timeout seconds and Netmask.
	Persistent bool         `json:"persistent,omitempty"`
	Timeout    uint32       `json:"timeout,omitempty"`
	Netmask    netip.Prefix `json:"netmask,omitzero"`
	SchedFlags []string     `json:"sched_flags,omitempty"`
	OnePacket  bool         `json:"one_packet,omitempty"`
	// SynProxy answers the service's SYNs with SYN cookies and opens a
	// connection to a real only for a client that completed the
	// handshake (DPVS's -j enable). TCP, NAT and FULLNAT reals only.
	SynProxy bool `json:"synproxy,omitempty"`
	// Check is the health check of the service's reals (their default).
	Check Check `json:"check,omitzero"`
	// OnFailure is what a real failing its check becomes: quiesce
	// (weight 0, the default) or remove.
	OnFailure string `json:"on_failure,omitempty"`
	// Sorry takes new flows while every real fails its check.
	Sorry SorryServer `json:"sorry,omitzero"`
}

// Dest is a destination (real server) of a virtual service.
type Dest struct {
	Addr       netip.Addr `json:"addr"`
	Port       uint16     `json:"port"`
	Fwd        Fwd        `json:"fwd"`
	Weight     int        `json:"weight"`
	UThreshold uint32     `json:"u_threshold,omitempty"`
	LThreshold uint32     `json:"l_threshold,omitempty"`
	// Check, if set, replaces the service's check for this real.
	Check Check `json:"check,omitzero"`
}

// Rewrites reports whether f rewrites the destination (NAT, FULLNAT),
// and so may map the virtual port to another real port.
func (f Fwd) Rewrites() bool { return f == FwdMasq || f == FwdFullNAT }

// AddrPort is the destination's address and port.
func (d Dest) AddrPort() netip.AddrPort { return netip.AddrPortFrom(d.Addr, d.Port) }

// Defaults and limits, as ipvsadm's and the kernel's.
const (
	DefaultScheduler = "wlc"
	DefaultWeight    = 1
	// DefaultTimeout is a persistent service's timeout in seconds.
	DefaultTimeout = 300
	MaxWeight      = 65535
	// MaxTimeout is the largest --set timeout in seconds, as the kernel's
	// ip_vs_set_timeout takes them (INT_MAX jiffies at HZ=1000).
	MaxTimeout = 2147483
)

// SetDefaults fills in what a service may leave out, the one place
// ipvsadm's defaults are applied (command line, YAML, API): the wlc
// scheduler; for a persistent service a 300 s timeout and a /32 mask
// (/128 for IPv6); a service that is not persistent has neither.
func (s *Service) SetDefaults() {
	if s.Scheduler == "" {
		s.Scheduler = DefaultScheduler
	}
	if !s.Persistent {
		s.Timeout, s.Netmask = 0, netip.Prefix{}
		return
	}
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if !s.Netmask.IsValid() {
		s.Netmask = maskPrefix(s.MaskBits(), s.IsV6())
	}
}

// ErrInvalid wraps every validation failure.
var ErrInvalid = errors.New("invalid")

// ErrNoScheduler is a service naming a scheduler xipvs does not have
// (ipvsadm's message).
var ErrNoScheduler = errors.New("Scheduler not found")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// maskPrefix is a persistence netmask of bits in the family v6 says.
func maskPrefix(bits int, v6 bool) netip.Prefix {
	if v6 {
		return netip.PrefixFrom(netip.IPv6Unspecified(), bits)
	}
	return netip.PrefixFrom(netip.IPv4Unspecified(), bits)
}

// unicast reports whether a is a unicast address: not unspecified,
// multicast or the limited broadcast address.
func unicast(a netip.Addr) bool {
	return !a.IsUnspecified() && !a.IsMulticast() && a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// family names a's address family as messages do.
func family(v6 bool) string {
	if v6 {
		return "IPv6"
	}
	return "IPv4"
}

// Validate checks a service key.
func (k ServiceKey) Validate() error {
	if k.FWMark != 0 {
		if k.Addr.IsValid() || k.Port != 0 {
			return invalid("a firewall-mark service (fwmark %d) has no address or port; give one or the other", k.FWMark)
		}
		return nil
	}
	if k.V6 {
		return invalid("-6 is for firewall-mark services (-f MARK -6); an address service's family is its address's")
	}
	if k.Proto != TCP && k.Proto != UDP {
		return invalid("protocol %d: only TCP and UDP services are supported", k.Proto)
	}
	if !k.Addr.IsValid() || k.Addr.Is4In6() || k.Addr.Zone() != "" {
		return invalid("service address %v: want an IPv4 or IPv6 address", k.Addr)
	}
	if !unicast(k.Addr) {
		return invalid("service address %v is not a unicast address", k.Addr)
	}
	return nil
}

// Validate checks a service. Port 0 (all ports) is allowed only with
// persistence, as in ipvsadm.
func (s Service) Validate() error {
	if err := s.ServiceKey.Validate(); err != nil {
		return err
	}
	if s.FWMark == 0 && s.Port == 0 && !s.Persistent {
		return invalid("service port 0 (all ports) requires persistence (-p)")
	}
	if s.Netmask.IsValid() {
		if s.Netmask.Addr().Is6() != s.IsV6() {
			return invalid("persistence netmask %v is not of the service's family (%s)", s.Netmask, family(s.IsV6()))
		}
		if s.IsV6() && s.Netmask.Bits() < 1 {
			return invalid("illegal ipv6 netmask specified: /%d (1..128)", s.Netmask.Bits())
		}
	}
	if s.Scheduler == "" {
		return invalid("no scheduler")
	}
	if !sched.Known(s.Scheduler) {
		return fmt.Errorf("%w: %q", ErrNoScheduler, s.Scheduler)
	}
	if _, err := sched.ParseFlags(s.Scheduler, s.SchedFlags); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := s.Check.Validate(); err != nil {
		return err
	}
	if s.Check.Type == "none" {
		return invalid("--check none is for a real (to not check it); leave a service without --check")
	}
	if s.OnFailure != "" && s.OnFailure != OnFailureQuiesce && s.OnFailure != OnFailureRemove {
		return invalid("on-failure %q: want quiesce or remove", s.OnFailure)
	}
	if s.SynProxy && (s.FWMark != 0 || s.Proto != TCP) {
		return invalid("synproxy (-j enable) is for TCP services (-t)")
	}
	if s.SynProxy && s.Sorry.IsSet() && !s.Sorry.Fwd.Rewrites() {
		return invalid("synproxy (-j enable) needs NAT or FULLNAT reals: the sorry server's method is %s", s.Sorry.Fwd)
	}
	if s.Sorry.IsSet() {
		sd := Dest{Addr: s.Sorry.Addr.Addr(), Port: s.Sorry.Addr.Port(), Fwd: s.Sorry.Fwd, Weight: 1}
		if err := sd.Validate(s.ServiceKey); err != nil {
			return fmt.Errorf("sorry server: %w", err)
		}
	}
	return nil
}

// Validate checks a destination of service svc.
func (d Dest) Validate(svc ServiceKey) error {
	if !d.Addr.IsValid() || d.Addr.Is4In6() || d.Addr.Zone() != "" {
		return invalid("real server address %v: want an IPv4 or IPv6 address", d.Addr)
	}
	if d.Addr.Is6() != svc.IsV6() {
		// IPVS mixes families only for tunnels (ip_vs_genl_set_cmd:
		// EINVAL otherwise); xipvs's tunnels keep the family too.
		if d.Fwd == FwdTunnel {
			return invalid("real server %v is %s and the service %s: xipvs tunnels keep the family (IPVS's %s-in-%s tunnels are not supported)",
				d.Addr, family(d.Addr.Is6()), family(svc.IsV6()), family(svc.IsV6()), family(d.Addr.Is6()))
		}
		return invalid("real server %v is %s and the service %s: mixed address families are allowed only for tunnels",
			d.Addr, family(d.Addr.Is6()), family(svc.IsV6()))
	}
	if !unicast(d.Addr) {
		return invalid("real server address %v is not a unicast address", d.Addr)
	}
	if d.Weight < 0 || d.Weight > MaxWeight {
		return invalid("weight %d: must be 0..%d", d.Weight, MaxWeight)
	}
	if d.Fwd > FwdFullNAT {
		return invalid("forwarding method %d unknown", d.Fwd)
	}
	if !d.Fwd.Rewrites() && svc.FWMark == 0 && d.Port != svc.Port {
		return invalid("port mapping (%d -> %d) needs NAT (-m) or FULLNAT (-b); %s forwarding keeps the port",
			svc.Port, d.Port, strings.ToLower(d.Fwd.String()))
	}
	if d.UThreshold != 0 && d.LThreshold > d.UThreshold {
		return invalid("lower threshold %d above upper threshold %d", d.LThreshold, d.UThreshold)
	}
	return d.Check.Validate()
}
