package bench

import (
	"encoding/json"
	"fmt"
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
	Size    int       `json:"size,omitempty"`
	Unit    string    `json:"unit"`
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
	s := slices.Clone(r.Samples)
	slices.Sort(s)
	r.Min, r.Max = s[0], s[len(s)-1]
	if n := len(s); n%2 == 1 {
		r.Median = s[n/2]
	} else {
		r.Median = (s[n/2-1] + s[n/2]) / 2
	}
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

// Report is one run of the harness.
type Report struct {
	Command  string        `json:"command"`
	Quick    bool          `json:"quick"`
	Started  time.Time     `json:"started"`
	Took     time.Duration `json:"took_ns"`
	Machine  Machine       `json:"machine"`
	Settings Options       `json:"settings"`
	Results  []*Result     `json:"results"`
	Checks   []Check       `json:"checks"`
	// SlowPathProfile is a Go CPU profile of xipvsd taken during a SYN
	// stream (pprof format), written next to the report.
	SlowPathProfile []byte `json:"-"`
	// SlowPathTop is that profile's heaviest functions (go tool pprof -top).
	SlowPathTop string `json:"slow_path_top,omitempty"`
	// Skipped lists what could not be measured and why.
	Skipped []string `json:"skipped,omitempty"`
}

// add records res; a result without samples is reported as not measured.
func (r *Report) add(res *Result) *Result {
	if len(res.Samples) == 0 {
		r.Skipped = append(r.Skipped, res.Key+": no samples")
		return res
	}
	res.summarise()
	r.Results = append(r.Results, res)
	return res
}

// Get returns the result with key, or nil.
func (r *Report) Get(key string) *Result {
	for _, x := range r.Results {
		if x.Key == key {
			return x
		}
	}
	return nil
}

func (r *Report) check(name string, ok bool, format string, args ...any) {
	r.Checks = append(r.Checks, Check{Name: name, Ok: ok, Detail: fmt.Sprintf(format, args...)})
}

// ratio returns a/b formatted, or "" when either is missing.
func ratio(a, b *Result) string {
	if a == nil || b == nil || b.Median == 0 {
		return ""
	}
	return fmt.Sprintf("%.2fx", a.Median/b.Median)
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

// target is a goal from the issue, evaluated on medians and reported.
type target struct {
	text string
	met  func(r *Report) (bool, bool) // met, known
}

func atLeast(r *Report, a, b string, x float64) (bool, bool) {
	ra, rb := r.Get(a), r.Get(b)
	if ra == nil || rb == nil {
		return false, false
	}
	return ra.Median >= x*rb.Median, true
}

// Markdown renders the report as the tables README and the issue note
// carry.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Machine: %s, %d vCPU, %d MiB, kernel %s, %s. Command: `%s`", r.Machine.CPU, r.Machine.CPUs, r.Machine.MemMiB, r.Machine.Kernel, r.Machine.Go, r.Command)
	fmt.Fprintf(&b, " (%s, %d repeats of %s per sample, %d flows; took %s).\n\n", map[bool]string{true: "quick", false: "full"}[r.Quick],
		r.Settings.Repeats, r.Settings.Sample, r.Settings.Flows, r.Took.Round(time.Second))

	b.WriteString("| scenario | subject | frame | median | min | max | unit | vs ceiling | vs nftables | vs HAProxy |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range r.Results {
		size := ""
		if x.Size > 0 {
			size = fmt.Sprintf("%d B", x.Size)
		}
		var vsCeil, vsNft, vsHa string
		switch x.Scenario {
		case "established":
			vsCeil = ratio(x, r.Get(fmt.Sprintf("ceiling/ceiling/%d", x.Size)))
			vsNft = ratio(x, r.Get(fmt.Sprintf("established/nftables/%d", x.Size)))
		case "ceiling":
			vsNft = ratio(x, r.Get(fmt.Sprintf("established/nftables/%d", x.Size)))
		case "new-flows":
			vsNft = ratio(x, r.Get("new-flows/nftables/64"))
		case "tcp-connect":
			vsNft = ratio(x, r.Get("tcp-connect/nftables"))
			vsHa = ratio(x, r.Get("tcp-connect/haproxy"))
		case "latency":
			kind, p, _ := strings.Cut(strings.TrimPrefix(x.Key, "latency/xipvs-nat-"), "/")
			if strings.HasPrefix(x.Key, "latency/xipvs-nat-") {
				vsNft = ratio(x, r.Get("latency/nftables-"+kind+"/"+p))
			}
		case "bpf-cost":
			vsCeil = ratio(x, r.Get("bpf-cost/ceiling"))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			x.Scenario, x.Subject, size, num(x.Median), num(x.Min), num(x.Max), x.Unit, vsCeil, vsNft, vsHa)
	}

	targets := []target{
		{"DR established >= 0.9x ceiling (64 B)", func(r *Report) (bool, bool) { return atLeast(r, "established/xipvs-dr/64", "ceiling/ceiling/64", 0.9) }},
		{"DR established >= 4x nftables (64 B)", func(r *Report) (bool, bool) {
			return atLeast(r, "established/xipvs-dr/64", "established/nftables/64", 4)
		}},
		{"TUN established >= 0.8x ceiling (64 B)", func(r *Report) (bool, bool) { return atLeast(r, "established/xipvs-tun/64", "ceiling/ceiling/64", 0.8) }},
		{"NAT established >= 0.8x ceiling (64 B)", func(r *Report) (bool, bool) { return atLeast(r, "established/xipvs-nat/64", "ceiling/ceiling/64", 0.8) }},
		{"FULLNAT established >= 0.8x ceiling (64 B)", func(r *Report) (bool, bool) {
			return atLeast(r, "established/xipvs-fullnat/64", "ceiling/ceiling/64", 0.8)
		}},
		{"new flows/s (SYN stream) >= nftables", func(r *Report) (bool, bool) { return atLeast(r, "new-flows/xipvs-dr/64", "new-flows/nftables/64", 1) }},
		{"TCP connect/close per s >= nftables", func(r *Report) (bool, bool) { return atLeast(r, "tcp-connect/xipvs-nat", "tcp-connect/nftables", 1) }},
		{"TCP connect/close per s >= 3x HAProxy", func(r *Report) (bool, bool) { return atLeast(r, "tcp-connect/xipvs-nat", "tcp-connect/haproxy", 3) }},
		{"first-packet p99 <= 100 us", func(r *Report) (bool, bool) {
			x := r.Get("latency/xipvs-nat-first-packet/p99")
			if x == nil {
				return false, false
			}
			return x.Median <= 100, true
		}},
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
		fmt.Fprintf(&b, "\nWhere xipvsd's time goes during a SYN stream (Go CPU profile, `go tool pprof -top -cum`):\n\n```\n%s```\n", r.SlowPathTop)
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
