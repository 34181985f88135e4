package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// MarkRule binds ports of a VIP to a firewall mark: the classification
// LVS users do with `iptables -t mangle ... -j MARK --set-mark N`, which
// cannot work here because XDP runs before netfilter. A -f MARK service
// takes the traffic of every rule of its mark.
//
// PortLo..PortHi is an inclusive range; 0..0 means every port of Addr.
type MarkRule struct {
	Mark   uint32     `json:"mark"`
	Proto  Proto      `json:"proto"`
	Addr   netip.Addr `json:"addr"`
	PortLo uint16     `json:"port_lo"`
	PortHi uint16     `json:"port_hi"`
}

// AllPorts reports whether the rule binds every port.
func (r MarkRule) AllPorts() bool { return r.PortLo == 0 && r.PortHi == 0 }

// Overlaps reports whether two rules claim a common (proto, addr, port).
func (r MarkRule) Overlaps(o MarkRule) bool {
	if r.Proto != o.Proto || r.Addr != o.Addr {
		return false
	}
	if r.AllPorts() || o.AllPorts() {
		return r.AllPorts() == o.AllPorts()
	}
	return r.PortLo <= o.PortHi && o.PortLo <= r.PortHi
}

// String renders the rule as the xipvsadm arguments that create it.
func (r MarkRule) String() string {
	flag := "-t"
	if r.Proto == UDP {
		flag = "-u"
	}
	addr := r.Addr.String()
	if r.Addr.Is6() {
		addr = "[" + addr + "]"
	}
	s := fmt.Sprintf("-f %d %s %s", r.Mark, flag, addr)
	switch {
	case r.AllPorts():
	case r.PortLo == r.PortHi:
		s += ":" + strconv.Itoa(int(r.PortLo))
	default:
		s += fmt.Sprintf(":%d-%d", r.PortLo, r.PortHi)
	}
	return s
}

// Validate checks a rule.
func (r MarkRule) Validate() error {
	if r.Mark == 0 {
		return invalid("mark 0 is not a mark")
	}
	if err := (ServiceKey{Proto: r.Proto, Addr: r.Addr}).Validate(); err != nil {
		return err
	}
	if r.PortLo > r.PortHi || (r.PortLo == 0) != (r.PortHi == 0) {
		return invalid("port range %d-%d", r.PortLo, r.PortHi)
	}
	return nil
}

// parseMarkTarget parses "ADDR[:PORTS]" of --add-mark/--del-mark, where
// PORTS is a comma list of ports, names or LO-HI ranges, as iptables'
// multiport takes them, and an IPv6 ADDR is bracketed ([2001:db8::1]:80).
// No PORTS binds every port.
func parseMarkTarget(mark uint32, proto Proto, s string) ([]MarkRule, error) {
	host, ports, hasPorts := strings.Cut(s, ":")
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return nil, fmt.Errorf("%q: no closing bracket", s)
		}
		host, ports, hasPorts = s[1:end], "", false
		if rest := s[end+1:]; rest != "" {
			if rest[0] != ':' {
				return nil, fmt.Errorf("%q: want [ADDR]:PORTS", s)
			}
			ports, hasPorts = rest[1:], true
		}
	} else if strings.Count(s, ":") > 1 {
		host, hasPorts = s, false // a bare IPv6 address
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return nil, fmt.Errorf("%q is not an IP address", host)
	}
	if !hasPorts {
		return []MarkRule{{Mark: mark, Proto: proto, Addr: addr.Unmap()}}, nil
	}
	var out []MarkRule
	for _, p := range strings.Split(ports, ",") {
		lo, hi, isRange := strings.Cut(p, "-")
		l, err := parsePort(lo, proto)
		if err != nil {
			return nil, err
		}
		h := l
		if isRange {
			if h, err = parsePort(hi, proto); err != nil {
				return nil, err
			}
		}
		if l == 0 || h < l {
			return nil, fmt.Errorf("bad port range %q", p)
		}
		out = append(out, MarkRule{Mark: mark, Proto: proto, Addr: addr.Unmap(), PortLo: l, PortHi: h})
	}
	return out, nil
}
