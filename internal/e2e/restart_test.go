package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xipvs/xipvs/internal/testutil"
)

const (
	streamChunk  = 32 << 10
	streamChunks = 100 // 3.2 MB per stream, over about 8 s: they outlive a kill -9 and restart on a loaded machine
	streamPause  = 80 * time.Millisecond
)

// streamData is what the stream server sends for seed.
func streamData(seed uint32) []byte {
	r := rand.New(rand.NewPCG(uint64(seed), 7))
	b := make([]byte, streamChunk*streamChunks)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// serveStreams runs, on each real server, a TCP server on port that
// reads a 4-byte seed and then sends streamData(seed) slowly.
func (lab *drLab) serveStreams(t *testing.T, port int) {
	t.Helper()
	for _, rs := range lab.rs {
		var ln net.Listener
		if err := rs.Do(func() (err error) { ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port)); return }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					var seed [4]byte
					if _, err := io.ReadFull(c, seed[:]); err != nil {
						return
					}
					data := streamData(binary.BigEndian.Uint32(seed[:]))
					for i := 0; i < streamChunks; i++ {
						if _, err := c.Write(data[i*streamChunk : (i+1)*streamChunk]); err != nil {
							return
						}
						time.Sleep(streamPause)
					}
				}()
			}
		}()
	}
}

func (lab *drLab) dial(t *testing.T, port int, timeout time.Duration) (net.Conn, error) {
	return lab.dialAt(netip.AddrPortFrom(lab.vip, uint16(port)), timeout)
}

func (lab *drLab) dialAt(vs netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := lab.cl.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", vs.String(), timeout)
		return
	})
	return c, err
}

// startStreams opens n streams to vs (served by serveStreams) and reads
// them in the background; the function it returns waits for all of
// them and fails the test for each one that broke or came back wrong.
func (lab *drLab) startStreams(t *testing.T, n int, vs netip.AddrPort) (wait func()) {
	t.Helper()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		c, err := lab.dialAt(vs, 5*time.Second)
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		wg.Add(1)
		go func(i int, c net.Conn) {
			defer wg.Done()
			defer c.Close()
			seed := uint32(1000 + i)
			var b [4]byte
			binary.BigEndian.PutUint32(b[:], seed)
			if _, err := c.Write(b[:]); err != nil {
				errs[i] = err
				return
			}
			_ = c.SetDeadline(time.Now().Add(60 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil {
				errs[i] = fmt.Errorf("after %d bytes: %w", len(got), err)
				return
			}
			if want := sha256.Sum256(streamData(seed)); sha256.Sum256(got) != want {
				errs[i] = fmt.Errorf("payload corrupted or short: %d bytes", len(got))
			}
		}(i, c)
	}
	return func() {
		t.Helper()
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("stream %d: %v", i, err)
			}
		}
	}
}

// mountBPFFS mounts a private bpffs for the test's pins, so they outlive
// the daemon's mount namespace ("ip netns exec" gives it its own /sys).
func mountBPFFS(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// kill -9 of xipvsd in the middle of 50 long TCP streams: every stream
// completes intact; while it is down, new flows of rr and wlc services
// are still scheduled (in XDP) and those of an lblcr service dropped (not
// reset); the restarted daemon adopts the connections and serves new
// flows at once.
func TestRestartKill9(t *testing.T) {
	pins := filepath.Join(mountBPFFS(t), "xipvs")
	lab := newDRLab(t, "k9", "--pin-dir", pins)
	lab.serveHTTP(t)
	lab.serveStreams(t, 9000)
	lab.serveHTTP(t, 81)
	lab.serveHTTP(t, 82)
	// rr and wlc services are scheduled in XDP from the picks xipvsd
	// installed (a cycle, a lookahead); lblcr's new flows need xipvsd.
	for port, sched := range map[string]string{"80": "rr", "9000": "rr", "81": "lblcr", "82": "wlc"} {
		vs := lab.vip.String() + ":" + port
		lab.adm(t, "-A", "-t", vs, "-s", sched)
		lab.adm(t, "-a", "-t", vs, "-r", "10.77.0.11", "-g")
		lab.adm(t, "-a", "-t", vs, "-r", "10.77.0.12", "-g")
	}
	lab.httpGet(t) // real MACs resolved

	const streams = 50
	wait := lab.startStreams(t, streams, netip.AddrPortFrom(lab.vip, 9000))
	time.Sleep(time.Second)
	lab.Daemon.Kill()
	killed := time.Now()

	// Down: rr and wlc services still take new flows (XDP schedules
	// them from the installed picks); a new flow of an lblcr service
	// whose VIP has no entry yet (Go decides those) is dropped (the
	// client would retransmit), not refused.
	for port, sched := range map[int]string{80: "rr", 82: "wlc"} {
		if c, err := lab.dial(t, port, 700*time.Millisecond); err != nil {
			t.Errorf("a new connection to the %s service with xipvsd down: %v", sched, err)
		} else {
			c.Close()
		}
	}
	if c, err := lab.dial(t, 81, 700*time.Millisecond); err == nil {
		c.Close()
		t.Error("a new connection to the lblcr service succeeded with xipvsd down")
	} else if !errors.Is(err, os.ErrDeadlineExceeded) && !strings.Contains(err.Error(), "timeout") {
		t.Errorf("new connection while down: %v, want a timeout (dropped), not a reset", err)
	}
	time.Sleep(time.Until(killed.Add(1500 * time.Millisecond)))

	lab.start(t)
	restarted := time.Now()
	c, err := lab.dial(t, 81, time.Second)
	if err != nil {
		t.Fatalf("new connection after restart: %v", err)
	}
	c.Close()
	if d := time.Since(restarted); d > time.Second {
		t.Errorf("new connection took %v after restart", d)
	}
	conns := lab.adm(t, "-Lnc")
	adopted := strings.Count(conns, "ESTABLISHED")
	if !strings.HasPrefix(conns, "IPVS connection entries\npro expire state       source             virtual            destination\n") ||
		strings.Count(conns, " 10.77.0.100:9000 ") < streams || adopted < streams {
		t.Errorf("-Lnc after restart does not show the %d adopted streams:\n%s", streams, conns)
	}

	wait()
	if t.Failed() {
		return
	}
	// --cleanup detaches the director and removes the pins.
	lab.Daemon.Stop()
	lab.Daemon = nil
	out, err := lab.lb.Exec(xipvsdBin, "--cleanup", "--pin-dir", pins, "--state-file", filepath.Join(lab.Dir, "state.json")).CombinedOutput()
	if err != nil {
		t.Fatalf("xipvsd --cleanup: %v: %s", err, out)
	}
	if _, err := os.Stat(pins); !os.IsNotExist(err) {
		t.Errorf("pin directory still there after --cleanup: %v", err)
	}
	link, _ := lab.lb.Exec("ip", "link", "show", "eth0").CombinedOutput()
	if bytes.Contains(link, []byte("xdp")) {
		t.Errorf("XDP still attached after --cleanup:\n%s", link)
	}
}

// Small --set timeouts expire idle connections; -Ln counts fall to 0.
func TestTimeoutsExpire(t *testing.T) {
	lab := newDRLab(t, "to")
	lab.serveStreams(t, 9000)
	lab.serveUDP(t, 53)
	vs := lab.vip.String() + ":9000"
	lab.adm(t, "-A", "-t", vs, "-s", "rr")
	lab.adm(t, "-a", "-t", vs, "-r", "10.77.0.11", "-g")
	us := lab.vip.String() + ":53"
	lab.adm(t, "-A", "-u", us, "-s", "rr")
	lab.adm(t, "-a", "-u", us, "-r", "10.77.0.12", "-g")
	lab.adm(t, "--set", "3", "2", "2")
	if got := lab.adm(t, "-L", "--timeout"); got != "Timeout (tcp tcpfin udp): 3 2 2\n" {
		t.Fatalf("--timeout: %q", got)
	}
	// Idle established connections: the server waits for the seed.
	for i := 0; i < 4; i++ {
		c, err := lab.dial(t, 9000, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	lab.udpAsk(t, 53)
	counts := func() (act, inact string) {
		for _, l := range strings.Split(lab.adm(t, "-Ln"), "\n") {
			f := strings.Fields(l)
			if len(f) == 6 && f[1] == "10.77.0.11:9000" {
				act = f[4]
			}
			if len(f) == 6 && f[1] == "10.77.0.12:53" {
				inact = f[5]
			}
		}
		return
	}
	deadline := time.Now().Add(3 * time.Second)
	for a, u := counts(); a != "4" || u != "1"; a, u = counts() {
		if time.Now().After(deadline) {
			t.Fatalf("before expiry: ActiveConn %s (want 4), UDP InActConn %s (want 1)\n%s", a, u, lab.adm(t, "-Ln"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	deadline = time.Now().Add(8 * time.Second)
	for a, u := counts(); a != "0" || u != "0"; a, u = counts() {
		if time.Now().After(deadline) {
			t.Fatalf("after the timeouts: ActiveConn %s, UDP InActConn %s, want 0 and 0\n%s", a, u, lab.adm(t, "-Lnc"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if conns := lab.adm(t, "-Lnc"); strings.Count(conns, "\n") != 2 {
		t.Errorf("connections left:\n%s", conns)
	}
}

// prefilterSlot is the address prefilter's slot of an IPv4 address
// (bpf/consts.h addr_slot: the address as loaded from a packet, network
// order in a native word, folded to 16 bits).
func prefilterSlot(a netip.Addr) uint32 {
	b := a.As4()
	u := binary.NativeEndian.Uint32(b[:])
	return (u ^ u>>16) & 0xffff
}

// Restarts at a real site's configuration size lose nothing (issue 29):
// 5000 services, among them VIPs folding into the prefilter slots of the
// NAT and FULLNAT reals, and long downloads through a DR, a TUN, a NAT
// and a FULLNAT real, each five at a time; xipvsd is killed (-9) and
// restarted during one batch and stopped (SIGTERM) and restarted during
// another. Every download completes, byte for byte.
func TestRestartAtScaleKeepsDownloads(t *testing.T) {
	pins := filepath.Join(mountBPFFS(t), "xipvs")
	vip := netip.MustParseAddr("10.71.0.100")
	l := testutil.NewTestLab(t, testutil.LabPlan{Prefix: fmt.Sprintf("xe%drs", os.Getpid()%10000),
		Outside: "10.71.0", Inside: "10.72.0", OutsideReals: 2, InsideReals: 2, VIPs: []netip.Addr{vip}})
	lab := &drLab{Lab: l, args: []string{"--pin-dir", pins}, cl: l.Client, lb: l.Director, rs: l.Reals, vip: vip}
	dr, tun, nat, fnat := lab.rs[0], lab.rs[1], lab.rs[2], lab.rs[3]
	if err := dr.MakeRealServer(vip); err != nil {
		t.Fatal(err)
	}
	realserver(t, tun, "up", "--vip", vip.String(), "--mode", "tun", "--interface", "eth0")
	t.Cleanup(func() { _ = tun.Exec(xipvsadmBin, "realserver", "down").Run() })
	for _, rs := range []*testutil.Host{nat, fnat} {
		if err := rs.IP("route", "add", "default", "via", "10.72.0.1"); err != nil {
			t.Fatal(err)
		}
	}
	lip := "10.72.0.250"
	if err := lab.lb.IP("addr", "add", lip+"/32", "dev", "eth1"); err != nil {
		t.Fatal(err)
	}
	lab.start(t)
	lab.serveStreams(t, 9000)
	lab.serveStreams(t, 9005)

	// 5000 services first, whose VIPs fold where the NAT and FULLNAT
	// reals do, and elsewhere.
	var rules strings.Builder
	want := map[uint32]int{prefilterSlot(nat.Addr.Addr()): 0, prefilterSlot(fnat.Addr.Addr()): 0}
	n := 0
	for i := 0; n < 5000; i++ {
		a := netip.AddrFrom4([4]byte{10, 200 + byte(i>>16), byte(i >> 8), byte(i)})
		s := prefilterSlot(a)
		if c, ok := want[s]; ok && c >= 8 {
			continue
		} else if ok {
			want[s]++
		}
		fmt.Fprintf(&rules, "-A -t %s:80 -s rr\n", a)
		n++
	}
	for s, c := range want {
		if c == 0 {
			t.Fatalf("no VIP folds into slot %#x", s)
		}
	}
	if _, errOut, code := lab.admExit(t, rules.String(), "-R"); code != 0 {
		t.Fatalf("-R of 5000 services: %s", errOut)
	}
	services := map[uint16][]string{
		9000: {"-g", dr.Addr.Addr().String() + ":9000"},
		9005: {"-i", tun.Addr.Addr().String() + ":9005"},
		9003: {"-m", nat.Addr.Addr().String() + ":9000"},
		9004: {"-b", fnat.Addr.Addr().String() + ":9000"},
	}
	for port, r := range services {
		vs := netip.AddrPortFrom(vip, port).String()
		lab.adm(t, "-A", "-t", vs, "-s", "rr")
		if r[0] == "-b" {
			lab.adm(t, "--add-laddr", "-z", lip, "-t", vs)
		}
		lab.adm(t, "-a", "-t", vs, "-r", r[1], r[0])
	}

	for _, stop := range []string{"kill -9", "SIGTERM"} {
		var waits []func()
		for port := range services {
			waits = append(waits, lab.startStreams(t, 5, netip.AddrPortFrom(vip, port)))
		}
		time.Sleep(time.Second)
		if stop == "kill -9" {
			lab.Daemon.Kill()
		} else {
			if err := lab.Daemon.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			lab.Daemon.Wait()
		}
		lab.start(t)
		for _, w := range waits {
			w()
		}
		if t.Failed() {
			t.Fatalf("downloads broken across %s and a restart", stop)
		}
		if got := strings.Count(lab.adm(t, "-Ln"), "TCP  "); got != 5004 {
			t.Errorf("after %s and a restart: %d services, want 5004", stop, got)
		}
	}
}
