package bench

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/xipvs/xipvs/internal/testutil"
)

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestSmoke runs the whole harness in its quick mode, so that it cannot
// rot: every scenario must produce its samples, the traffic must reach
// the sinks split as the scheduler decided, and the report must be
// written in all three formats. It asserts no performance number.
func TestSmoke(t *testing.T) {
	testutil.RequirePrivileged(t)
	if m := Missing(); len(m) > 0 {
		msg := "the peers are not installed (" + strings.Join(m, ", ") + "): apt-get install nftables haproxy hping3 netsniff-ng"
		if os.Getenv("XIPVS_REQUIRE_PRIVILEGED") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	o := Quick()
	o.Log = testLog{t}
	r, err := Run(context.Background(), o, "go test ./bench -run TestSmoke")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Skipped) > 0 {
		t.Errorf("not measured: %q", r.Skipped)
	}
	checkSamples(t, r, o)
	for _, k := range []string{"tcp-connect/xipvs-nat", "tcp-connect/nftables", "tcp-connect/haproxy"} {
		if x := r.Get(k); x != nil && x.Detail["failed_attempts"].(uint64) != 0 {
			t.Errorf("%s: %v failed connection attempts", k, x.Detail["failed_attempts"])
		}
	}
	checkFloods(t, r, o)
	// Every row says which generator made its load (aging and scale
	// send nothing), and the report names the generators.
	for _, x := range r.Results {
		if x.Generator == "" && x.Scenario != "aging" && x.Scenario != "scale" {
			t.Errorf("%s: no generator named", x.Key)
		}
	}
	if len(r.Generators) == 0 || !strings.Contains(r.Markdown(), "| generator |") {
		t.Errorf("the report names no generator: %q", r.Generators)
	}
	// Every ratio has its per-round values in both runs (the flood
	// sources are measured once per run).
	for _, x := range r.Ratios {
		want := o.Repeats
		if strings.HasPrefix(x.Name, "flood sources:") {
			want = 1
		}
		for i, q := range x.Runs {
			if len(q.PerRound) != want {
				t.Errorf("ratio %s run %d: %d rounds, want %d", x.Name, i+1, len(q.PerRound), want)
			}
		}
	}
	// The per-real split and the scheduler's weights.
	splits := 0
	for _, c := range r.Checks {
		if !c.Ok {
			t.Errorf("check %s failed: %s", c.Name, c.Detail)
		}
		if strings.HasPrefix(c.Name, "per-real split") {
			splits++
		}
	}
	if want := 10 * len(o.Sizes); splits != want {
		t.Errorf("%d per-real split checks, want %d", splits, want)
	}
	if len(r.SlowPathProfile) == 0 || !strings.Contains(r.SlowPathTop, "slowpath.(*worker)") {
		t.Errorf("no slow-path profile:\n%s", r.SlowPathTop)
	}

	checkFiles(t, r, o)
	// Nothing left behind.
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "xb") {
		t.Errorf("namespaces left behind:\n%s", out)
	}
}

// checkSamples: every scenario's rows, with their samples and counts.
func checkSamples(t *testing.T, r *Report, o Options) {
	t.Helper()
	var want []string
	for _, size := range o.Sizes {
		for _, subj := range []string{"ceiling", "reference-lb", "xipvs-dr", "xipvs-tun", "xipvs-nat", "xipvs-fullnat", "nftables",
			"xipvs-dr6", "xipvs-nat6", "nftables6"} {
			want = append(want, "established/"+subj+"/"+strconv.Itoa(size))
		}
	}
	want = append(want, "new-flows/ceiling", "new-flows/xipvs-dr", "new-flows/xipvs-wlc", "new-flows/xipvs-mh", "new-flows/xipvs-wlc-p", "new-flows/xipvs-slowpath", "new-flows/nftables",
		"new-flows/xipvs-dr6", "new-flows/xipvs-wlc6", "new-flows/xipvs-mh6", "new-flows/xipvs-slowpath6", "new-flows/nftables6",
		"new-flows/xipvs-slowpath-1q-2senders", "new-flows/xipvs-slowpath-2q-2senders",
		"new-flows/xipvs-fullnat-wlc",
		"tcp-connect/routed-no-balancer", "tcp-connect/xipvs-nat", "tcp-connect/nftables", "tcp-connect/haproxy",
		"bpf-cost/ceiling", "bpf-cost/reference-lb", "bpf-cost/xipvs-dr", "bpf-cost/xipvs-not-ours", "bpf-cost/xipvs-fullnat-reply",
		"aging/full-"+agingSize(o.AgingSizes[0]), "aging/end-"+agingSize(o.AgingSizes[0]))
	for _, s := range moreSchedulers {
		want = append(want, "new-flows/xipvs-"+s)
	}
	for _, k := range []string{"xipvs-nat", "nftables"} {
		for _, kind := range []string{"first-packet", "established"} {
			want = append(want, "latency/"+k+"-"+kind+"/p50", "latency/"+k+"-"+kind+"/p99")
		}
	}
	// A sweep at rest may cost less CPU than the clock counts.
	for run := 1; run <= o.Runs; run++ {
		if res := r.result(agingKey(o.AgingSizes[0]), run); res == nil || len(res.Samples) != o.Repeats || res.Min < 0 {
			t.Errorf("%s run %d: %+v", agingKey(o.AgingSizes[0]), run, res)
		}
	}
	// The scale scenario: one sample per run and size, CPU may be 0.
	for _, k := range []string{"idle-cpu", "rss-mb", "idle-cpu-master", "lnc-first", "lnc-rate", "lnc-xipvsd-mb", "lnc-xipvsadm-mb", "restart-wall", "restart-cpu", "restart-settle-cpu"} {
		key := "scale/" + k + "-" + scaleName(o.ScaleSizes[0])
		for run := 1; run <= o.Runs; run++ {
			if res := r.result(key, run); res == nil || len(res.Samples) != 1 || res.Min < 0 {
				t.Errorf("%s run %d: %+v", key, run, res)
			}
		}
	}
	for _, k := range want {
		for run := 1; run <= o.Runs; run++ {
			res := r.result(k, run)
			if res == nil {
				t.Errorf("%s run %d: missing", k, run)
				continue
			}
			if len(res.Samples) != o.Repeats {
				t.Errorf("%s: %d samples, want %d", k, len(res.Samples), o.Repeats)
			}
			if res.Min <= 0 || res.Min > res.Median || res.Median > res.Max {
				t.Errorf("%s: median %v min %v max %v", k, res.Median, res.Min, res.Max)
			}
			if sent, ok := res.Detail["frames_sent"].(uint64); ok {
				if got := res.Detail["frames_counted"].(uint64); got == 0 || got > sent {
					t.Errorf("%s: %d frames counted of %d sent", k, got, sent)
				}
			}
			if got, ok := res.Detail["first_packets_counted"].(uint64); ok && (got == 0 || got > res.Detail["syns_sent"].(uint64)) {
				t.Errorf("%s: %d first packets counted of %v SYNs", k, got, res.Detail["syns_sent"])
			}
		}
	}
}

// checkFloods: each flood subject, the generators and the shed rows, once
// per run.
func checkFloods(t *testing.T, r *Report, o Options) {
	t.Helper()
	// The flood scenario: each subject under each flood, once per run,
	// with the flood's rate measured (hping3's from its own statistics).
	for _, subj := range []string{"xipvs-nat-synproxy@max", "xipvs-nat-synproxy@hping3", "xipvs-dr-admission@max", "xipvs-dr-admission@hping3",
		"xipvs-nat-undefended@max", "xipvs-dr-undefended@hping3", "nftables@max", "nftables@hping3", "sink-control@max"} {
		for _, what := range []string{"served", "download-kept", "flood-rate", "ring-refused-client"} {
			for run := 1; run <= o.Runs; run++ {
				res := r.result("flood/"+subj+"/"+what, run)
				if res == nil && what == "ring-refused-client" {
					// An AF_XDP flood's refused frames are counted with
					// the client's.
					res = r.result("flood/"+subj+"/ring-refused-flood+client", run)
				}
				if res == nil || len(res.Samples) != 1 {
					t.Errorf("flood/%s/%s run %d: %v, want one sample", subj, what, run, res)
					continue
				}
				if what == "flood-rate" && res.Median <= 0 {
					t.Errorf("flood/%s run %d: no flood measured", subj, run)
				}
			}
		}
	}
	for _, gen := range []string{"af_xdp", "trafgen", "hping3"} {
		for run := 1; run <= o.Runs; run++ {
			if res := r.result("generators/"+gen, run); res == nil || len(res.Samples) != 1 || res.Median <= 0 {
				t.Errorf("generators/%s run %d: %v, want one sample of a rate", gen, run, res)
			}
		}
	}
	for _, subj := range []string{"xipvs-dr-admission", "drop-all"} {
		for run := 1; run <= o.Runs; run++ {
			if res := r.result("flood/shed/"+subj, run); res == nil || len(res.Samples) != 1 || res.Median <= 0 {
				t.Errorf("flood/shed/%s run %d: %v, want one sample of a rate", subj, run, res)
			}
		}
	}
}

// checkFiles: the report written in all three formats.
func checkFiles(t *testing.T, r *Report, o Options) {
	t.Helper()
	dir := t.TempDir()
	paths, err := r.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.HasSuffix(p, ".json"):
			var back Report
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			if len(back.Results) != len(r.Results) || len(back.Results[0].Samples) != o.Repeats || len(back.Ratios) != len(r.Ratios) {
				t.Errorf("%s: %d results, want %d", p, len(back.Results), len(r.Results))
			}
		case strings.HasSuffix(p, ".svg"):
			d := xml.NewDecoder(strings.NewReader(string(b)))
			rects := 0
			for {
				tok, err := d.Token()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("%s: %v", p, err)
				}
				if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
					rects++
				}
			}
			if want := len(r.Results) / o.Runs; rects != want+1 {
				t.Errorf("%s: %d bars, want %d", p, rects-1, want)
			}
		case strings.HasSuffix(p, ".md"):
			if !strings.Contains(string(b), "| established | xipvs-dr | 64 B |") || !strings.Contains(string(b), "Repeatability: ") {
				t.Errorf("%s: no DR row or repeatability line:\n%s", p, b)
			}
		}
	}
}
