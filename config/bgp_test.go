package config

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestBGPYAML(t *testing.T) {
	l, err := ParseYAMLFile(strings.NewReader(`
bgp:
  asn: 65001
  router_id: 10.0.0.2
  peers:
    - {addr: 10.0.0.1, asn: 65000, hold_time: 3, bfd: true}
    - {addr: "fd00::1", asn: 65000, password: s3cret, port: 1179, multihop: 2}
  next_hop6: fd00::2
  communities: ["65000:100", no-export]
  med: 10
  announce: [192.0.2.53, 198.51.100.0/24]
  drain: 2.5
services:
  - tcp: 10.0.0.100:80
    reals: [{addr: 10.0.1.1}]
`))
	if err != nil {
		t.Fatal(err)
	}
	b := l.BGP
	if b == nil || b.ASN != 65001 || b.RouterID != netip.MustParseAddr("10.0.0.2") || len(b.Peers) != 2 || len(l.Config.Services) != 1 {
		t.Fatalf("parsed %+v", b)
	}
	p0, p1 := b.Peers[0], b.Peers[1]
	if p0.HoldTime != 3*time.Second || !p0.BFD || p0.BFDInterval != DefaultBFDInterval || p0.Port != 179 {
		t.Errorf("peer 0 %+v", p0)
	}
	if p1.Addr != netip.MustParseAddr("fd00::1") || p1.Password != "s3cret" || p1.Port != 1179 || p1.Multihop != 2 || p1.HoldTime != DefaultBGPHoldTime {
		t.Errorf("peer 1 %+v", p1)
	}
	if len(b.Communities) != 2 || b.Communities[0] != 65000<<16|100 || b.Communities[1] != 0xFFFFFF01 {
		t.Errorf("communities %x", b.Communities)
	}
	if b.MED == nil || *b.MED != 10 || b.Drain != 2500*time.Millisecond || b.NextHop6 != netip.MustParseAddr("fd00::2") {
		t.Errorf("med/drain/next hop: %+v", b)
	}
	if len(b.Announce) != 2 || b.Announce[0] != netip.MustParsePrefix("192.0.2.53/32") || b.Announce[1] != netip.MustParsePrefix("198.51.100.0/24") {
		t.Errorf("announce %v", b.Announce)
	}
	// Without a bgp section there is no BGP.
	if l, err := ParseYAMLFile(strings.NewReader("services: []\n")); err != nil || l.BGP != nil {
		t.Errorf("no bgp section: %+v, %v", l, err)
	}
}

func TestBGPInvalid(t *testing.T) {
	base := "bgp:\n  asn: 65001\n  router_id: 10.0.0.2\n  peers: [{addr: 10.0.0.1, asn: 65000}]\n"
	for _, tc := range []struct{ yaml, want string }{
		{"bgp:\n  router_id: 10.0.0.2\n  peers: [{addr: 10.0.0.1, asn: 65000}]\n", "no local ASN"},
		{"bgp:\n  asn: 1\n  router_id: fd00::2\n  peers: [{addr: 10.0.0.1, asn: 65000}]\n", "router id"},
		{"bgp:\n  asn: 1\n  router_id: 10.0.0.2\n", "no peer"},
		{"bgp:\n  asn: 1\n  router_id: 10.0.0.2\n  peers: [{addr: 10.0.0.1, asn: 2}, {addr: 10.0.0.1, asn: 3}]\n", "given twice"},
		{"bgp:\n  asn: 1\n  router_id: 10.0.0.2\n  peers: [{addr: 10.0.0.1}]\n", "no ASN"},
		{"bgp:\n  asn: 1\n  router_id: 10.0.0.2\n  peers: [{addr: 10.0.0.1, asn: 2, hold_time: 2}]\n", "hold time"},
		{"bgp:\n  asn: 1\n  router_id: 10.0.0.2\n  peers: [{addr: 10.0.0.1, asn: 2, bfd: true, multihop: 2}]\n", "single hop"},
		{"bgp:\n  asn: 1\n  router_id: 10.0.0.2\n  peers: [{addr: nope, asn: 2}]\n", "address"},
		{base + "  communities: [\"70000:1\"]\n", "community"},
		{base + "  announce: [10.0.0.1/24]\n", "host bits"},
		{base + "  next_hop: fd00::1\n", "next_hop"},
		{base + "  drain: 1h\n", "drain"},
		{base + "  hold: 3\n", "field hold not found"},
	} {
		_, err := ParseYAMLFile(strings.NewReader(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one saying %q", tc.yaml, err, tc.want)
		}
		if err != nil && tc.want != "field hold not found" && !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v is not ErrInvalid", tc.yaml, err)
		}
	}
}

func TestParseBGPPeer(t *testing.T) {
	p, err := ParseBGPPeer("10.0.0.1,65000,hold_time=3,password=x,port=1179,multihop=2")
	if err != nil || p.Addr != netip.MustParseAddr("10.0.0.1") || p.ASN != 65000 || p.HoldTime != 3*time.Second ||
		p.Password != "x" || p.Port != 1179 || p.Multihop != 2 {
		t.Errorf("parsed %+v, %v", p, err)
	}
	p, err = ParseBGPPeer("fd00::1,65000,bfd,bfd_interval=50ms")
	if err != nil || !p.BFD || p.BFDInterval != 50*time.Millisecond || p.HoldTime != DefaultBGPHoldTime || p.Port != 179 {
		t.Errorf("parsed %+v, %v", p, err)
	}
	for _, bad := range []string{"10.0.0.1", "10.0.0.1,x", "10.0.0.1,1,colour=blue", "10.0.0.1,1,port=70000", "10.0.0.1,0"} {
		if _, err := ParseBGPPeer(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if c, err := ParseCommunity("65535:65535"); err != nil || c != 0xFFFFFFFF || FormatCommunity(c) != "65535:65535" {
		t.Errorf("community %x, %v", c, err)
	}
}
