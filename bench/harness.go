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

	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/dataplane/loadgen"
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
	// Bin holds xipvsd and xipvsadm; empty builds them into a temporary
	// directory.
	Bin string `json:"-"`
	// Log receives progress lines (nil: discarded).
	Log io.Writer `json:"-"`
}

// Full is `make bench`: at least five samples of everything.
func Full() Options {
	return Options{Repeats: 5, Sample: time.Second, Flows: 4096, Senders: runtime.NumCPU(), Sizes: []int{64, 1500}, Clients: 16, Pings: 1000, CostRepeat: 1_000_000}
}

// Quick is the smoke run of `make test`: every scenario, a few seconds.
func Quick() Options {
	return Options{Quick: true, Repeats: 2, Sample: 100 * time.Millisecond, Flows: 512, Senders: runtime.NumCPU(), Sizes: []int{64, 1500}, Clients: 4, Pings: 50, CostRepeat: 10_000}
}

func (o Options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", args...)
	}
}

// Peer tools the harness drives; a missing one is reported as not
// measured.
var peerTools = []string{"nft", "haproxy"}

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

	o.logf("scenario 6: BPF cost per packet (Program.Run, Repeat %d)", o.CostRepeat)
	if err := bpfCost(r, o); err != nil {
		return r, fmt.Errorf("bpf cost: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return r, err
	}

	w, err := newWire(prefix+"w", o)
	if err != nil {
		return r, fmt.Errorf("wire topology: %w", err)
	}
	err = w.run(ctx, r, o, work)
	err = errors.Join(err, w.Close())
	if err != nil {
		return r, err
	}
	if len(r.SlowPathProfile) > 0 {
		top, err := pprofTop(work, r.SlowPathProfile)
		if err != nil {
			r.Skipped = append(r.Skipped, "the slow path's profile summary: "+err.Error())
		}
		r.SlowPathTop = top
	}
	if err := ctx.Err(); err != nil {
		return r, err
	}

	t, err := newTCPLab(prefix+"t", o)
	if err != nil {
		return r, fmt.Errorf("tcp topology: %w", err)
	}
	err = t.run(ctx, r, o, work)
	err = errors.Join(err, t.Close())
	r.Took = time.Since(r.Started)
	return r, err
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
	ns     testutil.Netns
}

// startXipvs starts xipvsd on ifaces in ns; with profiling it serves
// Go's profiles on 127.0.0.1:9639 inside ns.
func startXipvs(ns testutil.Netns, o Options, work, name string, profiling bool, ifaces ...string) (*xipvs, error) {
	socket := filepath.Join(work, name+".sock")
	metrics := []string{"--metrics-addr", ""}
	if profiling {
		metrics = []string{"--metrics-addr", profileAddr, "--pprof"}
	}
	d, err := testutil.StartDaemon(ns, filepath.Join(o.Bin, "xipvsd"), socket,
		append([]string{"-i", strings.Join(ifaces, ","), "--pin-dir", "", "--flush", "--conn-table-size", "2097152"}, metrics...)...)
	if err != nil {
		return nil, err
	}
	return &xipvs{d: d, adm: filepath.Join(o.Bin, "xipvsadm"), socket: socket, ns: ns}, nil
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
}

// cost scenario: BPF cost per packet.
func bpfCost(r *Report, o Options) error {
	lab, err := newCostLab()
	if err != nil {
		return err
	}
	defer lab.Close()
	lg, err := loadgen.Open(loadgen.Options{CeilingDst: lab.rmac, CeilingSrc: lab.mac})
	if err != nil {
		return err
	}
	defer lg.Close()
	frame := lab.frame("dr")
	res := &Result{Key: "bpf-cost/ceiling", Scenario: "bpf-cost", Subject: "ceiling", Unit: UnitNs}
	for i := 0; i < o.Repeats; i++ {
		v, per, err := lg.Benchmark(loadgen.Ceiling, frame, o.CostRepeat)
		if err != nil {
			return err
		}
		if v != dataplane.XDPTx {
			return fmt.Errorf("ceiling verdict %v", v)
		}
		res.Samples = append(res.Samples, float64(per.Nanoseconds()))
	}
	r.add(res)
	for _, mode := range costModes {
		res := &Result{Key: "bpf-cost/xipvs-" + mode, Scenario: "bpf-cost", Subject: "xipvs-" + mode, Unit: UnitNs}
		for i := 0; i < o.Repeats; i++ {
			ns, err := lab.cost(mode, o.CostRepeat)
			if err != nil {
				return err
			}
			res.Samples = append(res.Samples, ns)
		}
		r.add(res)
	}
	return nil
}
