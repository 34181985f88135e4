package e2e

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xipvs/xipvs/internal/api"
	"github.com/xipvs/xipvs/internal/testutil"
)

// IPv6 end to end: the labs of the IPv4 tests with IPv6 addresses added
// (no duplicate address detection, so they are usable at once).

func addr6(t *testing.T, h *testutil.Host, dev, prefix string) {
	t.Helper()
	if err := h.IP("-6", "addr", "add", prefix, "dev", dev, "nodad"); err != nil {
		t.Fatal(err)
	}
}

// vip6On puts an IPv6 VIP on the director as /128 with preferred_lft 0,
// as an IPv6 director needs it: a deprecated address is never chosen as
// a source, so health checks and tunnel headers leave from the director's
// own address, not from the VIP (which a DR or TUN real holds itself).
func vip6On(t *testing.T, h *testutil.Host, dev string, vip netip.Addr) {
	t.Helper()
	if err := h.IP("-6", "addr", "add", vip.String()+"/128", "dev", dev, "nodad", "preferred_lft", "0"); err != nil {
		t.Fatal(err)
	}
}

// addDR6 puts IPv6 on a DR lab's segment: the client at fd77::1, the
// director at fd77::2 with the VIP fd77::100, the reals at fd77::11 and
// fd77::12, and with vipOnLo the VIP on the reals' lo (a DR real; TUN
// reals are prepared by xipvsadm realserver instead).
func addDR6(t *testing.T, lab *drLab, vipOnLo bool) netip.Addr {
	t.Helper()
	vip := netip.MustParseAddr("fd77::100")
	addr6(t, lab.cl, "eth0", "fd77::1/64")
	addr6(t, lab.lb, "eth0", "fd77::2/64")
	vip6On(t, lab.lb, "eth0", vip)
	for i, rs := range lab.rs {
		addr6(t, rs, "eth0", fmt.Sprintf("fd77::%d/64", 11+i))
		if vipOnLo {
			addr6(t, rs, "lo", vip.String()+"/128")
		}
	}
	return vip
}

// newModeLab6 is newModeLab with IPv6 on it: the client at out::1, the
// director at out::2 with the VIP out::100 on eth0 and at in::1 on eth1,
// the reals at in::11 and in::12; with gateway, the reals' default route
// is the director (NAT).
func newModeLab6(t *testing.T, tag string, plan labPlan, out, in string, gateway bool) (*modeLab, netip.Addr) {
	t.Helper()
	lab := newModeLab(t, tag, plan)
	vip := netip.MustParseAddr(out + "::100")
	addr6(t, lab.cl, "eth0", out+"::1/64")
	addr6(t, lab.lb, "eth0", out+"::2/64")
	vip6On(t, lab.lb, "eth0", vip)
	addr6(t, lab.lb, "eth1", in+"::1/64")
	for i, rs := range lab.rs {
		addr6(t, rs, "eth0", fmt.Sprintf("%s::%d/64", in, 11+i))
		if !gateway {
			continue
		}
		if err := rs.IP("-6", "route", "add", "default", "via", in+"::1"); err != nil {
			t.Fatal(err)
		}
	}
	return lab, vip
}

// askEach asks vs n times on new connections and counts the answers by
// real; every real must have seen the client's own address.
func askEach(t *testing.T, lab *drLab, vs netip.AddrPort, n int) map[string]int {
	t.Helper()
	count := map[string]int{}
	for i := 0; i < n; i++ {
		name, seen, local := lab.askAt(t, vs)
		count[name]++
		if seen != local.String() {
			t.Errorf("%s saw %s, want the client %s", name, seen, local)
		}
	}
	return count
}

// TestIPv6DR: an IPv6 VIP balanced by direct routing over one segment,
// TCP and UDP, rr 5/5 and wrr 3:1; the reals hold the VIP on lo (the
// kernel answers neighbour solicitations only for addresses of the
// receiving interface, so nothing like arp_ignore is needed).
func TestIPv6DR(t *testing.T) {
	lab := newDRLab(t, "v6dr")
	vip := addDR6(t, lab, true)
	lab.serveEcho(t, 80)
	lab.serveUDPEcho(t, vip, 80) // from the VIP, as a DR real must answer
	vs := "[" + vip.String() + "]:80"
	at := netip.AddrPortFrom(vip, 80)
	lab.adm(t, "-A", "-t", vs, "-s", "rr")
	lab.adm(t, "-a", "-t", vs, "-r", "[fd77::11]:80", "-g")
	lab.adm(t, "-a", "-t", vs, "-r", "[fd77::12]:80", "-g")
	if count := askEach(t, lab, at, 10); count["rs1"] != 5 || count["rs2"] != 5 {
		t.Errorf("rr over two IPv6 DR reals: %v, want 5/5", count)
	}
	list := lab.adm(t, "-Ln")
	if !strings.Contains(list, "TCP  "+vs+" rr\n") || !strings.Contains(list, destLine("[fd77::11]:80", "Route", 1)) {
		t.Errorf("-Ln:\n%s", list)
	}

	// wrr 3:1 after an edit.
	lab.adm(t, "-E", "-t", vs, "-s", "wrr")
	lab.adm(t, "-e", "-t", vs, "-r", "[fd77::11]:80", "-g", "-w", "3")
	if count := askEach(t, lab, at, 8); count["rs1"] != 6 || count["rs2"] != 2 {
		t.Errorf("wrr 3:1 over two IPv6 DR reals: %v, want 6/2", count)
	}

	us := "[" + vip.String() + "]:80"
	lab.adm(t, "-A", "-u", us, "-s", "rr")
	lab.adm(t, "-a", "-u", us, "-r", "[fd77::11]", "-g")
	lab.adm(t, "-a", "-u", us, "-r", "[fd77::12]", "-g")
	ucount := map[string]int{}
	for i := 0; i < 4; i++ {
		ucount[strings.Fields(lab.udpAskAt(t, at))[0]]++
	}
	if ucount["rs1"] != 2 || ucount["rs2"] != 2 {
		t.Errorf("UDP rr over two IPv6 DR reals: %v", ucount)
	}
	conns := lab.adm(t, "-Lnc")
	if !strings.Contains(conns, "[fd77::1]:") || !strings.Contains(conns, vs) {
		t.Errorf("-Lnc lists no IPv6 connection:\n%s", conns)
	}
	// Mixed families are refused with nothing changed.
	if out, err := lab.Adm(xipvsadmBin, "-a", "-t", vs, "-r", "10.77.0.11:80", "-g"); err == nil {
		t.Errorf("an IPv4 real on an IPv6 service was accepted: %s", out)
	}

	// Persistence with -M 64: two clients of one /64 share a template,
	// a client of another /64 gets a template of its own from rr.
	addr6(t, lab.cl, "eth0", "fd77::ffff:1/64")
	addr6(t, lab.cl, "eth0", "fd78::1/64")
	for _, h := range append([]*testutil.Host{lab.lb}, lab.rs...) {
		if err := h.IP("-6", "route", "add", "fd78::/64", "dev", "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	lab.adm(t, "-E", "-t", vs, "-s", "rr", "-p", "600", "-M", "64")
	lab.adm(t, "-e", "-t", vs, "-r", "[fd77::11]:80", "-g", "-w", "1")
	if list := lab.adm(t, "-Ln"); !strings.Contains(list, "TCP  "+vs+" rr persistent 600 mask 64\n") {
		t.Errorf("-Ln:\n%s", list)
	}
	byReal := func(src string) map[string]int {
		count := map[string]int{}
		for i := 0; i < 3; i++ {
			body, local := lab.getFrom(t, netip.MustParseAddr(src), at, nil)
			if local.Addr().String() != src {
				t.Fatalf("connected from %v, want %s", local, src)
			}
			count[strings.Fields(body)[0]]++
		}
		return count
	}
	a, b, other := byReal("fd77::1"), byReal("fd77::ffff:1"), byReal("fd78::1")
	if len(a) != 1 || len(b) != 1 || len(other) != 1 {
		t.Fatalf("persistence -M 64 split a client's connections: %v %v %v", a, b, other)
	}
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("two clients of one /64 went to different reals: %v, %v", a, b)
	}
	if fmt.Sprint(a) == fmt.Sprint(other) {
		t.Errorf("a client of another /64 shared the template: %v, %v", a, other)
	}

	// Health checks reach IPv6 reals: rs2 checked on a closed port goes
	// down and takes no new flows; -L --health names it.
	lab.adm(t, "-E", "-t", vs, "-s", "rr", "--check", "tcp", "--check-interval", "0.3", "--check-timeout", "0.2",
		"--rise", "2", "--fall", "2")
	// (A real's own check replaces the service's, defaults and all.)
	lab.adm(t, "-e", "-t", vs, "-r", "[fd77::12]:80", "-g", "--check", "tcp", "--check-port", "9",
		"--check-interval", "0.3", "--check-timeout", "0.2", "--rise", "2", "--fall", "2")
	deadline := time.Now().Add(5 * time.Second)
	down := func() bool {
		for _, l := range strings.Split(lab.adm(t, "-L", "-n", "--health"), "\n") {
			if strings.Contains(l, "[fd77::12]:80") && strings.Contains(l, "DOWN") {
				return true
			}
		}
		return false
	}
	for !down() && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if health := lab.adm(t, "-L", "-n", "--health"); !down() || strings.Count(health, "DOWN") != 1 {
		t.Fatalf("--health, want only rs2 down:\n%s", health)
	}
	if count := askEach(t, lab, at, 4); count["rs1"] != 4 {
		t.Errorf("with rs2 down, new IPv6 flows went to %v, want rs1 only", count)
	}
}

// TestIPv6NAT: NAT over IPv6 through the director's second interface,
// with port mapping, TCP and UDP; the real sees the client's address and
// the client gets its answers from the VIP.
func TestIPv6NAT(t *testing.T) {
	lab, vip := newModeLab6(t, "nat6", labPlan{outside: "10.82.0", inside: "10.83.0"}, "fd82", "fd83", true)
	lab.serveEcho(t, 8080)
	lab.serveUDPEcho(t, netip.IPv6Unspecified(), 8080)
	vs := "[" + vip.String() + "]:80"
	at := netip.AddrPortFrom(vip, 80)
	lab.adm(t, "-A", "-t", vs, "-s", "rr")
	lab.adm(t, "-a", "-t", vs, "-r", "[fd83::11]:8080", "-m")
	lab.adm(t, "-a", "-t", vs, "-r", "[fd83::12]:8080", "-m")
	if count := askEach(t, lab.drLab, at, 10); count["rs1"] != 5 || count["rs2"] != 5 {
		t.Errorf("rr over two IPv6 NAT reals: %v, want 5/5", count)
	}
	us := "[" + vip.String() + "]:53"
	lab.adm(t, "-A", "-u", us, "-s", "wlc")
	lab.adm(t, "-a", "-u", us, "-r", "[fd83::11]:8080", "-m")
	lab.adm(t, "-a", "-u", us, "-r", "[fd83::12]:8080", "-m")
	for i := 0; i < 4; i++ {
		if a := lab.udpAskAt(t, netip.AddrPortFrom(vip, 53)); !strings.HasPrefix(a, "rs") {
			t.Errorf("UDP answer %q", a)
		}
	}
	list := lab.adm(t, "-Ln", "--stats")
	if !strings.Contains(list, "TCP  "+vs) || !strings.Contains(list, "[fd83::11]:8080") {
		t.Errorf("--stats:\n%s", list)
	}
	// A service with no real answers ICMPv6 port unreachable (ip_vs_leave):
	// the client's connect fails at once, refused.
	lab.adm(t, "-A", "-t", "["+vip.String()+"]:81", "-s", "wlc")
	start := time.Now()
	if c, err := lab.dialAt(netip.AddrPortFrom(vip, 81), 3*time.Second); err == nil {
		c.Close()
		t.Error("connected to a service with no real server")
	} else if !strings.Contains(err.Error(), "refused") || time.Since(start) > time.Second {
		t.Errorf("connect to a service with no real: %v after %v, want refused at once", err, time.Since(start))
	}
	// What IPv6 cannot do yet is refused, clearly.
	for _, args := range [][]string{
		{"-A", "-t", "[fd82::101]:80", "-j", "enable"},
	} {
		if out, err := lab.Adm(xipvsadmBin, args...); err == nil {
			t.Errorf("%v accepted: %s", args, out)
		}
	}
}

// TestIPv6TUN: IPv6 in IPv6 to reals prepared only by `xipvsadm
// realserver up --mode tun` (the decap XDP program, no ip6_tunnel
// module), rr 5/5 scheduled in XDP, then lblcr through the slow path, UDP,
// and a large upload whose full-sized segments do not fit the tunnel:
// the director answers ICMPv6 Packet Too Big and the client's path MTU
// discovery shrinks them.
func TestIPv6TUN(t *testing.T) {
	lab := newDRLab(t, "v6tun")
	vip := addDR6(t, lab, false)
	for _, rs := range lab.rs {
		out := realserver(t, rs, "up", "--vip", vip.String(), "--mode", "tun", "--interface", "eth0")
		if !strings.Contains(out, "fd77::100/128 on lo") || !strings.Contains(out, "decap XDP program on eth0") || strings.Contains(out, "arp_ignore") {
			t.Errorf("realserver up for an IPv6 VIP changed:\n%s", out)
		}
		rs := rs
		t.Cleanup(func() { _ = rs.Exec(xipvsadmBin, "realserver", "down").Run() })
	}
	lab.serveEcho(t, 80)
	lab.serveUDPEcho(t, vip, 53)
	vs := "[" + vip.String() + "]:80"
	at := netip.AddrPortFrom(vip, 80)
	lab.adm(t, "-A", "-t", vs, "-s", "rr")
	lab.adm(t, "-a", "-t", vs, "-r", "[fd77::11]:80", "-i")
	lab.adm(t, "-a", "-t", vs, "-r", "[fd77::12]:80", "-i")
	if count := askEach(t, lab, at, 10); count["rs1"] != 5 || count["rs2"] != 5 {
		t.Errorf("rr over two IPv6 TUN reals: %v, want 5/5", count)
	}
	if out := lab.adm(t, "-Ln"); !strings.Contains(out, destLine("[fd77::11]:80", "Tunnel", 1)) {
		t.Errorf("-Ln:\n%s", out)
	}
	// lblcr: new flows decided by the Go slow path (its picks follow
	// the destination address's set), whose first packet is tunnelled
	// by the replay program.
	lab.adm(t, "-E", "-t", vs, "-s", "lblcr")
	if count := askEach(t, lab, at, 4); count["rs1"]+count["rs2"] != 4 {
		t.Errorf("lblcr over two IPv6 TUN reals: %v", count)
	}
	big := bytes.Repeat([]byte("x"), 200000)
	body, _ := lab.getAt(t, at, big)
	if f := strings.Fields(body); len(f) != 3 || f[2] != "200000" {
		t.Errorf("200000-byte upload through the IPv6 tunnel: answer %q", body)
	}
	info, err := api.NewClient(lab.Socket).Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.Counters["xdp_icmp_frag_needed"] == 0 {
		t.Errorf("no Packet Too Big sent for the upload: counters %v", info.Counters)
	}
	t.Logf("ICMPv6 Packet Too Big sent: %d", info.Counters["xdp_icmp_frag_needed"])

	us := "[" + vip.String() + "]:53"
	lab.adm(t, "-A", "-u", us, "-s", "rr")
	lab.adm(t, "-a", "-u", us, "-r", "[fd77::12]", "-i")
	if got := strings.Fields(lab.udpAskAt(t, netip.AddrPortFrom(vip, 53))); len(got) == 0 || got[0] != "rs2" {
		t.Errorf("UDP over the IPv6 tunnel answered %q", got)
	}
	// down takes the VIP off lo and the program off eth0.
	rs := lab.rs[0]
	realserver(t, rs, "down")
	if out, _ := rs.Exec("ip", "-6", "addr", "show", "dev", "lo").Output(); strings.Contains(string(out), vip.String()) {
		t.Errorf("VIP still on lo after down:\n%s", out)
	}
	if out, _ := rs.Exec("ip", "link", "show", "dev", "eth0").Output(); strings.Contains(string(out), "xdp") {
		t.Errorf("decap program still on eth0 after down:\n%s", out)
	}
}

// TestIPv6FULLNAT: FULLNAT over IPv6 with an IPv6 local address; the
// reals have no route to the client, see the local address, and find the
// client in the TOA option (captured on the real, IPv6 format); UDP too.
func TestIPv6FULLNAT(t *testing.T) {
	lab, vip := newModeLab6(t, "fnat6", labPlan{outside: "10.86.0", inside: "10.87.0"}, "fd86", "fd87", false)
	lip := "fd87::250"
	addr6(t, lab.lb, "eth1", lip+"/128")
	lab.serveEcho(t, 8080)
	lab.serveUDPEcho(t, netip.IPv6Unspecified(), 5300)
	vs := "[" + vip.String() + "]:80"
	at := netip.AddrPortFrom(vip, 80)
	lab.adm(t, "-A", "-t", vs, "-s", "rr")
	lab.adm(t, "--add-laddr", "-z", lip, "-t", vs)
	lab.adm(t, "-a", "-t", vs, "-r", "[fd87::11]:8080", "-b")
	lab.adm(t, "-a", "-t", vs, "-r", "[fd87::12]:8080", "-b")
	toa := []func() (netip.AddrPort, bool){captureTOA(t, lab.rs[0], 8080, true), captureTOA(t, lab.rs[1], 8080, true)}
	count := map[string]int{}
	for i := 0; i < 10; i++ {
		name, seen, local := lab.askAt(t, at)
		count[name]++
		if !strings.HasPrefix(seen, "["+lip+"]:") {
			t.Errorf("real %s saw %s, want the local address %s", name, seen, lip)
		}
		capture := toa[0]
		if name == "rs2" {
			capture = toa[1]
		}
		if got, ok := capture(); !ok || got != local {
			t.Errorf("TOA seen by %s: %v (found %v), want the client %v", name, got, ok, local)
		}
	}
	if count["rs1"] != 5 || count["rs2"] != 5 {
		t.Errorf("rr over two IPv6 FULLNAT reals: %v, want 5/5", count)
	}
	if out := lab.adm(t, "--get-laddr"); !strings.Contains(out, lip) {
		t.Errorf("--get-laddr:\n%s", out)
	}
	us := "[" + vip.String() + "]:53"
	lab.adm(t, "-A", "-u", us, "-s", "wlc")
	lab.adm(t, "--add-laddr", "-z", lip, "-u", us)
	lab.adm(t, "-a", "-u", us, "-r", "[fd87::11]:5300", "-b")
	for i := 0; i < 2; i++ {
		ans := strings.Fields(lab.udpAskAt(t, netip.AddrPortFrom(vip, 53)))
		if len(ans) != 2 || ans[0] != "rs1" || !strings.HasPrefix(ans[1], "["+lip+"]:") {
			t.Errorf("UDP FULLNAT answer %v, want rs1 seeing %s", ans, lip)
		}
	}
	// A local address of the other family is refused.
	if out, err := lab.Adm(xipvsadmBin, "--add-laddr", "-z", "10.87.0.250", "-t", vs); err == nil {
		t.Errorf("an IPv4 local address on an IPv6 service was accepted: %s", out)
	}
}

// TestIPv6ReloadMetrics: a YAML file reloaded with IPv6 services (by
// difference, as for IPv4), traffic through them, and /metrics naming
// them as -Ln does.
func TestIPv6ReloadMetrics(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "xipvs.yaml")
	write := func(s string) {
		if err := os.WriteFile(cfgPath, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("services:\n  - tcp: 10.77.0.100:80\n    reals: [{addr: 10.77.0.11, method: dr}]\n")
	lab := newDRLab(t, "v6rl", "--config", cfgPath)
	vip := addDR6(t, lab, true)
	lab.serveEcho(t, 80)
	write(`services:
  - tcp: 10.77.0.100:80
    reals: [{addr: 10.77.0.11, method: dr}]
  - tcp: "[fd77::100]:80"
    scheduler: wrr
    reals:
      - {addr: "fd77::11", method: dr, weight: 1}
      - {addr: "fd77::12", method: dr, weight: 2}
`)
	if _, errOut, code := lab.admExit(t, "", "reload"); code != 0 {
		t.Fatalf("reload: exit %d: %s", code, errOut)
	}
	want := "-A -t 10.77.0.100:80 -s wlc\n-a -t 10.77.0.100:80 -r 10.77.0.11:80 -g -w 1\n" +
		"-A -t [fd77::100]:80 -s wrr\n-a -t [fd77::100]:80 -r [fd77::11]:80 -g -w 1\n-a -t [fd77::100]:80 -r [fd77::12]:80 -g -w 2\n"
	if got := lab.adm(t, "-Sn"); got != want {
		t.Fatalf("after the reload:\n%s\nwant:\n%s", got, want)
	}
	// Both reals' MACs resolved first: a SYN the director drops for want
	// of one (drop_no_mac) waits for the client's retransmission, by
	// which time its entry (state NONE, 2 s) may have been aged out, and
	// the SYN is scheduled, and counted, a second time.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		logs := lab.Daemon.Logs()
		if strings.Contains(logs, `msg="real server MAC" addr=fd77::11`) && strings.Contains(logs, `msg="real server MAC" addr=fd77::12`) {
			break
		}
	}
	if count := askEach(t, lab, netip.AddrPortFrom(vip, 80), 6); count["rs1"] != 2 || count["rs2"] != 4 {
		t.Errorf("wrr 1:2 over IPv6 after the reload: %v", count)
	}
	// wrr's picks are made in XDP and counted by the scheduler as it
	// catches up with them: within a second or two.
	var body string
	lines := []string{
		`xipvs_service_connections_total{service="TCP [fd77::100]:80"} 6`,
		`xipvs_real_connections_total{forward="Route",real="[fd77::12]:80",service="TCP [fd77::100]:80"} 4`,
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if err := lab.lb.Do(func() (err error) { body, err = (&netHTTP{}).get("http://127.0.0.1:9639/metrics"); return }); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(body, lines[0]) && strings.Contains(body, lines[1]) || time.Now().After(deadline) {
			break
		}
	}
	for _, w := range lines {
		if !strings.Contains(body, w) {
			t.Errorf("/metrics lacks %q:\n%s", w, grepLines(body, "fd77::100"))
		}
	}
}

// TestIPv6NATOneInterface: client, director and reals on one segment,
// the client in a prefix of its own, so the reals answer it through
// their gateway, the director, which un-NATs the replies in XDP.
func TestIPv6NATOneInterface(t *testing.T) {
	lab := newDRLab(t, "nat16")
	vip := netip.MustParseAddr("fd77::100")
	client := netip.MustParseAddr("fd79::1")
	addr6(t, lab.cl, "eth0", client.String()+"/64")
	if err := lab.cl.IP("-6", "route", "add", "fd77::/64", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	addr6(t, lab.lb, "eth0", "fd77::2/64")
	vip6On(t, lab.lb, "eth0", vip)
	for i, rs := range lab.rs {
		addr6(t, rs, "eth0", fmt.Sprintf("fd77::%d/64", 11+i))
		if err := rs.IP("-6", "route", "add", "fd79::/64", "via", "fd77::2"); err != nil {
			t.Fatal(err)
		}
	}
	lab.serveEcho(t, 8080)
	vs := "[" + vip.String() + "]:80"
	at := netip.AddrPortFrom(vip, 80)
	lab.adm(t, "-A", "-t", vs, "-s", "rr")
	lab.adm(t, "-a", "-t", vs, "-r", "[fd77::11]:8080", "-m")
	lab.adm(t, "-a", "-t", vs, "-r", "[fd77::12]:8080", "-m")
	count := map[string]int{}
	for i := 0; i < 10; i++ {
		body, local := lab.getFrom(t, client, at, nil)
		f := strings.Fields(body)
		if len(f) != 3 || f[1] != local.String() {
			t.Fatalf("answer %q to %v: the real must see the client", body, local)
		}
		count[f[0]]++
	}
	if count["rs1"] != 5 || count["rs2"] != 5 {
		t.Errorf("rr over two IPv6 NAT reals on one interface: %v, want 5/5", count)
	}
}

// TestIPv6RestartKill9: kill -9 of xipvsd in the middle of 20 long IPv6
// NAT streams (wlc: scheduled in XDP from Go's lookahead): every stream
// completes intact through the entries left in XDP, and the restarted
// daemon adopts them (-Lnc lists them) and schedules new IPv6 flows.
func TestIPv6RestartKill9(t *testing.T) {
	pins := filepath.Join(mountBPFFS(t), "xipvs")
	lab, vip := newModeLab6(t, "k96", labPlan{outside: "10.84.0", inside: "10.85.0", daemonArgs: []string{"--pin-dir", pins}}, "fd84", "fd85", true)
	lab.serveStreams(t, 9000)
	vs := "[" + vip.String() + "]:80"
	lab.adm(t, "-A", "-t", vs, "-s", "wlc")
	lab.adm(t, "-a", "-t", vs, "-r", "[fd85::11]:9000", "-m")
	lab.adm(t, "-a", "-t", vs, "-r", "[fd85::12]:9000", "-m")

	const streams = 20
	wait := lab.startStreams(t, streams, netip.AddrPortFrom(vip, 80))
	time.Sleep(time.Second)
	lab.Daemon.Kill()
	time.Sleep(time.Second)
	lab.start(t)
	conns := lab.adm(t, "-Lnc")
	if n := strings.Count(conns, " "+vs+" "); n < streams || strings.Count(conns, "ESTABLISHED") < streams {
		t.Errorf("-Lnc after restart lists %d of the %d IPv6 streams:\n%s", n, streams, conns)
	}
	if c, err := lab.dialAt(netip.AddrPortFrom(vip, 80), 2*time.Second); err != nil {
		t.Errorf("new IPv6 connection after restart: %v", err)
	} else {
		c.Close()
	}
	wait()
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
