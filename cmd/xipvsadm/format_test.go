package main

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"testing"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/internal/api"
)

var update = flag.Bool("update", false, "rewrite golden files")

func svc(proto config.Proto, addr string, port uint16, sched string, dests ...api.Dest) api.Service {
	return api.Service{Service: config.Service{ServiceKey: config.ServiceKey{Proto: proto, Addr: netip.MustParseAddr(addr), Port: port}, Scheduler: sched}, Dests: dests}
}

func dst(addr string, port uint16, w, act, inact int) api.Dest {
	return api.Dest{Dest: config.Dest{Addr: netip.MustParseAddr(addr), Port: port, Fwd: config.FwdRoute, Weight: w}, ActiveConns: act, InactConns: inact}
}

// The golden file was written by hand from ipvsadm 1.31's printf formats
// ("%s %s" service line; "  -> %-28s %-7s %-6d %-10u %-10u" real line),
// not by this code; sorting is ipvs_cmp_services / ipvs_cmp_dests.
func TestListNumericGolden(t *testing.T) {
	svcs := []api.Service{
		svc(config.UDP, "10.0.0.100", 53, "rr", dst("10.0.0.12", 53, 1, 0, 7)),
		svc(config.TCP, "10.0.0.100", 80, "wrr",
			dst("10.0.0.12", 80, 1, 0, 0), dst("10.0.0.11", 80, 3, 12, 345)),
		svc(config.TCP, "10.0.0.9", 443, "wlc"),
	}
	var out bytes.Buffer
	if err := printList(&out, 4096, svcs, config.ListFormat{Numeric: true}, nil); err != nil {
		t.Fatal(err)
	}
	golden := "testdata/list-numeric.golden"
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("got:\n%q\nwant:\n%q", out.String(), want)
	}
}

func TestTimeoutFormat(t *testing.T) {
	var out bytes.Buffer
	printTimeouts(&out, api.Timeouts{TCP: 900, TCPFin: 120, UDP: 300})
	if out.String() != "Timeout (tcp tcpfin udp): 900 120 300\n" {
		t.Errorf("got %q", out.String())
	}
}

func TestExitCodes(t *testing.T) {
	var o, e bytes.Buffer
	if code := run([]string{"-A", "-Q"}, nil, &o, &e); code != 2 {
		t.Errorf("bad option: exit %d, want 2 (%s)", code, e.String())
	}
	if code := run([]string{"-h"}, nil, &o, &e); code != 0 || o.Len() == 0 {
		t.Errorf("-h: exit %d", code)
	}
	e.Reset()
	if code := run([]string{"--socket", "/nonexistent/xipvsd.sock", "-C"}, nil, &o, &e); code != 1 {
		t.Errorf("no daemon: exit %d, want 1 (%s)", code, e.String())
	}
}

// Persistence, netmask, scheduler flags and firewall-mark services, hand
// written from ipvsadm's print_service_entry: " (flags)" after the
// scheduler, then " persistent N" and " mask M"; fwmark services sort
// after the others (ipvs_cmp_services compares the mark first).
func TestListPersistentGolden(t *testing.T) {
	fwm := api.Service{Service: config.Service{ServiceKey: config.ServiceKey{FWMark: 6666, Proto: config.TCP}, Scheduler: "rr",
		Persistent: true, Timeout: 3000, Netmask: netip.MustParsePrefix("0.0.0.0/32")},
		Dests: []api.Dest{dst("192.168.0.10", 0, 1, 2, 0)}}
	sh := svc(config.TCP, "10.0.0.100", 0, "sh", dst("10.0.0.11", 0, 1, 0, 0))
	sh.Persistent, sh.Timeout, sh.Netmask = true, 300, netip.MustParsePrefix("0.0.0.0/24")
	sh.SchedFlags = []string{"sh-port", "sh-fallback"}
	var out bytes.Buffer
	if err := printList(&out, 4096, []api.Service{fwm, sh}, config.ListFormat{Numeric: true}, nil); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/list-persistent.golden")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}

// -Lnc, hand-written from ipvsadm's list_conn/print_conn formats.
func TestListConnsGolden(t *testing.T) {
	ap := netip.MustParseAddrPort
	conns := []api.Conn{
		{Proto: config.UDP, ExpireSeconds: 61, State: "UDP", Client: ap("10.77.0.1:5353"), Virtual: ap("10.77.0.100:53"), Real: ap("10.77.0.12:53")},
		{Proto: config.TCP, ExpireSeconds: 899, State: "ESTABLISHED", Client: ap("10.77.0.1:43210"), Virtual: ap("10.77.0.100:80"), Real: ap("10.77.0.11:80")},
	}
	var out bytes.Buffer
	if err := printConns(&out, config.ListFormat{Numeric: true, Conn: true}, each(conns)); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/list-conns.golden")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("got:\n%s\nwant:\n%s", out.String(), want)
	}
}

// formatFixture is the data of testdata/golden.sh.
func formatFixture() []api.Service {
	st := func(c, ip, op, ib, ob uint64) conntrack.Stats {
		return conntrack.Stats{Conns: c, InPkts: ip, OutPkts: op, InBytes: ib, OutBytes: ob}
	}
	rt := func(c, ip, op, ib, ob uint64) conntrack.Rates {
		return conntrack.Rates{CPS: c, InPPS: ip, OutPPS: op, InBPS: ib, OutBPS: ob}
	}
	d1 := dst("10.0.0.11", 80, 3, 12, 345)
	d1.UThreshold, d1.LThreshold, d1.PersistConns = 1000, 800, 7
	d1.Stats, d1.Rates = st(123456000, 99999000, 0, 123456000000, 5), rt(1000, 100000, 90000, 120000000, 1500000000)
	d2 := dst("10.0.0.12", 8080, 0, 0, 0)
	d2.Fwd = config.FwdMasq
	d2.Stats, d2.Rates = st(789, 999, 0, 789012, 0), rt(500, 50000, 50000, 60000000, 500000000)
	tcp := svc(config.TCP, "10.0.0.100", 80, "wrr", d2, d1) // unsorted on purpose
	tcp.Stats, tcp.Rates = st(123456789, 99999999, 0, 123456789012, 5), rt(1500, 150000, 140000, 180000000, 2000000000)
	d3 := dst("10.0.0.12", 53, 1, 0, 0)
	d3.Fwd = config.FwdTunnel
	d3.Stats = st(42, 42, 0, 5376, 0)
	udp := svc(config.UDP, "10.0.0.100", 53, "rr", d3)
	udp.Stats = d3.Stats
	return []api.Service{udp, tcp}
}

// Every listing format against files written by testdata/golden.sh with
// printf and ipvsadm's C format strings.
func TestListFormatsGolden(t *testing.T) {
	for golden, f := range map[string]config.ListFormat{
		"stats":           {Numeric: true, Stats: true},
		"stats-exact":     {Numeric: true, Stats: true, Exact: true},
		"rate":            {Numeric: true, Rate: true},
		"thresholds":      {Numeric: true, Thresholds: true},
		"persistent-conn": {Numeric: true, PersistentConn: true},
	} {
		var out bytes.Buffer
		if err := printList(&out, 4096, formatFixture(), f, nil); err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile("testdata/" + golden + ".golden")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Errorf("%s:\ngot:\n%s\nwant:\n%s", golden, out.String(), want)
		}
	}
	var out bytes.Buffer
	if err := printRules(&out, formatFixture(), nil, nil, true, false); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("testdata/save-numeric.golden")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("-Sn:\ngot:\n%s\nwant:\n%s", out.String(), want)
	}
	// What -S writes, the rules parser reads back to the same model.
	cfg, err := config.ParseRules(bytes.NewReader(out.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Services) != 2 || len(cfg.Services[0].Dests) != 2 || cfg.Services[0].Dests[1].UThreshold != 1000 ||
		cfg.Services[1].Dests[0].Fwd != config.FwdTunnel {
		t.Errorf("parsed back: %+v", cfg)
	}
}

func TestLargenum(t *testing.T) {
	for v, want := range map[uint64]string{
		0: "        0", 99999999: " 99999999", 100000000: "  100000K", 999999999: "  999999K",
		1000000000: "    1000M", 99999999999: "   99999M", 100000000000: "     100G",
		100000000000000: "     100T",
	} {
		if got := largenum(v, false); got != want {
			t.Errorf("largenum(%d) = %q, want %q", v, got, want)
		}
	}
	if got := largenum(123456789012, true); got != " 123456789012" {
		t.Errorf("exact: %q", got)
	}
}

// dualStackFixture is the data of golden.sh's dual-stack files.
func dualStackFixture() []api.Service {
	v4 := svc(config.TCP, "10.0.0.100", 80, "wrr", dst("10.0.0.11", 80, 1, 0, 0))
	m1 := dst("2001:db8::11", 80, 3, 5, 2)
	m1.Fwd = config.FwdMasq
	m1.Stats = conntrack.Stats{Conns: 7, InPkts: 70, OutPkts: 60, InBytes: 7000, OutBytes: 600000}
	m2 := dst("2001:db8:1234:5678:9abc:def0:1234:5678", 8080, 1, 0, 0)
	m2.Fwd = config.FwdMasq
	tcp6 := svc(config.TCP, "2001:db8::100", 80, "rr", m2, m1)
	tcp6.Persistent, tcp6.Timeout, tcp6.Netmask = true, 600, netip.MustParsePrefix("::/64")
	tcp6.Stats = m1.Stats
	udp6 := svc(config.UDP, "2001:db8::100", 53, "rr", dst("2001:db8::12", 53, 1, 0, 9))
	fwm6 := api.Service{Service: config.Service{ServiceKey: config.ServiceKey{FWMark: 7, V6: true, Proto: config.TCP}, Scheduler: "wlc",
		Persistent: true, Timeout: 300, Netmask: netip.MustParsePrefix("::/128")},
		Dests: []api.Dest{dst("2001:db8::13", 0, 1, 0, 0)}}
	return []api.Service{fwm6, udp6, tcp6, v4} // unsorted on purpose
}

// Dual-stack listings and rules against golden.sh's printf output of
// ipvsadm's formats; -S's output parses back to the same services.
func TestDualStackGolden(t *testing.T) {
	check := func(name string, out []byte) {
		t.Helper()
		want, err := os.ReadFile("testdata/" + name + ".golden")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, want) {
			t.Errorf("%s:\ngot:\n%s\nwant:\n%s", name, out, want)
		}
	}
	for name, f := range map[string]config.ListFormat{
		"list-dualstack":  {Numeric: true},
		"stats-dualstack": {Numeric: true, Stats: true},
	} {
		var out bytes.Buffer
		if err := printList(&out, 4096, dualStackFixture(), f, nil); err != nil {
			t.Fatal(err)
		}
		check(name, out.Bytes())
	}
	var rules bytes.Buffer
	if err := printRules(&rules, dualStackFixture(), nil, nil, true, false); err != nil {
		t.Fatal(err)
	}
	check("save-dualstack", rules.Bytes())
	cfg, err := config.ParseRules(bytes.NewReader(rules.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	want := dualStackFixture()
	sortServices(want)
	if len(cfg.Services) != len(want) {
		t.Fatalf("parsed back %d services, want %d", len(cfg.Services), len(want))
	}
	for i, s := range cfg.Services {
		w := want[i]
		if s.Service.ServiceKey != w.ServiceKey || s.Service.Netmask != w.Netmask || s.Service.Timeout != w.Timeout || len(s.Dests) != len(w.Dests) {
			t.Errorf("service %d parsed back as %+v, want %+v", i, s.Service, w.Service)
		}
	}
	ap := netip.MustParseAddrPort
	conns := []api.Conn{ // in the director's order
		{Proto: config.TCP, ExpireSeconds: 899, State: "ESTABLISHED", Client: ap("10.77.0.1:43210"), Virtual: ap("10.77.0.100:80"), Real: ap("10.77.0.11:80")},
		{Proto: config.TCP, ExpireSeconds: 60, State: "SYN_RECV", Client: ap("[2001:db8:77::1]:43211"), Virtual: ap("[2001:db8::100]:80"), Real: ap("[2001:db8::11]:80")},
	}
	var out bytes.Buffer
	if err := printConns(&out, config.ListFormat{Numeric: true, Conn: true}, each(conns)); err != nil {
		t.Fatal(err)
	}
	check("conns-dualstack", out.Bytes())
}

// each hands conns to printConns as the director's stream would.
func each(conns []api.Conn) func(func(api.Conn) error) error {
	return func(fn func(api.Conn) error) error {
		for _, c := range conns {
			if err := fn(c); err != nil {
				return err
			}
		}
		return nil
	}
}
