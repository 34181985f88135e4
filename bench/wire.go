package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xipvs/xipvs/dataplane/loadgen"
	"github.com/xipvs/xipvs/dataplane/pass"
	"github.com/xipvs/xipvs/internal/api"
	"github.com/xipvs/xipvs/internal/testutil"
)

// The wire: the packet-rate topology. One veth pair joins the generator
// namespace (g0) and the director namespace (eth0), a one-armed director
// as in LVS-DR: the generator transmits client frames into the director,
// the director forwards them back out of eth0 toward a real server's MAC
// (XDP_TX), and the sink on g0 counts them per destination MAC, that is
// per real server, and drops them. The real servers are neighbour entries
// on the director: nothing answers for them, so no receiving stack is in
// the measurement. The MTU is 1600 so that a 1500-byte frame still fits
// after TUN's 20-byte IPIP header.
var (
	wireGenMAC  = net.HardwareAddr{0x02, 0x77, 0, 0, 0, 0x01}
	wireLbMAC   = net.HardwareAddr{0x02, 0x77, 0, 0, 0, 0x02}
	wireVIP     = netip.MustParseAddr("10.77.0.100")
	wireLIP     = netip.MustParseAddr("10.77.0.250")
	wireEstBase = netip.MustParseAddr("10.78.0.1") // established flows' clients
	wireSynBase = netip.MustParseAddr("10.90.0.1") // the SYN stream's clients
	wireReals   = []netip.Addr{netip.MustParseAddr("10.77.0.11"), netip.MustParseAddr("10.77.0.12"), netip.MustParseAddr("10.77.0.13")}
	wireWeights = []int{1, 2, 3}
)

const (
	wireMTU      = 1600
	wirePorts    = 64      // source ports per client address of the established flows
	synPorts     = 60000   // of the SYN stream
	sendChunk    = 65536   // frames per live-frames call while measuring
	setupChunk   = 32      // frames per call while setting flows up (the slow path's pace)
	setupPasses  = 20      // SYN passes at most before giving up on setting every flow up
	synSeqStride = 1 << 26 // SYN stream tuples per sample: never reused in a run
)

func wireRealMAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x77, 0, 0, 0, byte(0x0b + i)}
}

type wire struct {
	gen, lb      testutil.Netns
	genIf, lbIf  int
	lg           *loadgen.Programs
	sink         *loadgen.Attachment
	names        []string
	synSeq       uint64
	flows, ports uint32
	senders      int
	synSenders   int // senders of the SYN stream
}

func newWire(prefix string, o Options) (_ *wire, err error) {
	w := &wire{flows: uint32(o.Flows), ports: wirePorts, senders: max(o.Senders, 1), synSenders: 1}
	defer func() {
		if err != nil {
			err = errors.Join(err, w.Close())
		}
	}()
	for _, n := range []string{"gen", "lb"} {
		ns, err := testutil.AddNetns(prefix + "-" + n)
		if err != nil {
			return nil, err
		}
		w.names = append(w.names, ns.Name)
		if err := ns.Sysctl("net.ipv6.conf.default.disable_ipv6", "1"); err != nil {
			return nil, err
		}
		if n == "gen" {
			w.gen = ns
		} else {
			w.lb = ns
		}
	}
	mtu := strconv.Itoa(wireMTU)
	steps := []struct {
		ns   testutil.Netns
		args []string
	}{
		{w.gen, []string{"link", "add", "g0", "address", wireGenMAC.String(), "mtu", mtu, "numtxqueues", "1", "numrxqueues", "1", "type", "veth",
			"peer", "name", "eth0", "netns", w.lb.Name, "address", wireLbMAC.String(), "mtu", mtu, "numtxqueues", "1", "numrxqueues", "1"}},
		{w.gen, []string{"addr", "add", "10.77.0.1/24", "dev", "g0"}},
		{w.gen, []string{"link", "set", "g0", "up"}},
		{w.lb, []string{"addr", "add", "10.77.0.2/24", "dev", "eth0"}},
		{w.lb, []string{"addr", "add", wireLIP.String() + "/32", "dev", "eth0"}},
		{w.lb, []string{"link", "set", "eth0", "up"}},
		{w.lb, []string{"route", "add", "10.64.0.0/10", "via", "10.77.0.1"}},
		{w.lb, []string{"neigh", "replace", "10.77.0.1", "lladdr", wireGenMAC.String(), "dev", "eth0", "nud", "permanent"}},
	}
	for i, r := range wireReals {
		steps = append(steps, struct {
			ns   testutil.Netns
			args []string
		}{w.lb, []string{"neigh", "replace", r.String(), "lladdr", wireRealMAC(i).String(), "dev", "eth0", "nud", "permanent"}})
	}
	for _, s := range steps {
		if err := s.ns.IP(s.args...); err != nil {
			return nil, err
		}
	}
	for _, kv := range [][2]string{
		{"net.ipv4.ip_forward", "1"},
		{"net.ipv4.conf.all.rp_filter", "0"}, {"net.ipv4.conf.eth0.rp_filter", "0"},
		// It forwards out of the interface it received on: no redirects.
		{"net.ipv4.conf.all.send_redirects", "0"}, {"net.ipv4.conf.eth0.send_redirects", "0"},
	} {
		if err := w.lb.Sysctl(kv[0], kv[1]); err != nil {
			return nil, err
		}
	}
	if w.genIf, err = ifindex(w.gen, "g0"); err != nil {
		return nil, err
	}
	if w.lbIf, err = ifindex(w.lb, "eth0"); err != nil {
		return nil, err
	}
	if w.lg, err = loadgen.Open(loadgen.Options{CeilingDst: wireRealMAC(0), CeilingSrc: wireLbMAC}); err != nil {
		return nil, err
	}
	if err := w.gen.Do(func() (err error) { w.sink, err = w.lg.AttachSink(w.genIf); return }); err != nil {
		return nil, err
	}
	return w, nil
}

// pinThread pins the calling (locked) thread to cpu and returns what
// undoes it.
func pinThread(cpu int) (func(), error) {
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return nil, err
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("pin sender to cpu %d: %w", cpu, err)
	}
	return func() { _ = unix.SchedSetaffinity(0, &old) }, nil
}

func ifindex(ns testutil.Netns, name string) (int, error) {
	var idx int
	err := ns.Do(func() error {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		idx = ifc.Index
		return nil
	})
	return idx, err
}

// Close removes everything the wire made.
func (w *wire) Close() error {
	var err error
	if w.sink != nil {
		err = errors.Join(err, w.sink.Close())
	}
	if w.lg != nil {
		err = errors.Join(err, w.lg.Close())
	}
	for i := len(w.names) - 1; i >= 0; i-- {
		err = errors.Join(err, testutil.DelNetns(w.names[i]))
	}
	w.names = nil
	return err
}

// template is a client frame of size bytes to the VIP's port 80.
func template(size int, src netip.Addr, syn bool) []byte {
	return testutil.Frame{SrcMAC: wireGenMAC, DstMAC: wireLbMAC, Src: src, Dst: wireVIP, SrcPort: 1024, DstPort: 80,
		SYN: syn, ACK: !syn, Payload: make([]byte, size-54)}.Build()
}

func (w *wire) established(size int, syn bool) (loadgen.Flows, []byte) {
	t := template(size, wireEstBase, syn)
	return loadgen.Flows{Template: t, AddrBase: wireEstBase, PortBase: 1024, Ports: w.ports, Count: w.flows}, t
}

func (w *wire) send(t []byte, n uint32) error {
	return w.gen.Do(func() error { return w.lg.Send(w.genIf, t, n, 0) })
}

// sample is one measurement: frames generated, frames counted per real
// server and the time it took.
type sample struct {
	sent    uint64
	counted map[byte]loadgen.SinkCount
	took    time.Duration
}

func (s sample) total() uint64 {
	var t uint64
	for _, c := range s.counted {
		t += c.Pkts
	}
	return t
}

func (s sample) mpps() float64 { return float64(s.total()) / s.took.Seconds() / 1e6 }

// measure sends f's flows for d and counts what reaches the sink.
func (w *wire) measure(f loadgen.Flows, d time.Duration) (sample, error) {
	if err := w.lg.SetFlows(f); err != nil {
		return sample{}, err
	}
	if err := w.lg.ResetSink(); err != nil {
		return sample{}, err
	}
	// One sender per CPU, each pinned to its CPU: one alone is slower
	// than the hop it feeds (every frame's whole path runs in its
	// softirq), and unpinned senders make the hop's NAPI wander between
	// CPUs, which gives bimodal rates.
	start := time.Now()
	errs := make(chan error, w.senders)
	for i := 0; i < w.senders; i++ {
		go func() {
			errs <- w.gen.Do(func() error {
				restore, err := pinThread(i % runtime.NumCPU())
				if err != nil {
					return err
				}
				defer restore()
				for time.Since(start) < d {
					if err := w.lg.Send(w.genIf, f.Template, sendChunk, 0); err != nil {
						return err
					}
				}
				return nil
			})
		}()
	}
	var err error
	for i := 0; i < w.senders; i++ {
		err = errors.Join(err, <-errs)
	}
	took := time.Since(start)
	if err != nil {
		return sample{}, err
	}
	// What is still in flight lands within microseconds.
	time.Sleep(20 * time.Millisecond)
	seq, err := w.lg.Seq()
	if err != nil {
		return sample{}, err
	}
	counted, err := w.lg.SinkCounts()
	if err != nil {
		return sample{}, err
	}
	return sample{sent: seq - f.Start, counted: counted, took: took}, nil
}

// paced sends n frames of f from its start in small chunks, pausing
// between them, so that a slow path can take every one.
func (w *wire) paced(f loadgen.Flows, n int) error {
	if err := w.lg.SetFlows(f); err != nil {
		return err
	}
	for sent := 0; sent < n; sent += setupChunk {
		if err := w.send(f.Template, uint32(min(setupChunk, n-sent))); err != nil {
			return err
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// packetRates measures subject's established flows at every size and
// records the results; split is the share of flows each real server
// (by MAC byte) should see.
func (w *wire) packetRates(r *Report, o Options, scenario, subject string, split map[byte]float64) error {
	for _, size := range o.Sizes {
		f, _ := w.established(size, false)
		res := &Result{Key: fmt.Sprintf("%s/%s/%d", scenario, subject, size), Scenario: scenario, Subject: subject, Size: size, Unit: UnitMpps}
		var sent, got uint64
		perReal := map[byte]uint64{}
		for i := 0; i < o.Repeats; i++ {
			s, err := w.measure(f, o.Sample)
			if err != nil {
				return err
			}
			res.Samples = append(res.Samples, s.mpps())
			sent += s.sent
			got += s.total()
			for k, c := range s.counted {
				perReal[k] += c.Pkts
			}
		}
		res.Detail = map[string]any{"frames_sent": sent, "frames_counted": got, "per_real_frames": macKeys(perReal)}
		r.add(res)
		o.logf("  %-28s %6.3f Mpps (median of %d; %d frames sent, %d counted)", res.Key, res.Median, len(res.Samples), sent, got)
		r.check("per-real split "+res.Key, splitOK(perReal, split), "%s", splitText(perReal, split))
	}
	return nil
}

func macKeys(m map[byte]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range m {
		out[wireRealMAC(int(k)-0x0b).String()] = v
	}
	return out
}

// splitOK reports whether every real's share of the frames is within one
// percentage point of its share of the flows, and nothing went elsewhere.
func splitOK(got map[byte]uint64, want map[byte]float64) bool {
	var total uint64
	for _, v := range got {
		total += v
	}
	if total == 0 {
		return false
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			return false
		}
	}
	for k, share := range want {
		if math.Abs(float64(got[k])/float64(total)-share) > 0.01 {
			return false
		}
	}
	return true
}

func splitText(got map[byte]uint64, want map[byte]float64) string {
	var total uint64
	for _, v := range got {
		total += v
	}
	var parts []string
	for i, r := range wireReals {
		k := byte(0x0b + i)
		g := 0.0
		if total > 0 {
			g = float64(got[k]) / float64(total)
		}
		parts = append(parts, fmt.Sprintf("%s %.1f%% (want %.1f%%)", r, 100*g, 100*want[k]))
	}
	return strings.Join(parts, ", ")
}

func (w *wire) run(ctx context.Context, r *Report, o Options, work string) error {
	o.logf("scenario 1: ceiling (MAC rewrite + XDP_TX, no lookup) on the wire")
	var ceil *loadgen.Attachment
	if err := w.lb.Do(func() (err error) { ceil, err = w.lg.AttachCeiling(w.lbIf); return }); err != nil {
		return err
	}
	err := w.packetRates(r, o, "ceiling", "ceiling", map[byte]float64{0x0b: 1})
	if err = errors.Join(err, ceil.Close()); err != nil {
		return err
	}

	for _, mode := range []string{"dr", "tun", "nat", "fullnat"} {
		if err := ctx.Err(); err != nil {
			return err
		}
		o.logf("scenario 2: xipvs %s, %d established flows over 3 reals (wrr 1:2:3)", strings.ToUpper(mode), o.Flows)
		if err := w.xipvsMode(r, o, work, mode); err != nil {
			return fmt.Errorf("xipvs %s: %w", mode, err)
		}
	}

	if !installed("nft") {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	o.logf("scenario 3: nftables DNAT (numgen, 1:2:3) on the same hop")
	return w.nftables(r, o)
}

var fwdFlag = map[string]string{"dr": "-g", "tun": "-i", "nat": "-m", "fullnat": "-b"}

func (w *wire) xipvsMode(r *Report, o Options, work, mode string) (err error) {
	x, err := startXipvs(w.lb, o, work, "wire-"+mode, mode == "dr", "eth0")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\nxipvsd log:\n%s", err, x.d.Logs())
		}
		x.stop()
	}()
	vs := wireVIP.String() + ":80"
	cmds := [][]string{{"-A", "-t", vs, "-s", "wrr"}}
	if mode == "fullnat" {
		cmds = append(cmds, []string{"--add-laddr", "-z", wireLIP.String(), "-t", vs})
	}
	for i, rip := range wireReals {
		cmds = append(cmds, []string{"-a", "-t", vs, "-r", rip.String() + ":80", fwdFlag[mode], "-w", strconv.Itoa(wireWeights[i])})
	}
	for _, c := range cmds {
		if err := x.run(c...); err != nil {
			return err
		}
	}
	client := api.NewClient(x.socket)
	// Set every flow up: SYNs through the slow path, paced, until the
	// scheduler has seen all of them, then one ACK each (SYN_RECV ->
	// ESTABLISHED, in XDP).
	syn, _ := w.established(64, true)
	var conns map[byte]uint64
	for pass := 0; ; pass++ {
		if err := w.paced(syn, o.Flows); err != nil {
			return err
		}
		if conns, err = schedConns(client); err != nil {
			return err
		}
		if n := sum(conns); n >= uint64(o.Flows) {
			break
		} else if pass == setupPasses {
			return fmt.Errorf("only %d of %d flows set up after %d passes", n, o.Flows, pass+1)
		}
	}
	ack, _ := w.established(64, false)
	if err := w.paced(ack, o.Flows); err != nil {
		return err
	}
	want := map[byte]float64{}
	for k, v := range conns {
		want[k] = float64(v) / float64(sum(conns))
	}
	r.check(fmt.Sprintf("xipvs-%s wrr 1:2:3 schedules the flows by weight", mode), wrrOK(conns, o.Flows), "connections per real: %v of %d", macKeys(conns), o.Flows)
	if err := w.packetRates(r, o, "established", "xipvs-"+mode, want); err != nil {
		return err
	}
	if mode == "dr" {
		o.logf("scenario 4: new flows through the slow path (SYN stream, distinct tuples)")
		if err := w.synStream(r, o, "xipvs-dr", func() (uint64, error) {
			c, err := schedConns(client)
			return sum(c), err
		}); err != nil {
			return err
		}
		// One more SYN stream, under Go's CPU profiler: where the slow
		// path's time goes.
		if err := w.profileSlowPath(r, o); err != nil {
			return fmt.Errorf("profile: %w", err)
		}
	}
	return nil
}

func (w *wire) profileSlowPath(r *Report, o Options) error {
	secs := max(int(o.Sample.Seconds()), 1)
	type result struct {
		b   []byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := w.lb.HTTPClient(time.Duration(secs+10) * time.Second).Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", profileAddr, secs))
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
	w.synSeq += synSeqStride
	f := loadgen.Flows{Template: template(64, wireSynBase, true), AddrBase: wireSynBase, PortBase: 1024, Ports: synPorts, Start: w.synSeq}
	w.senders, w.synSenders = w.synSenders, w.senders
	_, err := w.measure(f, time.Duration(secs)*time.Second+200*time.Millisecond)
	w.senders, w.synSenders = w.synSenders, w.senders
	res := <-got
	if err = errors.Join(err, res.err); err != nil {
		return err
	}
	r.SlowPathProfile = res.b
	return nil
}

// wrrOK reports whether conns follows wireWeights within one connection.
func wrrOK(conns map[byte]uint64, flows int) bool {
	total := 0
	for _, w := range wireWeights {
		total += w
	}
	for i, w := range wireWeights {
		want := float64(flows) * float64(w) / float64(total)
		if math.Abs(float64(conns[byte(0x0b+i)])-want) > 1 {
			return false
		}
	}
	return true
}

func sum(m map[byte]uint64) uint64 {
	var t uint64
	for _, v := range m {
		t += v
	}
	return t
}

// schedConns returns the connections the scheduler gave each wire real
// (by MAC byte).
func schedConns(c *api.Client) (map[byte]uint64, error) {
	svcs, err := c.Services()
	if err != nil {
		return nil, err
	}
	out := map[byte]uint64{}
	for _, s := range svcs {
		for _, d := range s.Dests {
			for i, rip := range wireReals {
				if d.Addr == rip {
					out[byte(0x0b+i)] += d.Stats.Conns
				}
			}
		}
	}
	return out, nil
}

// synStream sends SYNs of tuples never seen before as fast as the
// generator goes, and counts the first packets that reach the reals.
// made, if set, returns how many connections the balancer has made in
// all (to report how many it set up against how many reached a real).
func (w *wire) synStream(r *Report, o Options, subject string, made func() (uint64, error)) error {
	res := &Result{Key: "new-flows/" + subject + "/64", Scenario: "new-flows", Subject: subject, Size: 64, Unit: UnitCPS}
	t := template(64, wireSynBase, true)
	var sent, got uint64
	// One sender: the other CPU is left to whatever takes new flows
	// (xipvsd's slow path; for nftables the sender's softirq does it all).
	w.senders, w.synSenders = w.synSenders, w.senders
	defer func() { w.senders, w.synSenders = w.synSenders, w.senders }()
	for i := 0; i < o.Repeats; i++ {
		w.synSeq += synSeqStride
		f := loadgen.Flows{Template: t, AddrBase: wireSynBase, PortBase: 1024, Ports: synPorts, Start: w.synSeq}
		s, err := w.measure(f, o.Sample)
		if err != nil {
			return err
		}
		res.Samples = append(res.Samples, float64(s.total())/s.took.Seconds())
		sent += s.sent
		got += s.total()
	}
	res.Detail = map[string]any{"syns_sent": sent, "first_packets_counted": got, "senders": w.senders}
	if made != nil {
		n, err := made()
		if err != nil {
			return err
		}
		res.Detail["connections_made_in_all"] = n
	}
	r.add(res)
	o.logf("  %-28s %8.0f new flows/s (median; %d SYNs offered, %d reached a real)", res.Key, res.Median, sent, got)
	return nil
}

const nftWire = `table ip xipvs_bench {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %s tcp dport 80 dnat to numgen inc mod 6 map { 0 : %s, 1 : %s, 2 : %s, 3 : %s, 4 : %s, 5 : %s }
	}
}
`

func (w *wire) nftables(r *Report, o Options) (err error) {
	// A native program on eth0 so that the generator's frames arrive
	// (veth trap 1); it passes everything to the stack.
	if err := w.lb.Do(func() error { return pass.Attach(w.lbIf) }); err != nil {
		return err
	}
	rules := fmt.Sprintf(nftWire, wireVIP, wireReals[0], wireReals[1], wireReals[1], wireReals[2], wireReals[2], wireReals[2])
	if err := nft(w.lb, rules); err != nil {
		return err
	}
	defer func() {
		err = errors.Join(err, w.lb.Exec("nft", "delete", "table", "ip", "xipvs_bench").Run(), w.lb.IP("link", "set", "dev", "eth0", "xdp", "off"))
	}()
	// Conntrack picks the flows up from their first ACK.
	ack, _ := w.established(64, false)
	if err := w.paced(ack, o.Flows); err != nil {
		return err
	}
	if out, err := w.lb.Exec("cat", "/proc/sys/net/netfilter/nf_conntrack_count").Output(); err == nil {
		n, _ := strconv.Atoi(strings.TrimSpace(string(out)))
		r.check("nftables tracks every flow before measuring", n >= o.Flows, "%d of %d flows in conntrack", n, o.Flows)
	}
	want := map[byte]float64{0x0b: 1.0 / 6, 0x0c: 2.0 / 6, 0x0d: 3.0 / 6}
	if err := w.packetRates(r, o, "established", "nftables", want); err != nil {
		return err
	}
	o.logf("scenario 4: new flows through nftables (SYN stream)")
	return w.synStream(r, o, "nftables", nil)
}

// nft loads rules into ns.
func nft(ns testutil.Netns, rules string) error {
	f, err := os.CreateTemp("", "xipvs-bench-*.nft")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(rules); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if out, err := ns.Exec("nft", "-f", f.Name()).CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f: %w: %s", err, out)
	}
	return nil
}

// installed reports whether a peer tool is on PATH.
func installed(tool string) bool {
	_, err := exec.LookPath(tool)
	return err == nil
}
