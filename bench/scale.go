package bench

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/dataplane/bpfobj"
	"github.com/xipvs/xipvs/internal/testutil"
)

// The scale scenario: an xipvsd whose connection table is filled with
// 1M, then 10M established DR connections (written into its pinned
// table, as a restart would find them), then left idle. Measured: its
// CPU at rest, without and with a master sync daemon; xipvsadm -Lnc's
// first line, rate and the memory both processes take while it runs; a
// kill -9 and restart adopting the table (time to ready and the new
// process's CPU until then); the tables' memory per connection.

var (
	scaleVIP  = netip.MustParseAddr("10.76.0.100")
	scaleReal = netip.MustParseAddr("10.76.0.11")
)

// scaleLab is the xipvsd under measure, its pins on a bpffs of its own.
type scaleLab struct {
	lab   *testutil.Lab
	pins  string
	mnt   string
	x     *xipvs
	args  []string
	table int
	work  string
}

func newScaleLab(prefix, work string, sizes []int) (_ *scaleLab, err error) {
	if len(sizes) == 0 {
		return nil, nil
	}
	s := &scaleLab{work: work, table: sizes[len(sizes)-1] + sizes[len(sizes)-1]/16}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()
	s.lab, err = testutil.NewLab(testutil.LabPlan{Prefix: prefix, Outside: "10.76.0", OutsideReals: 1, VIPs: []netip.Addr{scaleVIP}})
	if err != nil {
		return nil, err
	}
	s.mnt, err = os.MkdirTemp("", "xipvs-scale-bpffs-")
	if err != nil {
		return nil, err
	}
	if err := unix.Mount("bpf", s.mnt, "bpf", 0, "mode=0700"); err != nil {
		os.Remove(s.mnt)
		s.mnt = ""
		return nil, fmt.Errorf("mount a bpffs for the scale scenario's pins: %w", err)
	}
	s.pins = filepath.Join(s.mnt, "xipvs")
	return s, nil
}

// start starts xipvsd, adopting the pins when there are some.
func (s *scaleLab) start(o Options) error {
	var err error
	s.x, err = startXipvs(s.lab.Director.Netns, o, s.work, "scale", false, "eth0",
		"--conn-table-size", strconv.Itoa(s.table), "--pin-dir", s.pins)
	if err != nil {
		return err
	}
	// startXipvs flushes: only the first start may.
	return nil
}

// restart kills xipvsd and starts it again on its pins.
func (s *scaleLab) restart(o Options) (wall, cpu time.Duration, err error) {
	s.x.d.Kill()
	return s.adopt(o)
}

// adopt starts xipvsd (killed) again on its pins.
func (s *scaleLab) adopt(o Options) (wall, cpu time.Duration, err error) {
	start := time.Now()
	s.x.d, err = testutil.StartDaemon(s.lab.Director.Netns, filepath.Join(o.Bin, "xipvsd"), s.x.socket,
		"-i", "eth0", "--pin-dir", s.pins, "--state-file", s.x.state, "--conn-table-size", strconv.Itoa(s.table), "--metrics-addr", "")
	if err != nil {
		return 0, 0, err
	}
	wall = time.Since(start)
	cpu, err = procCPU(s.x.d.Pid())
	return wall, cpu, err
}

// fill writes n established DR connections of the service's real into
// the pinned table (replacing what it held), as a busy director's would
// be; xipvsd is down.
func (s *scaleLab) fill(n int, realID uint32) error {
	m, err := ebpf.LoadPinnedMap(filepath.Join(s.pins, bpfobj.DirectorMapEstConns), nil)
	if err != nil {
		return err
	}
	defer m.Close()
	now := uint64(dataplane.Now())
	const chunk = 1 << 16
	keys := make([]bpfobj.DirectorConnKey, chunk)
	vals := make([]bpfobj.DirectorConnVal, chunk)
	vip := scaleVIP.As4()
	for i := 0; i < n; i += chunk {
		c := min(chunk, n-i)
		for j := 0; j < c; j++ {
			x := i + j
			src := [4]byte{10, 80 + byte(x>>24), byte(x >> 16), byte(x >> 8)}
			keys[j] = bpfobj.DirectorConnKey{Saddr: be32of(src), Daddr: be32of(vip), Sport: htons(uint16(1024 + x&255)), Dport: htons(80), Proto: 6}
			vals[j] = bpfobj.DirectorConnVal{LastSeen: now, RealId: realID, SvcId: 1, State: uint8(conntrack.StateEstablished),
				Flags: uint8(dataplane.ConnSynSeen)}
		}
		if _, err := m.BatchUpdate(keys[:c], vals[:c], nil); err != nil {
			return fmt.Errorf("fill the table: %w", err)
		}
	}
	// The entries written over were counted by events (their flags said
	// so); the new ones are not: the counts start again with them, from
	// the restart's first sweep.
	live, err := ebpf.LoadPinnedMap(filepath.Join(s.pins, bpfobj.DirectorMapEstLive), nil)
	if err != nil {
		return err
	}
	defer live.Close()
	if err := live.Update(realID, make([]bpfobj.DirectorLiveCount, ebpf.MustPossibleCPU()), ebpf.UpdateExist); err != nil {
		return fmt.Errorf("reset the counts: %w", err)
	}
	return nil
}

func be32of(b [4]byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
func htons(v uint16) uint16 { return v<<8 | v>>8 }

// procCPU is a process's user and system time so far.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100, nil // USER_HZ
}

// procRSS is a process's resident memory now, in bytes.
func procRSS(pid int) uint64 { return procStatus(pid, "VmRSS:") }

// procHWM is the peak of a process's resident memory, in bytes.
func procHWM(pid int) uint64 { return procStatus(pid, "VmHWM:") }

// procStatus is a memory field of /proc/PID/status, in bytes.
func procStatus(pid int, field string) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// idleCPU is xipvsd's CPU over d, in % of one core.
func (s *scaleLab) idleCPU(d time.Duration) (float64, error) {
	pid := s.x.d.Pid()
	before, err := procCPU(pid)
	if err != nil {
		return 0, err
	}
	time.Sleep(d)
	after, err := procCPU(pid)
	if err != nil {
		return 0, err
	}
	return 100 * float64(after-before) / float64(d), nil
}

// listing runs xipvsadm -Lnc to the end: its first connection line's
// delay, lines per second, and the memory xipvsd (sampled) and xipvsadm
// (its peak) took above xipvsd's at rest.
func (s *scaleLab) listing() (first time.Duration, rate float64, lines int, xipvsdMB, admMB float64, err error) {
	pid := s.x.d.Pid()
	rest := procRSS(pid)
	peak := rest
	cmd := exec.Command(s.x.adm, "-Lnc")
	cmd.Env = append(os.Environ(), "XIPVS_SOCKET="+s.x.socket)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return
	}
	start := time.Now()
	if err = cmd.Start(); err != nil {
		return
	}
	// xipvsadm's own high-water mark (VmHWM), read while it runs: the
	// rusage of a waited child counts the parent's memory at the fork
	// (its maxrss is the larger of the two).
	var admPeak uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if r := procRSS(pid); r > peak {
				peak = r
			}
			if h := procHWM(cmd.Process.Pid); h > admPeak {
				admPeak = h
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if lines++; lines == 3 {
			first = time.Since(start)
		}
	}
	err = cmd.Wait()
	took := time.Since(start)
	close(stop)
	<-sampled
	if err != nil {
		return
	}
	lines -= 2 // the header
	rate = float64(lines) / took.Seconds()
	xipvsdMB = float64(peak-rest) / 1e6
	admMB = float64(admPeak) / 1e6
	return
}

// round fills the table to each size in turn and measures it.
func (s *scaleLab) round(r *Report, o Options, run int, sizes []int) error {
	if err := s.start(o); err != nil {
		return err
	}
	defer func() {
		s.x.d.Stop()
	}()
	if err := s.x.run("-A", "-t", netip.AddrPortFrom(scaleVIP, 80).String(), "-s", "rr"); err != nil {
		return err
	}
	if err := s.x.run("-a", "-t", netip.AddrPortFrom(scaleVIP, 80).String(), "-r", scaleReal.String(), "-g"); err != nil {
		return err
	}
	for _, n := range sizes {
		name := scaleName(n)
		// The table is filled while xipvsd is down, as a crash would
		// leave it: the restart adopts the connections (its first sweep
		// counts them, its deadline index is built from the table).
		s.x.d.Kill()
		if err := s.fill(n, 1); err != nil {
			return err
		}
		if _, _, err := s.adopt(o); err != nil {
			return fmt.Errorf("restart after the fill: %w", err)
		}
		// Until the sweep has counted them all.
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
			active, err := s.activeConns()
			if err == nil && active == n {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("after filling %d connections, -Ln shows %d active (%v)", n, active, err)
			}
		}
		sample := func(key, subject, unit string, v float64) {
			x := r.sample(Result{Key: "scale/" + key + "-" + name, Scenario: "scale", Subject: subject, Unit: unit}, run, v)
			x.Detail["connections"] = n
		}
		window := 10 * time.Second
		if o.Quick {
			window = time.Second
		}
		cpu, err := s.idleCPU(window)
		if err != nil {
			return err
		}
		sample("idle-cpu", fmt.Sprintf("xipvsd at rest, %d connections", n), UnitPct, cpu)
		sample("rss-mb", fmt.Sprintf("xipvsd's resident memory at rest, %d connections (MB)", n), "MB", float64(procRSS(s.x.d.Pid()))/1e6)
		first, rate, lines, dMB, aMB, err := s.listing()
		if err != nil {
			return fmt.Errorf("xipvsadm -Lnc: %w", err)
		}
		if lines < n {
			return fmt.Errorf("xipvsadm -Lnc listed %d of %d connections", lines, n)
		}
		sample("lnc-first", "xipvsadm -Lnc: its first connection line", UnitMsWall, float64(first.Microseconds())/1e3)
		sample("lnc-rate", "xipvsadm -Lnc: lines per second (M)", "M lines/s", rate/1e6)
		sample("lnc-xipvsd-mb", "xipvsadm -Lnc: xipvsd's memory above its rest (MB)", "MB", dMB)
		sample("lnc-xipvsadm-mb", "xipvsadm -Lnc: xipvsadm's peak memory (MB)", "MB", aMB)
		if err := s.x.run("--start-daemon", "master", "--mcast-interface", "eth0"); err != nil {
			return err
		}
		cpu, err = s.idleCPU(window)
		if err != nil {
			return err
		}
		sample("idle-cpu-master", fmt.Sprintf("xipvsd at rest with a master sync daemon, %d connections", n), UnitPct, cpu)
		if err := s.x.run("--stop-daemon", "master"); err != nil {
			return err
		}
		wall, cpuUsed, err := s.restart(o)
		if err != nil {
			return fmt.Errorf("restart: %w", err)
		}
		sample("restart-wall", fmt.Sprintf("kill -9 and restart adopting %d connections: until ready", n), UnitMsWall, float64(wall.Microseconds())/1e3)
		sample("restart-cpu", fmt.Sprintf("kill -9 and restart adopting %d connections: the new xipvsd's CPU until ready", n), UnitMs, float64(cpuUsed.Microseconds())/1e3)
		// What follows ready: the first sweep, a full one, and the deadline
		// index built from the table, until -Ln counts them all again.
		settle := time.Now()
		for {
			active, err := s.activeConns()
			if err == nil && active == n {
				break
			}
			if time.Since(settle) > time.Minute {
				return fmt.Errorf("after the restart, -Ln shows %d active (%v)", active, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		total, err := procCPU(s.x.d.Pid())
		if err != nil {
			return err
		}
		sample("restart-settle-cpu", fmt.Sprintf("after the restart: xipvsd's CPU from ready until -Ln counts the %d again (full sweep, index built)", n), UnitMs, float64((total-cpuUsed).Microseconds())/1e3)
	}
	m, err := ebpf.LoadPinnedMap(filepath.Join(s.pins, bpfobj.DirectorMapEstConns), nil)
	if err == nil {
		var total uint64
		for _, name := range []string{bpfobj.DirectorMapConns, bpfobj.DirectorMapEstConns, bpfobj.DirectorMapConns6, bpfobj.DirectorMapEstConns6} {
			if t, err := ebpf.LoadPinnedMap(filepath.Join(s.pins, name), nil); err == nil {
				if info, err := t.Info(); err == nil {
					if b, ok := info.Memlock(); ok {
						total += b
					}
				}
				t.Close()
			}
		}
		m.Close()
		r.sample(Result{Key: "scale/bytes-per-conn", Scenario: "scale", Subject: "the four connection tables' memory per connection of capacity", Unit: "B"},
			run, float64(total)/float64(s.table))
	}
	return nil
}

// scaleName is a table size in the scenario's keys: 1m, 10m, 65k.
func scaleName(n int) string {
	if n%1_000_000 == 0 {
		return fmt.Sprintf("%dm", n/1_000_000)
	}
	return fmt.Sprintf("%dk", n/1000)
}

// activeConns is the real's ActiveConn as xipvsadm -Ln shows it.
func (s *scaleLab) activeConns() (int, error) {
	cmd := exec.Command(s.x.adm, "-Ln")
	cmd.Env = append(os.Environ(), "XIPVS_SOCKET="+s.x.socket)
	out, err := cmd.Output()
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 6 && f[0] == "->" && strings.HasPrefix(f[1], scaleReal.String()+":") {
			return strconv.Atoi(f[4])
		}
	}
	return 0, fmt.Errorf("no line of the real in:\n%s", out)
}

func (s *scaleLab) Close() error {
	var err error
	if s.x != nil {
		s.x.d.Stop()
	}
	if s.mnt != "" {
		err = errors.Join(err, unix.Unmount(s.mnt, unix.MNT_DETACH), os.Remove(s.mnt))
	}
	if s.lab != nil {
		err = errors.Join(err, s.lab.Close())
	}
	return err
}
