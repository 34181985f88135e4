package e2e

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xipvs/xipvs/internal/api"
	"github.com/xipvs/xipvs/internal/connsync"
	"github.com/xipvs/xipvs/internal/testutil"
)

func needKeepalived(t *testing.T) {
	t.Helper()
	testutil.RequirePrivileged(t)
	if _, err := exec.LookPath("keepalived"); err != nil {
		if os.Getenv("XIPVS_REQUIRE_PRIVILEGED") != "" {
			t.Fatal("keepalived not installed (apt-get install keepalived; .ci/run installs it)")
		}
		t.Skip("keepalived not installed (apt-get install keepalived)")
	}
}

// TestSyncFailover is issue 20's acceptance: two xipvs directors, the VIP
// moved by keepalived's VRRP, connection sync from the master to the
// backup; 100 long TCP streams through the master with wlc (not a hash
// scheduler); -Lnc on the backup lists them before the failover; the
// master's node is lost abruptly (link down, xipvsd and keepalived
// killed), VRRP moves the VIP and every stream completes with the right
// checksum through the backup.
func TestSyncFailover(t *testing.T) { syncFailover(t, false) }

// TestSyncFailoverNAT is TestSyncFailover with NAT reals on a LAN of
// their own behind the pair, their gateway moved by VRRP with the VIP:
// the backup's synced connections carry the reply entries, and the
// replies come back through it.
func TestSyncFailoverNAT(t *testing.T) { syncFailover(t, true) }

func syncFailover(t *testing.T, nat bool) {
	needKeepalived(t)
	vip := netip.MustParseAddr("10.93.0.100")
	plan := testutil.HAPlan{Prefix: fmt.Sprintf("xe%dha", os.Getpid()%10000), Net: "10.93.0", Reals: 2, VIP: vip}
	method, flag := "dr", "-g"
	if nat {
		plan.Prefix, plan.Net, plan.Inside = fmt.Sprintf("xe%dhn", os.Getpid()%10000), "10.95.0", "10.96.0"
		vip = netip.MustParseAddr("10.95.0.100")
		plan.VIP = vip
		method, flag = "nat", "-m"
	}
	h, err := testutil.NewHA(plan)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for i, d := range h.Daemons {
				if d != nil {
					t.Logf("d%d log:\n%s", i+1, d.Logs())
				}
				t.Logf("d%d keepalived:\n%s", i+1, h.VRRPLog(i))
			}
		}
		if err := h.Close(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	adm := func(i int, args ...string) string {
		t.Helper()
		out, err := h.Adm(i, xipvsadmBin, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	srv, err := testutil.ServeStreams(h.Reals, 80)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	vs := netip.AddrPortFrom(vip, 80)
	// The master is configured with xipvsadm, the backup by its YAML
	// file (sync_daemons), with the same service.
	if err := h.StartDirector(0, xipvsdBin, "--metrics-addr", ""); err != nil {
		t.Fatal(err)
	}
	adm(0, "-A", "-t", vs.String(), "-s", "wlc")
	for _, rs := range h.Reals {
		adm(0, "-a", "-t", vs.String(), "-r", rs.Addr.Addr().String(), flag)
	}
	adm(0, "--start-daemon", "master", "--mcast-interface", "eth0", "--syncid", "7")
	conf := filepath.Join(t.TempDir(), "backup.yaml")
	yaml := fmt.Sprintf("interfaces: [eth0]\nsync_daemons:\n  - {state: backup, mcast_interface: eth0, syncid: 7}\n"+
		"services:\n  - tcp: %v\n    scheduler: wlc\n    reals:\n      - {addr: %v, method: %s}\n      - {addr: %v, method: %s}\n",
		vs, h.Reals[1].Addr.Addr(), method, h.Reals[0].Addr.Addr(), method)
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if nat {
		yaml = strings.Replace(yaml, "interfaces: [eth0]", "interfaces: [eth0, eth1]", 1)
		if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.StartDirector(1, xipvsdBin, "--metrics-addr", "", "--config", conf); err != nil {
		t.Fatal(err)
	}
	if out := adm(0, "-L", "--daemon"); out != "master sync daemon (mcast=eth0, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n" {
		t.Errorf("-L --daemon on the master:\n%q", out)
	}
	if out := adm(1, "-L", "--daemon"); out != "backup sync daemon (mcast=eth0, syncid=7, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n" {
		t.Errorf("-L --daemon on the backup:\n%q", out)
	}
	syncSaveRestore(t, h, adm)
	if err := h.WaitVIP(0, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if h.HoldsVIP(1) {
		t.Fatal("both directors hold the VIP")
	}

	syncTraffic(t, h, vs)

	s, err := srv.StartStreams(h.Client, 100, vs, 3000)
	if err != nil {
		t.Fatal(err)
	}
	// The backup lists every stream (synced within the master's walk
	// interval) before the failover.
	deadline := time.Now().Add(10 * time.Second)
	var listed int
	for {
		listed = 0
		for _, l := range strings.Split(adm(1, "-Lnc"), "\n") {
			if strings.Contains(l, "ESTABLISHED") && strings.Contains(l, vs.String()) {
				listed++
			}
		}
		if listed >= 100 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if listed < 100 {
		t.Fatalf("the backup lists %d of 100 established connections:\n%s", listed, adm(1, "-Lnc"))
	}
	masterStats := daemonStats(t, h.Socket(0))
	t.Logf("backup lists all 100 streams; master sent %d connection records in %d messages, %d bytes",
		masterStats.Conns, masterStats.Messages, masterStats.Bytes)

	// The master's node dies: its link goes down, xipvsd and keepalived
	// are killed. VRRP moves the VIP; the streams go on through the
	// backup's synced connections.
	ev := s.Mark()
	if err := h.Directors[0].IP("link", "set", "eth0", "down"); err != nil {
		t.Fatal(err)
	}
	h.Daemons[0].Kill()
	h.Daemons[0] = nil
	h.StopVRRP(0)
	if err := h.WaitVIP(1, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	moved := time.Since(ev)
	cuts := waitStreams(t, s)
	backup := daemonStats(t, h.Socket(1))
	t.Logf("failover: VRRP moved the VIP after %v; the longest a client's packets waited %v (median %v); backup received %d messages, inserted %d connections, skipped %d, malformed %d",
		moved.Round(time.Millisecond), cuts[0].Round(time.Millisecond), cuts[len(cuts)/2].Round(time.Millisecond),
		backup.Messages, backup.Conns, backup.Skipped, backup.Malformed)
	// New connections are served by the new master.
	for i := 0; i < 10; i++ {
		var c net.Conn
		if err := h.Client.Do(func() (err error) { c, err = net.DialTimeout("tcp", vs.String(), 3*time.Second); return }); err != nil {
			t.Errorf("new connection %d after the failover: %v", i, err)
			continue
		}
		c.Close()
	}
}

// syncSaveRestore: -S writes the sync daemon as a --start-daemon line,
// which -R runs; a second master or an unknown state is refused with
// nothing changed.
func syncSaveRestore(t *testing.T, h *testutil.HA, adm func(int, ...string) string) {
	t.Helper()
	// -S writes the daemon as a --start-daemon line, which -R runs (the
	// same daemon: left as it is; -C keeps the connections of what the file
	// keeps, as -R applies by difference).
	saved := adm(0, "-S", "-n")
	if !strings.Contains(saved, "\n--start-daemon master --mcast-interface eth0 --syncid 7\n") {
		t.Errorf("-S lacks the daemon:\n%s", saved)
	}
	restore := exec.Command(xipvsadmBin, "-R")
	restore.Env = append(os.Environ(), "XIPVS_SOCKET="+h.Socket(0))
	restore.Stdin = strings.NewReader("-C\n" + saved)
	if out, err := restore.CombinedOutput(); err != nil {
		t.Fatalf("-S | -R: %v: %s", err, out)
	}
	if out := adm(0, "-S", "-n"); out != saved {
		t.Errorf("-S after -R:\n%s\nwant\n%s", out, saved)
	}
	// Refusals with nothing changed.
	if _, err := h.Adm(0, xipvsadmBin, "--start-daemon", "master", "--mcast-interface", "eth0"); err == nil {
		t.Error("a second master started")
	}
	if _, err := h.Adm(0, xipvsadmBin, "--start-daemon", "primary", "--mcast-interface", "eth0"); err == nil {
		t.Error("--start-daemon primary accepted")
	}
}

// syncTraffic measures the sync traffic per 1000 new connections: short
// connections (open, close) through the master, its counters before and
// after.
func syncTraffic(t *testing.T, h *testutil.HA, vs netip.AddrPort) {
	t.Helper()
	before := daemonStats(t, h.Socket(0))
	for i := 0; i < 1000; i++ {
		var c net.Conn
		if err := h.Client.Do(func() (err error) { c, err = net.DialTimeout("tcp", vs.String(), 3*time.Second); return }); err != nil {
			t.Fatalf("short connection %d: %v", i, err)
		}
		c.Close()
	}
	time.Sleep(3 * time.Second) // the closes' state changes are walked too
	after := daemonStats(t, h.Socket(0))
	t.Logf("sync traffic for 1000 short connections: %d records in %d messages, %d bytes of UDP payload",
		after.Conns-before.Conns, after.Messages-before.Messages, after.Bytes-before.Bytes)
	if after.Conns == before.Conns {
		t.Error("the master sent nothing for 1000 connections")
	}
}

func daemonStats(t *testing.T, socket string) connsync.Stats {
	t.Helper()
	ds, err := api.NewClient(socket).Daemons()
	if err != nil || len(ds) == 0 {
		t.Fatalf("daemons: %v, %v", ds, err)
	}
	return ds[0].Stats
}

// TestSyncFlood: a flood of bogus sync messages (random bytes, and
// well-formed records for random clients of a known service) to a
// backup is counted and leaves its tables bounded by their sizes (synced
// ESTABLISHED connections go to the established table, where nothing
// evicts them, then, once it is full, to the embryonic LRU) and the
// daemon responsive. A pair whose sync segment is not trusted signs its
// messages (TestSyncForgedChangesNothing).
func TestSyncFlood(t *testing.T) {
	const table = 4096
	lab := newDRLab(t, "sf", "--conn-table-size", fmt.Sprint(table), "--metrics-addr", "")
	vs := netip.AddrPortFrom(lab.vip, 80)
	lab.adm(t, "-A", "-t", vs.String(), "-s", "wlc")
	rs := lab.rs[0].Addr.Addr()
	lab.adm(t, "-a", "-t", vs.String(), "-r", rs.String(), "-g")
	lab.adm(t, "--start-daemon", "backup", "--mcast-interface", "eth0")
	if err := lab.cl.IP("route", "add", "224.0.0.0/4", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	var conn *net.UDPConn
	if err := lab.cl.Do(func() (err error) {
		conn, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(224, 0, 0, 81), Port: 8848})
		return
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rnd := rand.New(rand.NewPCG(1, 2))
	start := time.Now()
	cpu0 := processCPU(t, lab.Daemon.Pid())
	bogus, records := 0, 0
	for i := 0; i < 20000; i++ {
		var msg []byte
		if i%4 == 0 {
			e := connsync.Encoder{MaxLen: 1472}
			for j := 0; j < 40; j++ {
				e.Add(connsync.Conn{Proto: 6, Flags: connsync.FlagFwdRoute, State: 1, Timeout: 900,
					Client:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, byte(rnd.Uint32()), byte(rnd.Uint32()), byte(rnd.Uint32())}), uint16(rnd.Uint32())),
					Virtual: vs, Dest: netip.AddrPortFrom(rs, 80)})
				records++
			}
			msg = e.Flush()
		} else {
			msg = make([]byte, 8+rnd.IntN(1400))
			for k := range msg {
				msg[k] = byte(rnd.Uint32())
			}
			if i%2 == 0 { // a valid header around garbage
				msg[0], msg[2], msg[3], msg[4], msg[5] = 0, byte(len(msg)>>8), byte(len(msg)), 9, 1
			}
			bogus++
		}
		if _, err := conn.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	wall := time.Since(start)
	cpu := processCPU(t, lab.Daemon.Pid()) - cpu0
	ds, err := api.NewClient(lab.Socket).Daemons()
	if err != nil || len(ds) != 1 {
		t.Fatalf("daemons: %v %v", ds, err)
	}
	st := ds[0].Stats
	n := 0
	for _, l := range strings.Split(lab.adm(t, "-Lnc"), "\n") {
		if strings.Contains(l, vs.String()) {
			n++
		}
	}
	t.Logf("flood: %d bogus and %d messages of %d well-formed records in %v: backup received %d, malformed %d, inserted %d, skipped %d; table holds %d (size %d); xipvsd used %v of CPU",
		bogus, 20000-bogus, records, wall.Round(time.Millisecond), st.Messages, st.Malformed, st.Conns, st.Skipped, n, table, cpu)
	if st.Malformed == 0 || st.Conns == 0 {
		t.Errorf("nothing counted: %+v", st)
	}
	if n > 2*table {
		t.Errorf("the tables hold %d synced connections, more than their sizes (2 x %d)", n, table)
	}
	if cpu > 2*wall {
		t.Errorf("xipvsd used %v of CPU in %v", cpu, wall)
	}
	// Still serving.
	lab.adm(t, "-Ln")
}

// processCPU is a process's user and system CPU time.
func processCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	var ut, st int64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

// A forged sync record changes nothing (issue 29). A backup sync daemon
// runs on the director while a client keeps a connection to a DR real;
// the client forges a record moving that connection to the other real,
// and one for a tuple of its invention:
//   - sent to the VIP (unicast, port 8848): never received (the backup
//     is bound to the group, as the kernel's);
//   - multicast on the segment, no key: received, the new tuple inserted
//     (the segment is the pair's), but the live connection not moved;
//   - with a key, multicast on the segment unsigned: dropped whole.
//
// Through all of it the connection keeps being served by its real.
func TestSyncForgedChangesNothing(t *testing.T) {
	lab := newDRLab(t, "fg")
	lab.serveEcho(t, 80)
	vs := netip.AddrPortFrom(lab.vip, 80)
	lab.adm(t, "-A", "-t", vs.String(), "-s", "rr")
	for _, rs := range lab.rs {
		lab.adm(t, "-a", "-t", vs.String(), "-r", rs.Addr.Addr().String(), "-g")
	}
	if err := lab.cl.IP("route", "add", "224.0.0.0/4", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	var c net.Conn
	if err := lab.cl.Do(func() (err error) { c, err = net.DialTimeout("tcp4", vs.String(), 5*time.Second); return }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ka := &keepAlive{c: c, rd: bufio.NewReader(c)}
	first := strings.Fields(ka.get(t))[0]
	other := lab.rs[0].Addr.Addr()
	if lab.RealName(lab.rs[0]) == first {
		other = lab.rs[1].Addr.Addr()
	}
	client := netip.MustParseAddrPort(c.LocalAddr().String())
	invented := netip.MustParseAddrPort("10.77.0.1:4242")
	forged := func() []byte {
		e := connsync.Encoder{MaxLen: 1472}
		for _, cl := range []netip.AddrPort{client, invented} {
			e.Add(connsync.Conn{Proto: 6, Flags: connsync.FlagFwdRoute, State: 1, Timeout: 900, Client: cl, Virtual: vs,
				Dest: netip.AddrPortFrom(other, 80)})
		}
		return e.Flush()
	}
	send := func(to netip.AddrPort) {
		t.Helper()
		if err := lab.cl.Do(func() error {
			u, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(to))
			if err != nil {
				return err
			}
			defer u.Close()
			_, err = u.Write(forged())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	listed := func() bool { return strings.Contains(lab.adm(t, "-Lnc"), invented.String()) }
	check := func(step string) {
		t.Helper()
		if got := strings.Fields(ka.get(t))[0]; got != first {
			t.Fatalf("%s: the connection was served by %s, before by %s", step, got, first)
		}
	}

	lab.adm(t, "--start-daemon", "backup", "--mcast-interface", "eth0")
	send(netip.AddrPortFrom(lab.vip, 8848))
	if st := daemonStats(t, lab.Socket); st.Messages != 0 || listed() {
		t.Errorf("to the VIP: the backup received %d messages (%+v), invented tuple listed %v", st.Messages, st, listed())
	}
	check("to the VIP")

	group := netip.MustParseAddrPort("224.0.0.81:8848")
	send(group)
	if st := daemonStats(t, lab.Socket); st.Messages != 1 || st.Conns != 1 || st.Skipped != 1 || !listed() {
		t.Errorf("on the segment, no key: %+v, invented tuple listed %v; want the invented one inserted, the move skipped", st, listed())
	}
	check("on the segment, no key")

	lab.adm(t, "--stop-daemon", "backup")
	lab.adm(t, "-d", "-t", vs.String(), "-r", other.String()) // the invented connection goes with its real
	lab.adm(t, "-a", "-t", vs.String(), "-r", other.String(), "-g")
	key := filepath.Join(t.TempDir(), "sync.key")
	if err := os.WriteFile(key, []byte("a pair's secret of 32 bytes ...."), 0o600); err != nil {
		t.Fatal(err)
	}
	lab.adm(t, "--start-daemon", "backup", "--mcast-interface", "eth0", "--sync-key-file", key)
	if out := lab.adm(t, "-L", "--daemon"); !strings.Contains(out, "signed with "+key) {
		t.Errorf("-L --daemon does not show the key: %q", out)
	}
	send(group)
	if st := daemonStats(t, lab.Socket); st.Messages != 1 || st.Unauthenticated != 1 || st.Conns != 0 || listed() {
		t.Errorf("on the segment, unsigned, with a key: %+v, invented tuple listed %v; want it dropped whole", st, listed())
	}
	check("on the segment with a key")
}

// A backup sync daemon on one interface hears nothing multicast on
// another (issue 29: bound to its interface, as the kernel's).
func TestSyncOtherInterfaceIgnored(t *testing.T) {
	lab := newModeLab(t, "fi", labPlan{outside: "10.74.0", inside: "10.75.0", realsGateway: "10.75.0.1"})
	lab.adm(t, "--start-daemon", "backup", "--mcast-interface", "eth1")
	if err := lab.cl.IP("route", "add", "224.0.0.0/4", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	e := connsync.Encoder{MaxLen: 1472}
	e.Add(connsync.Conn{Proto: 6, Flags: connsync.FlagFwdRoute, State: 1, Timeout: 900, Client: netip.MustParseAddrPort("10.74.0.1:4242"),
		Virtual: netip.MustParseAddrPort("10.74.0.100:80"), Dest: netip.MustParseAddrPort("10.75.0.11:80")})
	msg := e.Flush()
	if err := lab.cl.Do(func() error {
		u, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(224, 0, 0, 81), Port: 8848})
		if err != nil {
			return err
		}
		defer u.Close()
		for i := 0; i < 5; i++ {
			if _, err := u.Write(msg); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if st := daemonStats(t, lab.Socket); st.Messages != 0 {
		t.Errorf("the backup on eth1 received %d messages multicast on eth0", st.Messages)
	}
}
