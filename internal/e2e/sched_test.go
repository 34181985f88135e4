package e2e

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xipvs/xipvs/internal/api"
	"github.com/xipvs/xipvs/sched"
)

// TestSchedulersInXDP: lc, wlc, sed, nq, fo and ovf services (DR, IPv4
// and IPv6, reals weighted 1 and 2) take real HTTP connections, each
// scheduled in XDP from the lookahead (fo: the cycle) Go installed, and in
// the very order the kernel's scheduler of that name picks them when
// each pick counts as a new connection (the sweep is held off, so no
// recount from the table moves the counts between them): wlc 1:2 by
// weight, lc alternating, sed all on the heavier real and nq all on the
// first idle one (every finished connection is inactive, and these two
// count active ones only), fo and ovf all on the heavier real (ovf
// overflows on active connections); wlc with an upper threshold (-x 4) on
// the heavier real overloads it at its fourth connection. sh and mh (with sh-port, mh-port)
// send each connection where the kernel's hash of its source sends it;
// twos spreads them over both reals from Go's random draws; dh sends
// them all where the kernel's hash of the VIP does. Not one new flow goes
// to the Go slow path, but lblc's and lblcr's first to each VIP (which
// makes the VIP's entry; XDP follows it from there).
func TestSchedulersInXDP(t *testing.T) {
	lab := newDRLab(t, "lcx", "--sweep-interval", "1h")
	vip6 := addDR6(t, lab, true)
	lab.serveEcho(t, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93)
	reals := map[netip.Addr][2]string{
		lab.vip: {"10.77.0.11", "10.77.0.12"},
		vip6:    {"[fd77::11]", "[fd77::12]"},
	}
	names := map[string]string{"10.77.0.11": "rs1", "10.77.0.12": "rs2", "[fd77::11]": "rs1", "[fd77::12]": "rs2"}
	before, err := api.NewClient(lab.Socket).Info()
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"lc", "wlc", "sed", "nq", "fo", "ovf"} {
		port := uint16(81 + i)
		for vip, rs := range reals {
			vs := netip.AddrPortFrom(vip, port)
			lab.adm(t, "-A", "-t", vs.String(), "-s", name)
			for w, r := range rs {
				lab.adm(t, "-a", "-t", vs.String(), "-r", fmt.Sprintf("%s:%d", r, port), "-g", "-w", fmt.Sprint(w+1))
			}
			// The kernel's scheduler over the same list (newest first),
			// each pick counted.
			ref, _ := sched.New(name)
			list := []*sched.Dest{{ID: 2, Weight: 2, LastWeight: 2}, {ID: 1, Weight: 1, LastWeight: 1}}
			ref.Update(list)
			var want, got []string
			for n := 0; n < 12; n++ {
				d := ref.Schedule(sched.Flow{})
				d.InactConns++
				ref.Changed(d)
				want = append(want, names[rs[d.ID-1]])
				who, _, _ := lab.askAt(t, vs)
				got = append(got, who)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s on %v: the connections went to %v, the kernel's %s picks %v", name, vs, got, name, want)
			}
		}
	}
	// sh and mh with their port flags: each connection hashed by its own
	// source port, as the kernel hashes it.
	for i, name := range []string{"sh", "mh"} {
		port := uint16(87 + i)
		for vip, rs := range reals {
			vs := netip.AddrPortFrom(vip, port)
			lab.adm(t, "-A", "-t", vs.String(), "-s", name, "-b", name+"-port")
			for w, r := range rs {
				lab.adm(t, "-a", "-t", vs.String(), "-r", fmt.Sprintf("%s:%d", r, port), "-g", "-w", fmt.Sprint(w+1))
			}
			ref, _ := sched.New(name)
			ref.(sched.Flagged).SetFlags(sched.FlagPort)
			ref.Update([]*sched.Dest{{ID: 2, Addr: mustAddr(rs[1]), Port: port, Weight: 2, LastWeight: 2}, {ID: 1, Addr: mustAddr(rs[0]), Port: port, Weight: 1, LastWeight: 1}})
			got := map[string]int{}
			for n := 0; n < 12; n++ {
				who, _, local := lab.askAt(t, vs)
				d := ref.Schedule(sched.Flow{Src: local.Addr(), Dst: vip, SrcPort: local.Port(), DstPort: port, Proto: 6})
				if want := names[rs[d.ID-1]]; who != want {
					t.Errorf("%s on %v: the connection from %v went to %s, the kernel's %s picks %s", name, vs, local, who, name, want)
				}
				got[who]++
			}
			t.Logf("%s on %v: %v", name, vs, got)
		}
	}
	// wlc with an upper threshold on the heavier real (-x 4): the pick
	// that reaches it overloads it, and the rest go to the other.
	for vip, rs := range reals {
		vs := netip.AddrPortFrom(vip, 90)
		lab.adm(t, "-A", "-t", vs.String(), "-s", "wlc")
		lab.adm(t, "-a", "-t", vs.String(), "-r", rs[0]+":90", "-g", "-w", "1")
		lab.adm(t, "-a", "-t", vs.String(), "-r", rs[1]+":90", "-g", "-w", "2", "-x", "4")
		ref, _ := sched.New("wlc")
		ref.Update([]*sched.Dest{{ID: 2, Weight: 2, LastWeight: 2, UThreshold: 4}, {ID: 1, Weight: 1, LastWeight: 1}})
		var want, got []string
		for n := 0; n < 12; n++ {
			d := ref.Schedule(sched.Flow{})
			d.InactConns++
			if d.UThreshold != 0 && d.InactConns >= d.UThreshold {
				d.Overloaded = true
			}
			ref.Changed(d)
			want = append(want, names[rs[d.ID-1]])
			who, _, _ := lab.askAt(t, vs)
			got = append(got, who)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("wlc -x 4 on %v: the connections went to %v, the kernel's wlc picks %v", vs, got, want)
		}
		if n := strings.Count(fmt.Sprint(got), "rs2"); n != 4 {
			t.Errorf("wlc -x 4 on %v: %d connections on the real with the threshold", vs, n)
		}
	}
	// spread adds a service of scheduler name on vs, the reals weighted
	// 1 and 2, and says where 12 connections went.
	spread := func(vs netip.AddrPort, name string, rs [2]string) map[string]int {
		lab.adm(t, "-A", "-t", vs.String(), "-s", name)
		for w, r := range rs {
			lab.adm(t, "-a", "-t", vs.String(), "-r", fmt.Sprintf("%s:%d", r, vs.Port()), "-g", "-w", fmt.Sprint(w+1))
		}
		got := map[string]int{}
		for n := 0; n < 12; n++ {
			who, _, _ := lab.askAt(t, vs)
			got[who]++
		}
		return got
	}
	// twos: random, so only where they went; two random choices of
	// which the less loaded wins put 12 connections on both reals.
	for vip, rs := range reals {
		vs := netip.AddrPortFrom(vip, 89)
		got := spread(vs, "twos", rs)
		if got["rs1"] == 0 || got["rs2"] == 0 || got["rs1"]+got["rs2"] != 12 {
			t.Errorf("twos on %v: %v", vs, got)
		}
		t.Logf("twos on %v: %v", vs, got)
	}
	// dh: every connection to one VIP goes where the kernel's hash of
	// that destination sends it.
	for vip, rs := range reals {
		vs := netip.AddrPortFrom(vip, 93)
		got := spread(vs, "dh", rs)
		ref, _ := sched.New("dh")
		ref.Update([]*sched.Dest{{ID: 2, Addr: mustAddr(rs[1]), Port: 93, Weight: 2, LastWeight: 2}, {ID: 1, Addr: mustAddr(rs[0]), Port: 93, Weight: 1, LastWeight: 1}})
		if want := names[rs[ref.Schedule(sched.Flow{Dst: vip, DstPort: 93, Proto: 6}).ID-1]]; got[want] != 12 {
			t.Errorf("dh on %v: %v, want all 12 on %s", vs, got, want)
		}
	}
	mid, err := api.NewClient(lab.Socket).Info()
	if err != nil {
		t.Fatal(err)
	}
	if n := mid.Counters["slow_new_conns"] - before.Counters["slow_new_conns"]; n != 0 {
		t.Errorf("%d new flows scheduled by the slow path, want none", n)
	}
	// lblc: the VIP's first connection makes its entry in Go (wlc's pick:
	// the heavier real, first in the list), XDP sends the next 11 after
	// it.
	for vip, rs := range reals {
		for i, name := range []string{"lblc", "lblcr"} {
			vs := netip.AddrPortFrom(vip, uint16(91+i))
			if got := spread(vs, name, rs); got["rs2"] != 12 {
				t.Errorf("%s on %v: %v, want all 12 on rs2", name, vs, got)
			}
		}
	}
	after, err := api.NewClient(lab.Socket).Info()
	if err != nil {
		t.Fatal(err)
	}
	if n := after.Counters["slow_new_conns"] - mid.Counters["slow_new_conns"]; n != 4 {
		t.Errorf("lblc, lblcr: %d new flows scheduled by the slow path, want 4 (each service's first)", n)
	}
	if n := after.Counters["xdp_forward"] - before.Counters["xdp_forward"]; n < 312 {
		t.Errorf("XDP forwarded %d packets for 312 connections", n)
	}
}

// mustAddr is a real's address as -r writes it ("[fd77::11]" for IPv6).
func mustAddr(s string) netip.Addr {
	if s[0] == '[' {
		s = s[1 : len(s)-1]
	}
	return netip.MustParseAddr(s)
}

// TestPersistenceInXDP: a persistent wlc service (-p 300, ipvsadm's
// usual), IPv4 and IPv6 over DR: 1000 new connections of one client all
// reach one real, scheduled in XDP from the client's template (the first
// from the lookahead, which made the template), none by the slow path;
// and the templates, in the pinned maps, survive a kill -9 and restart
// of xipvsd: the next connection goes to the same real.
func TestPersistenceInXDP(t *testing.T) {
	pins := filepath.Join(mountBPFFS(t), "xipvs")
	lab := newDRLab(t, "pxd", "--pin-dir", pins)
	vip6 := addDR6(t, lab, true)
	lab.serveEcho(t, 80)
	before, err := api.NewClient(lab.Socket).Info()
	if err != nil {
		t.Fatal(err)
	}
	first := map[netip.Addr]string{}
	for _, vs := range []netip.AddrPort{netip.AddrPortFrom(lab.vip, 80), netip.AddrPortFrom(vip6, 80)} {
		lab.adm(t, "-A", "-t", vs.String(), "-s", "wlc", "-p", "300")
		rs := []string{"10.77.0.11", "10.77.0.12"}
		if vs.Addr().Is6() {
			rs = []string{"[fd77::11]", "[fd77::12]"}
		}
		for _, r := range rs {
			lab.adm(t, "-a", "-t", vs.String(), "-r", r+":80", "-g")
		}
		got := map[string]int{}
		for n := 0; n < 1000; n++ {
			who, _, _ := lab.askAt(t, vs)
			got[who]++
		}
		if len(got) != 1 {
			t.Errorf("%v: one client's 1000 connections went to %v, want one real", vs, got)
		}
		for who := range got {
			first[vs.Addr()] = who
		}
	}
	after, err := api.NewClient(lab.Socket).Info()
	if err != nil {
		t.Fatal(err)
	}
	if n := after.Counters["slow_new_conns"] - before.Counters["slow_new_conns"]; n != 0 {
		t.Errorf("%d of 2000 persistent connections scheduled by the slow path, want none", n)
	}
	if out := lab.adm(t, "-Ln"); !strings.Contains(out, "persistent 300") {
		t.Errorf("-Ln:\n%s", out)
	}
	// The templates live in the pinned maps: a restarted xipvsd keeps
	// the clients where they were.
	lab.Daemon.Kill()
	lab.start(t)
	for vip, who := range first {
		if got, _, _ := lab.askAt(t, netip.AddrPortFrom(vip, 80)); got != who {
			t.Errorf("%v after a restart: to %s, its template says %s", vip, got, who)
		}
	}
}

// TestSchedulersNATAndFULLNAT: every scheduler, over NAT and FULLNAT,
// IPv4 and IPv6, takes real HTTP connections scheduled in XDP (DR:
// TestSchedulersInXDP, TestPersistenceInXDP and the rr and wrr tests):
// the reals (weighted 1 and 2) see the client (NAT) or the local address
// (FULLNAT, a port from the service's ring), and the order of the connections is
// the kernel scheduler's for the ones whose picks follow from the
// arrivals alone (rr, wrr, lc, wlc, sed, nq, fo, ovf: each pick counted,
// the sweep held off). Not one new flow goes to the slow path but lblc's
// and lblcr's first to each service, which makes the VIP's entry; and a
// wlc service with an upper threshold of 2 on the heavier real (a room in
// XDP) sends it two connections, the rest to the other.
func TestSchedulersNATAndFULLNAT(t *testing.T) {
	lab, vip6 := newModeLab6(t, "snf", labPlan{outside: "10.91.0", inside: "10.98.0", realsGateway: "10.98.0.1",
		daemonArgs: []string{"--sweep-interval", "1h"}}, "fd91", "fd98", true)
	lip4, lip6 := "10.98.0.250", "fd98::250"
	if err := lab.lb.IP("addr", "add", lip4+"/32", "dev", "eth1"); err != nil {
		t.Fatal(err)
	}
	addr6(t, lab.lb, "eth1", lip6+"/128")
	// Each service's reals listen on a port of its own: the client's
	// kernel may take one source port for two VIPs, which NAT would make
	// one tuple at the real.
	schedPorts := make([]int, 0, 64)
	for p := 8001; p <= 8064; p++ {
		schedPorts = append(schedPorts, p)
	}
	lab.serveEcho(t, schedPorts...)
	reals := map[netip.Addr][2]string{lab.vip: {"10.98.0.11", "10.98.0.12"}, vip6: {"[fd98::11]", "[fd98::12]"}}
	lips := map[netip.Addr]string{lab.vip: lip4, vip6: lip6}
	names := map[string]string{"10.98.0.11": "rs1", "10.98.0.12": "rs2", "[fd98::11]": "rs1", "[fd98::12]": "rs2"}
	ordered := map[string]bool{"rr": true, "wrr": true, "lc": true, "wlc": true, "sed": true, "nq": true, "fo": true, "ovf": true}
	schedulers := []string{"rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "twos", "sh", "dh", "mh", "lblc", "lblcr", "wlc -p 300", "wlc -x"}
	before, err := api.NewClient(lab.Socket).Info()
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(1000)
	firsts := 0
	for _, fwd := range []string{"-m", "-b"} {
		for _, name := range schedulers {
			for vip, rs := range reals {
				port++
				vs := netip.AddrPortFrom(vip, port)
				args := strings.Fields(strings.TrimSuffix(name, " -x")) // -x is the real's
				lab.adm(t, append([]string{"-A", "-t", vs.String(), "-s", args[0]}, args[1:]...)...)
				if fwd == "-b" {
					lab.adm(t, "--add-laddr", "-z", lips[vip], "-t", vs.String())
				}
				for w, r := range rs {
					line := []string{"-a", "-t", vs.String(), "-r", fmt.Sprintf("%s:%d", r, 7000+int(port)), fwd, "-w", fmt.Sprint(w + 1)}
					if name == "wlc -x" && w == 1 {
						line = append(line, "-x", "2")
					}
					lab.adm(t, line...)
				}
				if strings.HasPrefix(name, "lblc") {
					firsts++
				}
				// The kernel's scheduler given the reals as they were
				// added (newest first; wrr keeps its current weight).
				ref, _ := sched.New(args[0])
				d1, d2 := &sched.Dest{ID: 1, Weight: 1, LastWeight: 1}, &sched.Dest{ID: 2, Weight: 2, LastWeight: 2}
				ref.Update([]*sched.Dest{d1})
				ref.Update([]*sched.Dest{d2, d1})
				var got, want []string
				for n := 0; n < 6; n++ {
					who, seen, local := lab.askAt(t, vs)
					got = append(got, who)
					if fwd != "-b" && seen != local.String() {
						t.Errorf("%s %s on %v: %s saw %s, want the client %v", name, fwd, vs, who, seen, local)
					}
					if from, err := netip.ParseAddrPort(seen); fwd == "-b" && (err != nil || from.Addr().String() != lips[vip]) {
						t.Errorf("%s FULLNAT on %v: %s saw %s, want the local address %s", name, vs, who, seen, lips[vip])
					}
					if ordered[name] {
						d := ref.Schedule(sched.Flow{})
						d.InactConns++
						ref.Changed(d)
						want = append(want, names[rs[d.ID-1]])
					}
				}
				if ordered[name] && fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("%s %s on %v: the connections went to %v, the kernel's %s picks %v", name, fwd, vs, got, name, want)
				}
				if name == "wlc -x" {
					if n := strings.Count(fmt.Sprint(got), "rs2"); n != 2 {
						t.Errorf("wlc -x 2 %s on %v: %d connections on the real with the threshold, want 2: %v", fwd, vs, n, got)
					}
				}
				if name == "wlc -p 300" && strings.Count(fmt.Sprint(got), got[0]) != len(got) {
					t.Errorf("wlc -p 300 %s on %v: one client's connections went to %v, want one real", fwd, vs, got)
				}
			}
		}
	}
	after, err := api.NewClient(lab.Socket).Info()
	if err != nil {
		t.Fatal(err)
	}
	if n := after.Counters["slow_new_conns"] - before.Counters["slow_new_conns"]; n != uint64(firsts) {
		t.Errorf("%d new flows scheduled by the slow path, want %d (lblc's and lblcr's first to each service)", n, firsts)
	}
}
