package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// admExit runs xipvsadm with stdin and returns stdout, stderr and the
// exit status.
func (lab *drLab) admExit(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(xipvsadmBin, args...)
	cmd.Env = append(os.Environ(), "XIPVS_SOCKET="+lab.Socket)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// seedNetworks puts the director on the networks the seeds' examples use,
// so their real servers are on-link and the lines run verbatim.
func seedNetworks(t *testing.T, lab *drLab) {
	t.Helper()
	for _, a := range []string{"192.168.1.2/24", "192.168.0.2/24", "192.168.122.2/24", "192.168.25.42/24", "10.1.1.1/24"} {
		if err := lab.lb.IP("addr", "add", a, "dev", "eth0"); err != nil {
			t.Fatal(err)
		}
	}
}

// The ipvsadm lines of ../shared/seeds, verbatim with xipvsadm in place
// of ipvsadm (shell variables expanded as the scripts set them), each
// checked against the listing it must produce. Lines the seeds describe
// in prose (-E -f with -p, -e -i, -w 2, -Z, --rate, -S/-R) use the
// walk-through's addresses.
func TestSeedCommands(t *testing.T) {
	lab := newDRLab(t, "sd")
	seedNetworks(t, lab)
	type step struct {
		line string
		exit int
		// want and absent are substrings of `-Ln` after the line.
		want, absent []string
		// out, if set, must be in the line's own stdout.
		out string
	}
	steps := []step{
		// 004: the command table.
		{line: "-A -t 192.168.1.100:80 -s rr", want: []string{"TCP  192.168.1.100:80 rr"}},
		{line: "-E -t 192.168.1.100:80 -s wlc", want: []string{"TCP  192.168.1.100:80 wlc"}},
		{line: "-a -t 192.168.1.100:80 -r 192.168.1.11 -g", want: []string{destLine("192.168.1.11:80", "Route", 1)}},
		{line: "-e -t 192.168.1.100:80 -r 192.168.1.11 -w 5", want: []string{destLine("192.168.1.11:80", "Route", 5)}},
		{line: "-Ln", out: "TCP  192.168.1.100:80 wlc"},
		{line: "-L --stats", out: "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes"},
		{line: "-d -t 192.168.1.100:80 -r 192.168.1.11", absent: []string{"192.168.1.11"}},
		{line: "-D -t 192.168.1.100:80", absent: []string{"192.168.1.100"}},
		{line: "-A -u 192.168.1.100:53 -s rr", want: []string{"UDP  192.168.1.100:53 rr"}},
		{line: "-C", absent: []string{"192.168.1.100"}},
		// 004's walk-through: -E with -p, a firewall mark, -e -i, -w 2,
		// -Z and the rate monitor.
		{line: "-A -t 172.25.254.100:80 -s rr", want: []string{"TCP  172.25.254.100:80 rr"}},
		{line: "-E -t 172.25.254.100:80 -s wrr", want: []string{"TCP  172.25.254.100:80 wrr"}},
		{line: "-E -t 172.25.254.100:80 -s wrr -p 360", want: []string{"TCP  172.25.254.100:80 wrr persistent 360"}},
		{line: "-A -f 66 -s rr -p 360", want: []string{"FWM  66 rr persistent 360"}},
		{line: "-D -f 66", absent: []string{"FWM  66"}},
		{line: "-a -t 172.25.254.100:80 -r 192.168.0.10:80 -m", want: []string{destLine("192.168.0.10:80", "Masq", 1)}},
		{line: "-a -t 172.25.254.100:80 -r 192.168.0.20:80 -g", want: []string{destLine("192.168.0.20:80", "Route", 1)}},
		{line: "-e -t 172.25.254.100:80 -r 192.168.0.10:80 -i", want: []string{destLine("192.168.0.10:80", "Tunnel", 1)}},
		{line: "-e -t 172.25.254.100:80 -r 192.168.0.10:80 -i -w 2", want: []string{destLine("192.168.0.10:80", "Tunnel", 2)}},
		{line: "-Z"},
		{line: "-Ln --rate", out: "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS"},
		{line: "-C", absent: []string{"172.25.254.100"}},
		// 003: two ports of one VIP, then a firewall-mark service.
		{line: "-A -t 192.168.0.220:80 -s rr"},
		{line: "-A -t 192.168.0.220:443 -s rr"},
		{line: "-a -t 192.168.0.220:80 -r 192.168.0.10:80 -g"},
		{line: "-a -t 192.168.0.220:80 -r 192.168.0.20:80 -g"},
		// -g keeps the virtual port, as ipvsadm silently does.
		{line: "-a -t 192.168.0.220:443 -r 192.168.0.20:80 -g", want: []string{"  -> 192.168.0.20:443"}},
		{line: "-a -t 192.168.0.220:443 -r 192.168.0.10:80 -g", want: []string{"  -> 192.168.0.10:443"}},
		{line: "-C"},
		{line: "-A -f 6666 -s rr", want: []string{"FWM  6666 rr"}},
		{line: "-a -f 6666 -r 192.168.0.10 -g", want: []string{"  -> 192.168.0.10:0"}},
		{line: "-a -f 6666 -r 192.168.0.20 -g", want: []string{"  -> 192.168.0.20:0"}},
		{line: "-E -f 6666 -s rr -p 3000", want: []string{"FWM  6666 rr persistent 3000"}},
		// 001: the DR and TUN scripts, $VIP and $RIPn expanded.
		{line: "-C", absent: []string{"6666"}},
		{line: "-A -t 192.168.0.210:80 -s rr"},
		{line: "-a -t 192.168.0.210:80 -r 192.168.0.175:80 -g"},
		{line: "-a -t 192.168.0.210:80 -r 192.168.0.145:80 -g", want: []string{"  -> 192.168.0.145:80", "  -> 192.168.0.175:80"}},
		{line: "", out: "TCP  192.168.0.210:http rr"}, // bare /sbin/ipvsadm lists, with port names
		{line: "-C"},
		{line: "-A -t 192.168.25.41:80 -s rr"},
		{line: "-a -t 192.168.25.41:80 -r 192.168.25.44:80 -i"},
		{line: "-a -t 192.168.25.41:80 -r 192.168.25.45:80 -i", want: []string{destLine("192.168.25.45:80", "Tunnel", 1)}},
		// 001's NAT script has no -A: ipvsadm refuses its -a lines too.
		{line: "-C"},
		{line: "-a -t 202.99.59.110:80 -r 10.1.1.2:80 -m -w 1", exit: 1},
		{line: "-a -t 202.99.59.110:80 -r 10.1.1.3:80 -m -w 1", exit: 1},
		// 000: NAT and DR on 10.10.10.10, NAT on 192.168.122.100.
		{line: "-A -t 10.10.10.10:80 -s rr"},
		{line: "-a -t 10.10.10.10:80 -r 192.168.122.101 -m -w 1"},
		{line: "-a -t 10.10.10.10:80 -r 192.168.122.102 -m -w 1", want: []string{destLine("192.168.122.101:80", "Masq", 1), destLine("192.168.122.102:80", "Masq", 1)}},
		{line: "-C"},
		{line: "-A -t 10.10.10.10:80 -s rr"},
		{line: "-a -t 10.10.10.10:80 -r 192.168.122.101 -g -w 1"},
		{line: "-a -t 10.10.10.10:80 -r 192.168.122.102 -g -w 1", want: []string{destLine("192.168.122.102:80", "Route", 1)}},
		{line: "-A -t 192.168.122.100:80 -s rr"},
		{line: "-a -t 192.168.122.100:80 -r 192.168.122.101 -m -w 1"},
		{line: "-a -t 192.168.122.100:80 -r 192.168.122.102 -m -w 1", want: []string{"TCP  192.168.122.100:80 rr", "TCP  10.10.10.10:80 rr"}},
	}
	for _, s := range steps {
		var args []string
		if s.line != "" {
			args = strings.Fields(s.line)
		}
		out, errOut, code := lab.admExit(t, "", args...)
		if code != s.exit {
			t.Fatalf("xipvsadm %s: exit %d, want %d: %s", s.line, code, s.exit, errOut)
		}
		if s.exit == 1 && !strings.Contains(errOut, "Service not defined") {
			t.Errorf("xipvsadm %s: %q, want ipvsadm's \"Service not defined\"", s.line, errOut)
		}
		if s.out != "" && !strings.Contains(out, s.out) {
			t.Errorf("xipvsadm %s: output lacks %q:\n%s", s.line, s.out, out)
		}
		list := lab.adm(t, "-Ln")
		for _, w := range s.want {
			if !strings.Contains(list, w) {
				t.Errorf("after %q: -Ln lacks %q:\n%s", s.line, w, list)
			}
		}
		for _, a := range s.absent {
			if strings.Contains(list, a) {
				t.Errorf("after %q: -Ln still has %q:\n%s", s.line, a, list)
			}
		}
	}

	// 004's "save the rules, delete them, restore them": -S / -C / -R.
	saved := lab.adm(t, "-Sn")
	wantSave := "-A -t 10.10.10.10:80 -s rr\n" +
		"-a -t 10.10.10.10:80 -r 192.168.122.101:80 -g -w 1\n" +
		"-a -t 10.10.10.10:80 -r 192.168.122.102:80 -g -w 1\n" +
		"-A -t 192.168.122.100:80 -s rr\n" +
		"-a -t 192.168.122.100:80 -r 192.168.122.101:80 -m -w 1\n" +
		"-a -t 192.168.122.100:80 -r 192.168.122.102:80 -m -w 1\n"
	if saved != wantSave {
		t.Fatalf("-Sn:\n%s\nwant:\n%s", saved, wantSave)
	}
	lab.adm(t, "-C")
	if l := lab.adm(t, "-Sn"); l != "" {
		t.Fatalf("after -C: %q", l)
	}
	if _, errOut, code := lab.admExit(t, saved, "-R"); code != 0 {
		t.Fatalf("-R: exit %d: %s", code, errOut)
	}
	if again := lab.adm(t, "-Sn"); again != saved {
		t.Errorf("-S after -R:\n%s\nwant:\n%s", again, saved)
	}
}

// A rules file with a bad line changes nothing, whether the line does not
// parse or names a service that does not exist; the error names the line.
func TestRestoreAtomic(t *testing.T) {
	lab := newDRLab(t, "ra")
	lab.adm(t, "-A", "-t", "10.77.0.100:80", "-s", "wrr")
	lab.adm(t, "-a", "-t", "10.77.0.100:80", "-r", "10.77.0.11", "-g", "-w", "3")
	before := lab.adm(t, "-Sn")
	for name, file := range map[string]string{
		"does not apply": "-C\n-A -t 10.77.0.100:81 -s rr\n-a -t 10.77.0.100:81 -r 10.77.0.12 -g\n-a -t 10.77.0.100:82 -r 10.77.0.12 -g\n",
		"does not parse": "-A -t 10.77.0.100:81 -s rr\n-a -t 10.77.0.100:81 -r 10.77.0.12 -g -w many\n",
		"duplicate":      "-A -t 10.77.0.100:81 -s rr\n-A -t 10.77.0.100:80 -s rr\n",
	} {
		_, errOut, code := lab.admExit(t, file, "-R")
		if code == 0 {
			t.Errorf("%s: -R succeeded", name)
		}
		if !strings.Contains(errOut, "line ") || !strings.Contains(errOut, "nothing applied") {
			t.Errorf("%s: error %q does not name the line", name, errOut)
		}
		if after := lab.adm(t, "-Sn"); after != before {
			t.Errorf("%s: configuration changed:\n%s\nwant:\n%s", name, after, before)
		}
	}
	// A file written by the real ipvsadm-save (names, not numbers, and
	// 1.31's --tun-type) restores; -C inside it keeps an unchanged real.
	file := "-C\n-A -t 10.77.0.100:http -s wrr\n-a -t 10.77.0.100:http -r 10.77.0.11:http -g -w 3\n" +
		"-A -u 10.77.0.100:domain -s rr\n-a -u 10.77.0.100:domain -r 10.77.0.12:domain -i -w 1 --tun-type ipip\n"
	if _, errOut, code := lab.admExit(t, file, "-R"); code != 0 {
		t.Fatalf("ipvsadm-save file: exit %d: %s", code, errOut)
	}
	want := before + "-A -u 10.77.0.100:53 -s rr\n-a -u 10.77.0.100:53 -r 10.77.0.12:53 -i -w 1 --tun-type ipip\n"
	if got := lab.adm(t, "-Sn"); got != want {
		t.Errorf("after restore:\n%s\nwant:\n%s", got, want)
	}
}

// statsLine finds the --stats --exact line of name and returns its five
// numbers.
func statsLine(t *testing.T, listing, name string) [5]uint64 {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(listing))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		f := strings.Fields(strings.TrimPrefix(line, name))
		if len(f) != 5 {
			t.Fatalf("stats line %q", line)
		}
		var v [5]uint64
		for i := range f {
			n, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				t.Fatalf("stats line %q: %v", line, err)
			}
			v[i] = n
		}
		return v
	}
	t.Fatalf("no %q in:\n%s", name, listing)
	return [5]uint64{}
}

// -Ln --stats counts what the test sent: connections, packets and IP
// bytes toward the reals (out stays 0 in DR), per service and per real;
// -Z zeroes; /metrics serves the same numbers.
func TestStatsCountTraffic(t *testing.T) {
	lab := newDRLab(t, "st")
	lab.serveHTTP(t)
	lab.serveUDP(t, 53)
	lab.adm(t, "-A", "-t", "10.77.0.100:80", "-s", "rr")
	lab.adm(t, "-A", "-u", "10.77.0.100:53", "-s", "rr")
	for _, rs := range []string{"10.77.0.11", "10.77.0.12"} {
		lab.adm(t, "-a", "-t", "10.77.0.100:80", "-r", rs, "-g")
		lab.adm(t, "-a", "-u", "10.77.0.100:53", "-r", rs, "-g")
	}
	// Warm up (MACs resolved), then start from zero.
	lab.httpGet(t)
	lab.httpGet(t)
	lab.adm(t, "-Z")
	if s := statsLine(t, lab.adm(t, "-Ln", "--stats", "--exact"), "TCP  10.77.0.100:80"); s != [5]uint64{} {
		t.Fatalf("after -Z: %v", s)
	}

	const flows, payload = 20, 100
	writes := 0
	for i := 0; i < flows; i++ {
		var c net.Conn
		if err := lab.cl.Do(func() (err error) {
			c, err = net.Dial("udp4", netip.AddrPortFrom(lab.vip, 53).String())
			return
		}); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		answered := false
		for try := 0; try < 3 && !answered; try++ {
			if _, err := c.Write(make([]byte, payload)); err != nil {
				t.Fatal(err)
			}
			writes++
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, err := c.Read(buf)
			answered = err == nil
		}
		c.Close()
		if !answered {
			t.Fatalf("flow %d: no answer", i)
		}
	}
	const gets = 10
	for i := 0; i < gets; i++ {
		lab.httpGet(t)
	}
	out := lab.adm(t, "-Ln", "--stats", "--exact")
	udp := statsLine(t, out, "UDP  10.77.0.100:53")
	want := [5]uint64{flows, uint64(writes), 0, uint64(writes * (20 + 8 + payload)), 0}
	if udp != want {
		t.Errorf("UDP service stats %v, want %v (conns, inpkts, outpkts, inbytes, outbytes):\n%s", udp, want, out)
	}
	r1 := statsLine(t, out, "  -> 10.77.0.11:53")
	r2 := statsLine(t, out, "  -> 10.77.0.12:53")
	if r1[0]+r2[0] != flows || r1[0] != flows/2 || r1[1]+r2[1] != uint64(writes) {
		t.Errorf("per-real UDP stats %v + %v do not add up to %v (rr splits the flows evenly)", r1, r2, udp)
	}
	tcp := statsLine(t, out, "TCP  10.77.0.100:80")
	// Each GET is a connection; the client sends at least SYN, ACK,
	// request and FIN toward the VIP, nothing comes back through DR.
	if tcp[0] != gets || tcp[1] < 4*gets || tcp[2] != 0 || tcp[4] != 0 || tcp[3] < tcp[1]*40 {
		t.Errorf("TCP service stats %v for %d GETs:\n%s", tcp, gets, out)
	}

	// /metrics, from the director's namespace.
	var body string
	if err := lab.lb.Do(func() error {
		resp, err := (&netHTTP{}).get("http://127.0.0.1:9639/metrics")
		body = resp
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{
		fmt.Sprintf(`xipvs_service_in_packets_total{service="UDP 10.77.0.100:53"} %d`, writes),
		fmt.Sprintf(`xipvs_service_connections_total{service="UDP 10.77.0.100:53"} %d`, flows),
		fmt.Sprintf(`xipvs_real_in_bytes_total{forward="Route",real="10.77.0.11:53",service="UDP 10.77.0.100:53"} %d`, r1[3]),
		`xipvs_xdp_packets_total{outcome="forward"}`,
		`xipvs_slow_path_total{event="new_conns"}`,
	} {
		if !strings.Contains(body, w) {
			t.Errorf("/metrics lacks %q", w)
		}
	}

	// -Z of one service leaves the other's counters.
	lab.adm(t, "-Z", "-u", "10.77.0.100:53")
	out = lab.adm(t, "-Ln", "--stats", "--exact")
	if s := statsLine(t, out, "UDP  10.77.0.100:53"); s != [5]uint64{} {
		t.Errorf("UDP after -Z -u: %v", s)
	}
	if s := statsLine(t, out, "TCP  10.77.0.100:80"); s != tcp {
		t.Errorf("TCP after -Z -u: %v, want %v", s, tcp)
	}
}

// netHTTP fetches a URL over a fresh TCP connection without keep-alive,
// in whichever namespace the calling thread is.
type netHTTP struct{}

func (netHTTP) get(url string) (string, error) {
	host := strings.TrimPrefix(url, "http://")
	host, path, _ := strings.Cut(host, "/")
	c, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /%s HTTP/1.0\r\nHost: %s\r\n\r\n", path, host)
	b, err := io.ReadAll(c)
	return string(b), err
}

// A reload (SIGHUP or xipvsadm reload) applies the file by difference; a
// bad file leaves the running configuration as it was.
func TestConfigReload(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "xipvs.yaml")
	write := func(s string) {
		if err := os.WriteFile(cfgPath, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`services:
  - tcp: 10.77.0.100:80
    scheduler: rr
    reals:
      - {addr: 10.77.0.11, method: dr}
      - {addr: 10.77.0.12, method: dr, weight: 2}
`)
	lab := newDRLab(t, "rl", "--config", cfgPath)
	lab.serveHTTP(t)
	first := lab.adm(t, "-Sn")
	wantFirst := "-A -t 10.77.0.100:80 -s rr\n-a -t 10.77.0.100:80 -r 10.77.0.11:80 -g -w 1\n-a -t 10.77.0.100:80 -r 10.77.0.12:80 -g -w 2\n"
	if first != wantFirst {
		t.Fatalf("loaded:\n%s\nwant:\n%s", first, wantFirst)
	}
	lab.httpGet(t)

	// A bad file: a real the director cannot reach with -g.
	write(`services:
  - tcp: 10.77.0.100:80
    scheduler: wrr
    reals:
      - {addr: 10.77.0.11, method: dr}
      - {addr: 10.99.0.12, method: dr}
`)
	if _, errOut, code := lab.admExit(t, "", "reload"); code == 0 || !strings.Contains(errOut, "10.99.0.12") {
		t.Errorf("bad reload: exit %d: %s", code, errOut)
	}
	if got := lab.adm(t, "-Sn"); got != first {
		t.Errorf("after a failed reload:\n%s\nwant:\n%s", got, first)
	}
	write("services: [ {tcp: 10.77.0.100:80, reals: [{addr: 10.77.0.11, method: nope}]} ]\n")
	if _, _, code := lab.admExit(t, "", "reload"); code == 0 {
		t.Error("reload of a file with a bad method succeeded")
	}

	// A good file by SIGHUP: the scheduler changes, 10.77.0.12 goes, a
	// UDP service comes; the statistics of the kept real stay.
	before := statsLine(t, lab.adm(t, "-Ln", "--stats", "--exact"), "  -> 10.77.0.11:80")
	write(`services:
  - tcp: 10.77.0.100:80
    scheduler: wrr
    reals:
      - {addr: 10.77.0.11, method: dr}
  - udp: 10.77.0.100:53
    reals:
      - {addr: 10.77.0.12, method: dr}
`)
	if err := lab.Daemon.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	want := "-A -t 10.77.0.100:80 -s wrr\n-a -t 10.77.0.100:80 -r 10.77.0.11:80 -g -w 1\n" +
		"-A -u 10.77.0.100:53 -s wlc\n-a -u 10.77.0.100:53 -r 10.77.0.12:53 -g -w 1\n"
	deadline := time.Now().Add(5 * time.Second)
	got := ""
	for time.Now().Before(deadline) {
		if got = lab.adm(t, "-Sn"); got == want {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got != want {
		t.Fatalf("after SIGHUP:\n%s\nwant:\n%s", got, want)
	}
	if after := statsLine(t, lab.adm(t, "-Ln", "--stats", "--exact"), "  -> 10.77.0.11:80"); after[0] < before[0] || before[0] == 0 {
		t.Errorf("kept real's counters went from %v to %v", before, after)
	}
	if body := lab.httpGet(t); body != "rs1" {
		t.Errorf("after reload GET answered by %q", body)
	}
	// The logs say once what changed.
	if !strings.Contains(lab.Daemon.Logs(), "configuration applied") || !strings.Contains(lab.Daemon.Logs(), "reload") {
		t.Errorf("logs lack the reload lines:\n%s", lab.Daemon.Logs())
	}
}
