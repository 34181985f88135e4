package bench

// newflows.go: the wire's SYN streams (new flows, tuples never
// repeated): their services on the directors that take them, and the
// rounds that measure them.

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"time"

	"github.com/xipvs/xipvs/bench/loadgen"
)

// synFlows is a SYN stream to vip that never repeats a tuple.
func (w *wire) synFlows(vip netip.Addr) loadgen.Flows {
	w.synSeq += synSeqStride
	base := wireSynBase
	if vip.Is6() {
		base = wireSynBase6
	}
	return loadgen.Flows{Template: template(64, base, vip, true), AddrBase: base, PortBase: 1024, Ports: synPorts, Start: w.synSeq}
}

// moreSchedulers each get a SYN stream of their own (IPv4, DR), a row per
// scheduler, each deciding new flows in XDP.
var moreSchedulers = []string{"rr", "lc", "sed", "nq", "sh", "dh", "lblc", "lblcr", "fo", "ovf", "twos"}

// synServices adds the SYN streams' services: wrr on the DR VIP (new
// flows scheduled in XDP from a cycle), wlc (in XDP from a lookahead), mh
// (in XDP from its table), wlc -p 300 (in XDP from the client's template,
// made from the lookahead's pick) and wlc on the slow-path VIP, which
// xipvsd is told Go schedules (--go-schedules: every new flow through the
// Go slow path, the reference the XDP rows are measured against).
func synServices(x *xipvs) error {
	services := map[string][]string{"dr": {"wrr"}, "wlc": {"wlc"}, "mh": {"mh"}, "wlcp": {"wlc", "-p", "300"},
		"slowpath": {"wlc"}, "dr6": {"wrr"}, "wlc6": {"wlc"}, "mh6": {"mh"}, "slowpath6": {"wlc"}, "fnatwlc": {"wlc"}}
	for _, s := range moreSchedulers {
		services[s] = []string{s}
	}
	for vip, sched := range services {
		vs := netip.AddrPortFrom(wireVIPs[vip], 80).String()
		if err := x.run(append([]string{"-A", "-t", vs, "-s"}, sched...)...); err != nil {
			return err
		}
		fwd := "-g"
		if vip == "fnatwlc" {
			fwd = "-b"
			for _, lip := range append([]string{wireLIP.String()}, wireStreamLIPs...) {
				if err := x.run("--add-laddr", "-z", lip, "-t", vs); err != nil {
					return err
				}
			}
		}
		for i, rip := range realsOf(wireVIPs[vip]) {
			if err := x.run("-a", "-t", vs, "-r", netip.AddrPortFrom(rip, 80).String(), fwd, "-w", strconv.Itoa(wireWeights[i])); err != nil {
				return err
			}
		}
	}
	return nil
}

// newFlowRound measures new flows per second once per subject: SYN
// streams that never repeat a tuple, counted at the sinks. One sender
// each, so that a CPU is left to whatever takes new flows (for nftables
// the sender's softirq does it all); then the Go slow path with two
// senders, on one and on two receive queues.
func (w *wire) newFlowRound(r *Report, o Options, run int) error {
	type stream struct {
		name, dir string
		vip       netip.Addr
		senders   int
	}
	streams := []stream{
		// The control: the same stream through a subject that only
		// bounces it, the most the generator can give any subject.
		{"ceiling", dirCeiling, wireVIPs["dr"], 1},
		{"xipvs-dr", dirXipvsNew, wireVIPs["dr"], 1},
		{"xipvs-wlc", dirXipvsNew, wireVIPs["wlc"], 1},
		{"xipvs-mh", dirXipvsNew, wireVIPs["mh"], 1},
		{"xipvs-wlc-p", dirXipvsNew, wireVIPs["wlcp"], 1},
		{"xipvs-fullnat-wlc", dirXipvsNew, wireVIPs["fnatwlc"], 1},
		{"xipvs-slowpath", dirXipvsNew, wireVIPs["slowpath"], 1},
		{"xipvs-dr6", dirXipvsNew, wireVIPs["dr6"], 1},
		{"xipvs-wlc6", dirXipvsNew, wireVIPs["wlc6"], 1},
		{"xipvs-mh6", dirXipvsNew, wireVIPs["mh6"], 1},
		{"xipvs-slowpath6", dirXipvsNew, wireVIPs["slowpath6"], 1},
	}
	for _, s := range moreSchedulers {
		streams = append(streams, stream{"xipvs-" + s, dirXipvsNew, wireVIPs[s], 1})
	}
	if w.dirs[dirNft].nftInstalled {
		streams = append(streams, stream{"nftables", dirNftNew, wireVIPs["dr"], 1}, stream{"nftables6", dirNftNew, wireVIPs["dr6"], 1})
	}
	streams = append(streams, stream{"xipvs-slowpath-1q-2senders", dirXipvsNew, wireVIPs["slowpath"], 2},
		stream{"xipvs-slowpath-2q-2senders", dirXipvs2Q, wireVIPs["slowpath"], 2})
	for _, s := range streams {
		smp, err := w.measure(w.dirs[s.dir], w.synFlows(s.vip), o.Sample, s.senders)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		res := r.sample(Result{Key: "new-flows/" + s.name, Scenario: "new-flows", Subject: s.name, Size: 64, Unit: UnitCPS, Generator: w.Generator()}, run,
			float64(smp.total())/smp.took.Seconds())
		addDetail(res, "syns_sent", smp.sent)
		addDetail(res, "first_packets_counted", smp.total())
		res.Detail["senders"] = s.senders
	}
	return nil
}

// profileSlowPath takes a CPU profile of an xipvsd while a SYN stream
// goes through its Go slow path (the wlc service).
func (w *wire) profileSlowPath(r *Report, o Options) error {
	d := w.dirs[dirXipvsNew]
	secs := max(int(o.Sample.Seconds()), 1)
	type result struct {
		b   []byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := d.ns.HTTPClient(time.Duration(secs+10) * time.Second).Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", profileAddr, secs))
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("profile: %s: %s", resp.Status, b)
		}
		got <- result{b, err}
	}()
	_, err := w.measure(d, w.synFlows(wireVIPs["slowpath"]), time.Duration(secs)*time.Second+200*time.Millisecond, 1)
	res := <-got
	if err = errors.Join(err, res.err); err != nil {
		return err
	}
	r.SlowPathProfile = res.b
	return nil
}
