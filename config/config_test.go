package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A file as ipvsadm-save (1.31) writes it, names and all, with a comment
// and a blank line, read through the same parser as xipvsadm's arguments.
const savedRules = `# ipvsadm-save > /etc/sysconfig/ipvsadm
-A -t 192.168.0.220:http -s wrr -p 300 -M 255.255.255.0
-a -t 192.168.0.220:http -r 192.168.0.10:http -g -w 3
-a -t 192.168.0.220:http -r 192.168.0.20:http -g -w 1

-A -u 192.168.0.220:domain -s rr
-a -u 192.168.0.220:domain -r 10.1.1.2:domain -i -w 1 --tun-type ipip
-A -f 6666 -s rr
-a -f 6666 -r 192.168.0.10:0 -g -w 1
`

func TestParseRulesSaveFile(t *testing.T) {
	c, err := ParseRules(strings.NewReader(savedRules))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Services) != 3 {
		t.Fatalf("%d services", len(c.Services))
	}
	web := c.Services[0]
	if web.Service.Port != 80 || !web.Service.Persistent || web.Service.Timeout != 300 || web.Service.Netmask.Bits() != 24 {
		t.Errorf("web service %+v", web.Service)
	}
	// -a inserts at the front, as the kernel's list_add.
	if len(web.Dests) != 2 || web.Dests[0].Addr != netip.MustParseAddr("192.168.0.20") || web.Dests[1].Weight != 3 {
		t.Errorf("web reals %+v", web.Dests)
	}
	if d := c.Services[1].Dests[0]; d.Fwd != FwdTunnel || d.Port != 53 {
		t.Errorf("dns real %+v", d)
	}
	if c.Services[2].Service.FWMark != 6666 {
		t.Errorf("fwmark service %+v", c.Services[2].Service)
	}
}

func TestApplyLinesErrors(t *testing.T) {
	base := &Config{Services: []ServiceConfig{{Service: Service{ServiceKey: ServiceKey{Proto: TCP, Addr: netip.MustParseAddr("10.0.0.1"), Port: 80}, Scheduler: "rr"}}}}
	for _, tc := range []struct {
		rules string
		line  int
		err   error
	}{
		{"-A -t 10.0.0.1:80", 1, ErrServiceExists},
		{"-A -t 10.0.0.2:80\n-a -t 10.0.0.3:80 -r 10.0.0.9", 2, ErrSvcNotDefined},
		{"-a -t 10.0.0.1:80 -r 10.0.0.9\n-a -t 10.0.0.1:80 -r 10.0.0.9", 2, ErrDestExists},
		{"-d -t 10.0.0.1:80 -r 10.0.0.9", 1, ErrNoDest},
		{"-D -t 10.0.0.5:80", 1, ErrNoService},
		{"\n\n-A -t 10.0.0.2:80 -w x", 3, nil},
		{"-Ln", 1, nil},
		{"-A -t 10.0.0.2:80 'unterminated", 1, nil},
		{"--add-laddr -t 10.0.0.1:80 -z 10.9.9.9\n--add-laddr -t 10.0.0.1:80 -z 10.9.9.9", 2, ErrLaddrExists},
		{"--add-mark -f 5 -t 10.0.0.1:80-90\n--add-mark -f 6 -t 10.0.0.1:85", 2, ErrMarkOverlap},
	} {
		lines, err := ReadRules(strings.NewReader(tc.rules))
		if err == nil {
			_, err = ApplyLines(base, lines)
		}
		var le *LineError
		if !errors.As(err, &le) || le.N != tc.line {
			t.Errorf("%q: %v, want an error on line %d", tc.rules, err, tc.line)
			continue
		}
		if tc.err != nil && !errors.Is(err, tc.err) {
			t.Errorf("%q: %v, want %v", tc.rules, err, tc.err)
		}
	}
	if len(base.Services) != 1 || len(base.Services[0].Dests) != 0 {
		t.Errorf("base changed: %+v", base)
	}
}

func TestReadRulesScriptLines(t *testing.T) {
	lines, err := ReadRules(strings.NewReader("/sbin/ipvsadm -C\n ipvsadm -A -t 10.0.0.1:80 -s rr # x\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 2 || lines[0].Args[0] != "-C" || lines[1].N != 2 || lines[1].Args[0] != "-A" {
		t.Errorf("%+v", lines)
	}
}

const yamlConfig = `interfaces: [eth0, eth1]
timeouts: {tcp: 900, tcpfin: 120, udp: 300}
marks:
  - {mark: 6666, tcp: "192.168.0.220:80,443"}
services:
  - fwmark: 6666
    scheduler: rr
    persistent: 3000
    reals:
      - {addr: 192.168.0.10, method: dr}
  - tcp: 192.168.0.221:80
    scheduler: wrr
    local_addrs: [10.0.0.100]
    reals:
      - {addr: "10.0.0.11:8080", method: fullnat, weight: 3}
      - {addr: 10.0.0.12, method: nat, u_threshold: 100, l_threshold: 50}
  - udp: 192.168.0.221:53
    reals:
      - {addr: 10.0.0.13, method: tun}
`

func TestParseYAML(t *testing.T) {
	c, ifaces, err := ParseYAML(strings.NewReader(yamlConfig))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(ifaces, ",") != "eth0,eth1" || c.Timeouts != [3]int{900, 120, 300} || len(c.Marks) != 2 {
		t.Errorf("ifaces %v timeouts %v marks %v", ifaces, c.Timeouts, c.Marks)
	}
	fw := c.Services[0]
	if fw.Service.FWMark != 6666 || fw.Service.Timeout != 3000 || fw.Dests[0].Port != 0 {
		t.Errorf("fwmark service %+v", fw)
	}
	web := c.Services[1]
	if web.Dests[0].Port != 8080 || web.Dests[0].Fwd != FwdFullNAT || web.Dests[0].Weight != 3 ||
		web.Dests[1].Port != 80 || web.Dests[1].UThreshold != 100 || len(web.LocalAddrs) != 1 {
		t.Errorf("web %+v", web)
	}
	if d := c.Services[2].Dests[0]; d.Fwd != FwdTunnel || d.Port != 53 || c.Services[2].Service.Scheduler != "wlc" {
		t.Errorf("dns %+v", c.Services[2])
	}
}

func TestParseYAMLErrors(t *testing.T) {
	for _, bad := range []string{
		"services: [{tcp: 10.0.0.1:80, sheduler: rr}]",                                      // typo: unknown field
		"services: [{tcp: 10.0.0.1:80, udp: 10.0.0.1:53}]",                                  // two keys
		"services: [{tcp: 10.0.0.1:80, reals: [{addr: 10.0.0.2, method: carrier-pigeon}]}]", // method
		"services: [{tcp: 10.0.0.1:80, reals: [{addr: 10.0.0.2:81, method: dr}]}]",          // DR port map
		"services: [{tcp: 10.0.0.1:80}, {tcp: 10.0.0.1:80}]",                                // duplicate
		"services: [{tcp: 10.0.0.1:80, reals: [{addr: 10.0.0.2}, {addr: 10.0.0.2}]}]",       // duplicate real
		"services: [{tcp: 10.0.0.1:80, netmask: 255.255.255.0}]",                            // netmask without persistence
		"services: [{tcp: 10.0.0.1:0}]",                                                     // port 0 without persistence
		"marks: [{mark: 1, tcp: 10.0.0.1:80}, {mark: 2, tcp: 10.0.0.1:80}]",                 // overlap
		"timeouts: {tcp: -1}",
		"services: [{tcp: 10.0.0.1:80, reals: [{addr: 10.0.0.2, weight: 70000}]}]",
		"services: {}",
	} {
		if _, _, err := ParseYAML(strings.NewReader(bad)); err == nil {
			t.Errorf("accepted: %s", bad)
		}
	}
}

func TestLoadDetectsFormat(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{"rules": savedRules, "yaml": yamlConfig, "empty": "# nothing\n"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		c, _, err := Load(p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := map[string]int{"rules": 3, "yaml": 3, "empty": 0}[name]
		if len(c.Services) != want {
			t.Errorf("%s: %d services, want %d", name, len(c.Services), want)
		}
	}
}

func TestParseYAMLHealth(t *testing.T) {
	c, _, err := ParseYAML(strings.NewReader(`services:
  - tcp: 10.0.0.1:80
    check: {type: http, path: /health, status: 204, body: ok, interval: 0.5, timeout: 200ms, rise: 1, fall: 2}
    on_failure: remove
    sorry_server: {addr: 10.0.0.9, method: nat}
    reals:
      - {addr: 10.0.0.2, check: {type: exec, exec: "true"}}
      - {addr: 10.0.0.3, check: {type: none}}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Services[0].Service
	want := Check{Type: "http", Path: "/health", Status: 204, Body: "ok", Interval: 500 * time.Millisecond, Timeout: 200 * time.Millisecond, Rise: 1, Fall: 2}
	if s.Check != want || s.OnFailure != OnFailureRemove || s.Sorry.Addr != netip.MustParseAddrPort("10.0.0.9:80") || s.Sorry.Fwd != FwdMasq {
		t.Errorf("%+v", s)
	}
	if d := c.Services[0].Dests; d[0].Check.Exec != "true" || d[1].Check.Type != "none" {
		t.Errorf("%+v", d)
	}
	for _, bad := range []string{
		"services: [{tcp: 10.0.0.1:80, check: {type: ping}}]",
		"services: [{tcp: 10.0.0.1:80, check: {type: exec}}]",
		"services: [{tcp: 10.0.0.1:80, check: {type: tcp, interval: 1, timeout: 2}}]",
		"services: [{tcp: 10.0.0.1:80, on_failure: panic}]",
		"services: [{tcp: 10.0.0.1:80, check: {type: http, path: health}}]",
	} {
		if _, _, err := ParseYAML(strings.NewReader(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

// TestValidationGaps: what issue 17 found accepted is refused.
func TestValidationGaps(t *testing.T) {
	for _, k := range []ServiceKey{
		{FWMark: 5, Addr: netip.MustParseAddr("192.0.2.1"), Port: 80, Proto: TCP},
		{FWMark: 5, Port: 80, Proto: TCP},
		{Proto: TCP, Addr: netip.MustParseAddr("255.255.255.255"), Port: 80},
		{Proto: TCP, Addr: netip.MustParseAddr("0.0.0.0"), Port: 80},
		{Proto: TCP, Addr: netip.MustParseAddr("224.0.0.1"), Port: 80},
	} {
		if err := k.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v accepted (%v)", k, err)
		}
	}
	if err := (ServiceKey{FWMark: 5, Proto: TCP}).Validate(); err != nil {
		t.Errorf("a plain -f service refused: %v", err)
	}
	d := Dest{Addr: netip.MustParseAddr("255.255.255.255"), Port: 80, Weight: 1}
	if err := d.Validate(ServiceKey{Proto: TCP, Addr: netip.MustParseAddr("192.0.2.1"), Port: 80}); !errors.Is(err, ErrInvalid) {
		t.Errorf("broadcast real accepted (%v)", err)
	}
}

// TestParseYAMLIPv6: IPv6 services, reals and fwmark services in YAML,
// with the family rules of the command line.
func TestParseYAMLIPv6(t *testing.T) {
	c, _, err := ParseYAML(strings.NewReader(`services:
  - tcp: "[2001:db8::1]:80"
    scheduler: rr
    persistent: 600
    netmask: "64"
    reals:
      - {addr: "[2001:db8::11]:8080", method: nat, weight: 3}
  - fwmark: 5
    ipv6: true
    reals:
      - {addr: "2001:db8::12"}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Services[0]
	if s.Service.Addr != netip.MustParseAddr("2001:db8::1") || s.Service.Netmask != netip.MustParsePrefix("::/64") ||
		s.Dests[0].Addr != netip.MustParseAddr("2001:db8::11") || s.Dests[0].Port != 8080 || s.Dests[0].Fwd != FwdMasq {
		t.Errorf("%+v", s)
	}
	if f := c.Services[1].Service; !f.IsV6() || f.FWMark != 5 {
		t.Errorf("%+v", f)
	}
	for _, bad := range []string{
		`services: [{tcp: "[2001:db8::1]:80", reals: [{addr: 10.0.0.2}]}]`,
		`services: [{tcp: "10.0.0.1:80", ipv6: true}]`,
		`services: [{tcp: "[2001:db8::1]:80", persistent: 60, netmask: 255.255.255.0}]`,
		`services: [{tcp: "[2001:db8::1]:80", local_addrs: [10.0.0.9]}]`,
	} {
		if _, _, err := ParseYAML(strings.NewReader(bad)); err == nil {
			t.Errorf("accepted: %s", bad)
		}
	}
}
