package bench

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/xipvs/xipvs/bench/loadgen"
	"github.com/xipvs/xipvs/internal/testutil"
	"github.com/xipvs/xipvs/internal/testutil/pass"
)

// The flood lab (issue 17): a spoofed-source SYN flood at the generator's
// full rate from an attacker linked straight to the director (atk0), while
// a legitimate client on the same link (the same host, its own address)
// makes connections and keeps a download running (testutil.FloodTrial). Subjects: xipvs NAT with the SYN proxy and
// without any defence, xipvs DR with admission control and without, and
// nftables DNAT (conntrack) to the same NAT reals. Two real servers sit
// on the outside LAN (DR, the VIP on lo) and two inside (NAT, the director
// their gateway).
var (
	floodNATVIP = netip.MustParseAddr("10.81.0.100")
	floodDRVIP  = netip.MustParseAddr("10.81.0.101")
)

type floodLab struct {
	lab     *testutil.Lab
	servers []io.Closer
	// The control's sink: a link of the attacker's own (sinka) into the
	// director's namespace (sinkb), where a program drops every frame.
	sinkProgs *loadgen.Programs
	sinkMAC   net.HardwareAddr
	// A third link (shda to shdb), the DR subject's director attached
	// to shdb: the shed rate is measured on it, nothing else crossing.
	shedMAC net.HardwareAddr
}

func newFloodLab(prefix string) (_ *floodLab, err error) {
	f := &floodLab{}
	defer func() {
		if err != nil {
			err = errors.Join(err, f.Close())
		}
	}()
	f.lab, err = testutil.NewLab(testutil.LabPlan{Prefix: prefix, Outside: "10.81.0", Inside: "10.82.0",
		OutsideReals: 2, InsideReals: 2, VIPs: []netip.Addr{floodNATVIP, floodDRVIP}})
	if err != nil {
		return nil, err
	}
	atk, err := f.lab.AddAttacker("10.83.0")
	if err != nil {
		return nil, err
	}
	// The client's second leg, on the outside LAN: the DR reals answer
	// it there, not through the director.
	if err := f.lab.Out.Attach(atk, "atkl", "eth1", netip.MustParsePrefix("10.81.0.9/24"), testutil.HostOptions{TxChecksumOff: true}); err != nil {
		return nil, err
	}
	// Toward the VIPs it still goes by the director's link.
	for _, vip := range []netip.Addr{floodNATVIP, floodDRVIP} {
		if err := atk.IP("route", "add", vip.String()+"/32", "via", "10.83.0.1", "src", "10.83.0.2"); err != nil {
			return nil, err
		}
	}
	for _, kv := range [][2]string{{"net.ipv4.conf.all.rp_filter", "0"}, {"net.ipv4.conf.eth1.rp_filter", "0"}} {
		if err := atk.Sysctl(kv[0], kv[1]); err != nil {
			return nil, err
		}
	}
	if err := f.addSink(atk); err != nil {
		return nil, err
	}
	if err := f.lab.Director.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		return nil, err
	}
	// Upstream is where the attacker is: the director's stack (nftables)
	// takes the spoofed sources as routable, and its answers go back there.
	if err := f.lab.Director.IP("route", "add", "default", "via", "10.83.0.2"); err != nil {
		return nil, err
	}
	for i, rs := range f.lab.Reals {
		if i < 2 {
			err = rs.MakeRealServer(floodDRVIP)
			if err == nil { // DR: the reals answer the client directly (below)
				err = rs.IP("route", "add", "10.83.0.0/24", "via", "10.81.0.9")
			}
		} else {
			err = rs.IP("route", "add", "default", "via", "10.82.0.1")
		}
		if err != nil {
			return nil, err
		}
		if err := rs.Sysctl("net.core.somaxconn", "4096"); err != nil {
			return nil, err
		}
		srv, err := testutil.ServeFloodTarget(rs, 80)
		if err != nil {
			return nil, err
		}
		f.servers = append(f.servers, srv)
	}
	return f, nil
}

// addSink links the attacker to the director's namespace twice more:
// sinka-sinkb, whose director end drops every frame in XDP (the control
// trial floods it, so that the generator runs as in any other trial but
// nothing of the director, or of its ring, is in its path), and
// shda-shdb, where the DR subject's director alone receives the flood
// whose shed rate is measured.
func (f *floodLab) addSink(atk *testutil.Host) error {
	dir := f.lab.Director
	for _, l := range [][2]string{{"sinka", "sinkb"}, {"shda", "shdb"}} {
		if err := atk.IP("link", "add", l[0], "type", "veth", "peer", "name", l[1], "netns", dir.Name); err != nil {
			return err
		}
		if err := atk.IP("link", "set", l[0], "up"); err != nil {
			return err
		}
		if err := dir.IP("link", "set", l[1], "up"); err != nil {
			return err
		}
	}
	shd, err := dir.Interface("shdb")
	if err != nil {
		return err
	}
	f.shedMAC = shd.HardwareAddr
	return dir.Do(func() error {
		ifc, err := net.InterfaceByName("sinkb")
		if err != nil {
			return err
		}
		f.sinkMAC = ifc.HardwareAddr
		if f.sinkProgs, err = loadgen.Open(loadgen.Options{}); err != nil {
			return err
		}
		// Detached by sinkProgs.Close.
		_, err = f.sinkProgs.AttachSink(ifc.Index)
		return err
	})
}

func (f *floodLab) Close() error {
	for _, s := range f.servers {
		s.Close()
	}
	var err error
	if f.sinkProgs != nil {
		err = f.sinkProgs.Close()
	}
	if f.lab == nil {
		return err
	}
	return errors.Join(err, f.lab.Close())
}

// A floodLoad is one flood a subject is measured under.
type floodLoad struct {
	name string
	// rate paces the generator (0: its full rate).
	rate int
	// tool is testutil.ToolHping3, or "" for testutil.NewSYNFlood's
	// sender (live frames, else AF_XDP).
	tool string
	// sink sends the flood into the control's sink instead of the
	// director.
	sink bool
}

// floodLoads are the floods: the generator's full rate (one vCPU: live
// frames, millions of SYNs per second, where the kernel allows them, else
// an AF_XDP sender, about 1M SYN/s), the same paced at 100k SYN/s, and
// hping3 -S --flood --rand-source at its full rate (the tool the issue's
// flood was made with).
func floodLoads(o Options) []floodLoad {
	if o.Quick {
		return []floodLoad{{name: "max"}, {name: "hping3", tool: testutil.ToolHping3}}
	}
	return []floodLoad{{name: "max"}, {name: "100k", rate: 100_000}, {name: "hping3", tool: testutil.ToolHping3}}
}

// trial runs one FloodTrial to vip under load and records it as subject.
func (f *floodLab) trial(r *Report, o Options, run int, subject string, vip netip.Addr, load floodLoad, probe func() error) error {
	if load.tool != "" && !installed(load.tool) {
		return nil // Missing() reported it
	}
	ifc, err := f.lab.Director.Interface("atk0")
	if err != nil {
		return err
	}
	ft := testutil.FloodTrial{Client: f.lab.Attacker, Target: netip.AddrPortFrom(vip, 80), Attacker: f.lab.Attacker,
		NextHop: ifc.HardwareAddr, SpoofBase: netip.MustParseAddr("198.18.0.0"), Conns: o.FloodConns, Parallel: 10,
		Timeout: 2 * time.Second, Stream: true, Probe: probe, Rate: load.rate, Tool: load.tool}
	if load.sink {
		ft.FloodIface, ft.NextHop = "sinka", f.sinkMAC
	}
	res, err := ft.Run()
	if err != nil && strings.HasPrefix(err.Error(), "download: ") {
		// The subject may still be taking the last trial's flood in
		// (an undefended one lets all of it through to the reals): once
		// more after a pause, then a failed check, and the next trial.
		o.logf("flood, %s@%s: %v; again in 10 s", subject, load.name, err)
		time.Sleep(10 * time.Second)
		if res, err = ft.Run(); err != nil && strings.HasPrefix(err.Error(), "download: ") {
			r.check(fmt.Sprintf("flood %s@%s: the download connects before the flood", subject, load.name), false,
				"twice, 10 s apart, after the trial before: %v", err)
			return nil
		}
	}
	if err != nil {
		return err
	}
	subject += "@" + load.name
	o.logf("flood, %s: %s", subject, res)
	add := func(what, unit string, v float64) *Result {
		x := r.sample(Result{Key: "flood/" + subject + "/" + what, Scenario: "flood", Subject: subject + " " + what, Unit: unit, Generator: res.Generator}, run, v)
		x.Detail["flood_syn_per_s"] = int(res.FloodRate())
		return x
	}
	add("served", UnitPct, 100*float64(res.Served)/float64(max(res.Tried, 1))).Detail["of"] = res.Tried
	add("connect-p99", UnitMsWall, float64(res.ConnectP99)/1e6)
	add("download-kept", UnitPct, 100*res.StreamRatio())
	add("flood-rate", UnitSYNs, res.FloodRate())
	// The frames the director's receive ring on the client's link had
	// no room for: the generator's, and the client host's own.
	switch {
	case res.RingShared:
		add("ring-refused-flood+client", UnitPkts, float64(res.ClientRefused))
	case load.tool == "" && !load.sink:
		add("ring-refused-flood", UnitPkts, float64(res.RingRefused))
		fallthrough
	default:
		add("ring-refused-client", UnitPkts, float64(res.ClientRefused))
	}
	if probe != nil {
		add("xipvsadm-Ln", UnitMsWall, float64(res.ProbeMax)/1e6)
	}
	return nil
}

// run measures every subject once.
func (f *floodLab) run(r *Report, o Options, run int, work string) error {
	dir := f.lab.Director
	nat := floodNATVIP.String() + ":80"
	dr := floodDRVIP.String() + ":80"
	for _, s := range []struct {
		name   string
		vip    netip.Addr
		daemon []string
		rules  [][]string
	}{
		{"xipvs-nat-synproxy", floodNATVIP, nil, [][]string{{"-A", "-t", nat, "-s", "wlc", "-j", "enable"},
			{"-a", "-t", nat, "-r", "10.82.0.13:80", "-m"}, {"-a", "-t", nat, "-r", "10.82.0.14:80", "-m"}}},
		{"xipvs-nat-undefended", floodNATVIP, []string{"--synproxy-auto=false"}, [][]string{{"-A", "-t", nat, "-s", "wlc"},
			{"-a", "-t", nat, "-r", "10.82.0.13:80", "-m"}, {"-a", "-t", nat, "-r", "10.82.0.14:80", "-m"}}},
		{"xipvs-dr-admission", floodDRVIP, []string{"--admit-rate", "1000"}, [][]string{{"-A", "-t", dr, "-s", "rr"},
			{"-a", "-t", dr, "-r", "10.81.0.11", "-g"}, {"-a", "-t", dr, "-r", "10.81.0.12", "-g"}}},
		{"xipvs-dr-undefended", floodDRVIP, nil, [][]string{{"-A", "-t", dr, "-s", "rr"},
			{"-a", "-t", dr, "-r", "10.81.0.11", "-g"}, {"-a", "-t", dr, "-r", "10.81.0.12", "-g"}}},
	} {
		ifaces := "eth0,eth1,atk0"
		if s.name == "xipvs-dr-admission" {
			ifaces += ",shdb"
		}
		x, err := startXipvs(dir.Netns, o, work, "flood", false, ifaces, s.daemon...)
		if err != nil {
			return err
		}
		err = func() error {
			for _, rule := range s.rules {
				if err := x.run(rule...); err != nil {
					return err
				}
			}
			// The client completes a few handshakes first: a source seen
			// before the flood.
			if err := f.warm(s.vip); err != nil {
				return err
			}
			for _, load := range floodLoads(o) {
				if err := f.trial(r, o, run, s.name, s.vip, load, func() error { return x.run("-Ln") }); err != nil {
					return err
				}
			}
			if s.name == "xipvs-dr-admission" {
				// The control: the trial as above, the download through
				// this director, while the generator floods the sink at
				// its full rate.
				if err := f.trial(r, o, run, "sink-control", s.vip, floodLoad{name: "max", sink: true}, func() error { return x.run("-Ln") }); err != nil {
					return err
				}
				return f.shedRates(r, o, run, s.vip)
			}
			return nil
		}()
		if err != nil {
			err = fmt.Errorf("%s: %w\nxipvsd log:\n%s", s.name, err, x.d.Logs())
		}
		x.stop()
		if err != nil {
			return err
		}
	}
	if !installed("nft") {
		return nil
	}
	// nftables: the director's stack takes the flood (a pass program on
	// atk0 lets the generator's frames in).
	atk, err := dir.Interface("atk0")
	if err != nil {
		return err
	}
	if err := dir.Do(func() error { return pass.Attach(atk.Index) }); err != nil {
		return err
	}
	defer dir.IP("link", "set", "dev", "atk0", "xdp", "off")
	if err := nft(dir.Netns, fmt.Sprintf(nftTCP, floodNATVIP, "10.82.0.13", "10.82.0.14")); err != nil {
		return err
	}
	defer dir.Exec("nft", "delete", "table", "ip", "xipvs_bench").Run()
	if err := f.warm(floodNATVIP); err != nil {
		return err
	}
	for _, load := range floodLoads(o) {
		if err := f.trial(r, o, run, "nftables", floodNATVIP, load, nil); err != nil {
			return err
		}
	}
	return nil
}

// shedRates measures how fast one vCPU floods and sheds: the generator
// at its full rate into the director's program with admission control
// (on the shed link, nothing else crossing it; the receiving XDP runs in
// the generator's own softirq, so the rate is what one vCPU does for
// both), and the same into the program that drops every frame unread,
// alternately. Their ratio is what the director's shedding costs beside
// the floor any XDP program pays on this link.
func (f *floodLab) shedRates(r *Report, o Options, run int, vip netip.Addr) error {
	atk := f.lab.Attacker
	targets := []struct {
		subject, iface string
		mac            net.HardwareAddr
	}{{"xipvs-dr-admission", "shda", f.shedMAC}, {"drop-all", "sinka", f.sinkMAC}}
	floods := make([]*testutil.SYNFlood, len(targets))
	defer func() {
		for _, fl := range floods {
			if fl != nil {
				fl.Close()
			}
		}
	}()
	for i, t := range targets {
		var err error
		if floods[i], err = testutil.NewSYNFloodOn(atk, t.iface, t.mac, netip.AddrPortFrom(vip, 80), netip.MustParseAddr("198.18.0.0")); err != nil {
			return err
		}
	}
	samples, length := 3, time.Second
	if o.Quick {
		samples, length = 1, 200*time.Millisecond
	}
	for i := 0; i < samples; i++ {
		for j, t := range targets {
			fl := floods[j]
			n0, err := fl.Sent()
			if err != nil {
				return err
			}
			start := time.Now()
			for time.Since(start) < length {
				if err := fl.Send(1 << 18); err != nil {
					return err
				}
			}
			n1, err := fl.Sent()
			if err != nil {
				return err
			}
			mpps := float64(n1-n0) / time.Since(start).Seconds() / 1e6
			o.logf("flood, one vCPU floods and sheds: %s %.2f Mpps", t.subject, mpps)
			r.sample(Result{Key: "flood/shed/" + t.subject, Scenario: "flood", Subject: "one vCPU floods and sheds: " + t.subject, Unit: UnitMpps, Generator: string(fl.Method())}, run, mpps)
		}
	}
	return nil
}

// warm makes a few connections from the client to vip.
func (f *floodLab) warm(vip netip.Addr) error {
	hc := f.lab.Attacker.HTTPClient(5 * time.Second)
	for i := 0; i < 3; i++ {
		resp, err := hc.Get(fmt.Sprintf("http://%s/", vip))
		if err != nil {
			return fmt.Errorf("before the flood: %w", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return nil
}
