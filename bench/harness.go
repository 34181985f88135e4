package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/xipvs/xipvs/internal/testutil"
)

// Options sizes a run. Full() and Quick() give the two standard ones.
type Options struct {
	// Quick marks the smoke run.
	Quick bool `json:"quick"`
	// Repeats is how many samples each quantity gets.
	Repeats int `json:"repeats"`
	// Sample is how long one packet-rate or connection-rate sample runs.
	Sample time.Duration `json:"sample_ns"`
	// Flows is the number of established flows (distinct source address
	// and port pairs) the packet-rate scenarios cycle through.
	Flows int `json:"flows"`
	// Sizes are the frame lengths (bytes, Ethernet header included, FCS
	// not) of the packet-rate scenarios.
	Sizes []int `json:"sizes"`
	// Senders is the number of concurrent generator threads.
	Senders int `json:"senders"`
	// Clients is the number of concurrent TCP clients of tcp-connect.
	Clients int `json:"clients"`
	// Pings is the number of timed round trips per latency sample.
	Pings int `json:"pings"`
	// CostRepeat is the Repeat of one Program.Run cost sample.
	CostRepeat int `json:"cost_repeat"`
	// Runs is how many times the whole round sequence runs back to back
	// (the report compares the first two: its repeatability line).
	Runs int `json:"runs"`
	// AgingSizes are the connection-table sizes the sweep is timed on.
	AgingSizes []int `json:"aging_sizes"`
	// ScaleSizes are the tables a running xipvsd is filled to and
	// measured at (the scale scenario, once per run).
	ScaleSizes []int `json:"scale_sizes"`
	// FloodConns is the legitimate connections of one flood trial (the
	// flood scenario runs once per run).
	FloodConns int `json:"flood_conns"`
	// Generator is how the wire's packet rates are generated: "" the best
	// this kernel allows (live frames, else the closed loop),
	// "live-frames" or "closed-loop".
	Generator string `json:"generator,omitempty"`
	// Bin holds xipvsd and xipvsadm; empty builds them into a temporary
	// directory.
	Bin string `json:"-"`
	// Log receives progress lines (nil: discarded).
	Log io.Writer `json:"-"`
}

// Full is `make bench`: at least five samples of everything.
func Full() Options {
	return Options{Repeats: 5, Sample: time.Second, Flows: 4096, Senders: runtime.NumCPU(), Sizes: []int{64, 1500}, Clients: 16, Pings: 1000,
		CostRepeat: 1_000_000, Runs: 2, AgingSizes: []int{1 << 20, 10_000_000}, ScaleSizes: []int{1_000_000, 10_000_000}, FloodConns: 200}
}

// Quick is the smoke run of `make test`: every scenario, a few seconds.
func Quick() Options {
	return Options{Quick: true, Repeats: 2, Sample: 100 * time.Millisecond, Flows: 512, Senders: runtime.NumCPU(), Sizes: []int{64, 1500}, Clients: 4, Pings: 50,
		CostRepeat: 10_000, Runs: 2, AgingSizes: []int{1 << 16}, ScaleSizes: []int{1 << 16}, FloodConns: 20}
}

func (o Options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", args...)
	}
}

// Peer tools the harness drives; a missing one is reported as not
// measured.
var peerTools = []string{"nft", "haproxy", "hping3", "trafgen"}

// Missing returns the peer tools not installed.
func Missing() []string {
	var m []string
	for _, t := range peerTools {
		if !installed(t) {
			m = append(m, t)
		}
	}
	return m
}

// Run builds the topologies, runs every scenario and returns the report.
// It removes every namespace, link, program and process it made, also
// when it fails or ctx ends.
func Run(ctx context.Context, o Options, command string) (_ *Report, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the harness needs root: it makes network namespaces and attaches XDP")
	}
	r := &Report{Command: command, Quick: o.Quick, Started: time.Now(), Machine: thisMachine(), Settings: o}
	for _, m := range Missing() {
		r.Skipped = append(r.Skipped, m+" is not installed: its scenarios were not measured")
	}
	if o.Bin == "" {
		dir, err := os.MkdirTemp("", "xipvs-bench-bin")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		o.logf("building xipvsd and xipvsadm")
		if _, _, err := testutil.BuildBinaries(dir); err != nil {
			return nil, err
		}
		o.Bin = dir
	}
	work, err := os.MkdirTemp("", "xipvs-bench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	prefix := fmt.Sprintf("xb%d", os.Getpid()%100000)

	o.logf("building the topologies: the wire (generator and a director per subject), the TCP lab, the cost lab, the aging tables")
	w, err := newWire(prefix+"w", o)
	if err != nil {
		return r, fmt.Errorf("wire topology: %w", err)
	}
	r.Generators = append(r.Generators,
		fmt.Sprintf("packet rates (established, new flows): %s: %s; the ceiling rows are that generator through a subject that only bounces frames (XDP_TX), its own limit", w.Generator(), w.why))
	floodGen := "af_xdp (an AF_XDP socket's TX ring, copy mode, one vCPU, open loop)"
	if w.lg.LiveFramesAllowed() == nil {
		floodGen = "live-frames (BPF_PROG_RUN, one vCPU, open loop)"
	}
	r.Generators = append(r.Generators, "SYN floods: "+floodGen+", and hping3 where named; tcp-connect and latency: tcp (real sockets); bpf-cost: bpf_prog_run (Program.Run with Repeat)")
	defer func() { err = errors.Join(err, w.Close()) }()
	if err := w.setup(r, o, work); err != nil {
		return r, err
	}
	t, err := newTCPLab(prefix+"t", o)
	if err != nil {
		return r, fmt.Errorf("tcp topology: %w", err)
	}
	defer func() { err = errors.Join(err, t.Close()) }()
	cost, err := newCostLab()
	if err != nil {
		return r, fmt.Errorf("cost lab: %w", err)
	}
	defer cost.Close()
	aging, err := newAgingLab(o.AgingSizes)
	if err != nil {
		return r, fmt.Errorf("aging tables: %w", err)
	}
	defer aging.Close()
	scale, err := newScaleLab(prefix+"s", work, o.ScaleSizes)
	if err != nil {
		return r, fmt.Errorf("scale lab: %w", err)
	}
	if scale != nil {
		defer func() { err = errors.Join(err, scale.Close()) }()
	}
	flood, err := newFloodLab(prefix + "f")
	if err != nil {
		return r, fmt.Errorf("flood lab: %w", err)
	}
	defer func() { err = errors.Join(err, flood.Close()) }()
	gens, err := newGenLab(prefix+"g", work)
	if err != nil {
		return r, fmt.Errorf("generators lab: %w", err)
	}
	defer func() { err = errors.Join(err, gens.Close()) }()

	splits := map[string]map[byte]uint64{}
	for run := 1; run <= o.Runs; run++ {
		for round := 1; round <= o.Repeats; round++ {
			o.logf("run %d of %d, round %d of %d", run, o.Runs, round, o.Repeats)
			if err := cost.round(r, o, run); err != nil {
				return r, fmt.Errorf("bpf cost: %w", err)
			}
			for _, size := range o.Sizes {
				if err := w.packetRound(r, o, run, size, splits); err != nil {
					return r, fmt.Errorf("established flows: %w", err)
				}
			}
			if err := w.newFlowRound(r, o, run); err != nil {
				return r, fmt.Errorf("new flows: %w", err)
			}
			if err := t.round(ctx, r, o, run, work); err != nil {
				return r, fmt.Errorf("tcp lab: %w", err)
			}
			if err := aging.round(r, run); err != nil {
				return r, fmt.Errorf("aging: %w", err)
			}
			if err := ctx.Err(); err != nil {
				return r, err
			}
		}
		if scale != nil {
			o.logf("run %d of %d: the scale scenario (an xipvsd filled to %v connections)", run, o.Runs, o.ScaleSizes)
			if err := scale.round(r, o, run, o.ScaleSizes); err != nil {
				return r, fmt.Errorf("scale: %w", err)
			}
		}
		o.logf("run %d of %d: the flood generators, one vCPU each", run, o.Runs)
		if err := gens.run(r, o, run); err != nil {
			return r, fmt.Errorf("generators: %w", err)
		}
		o.logf("run %d of %d: the SYN flood scenario", run, o.Runs)
		if err := flood.run(r, o, run, work); err != nil {
			return r, fmt.Errorf("flood: %w", err)
		}
	}
	checkSplits(r, splits)
	o.logf("profiling xipvsd's Go slow path during a SYN stream")
	if err := w.profileSlowPath(r, o); err != nil {
		return r, fmt.Errorf("profile: %w", err)
	}
	if top, err := pprofTop(work, r.SlowPathProfile); err != nil {
		r.Skipped = append(r.Skipped, "the slow path's profile summary: "+err.Error())
	} else {
		r.SlowPathTop = top
	}
	r.addRatios(o)
	r.Took = time.Since(r.Started)
	return r, nil
}

// addRatios defines the report's comparisons.
func (r *Report) addRatios(o Options) {
	r.ratio("bpf: reference-lb / ceiling", "bpf-cost/reference-lb", "bpf-cost/ceiling")
	for _, m := range costModes {
		r.ratio("bpf: xipvs-"+m+" / reference-lb", "bpf-cost/xipvs-"+m, "bpf-cost/reference-lb")
	}
	r.ratio("bpf: xipvs-not-ours / ceiling", "bpf-cost/xipvs-not-ours", "bpf-cost/ceiling")
	r.ratio("bpf: xipvs-vip-other-port / ceiling", "bpf-cost/xipvs-vip-other-port", "bpf-cost/ceiling")
	for _, size := range o.Sizes {
		pre := fmt.Sprintf("established %d B: ", size)
		key := func(s string) string { return fmt.Sprintf("established/%s/%d", s, size) }
		r.ratio(pre+"reference-lb / ceiling", key("reference-lb"), key("ceiling"))
		for _, m := range wireModes {
			r.ratio(pre+"xipvs-"+m+" / ceiling", key("xipvs-"+m), key("ceiling"))
			r.ratio(pre+"xipvs-"+m+" / nftables", key("xipvs-"+m), key("nftables"))
		}
		r.ratio(pre+"nftables / ceiling", key("nftables"), key("ceiling"))
		// IPv6 (the same payload, a 40-byte header): against IPv4 and
		// against nftables' IPv6 DNAT.
		for _, m := range wireModes6 {
			r.ratio(pre+"xipvs-"+m+" / xipvs-"+strings.TrimSuffix(m, "6"), key("xipvs-"+m), key("xipvs-"+strings.TrimSuffix(m, "6")))
			r.ratio(pre+"xipvs-"+m+" / nftables6", key("xipvs-"+m), key("nftables6"))
		}
		r.ratio(pre+"nftables6 / nftables", key("nftables6"), key("nftables"))
	}
	r.ratio("new flows: xipvs-dr / ceiling", "new-flows/xipvs-dr", "new-flows/ceiling")
	r.ratio("new flows: xipvs-wlc / ceiling", "new-flows/xipvs-wlc", "new-flows/ceiling")
	r.ratio("new flows: xipvs-wlc / nftables", "new-flows/xipvs-wlc", "new-flows/nftables")
	r.ratio("new flows: xipvs-wlc6 / nftables6", "new-flows/xipvs-wlc6", "new-flows/nftables6")
	r.ratio("new flows: xipvs-mh / ceiling", "new-flows/xipvs-mh", "new-flows/ceiling")
	r.ratio("new flows: xipvs-mh / nftables", "new-flows/xipvs-mh", "new-flows/nftables")
	r.ratio("new flows: xipvs-mh6 / nftables6", "new-flows/xipvs-mh6", "new-flows/nftables6")
	r.ratio("new flows: xipvs-wlc-p / ceiling", "new-flows/xipvs-wlc-p", "new-flows/ceiling")
	r.ratio("new flows: xipvs-wlc-p / nftables", "new-flows/xipvs-wlc-p", "new-flows/nftables")
	for _, s := range append(append([]string(nil), moreSchedulers...), "fullnat-wlc") {
		r.ratio("new flows: xipvs-"+s+" / nftables", "new-flows/xipvs-"+s, "new-flows/nftables")
	}
	r.ratio("new flows: xipvs-slowpath / ceiling", "new-flows/xipvs-slowpath", "new-flows/ceiling")
	r.ratio("new flows: nftables / ceiling", "new-flows/nftables", "new-flows/ceiling")
	r.ratio("new flows: xipvs-dr / nftables", "new-flows/xipvs-dr", "new-flows/nftables")
	r.ratio("new flows: xipvs-slowpath / nftables", "new-flows/xipvs-slowpath", "new-flows/nftables")
	r.ratio("new flows: xipvs-dr6 / nftables6", "new-flows/xipvs-dr6", "new-flows/nftables6")
	r.ratio("new flows: xipvs-slowpath6 / nftables6", "new-flows/xipvs-slowpath6", "new-flows/nftables6")
	r.ratio("new flows: xipvs-dr6 / xipvs-dr", "new-flows/xipvs-dr6", "new-flows/xipvs-dr")
	r.ratio("new flows: xipvs-slowpath6 / xipvs-slowpath", "new-flows/xipvs-slowpath6", "new-flows/xipvs-slowpath")
	r.ratio("new flows: slow path, 2 queues / 1 queue", "new-flows/xipvs-slowpath-2q-2senders", "new-flows/xipvs-slowpath-1q-2senders")
	r.ratio("flood sources: af_xdp / trafgen", "generators/af_xdp", "generators/trafgen")
	r.ratio("flood sources: af_xdp / hping3", "generators/af_xdp", "generators/hping3")
	r.ratio("tcp-connect: xipvs-nat / nftables", "tcp-connect/xipvs-nat", "tcp-connect/nftables")
	r.ratio("tcp-connect: xipvs-nat / haproxy", "tcp-connect/xipvs-nat", "tcp-connect/haproxy")
	r.ratio("tcp-connect: xipvs-nat / routed-no-balancer", "tcp-connect/xipvs-nat", "tcp-connect/routed-no-balancer")
	for _, k := range []string{"first-packet/p50", "first-packet/p99", "established/p50", "established/p99"} {
		kind, p, _ := strings.Cut(k, "/")
		r.ratio(kind+" "+p+": xipvs-nat / nftables", "latency/xipvs-nat-"+k, "latency/nftables-"+k)
	}
}

// pprofTop returns the heaviest functions of a CPU profile.
func pprofTop(work string, profile []byte) (string, error) {
	f := filepath.Join(work, "slowpath.pprof")
	if err := os.WriteFile(f, profile, 0o644); err != nil {
		return "", err
	}
	out, err := exec.Command("go", "tool", "pprof", "-top", "-cum", "-nodecount=30", f).Output()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %w", err)
	}
	return string(out), nil
}

// xipvs is an xipvsd running in a namespace and the xipvsadm that
// configures it.
type xipvs struct {
	d      *testutil.Daemon
	adm    string
	socket string
	state  string
	ns     testutil.Netns
}

// startXipvs starts xipvsd on iface (a comma list) in ns, with extra
// arguments; with profiling it serves
// Go's profiles on 127.0.0.1:9639 inside ns.
func startXipvs(ns testutil.Netns, o Options, work, name string, profiling bool, iface string, extra ...string) (*xipvs, error) {
	socket := filepath.Join(work, name+".sock")
	metrics := []string{"--metrics-addr", ""}
	if profiling {
		metrics = []string{"--metrics-addr", profileAddr, "--pprof"}
	}
	// Each daemon its own state file: one must never adopt another's.
	state := filepath.Join(work, name+".state.json")
	d, err := testutil.StartDaemon(ns, filepath.Join(o.Bin, "xipvsd"), socket,
		append(append([]string{"-i", iface, "--pin-dir", "", "--flush", "--state-file", state, "--conn-table-size", "2097152"}, metrics...), extra...)...)
	if err != nil {
		return nil, err
	}
	return &xipvs{d: d, adm: filepath.Join(o.Bin, "xipvsadm"), socket: socket, state: state, ns: ns}, nil
}

const profileAddr = "127.0.0.1:9639"

// run runs xipvsadm with args.
func (x *xipvs) run(args ...string) error {
	cmd := exec.Command(x.adm, args...)
	cmd.Env = append(os.Environ(), "XIPVS_SOCKET="+x.socket)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("xipvsadm %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (x *xipvs) stop() {
	x.d.Stop()
	_ = os.Remove(x.socket)
	_ = os.Remove(x.state)
}

// round measures every cost subject once (BPF_PROG_RUN with Repeat):
// the ceiling, the reference LB, the director's paths.
func (c *costLab) round(r *Report, o Options, run int) error {
	for _, subject := range costSubjects {
		ns, err := c.cost(subject, o.CostRepeat)
		if err != nil {
			return err
		}
		name := subject
		if subject != "ceiling" && subject != "reference-lb" {
			name = "xipvs-" + subject
		}
		r.sample(Result{Key: "bpf-cost/" + name, Scenario: "bpf-cost", Subject: name, Unit: UnitNs, Generator: GenProgRun}, run, ns)
	}
	return nil
}
