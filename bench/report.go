package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Units of a Result.
const (
	UnitMpps = "Mpps"
	UnitCPS  = "conn/s"
	UnitUs   = "us"
	UnitNs   = "ns/packet"
	UnitMs   = "ms CPU"
	// The flood scenario's.
	UnitPct    = "%"
	UnitMsWall = "ms"
	UnitSYNs   = "SYN/s"
	UnitPkts   = "packets"
)

// Generators of a Result besides the loadgen methods and the wire's.
const (
	GenTCP     = "tcp"          // real sockets through the kernel's stack
	GenProgRun = "bpf_prog_run" // Program.Run with Repeat, no wire
)

// Result is one measured quantity: every sample and their median, min
// and max.
type Result struct {
	// Key names the quantity uniquely, e.g. "established/xipvs-dr/64".
	Key string `json:"key"`
	// Scenario is the scenario: ceiling, established, new-flows,
	// tcp-connect, latency, bpf-cost.
	Scenario string `json:"scenario"`
	// Subject is what was measured: ceiling, xipvs-dr, nftables, haproxy ...
	Subject string `json:"subject"`
	// Size is the frame length in bytes (0: not a packet-rate result).
	Size int    `json:"size,omitempty"`
	Unit string `json:"unit"`
	// Generator is what made the load: live-frames (open loop),
	// closed-loop (AF_XDP seeds, XDP sends them round), af_xdp (an open
	// loop AF_XDP sender), hping3, tcp (real sockets), bpf_prog_run
	// (Program.Run with Repeat), or empty where nothing was sent
	// (aging).
	Generator string `json:"generator,omitempty"`
	// Run is which of the back-to-back runs measured it (1, 2); each
	// sample is one round, in which every subject was measured once.
	Run     int       `json:"run"`
	Samples []float64 `json:"samples"`
	Median  float64   `json:"median"`
	Min     float64   `json:"min"`
	Max     float64   `json:"max"`
	// Detail holds what a reader needs to trust the number: frames sent
	// and counted, the per-real split and whether it matches.
	Detail map[string]any `json:"detail,omitempty"`
}

func (r *Result) summarise() {
	if len(r.Samples) == 0 {
		return
	}
	r.Median, r.Min, r.Max = summary(r.Samples)
}

// Check is a property the harness verified while measuring (the
// per-real split, frames lost); Ok false is reported, never hidden.
type Check struct {
	Name   string `json:"name"`
	Ok     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Machine describes where the run happened.
type Machine struct {
	Kernel string `json:"kernel"`
	CPU    string `json:"cpu"`
	CPUs   int    `json:"cpus"`
	MemMiB int    `json:"mem_mib"`
	Go     string `json:"go"`
	Host   string `json:"host"`
}

func thisMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
		m.Host = unix.ByteSliceToString(u.Machine[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		m.MemMiB = int(uint64(si.Totalram) * uint64(si.Unit) >> 20)
	}
	return m
}

// Ratio is one comparison the report makes, computed round by round:
// in each round both subjects were measured within seconds of each
// other, so the per-round ratios cancel the machine's drift, and their
// median and spread are what the report shows.
type Ratio struct {
	Name     string `json:"name"`
	Num, Den string `json:"-"` // result keys
	// Runs holds, per run, the per-round ratios and their summary.
	Runs []RatioRun `json:"runs"`
}

// RatioRun is a ratio in one run.
type RatioRun struct {
	PerRound []float64 `json:"per_round"`
	Median   float64   `json:"median"`
	Min      float64   `json:"min"`
	Max      float64   `json:"max"`
}

// Repeatable reports whether the ratio's medians of the first two runs
// are within tol of each other (relative to the first).
func (x *Ratio) Repeatable(tol float64) (bool, bool) {
	if len(x.Runs) < 2 || x.Runs[0].Median == 0 || len(x.Runs[1].PerRound) == 0 {
		return false, false
	}
	return math.Abs(x.Runs[1].Median/x.Runs[0].Median-1) <= tol, true
}

// Pooled is the median of the per-round ratios of every run.
func (x *Ratio) Pooled() (float64, bool) {
	var all []float64
	for _, r := range x.Runs {
		all = append(all, r.PerRound...)
	}
	if len(all) == 0 {
		return 0, false
	}
	m, _, _ := summary(all)
	return m, true
}

func summary(v []float64) (median, lo, hi float64) {
	s := slices.Clone(v)
	slices.Sort(s)
	lo, hi = s[0], s[len(s)-1]
	if n := len(s); n%2 == 1 {
		median = s[n/2]
	} else {
		median = (s[n/2-1] + s[n/2]) / 2
	}
	return median, lo, hi
}

// Report is one run of the harness.
type Report struct {
	Command  string        `json:"command"`
	Quick    bool          `json:"quick"`
	Started  time.Time     `json:"started"`
	Took     time.Duration `json:"took_ns"`
	Machine  Machine       `json:"machine"`
	Settings Options       `json:"settings"`
	Results  []*Result     `json:"results"`
	Ratios   []*Ratio      `json:"ratios"`
	Checks   []Check       `json:"checks"`
	// SlowPathProfile is a Go CPU profile of xipvsd taken during a SYN
	// stream (pprof format), written next to the report.
	SlowPathProfile []byte `json:"-"`
	// SlowPathTop is that profile's heaviest functions (go tool pprof -top).
	SlowPathTop string `json:"slow_path_top,omitempty"`
	// Skipped lists what could not be measured and why.
	Skipped []string `json:"skipped,omitempty"`
	// Generators says, per lab, which generator ran and why.
	Generators []string `json:"generators,omitempty"`
}

// sample adds one round's sample v to the result key of run, made from
// proto the first time.
func (r *Report) sample(proto Result, run int, v float64) *Result {
	x := r.result(proto.Key, run)
	if x == nil {
		c := proto
		c.Run, c.Samples, c.Detail = run, nil, map[string]any{}
		x = &c
		r.Results = append(r.Results, x)
	}
	x.Samples = append(x.Samples, v)
	x.summarise()
	return x
}

// result returns the result with key of run, or nil.
func (r *Report) result(key string, run int) *Result {
	for _, x := range r.Results {
		if x.Key == key && x.Run == run {
			return x
		}
	}
	return nil
}

// Get returns the result with key of the first run, or nil.
func (r *Report) Get(key string) *Result { return r.result(key, 1) }

// ratio adds the comparison num / den, computed per round of each run.
func (r *Report) ratio(name, num, den string) {
	x := &Ratio{Name: name, Num: num, Den: den}
	for run := 1; run <= r.Settings.Runs; run++ {
		a, b := r.result(num, run), r.result(den, run)
		var rr RatioRun
		if a != nil && b != nil {
			for i := 0; i < min(len(a.Samples), len(b.Samples)); i++ {
				if b.Samples[i] != 0 {
					rr.PerRound = append(rr.PerRound, a.Samples[i]/b.Samples[i])
				}
			}
		}
		if len(rr.PerRound) > 0 {
			rr.Median, rr.Min, rr.Max = summary(rr.PerRound)
		}
		x.Runs = append(x.Runs, rr)
	}
	r.Ratios = append(r.Ratios, x)
}

// Ratio returns the ratio named name, or nil.
func (r *Report) Ratio(name string) *Ratio {
	for _, x := range r.Ratios {
		if x.Name == name {
			return x
		}
	}
	return nil
}

func (r *Report) check(name string, ok bool, format string, args ...any) {
	r.Checks = append(r.Checks, Check{Name: name, Ok: ok, Detail: fmt.Sprintf(format, args...)})
}

func num(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// target is a goal from the issues, evaluated on the pooled per-round
// ratios (or a median) and reported, never asserted.
type target struct {
	text string
	met  func(r *Report) (bool, bool) // met, known
}

func ratioAtLeast(name string, x float64) func(*Report) (bool, bool) {
	return func(r *Report) (bool, bool) {
		q := r.Ratio(name)
		if q == nil {
			return false, false
		}
		v, ok := q.Pooled()
		return v >= x, ok
	}
}

func ratioAtMost(name string, x float64) func(*Report) (bool, bool) {
	return func(r *Report) (bool, bool) {
		q := r.Ratio(name)
		if q == nil {
			return false, false
		}
		v, ok := q.Pooled()
		return v <= x, ok
	}
}

func medianAtLeast(key string, x float64) func(*Report) (bool, bool) {
	return func(r *Report) (bool, bool) {
		res := r.Get(key)
		if res == nil {
			return false, false
		}
		return res.Median >= x, true
	}
}

func medianAtMost(key string, x float64) func(*Report) (bool, bool) {
	return func(r *Report) (bool, bool) {
		res := r.Get(key)
		if res == nil {
			return false, false
		}
		return res.Median <= x, true
	}
}

var targets = []target{
	{"new flows/s (SYN stream, XDP-scheduled wrr) >= 2x nftables", ratioAtLeast("new flows: xipvs-dr / nftables", 2)},
	{"first-packet p50 (SYN to SYN-ACK, xipvs NAT) <= nftables", ratioAtMost("first-packet p50: xipvs-nat / nftables", 1)},
	{"DR hit path <= 1.5x the reference LB (BPF cost)", ratioAtMost("bpf: xipvs-dr / reference-lb", 1.5)},
	{"a packet to no service's address <= 2x the ceiling (BPF cost)", ratioAtMost("bpf: xipvs-not-ours / ceiling", 2)},
	{"aging: a sweep at rest with 1M established connections <= 5 ms CPU", medianAtMost("aging/sweep-1m", 5)},
	{"aging: a sweep at rest with 10M established connections <= 5 ms CPU", medianAtMost("aging/sweep-10m", 5)},
	{"aging: ending a due connection <= 2 us of CPU, at 10M", medianAtMost("aging/end-10m", 2000)},
	{"scale: xipvsd at rest with 10M connections <= 5% of a core", medianAtMost("scale/idle-cpu-10m", 5)},
	{"scale: the same with a master sync daemon <= 5% of a core", medianAtMost("scale/idle-cpu-master-10m", 5)},
	{"scale: xipvsadm -Lnc's first line <= 100 ms at 10M", medianAtMost("scale/lnc-first-10m", 100)},
	{"scale: xipvsadm -Lnc >= 1M lines/s at 10M", medianAtLeast("scale/lnc-rate-10m", 1)},
	{"scale: xipvsd's memory during -Lnc <= 100 MB above its rest (10M)", medianAtMost("scale/lnc-xipvsd-mb-10m", 100)},
	{"scale: xipvsadm's memory during -Lnc <= 100 MB (10M)", medianAtMost("scale/lnc-xipvsadm-mb-10m", 100)},
	{"scale: kill -9 and restart adopting 10M connections <= 1 s of CPU", medianAtMost("scale/restart-cpu-10m", 1000)},
	{"DR established >= 0.9x ceiling (64 B)", ratioAtLeast("established 64 B: xipvs-dr / ceiling", 0.9)},
	{"DR established >= 4x nftables (64 B)", ratioAtLeast("established 64 B: xipvs-dr / nftables", 4)},
	{"TCP connect/close per s >= nftables", ratioAtLeast("tcp-connect: xipvs-nat / nftables", 1)},
	{"SYN flood at the generator's full rate, NAT with the SYN proxy: >= 99% of legitimate connections served", medianAtLeast("flood/xipvs-nat-synproxy@max/served", 99)},
	{"SYN flood, NAT with the SYN proxy: p99 connect <= 100 ms", medianAtMost("flood/xipvs-nat-synproxy@max/connect-p99", 100)},
	{"SYN flood, DR with admission control: >= 95% served", medianAtLeast("flood/xipvs-dr-admission@max/served", 95)},
	{"SYN flood at the generator's full rate: an established download keeps >= 80% (NAT, SYN proxy)", medianAtLeast("flood/xipvs-nat-synproxy@max/download-kept", 80)},
	{"SYN flood at the generator's full rate: an established download keeps >= 80% (DR, admission)", medianAtLeast("flood/xipvs-dr-admission@max/download-kept", 80)},
	{"SYN flood by hping3 at its full rate: an established download keeps >= 80% (NAT, SYN proxy)", medianAtLeast("flood/xipvs-nat-synproxy@hping3/download-kept", 80)},
	{"SYN flood by hping3 at its full rate: an established download keeps >= 80% (DR, admission)", medianAtLeast("flood/xipvs-dr-admission@hping3/download-kept", 80)},
	{"SYN flood: xipvsadm -Ln answers within 200 ms", medianAtMost("flood/xipvs-nat-synproxy@max/xipvsadm-Ln", 200)},
}

// Markdown renders the report: the measured quantities, the ratios with
// their spread in each run, the repeatability line, the targets.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %s, %d vCPU, %d MiB, kernel %s, %s. Command: `%s`", r.Machine.CPU, r.Machine.CPUs, r.Machine.MemMiB, r.Machine.Kernel, r.Machine.Go, r.Command)
	fmt.Fprintf(&b, " (%s: %d runs of %d rounds, samples of %s, %d flows; took %s).\n\n", map[bool]string{true: "quick", false: "full"}[r.Quick],
		r.Settings.Runs, r.Settings.Repeats, r.Settings.Sample, r.Settings.Flows, r.Took.Round(time.Second))
	if len(r.Generators) > 0 {
		b.WriteString("Generators (the `generator` column of every row below):\n\n")
		for _, g := range r.Generators {
			fmt.Fprintf(&b, "- %s\n", g)
		}
		b.WriteString("\n")
	}

	b.WriteString("Ratios, computed round by round (every subject measured once per round, interleaved); median [min–max] of the rounds:\n\n")
	b.WriteString("| ratio | run 1 | run 2 | runs within ±15% |\n|---|---|---|---|\n")
	within, rows := 0, 0
	var drift []string
	for _, x := range r.Ratios {
		cell := func(i int) string {
			if i >= len(x.Runs) || len(x.Runs[i].PerRound) == 0 {
				return ""
			}
			q := x.Runs[i]
			return fmt.Sprintf("%.2fx [%.2f–%.2f]", q.Median, q.Min, q.Max)
		}
		rep := ""
		if ok, known := x.Repeatable(0.15); known {
			rows++
			rep = "yes"
			if ok {
				within++
			} else {
				rep = "NO"
				drift = append(drift, x.Name)
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", x.Name, cell(0), cell(1), rep)
	}
	if rows > 0 {
		fmt.Fprintf(&b, "\n**Repeatability: %d of %d ratio rows within ±15%% across the two back-to-back runs.**", within, rows)
		if len(drift) > 0 {
			fmt.Fprintf(&b, " Outside: %s.", strings.Join(drift, "; "))
		}
		b.WriteString("\n")
	}

	b.WriteString("\n| target (reported, not asserted) | result |\n|---|---|\n")
	for _, t := range targets {
		met, known := t.met(r)
		s := "not measured"
		if known {
			s = map[bool]string{true: "met", false: "missed"}[met]
		}
		fmt.Fprintf(&b, "| %s | %s |\n", t.text, s)
	}
	if c := r.Get("flood/sink-control@max/download-kept"); c != nil {
		kept := num(c.Median) + "%"
		if c2 := r.result(c.Key, 2); c2 != nil {
			kept += " (run 1) and " + num(c2.Median) + "% (run 2)"
		}
		fmt.Fprintf(&b, "\nThe control (`sink-control@max`): the same generator at its full rate into a program that drops every frame, on a link of its own with nothing of the director in its path, leaves the download %s of its rate: what the lab's attacker alone costs the download on this machine's CPUs. The `ring-refused` rows count what the director's receive ring on the client's link (a veth's 256 frames) had no room for.", kept)
		a, d := r.Get("flood/shed/xipvs-dr-admission"), r.Get("flood/shed/drop-all")
		if a != nil && d != nil && d.Median > 0 {
			fmt.Fprintf(&b, " One vCPU generating and shedding (`one vCPU floods and sheds` rows) goes at %.2fx the rate into the director's admission control that it goes into a program dropping every frame unread.", a.Median/d.Median)
		}
		b.WriteString("\n")
	}

	b.WriteString("\nMeasured quantities, median [min–max] of the rounds:\n\n| scenario | subject | frame | generator | unit | run 1 | run 2 |\n|---|---|---|---|---|---|---|\n")
	for _, x := range r.Results {
		if x.Run != 1 {
			continue
		}
		size := ""
		if x.Size > 0 {
			size = fmt.Sprintf("%d B", x.Size)
		}
		cell := func(y *Result) string {
			if y == nil {
				return ""
			}
			return fmt.Sprintf("%s [%s–%s]", num(y.Median), num(y.Min), num(y.Max))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", x.Scenario, x.Subject, size, x.Generator, x.Unit, cell(x), cell(r.result(x.Key, 2)))
	}
	if len(r.Checks) > 0 {
		b.WriteString("\n| check | ok | detail |\n|---|---|---|\n")
		for _, c := range r.Checks {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", c.Name, map[bool]string{true: "yes", false: "NO"}[c.Ok], c.Detail)
		}
	}
	for _, s := range r.Skipped {
		fmt.Fprintf(&b, "\nNot measured: %s\n", s)
	}
	if r.SlowPathTop != "" {
		fmt.Fprintf(&b, "\nWhere xipvsd's time goes during a SYN stream through the Go slow path (Go CPU profile, `go tool pprof -top -cum`):\n\n```\n%s```\n", r.SlowPathTop)
	}
	return b.String()
}

// Write puts the report under dir as NAME.json (every sample), NAME.md
// and NAME.svg, NAME being bench-<quick|full>, and returns their paths.
func (r *Report) Write(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	name := "bench-full"
	if r.Quick {
		name = "bench-quick"
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		name + ".json": append(js, '\n'),
		name + ".md":   []byte(r.Markdown()),
		name + ".svg":  []byte(r.SVG()),
	}
	order := []string{name + ".md", name + ".json", name + ".svg"}
	if len(r.SlowPathProfile) > 0 {
		files[name+"-slowpath.pprof"] = r.SlowPathProfile
		order = append(order, name+"-slowpath.pprof")
	}
	var paths []string
	for _, f := range order {
		p := filepath.Join(dir, f)
		if err := os.WriteFile(p, files[f], 0o644); err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}
