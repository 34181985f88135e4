package config

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Addresses, ports and netmasks as ipvsadm reads them.

// parseHostPort parses "ADDR[:PORT]" where PORT may be a service name
// from /etc/services. A service (-t/-u) address needs no port only with
// persistence; that is checked by Service.Validate.
func parseHostPort(s string, proto Proto, service bool) (netip.Addr, uint16, error) {
	host, portStr := s, ""
	switch {
	case strings.HasPrefix(s, "["):
		// [IPv6]:PORT or [IPv6], as ipvsadm writes them.
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return netip.Addr{}, 0, fmt.Errorf("%q: no closing bracket", s)
		}
		host = s[1:end]
		if rest := s[end+1:]; rest != "" {
			if rest[0] != ':' || len(rest) == 1 {
				return netip.Addr{}, 0, fmt.Errorf("%q: want [ADDRESS]:PORT", s)
			}
			portStr = rest[1:]
		}
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return netip.Addr{}, 0, fmt.Errorf("%q is not an IPv6 address", host)
		}
	case strings.Count(s, ":") == 1:
		i := strings.IndexByte(s, ':')
		host, portStr = s[:i], s[i+1:]
	}
	addr, err := resolveHost(host)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	if portStr == "" {
		return addr, 0, nil
	}
	port, err := parsePort(portStr, proto)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	return addr, port, nil
}

// resolveHost takes an IP address or a host name (as ipvsadm's
// host_to_addr: /etc/hosts, then DNS), the first IPv4 address of a name.
func resolveHost(host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap(), nil
	}
	if host == "" || strings.ContainsAny(host, " /") {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", host)
	}
	a, err := LookupHost(host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address or a known host name", host)
	}
	return a, nil
}

// LookupHost resolves a host name to its first IPv4 address; tests and
// fuzzing replace it to stay off the network.
var LookupHost = func(host string) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
	if err != nil {
		return netip.Addr{}, err
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("%s: no IPv4 address", host)
	}
	return addrs[0].Unmap(), nil
}

func parsePort(s string, proto Proto) (uint16, error) {
	if n, err := strconv.ParseUint(s, 10, 16); err == nil {
		return uint16(n), nil
	}
	network := "tcp"
	if proto == UDP {
		network = "udp"
	}
	n, err := net.LookupPort(network, s)
	if err != nil {
		return 0, fmt.Errorf("unknown port %q", s)
	}
	return uint16(n), nil
}

// parseNetmask reads a persistence netmask as ipvsadm's -M does: for an
// IPv4 service a dotted mask (255.255.255.0) or a prefix length, for an
// IPv6 one a prefix length 1..128.
func parseNetmask(s string, v6 bool) (netip.Prefix, error) {
	if v6 {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 128 {
			return netip.Prefix{}, fmt.Errorf("illegal ipv6 netmask specified: %q (1..128)", s)
		}
		return netip.PrefixFrom(netip.IPv6Unspecified(), n), nil
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 && n <= 32 {
		return netip.PrefixFrom(netip.IPv4Unspecified(), n), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Prefix{}, fmt.Errorf("illegal virtual server persistent mask specified: %q", s)
	}
	b := a.As4()
	m := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	ones := 0
	for ones < 32 && m&(1<<(31-ones)) != 0 {
		ones++
	}
	if ones < 32 && m<<ones != 0 {
		return netip.Prefix{}, fmt.Errorf("illegal virtual server persistent mask specified: %q is not contiguous", s)
	}
	return netip.PrefixFrom(netip.IPv4Unspecified(), ones), nil
}
