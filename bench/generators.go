package bench

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/xipvs/xipvs/bench/loadgen"
	"github.com/xipvs/xipvs/internal/testutil"
)

// The generators lab: how fast each flood source this machine has puts
// distinct SYNs (a new source port each) on a veth from one vCPU, counted
// where they land: a program that drops every frame on the far end
// (loadgen_sink). Sources: the AF_XDP sender (the floods' generator when
// the kernel refuses live frames), live frames where allowed, trafgen
// (netsniff-ng: PACKET_TX_RING, qdisc bypass) and hping3 --flood (the
// host's stack).
type genLab struct {
	src, dst   testutil.Netns
	srcIf      int
	lg         *loadgen.Programs
	names      []string
	work       string
	srcMAC     net.HardwareAddr
	dstMAC     net.HardwareAddr
	target     netip.Addr
	generators []string
}

var (
	genSrcMAC = net.HardwareAddr{0x02, 0x79, 0, 0, 0, 1}
	genDstMAC = net.HardwareAddr{0x02, 0x79, 0, 0, 0, 2}
	genTarget = netip.MustParseAddr("10.79.0.2")
)

func newGenLab(prefix, work string) (_ *genLab, err error) {
	g := &genLab{work: work, srcMAC: genSrcMAC, dstMAC: genDstMAC, target: genTarget}
	defer func() {
		if err != nil {
			err = errors.Join(err, g.Close())
		}
	}()
	for _, n := range []string{prefix + "-src", prefix + "-dst"} {
		ns, err := testutil.AddNetns(n)
		if err != nil {
			return nil, err
		}
		g.names = append(g.names, n)
		if g.src.Name == "" {
			g.src = ns
		} else {
			g.dst = ns
		}
	}
	for _, step := range []struct {
		ns   testutil.Netns
		args []string
	}{
		{g.src, []string{"link", "add", "s0", "address", genSrcMAC.String(), "numtxqueues", "1", "numrxqueues", "1", "type", "veth",
			"peer", "name", "d0", "netns", g.dst.Name, "address", genDstMAC.String(), "numtxqueues", "1", "numrxqueues", "1"}},
		{g.src, []string{"addr", "add", "10.79.0.1/24", "dev", "s0"}},
		{g.src, []string{"link", "set", "s0", "up"}},
		{g.src, []string{"neigh", "replace", genTarget.String(), "lladdr", genDstMAC.String(), "dev", "s0", "nud", "permanent"}},
		{g.dst, []string{"link", "set", "d0", "up"}},
	} {
		if err := step.ns.IP(step.args...); err != nil {
			return nil, err
		}
	}
	if g.lg, err = loadgen.Open(loadgen.Options{}); err != nil {
		return nil, err
	}
	var dstIf int
	if dstIf, err = ifindex(g.dst, "d0"); err != nil {
		return nil, err
	}
	if g.srcIf, err = ifindex(g.src, "s0"); err != nil {
		return nil, err
	}
	if err := g.dst.Do(func() error { _, err := g.lg.AttachSink(dstIf); return err }); err != nil {
		return nil, err
	}
	g.generators = []string{string(loadgen.AFXDP)}
	if g.lg.LiveFramesAllowed() == nil {
		g.generators = append(g.generators, string(loadgen.LiveFrames))
	}
	for _, tool := range []string{"trafgen", "hping3"} {
		if installed(tool) {
			g.generators = append(g.generators, tool)
		}
	}
	return g, nil
}

// Close removes what the lab made (the sink is detached by the
// programs' Close).
func (g *genLab) Close() error {
	var err error
	if g.lg != nil {
		err = g.lg.Close()
	}
	for i := len(g.names) - 1; i >= 0; i-- {
		err = errors.Join(err, testutil.DelNetns(g.names[i]))
	}
	g.names = nil
	return err
}

// run measures each generator once for length into r's run.
func (g *genLab) run(r *Report, o Options, run int) error {
	length := time.Second
	if o.Quick {
		length = 200 * time.Millisecond
	}
	for _, gen := range g.generators {
		if err := g.lg.ResetSink(); err != nil {
			return err
		}
		start := time.Now()
		if err := g.flood(gen, length); err != nil {
			return fmt.Errorf("%s: %w", gen, err)
		}
		// What is still in flight lands within microseconds.
		time.Sleep(20 * time.Millisecond)
		took := time.Since(start)
		c, err := g.lg.SinkCounts()
		if err != nil {
			return err
		}
		mpps := float64(c[genDstMAC[5]].Pkts) / took.Seconds() / 1e6
		o.logf("generators: %s puts %.2f M distinct SYNs/s on a veth from one vCPU", gen, mpps)
		r.sample(Result{Key: "generators/" + gen, Scenario: "generators", Subject: gen + " (one vCPU, into a drop-all XDP sink)",
			Unit: UnitMpps, Generator: gen}, run, mpps)
	}
	return nil
}

// flood runs generator gen from CPU 0 for about length.
func (g *genLab) flood(gen string, length time.Duration) error {
	frame := testutil.Frame{SrcMAC: g.srcMAC, DstMAC: g.dstMAC, Src: netip.MustParseAddr("198.18.0.1"), Dst: g.target,
		SrcPort: 1024, DstPort: 80, SYN: true}.Build()
	flows := loadgen.Flows{Template: frame, AddrBase: netip.MustParseAddr("198.18.0.1"), PortBase: 1024, Ports: 50000}
	switch gen {
	case string(loadgen.AFXDP), string(loadgen.LiveFrames):
		return g.src.Do(func() error {
			restore, err := pinThread(0)
			if err != nil {
				return err
			}
			defer restore()
			s, err := g.lg.NewSender(g.srcIf, 1, loadgen.Method(gen))
			if err != nil {
				return err
			}
			defer s.Close()
			if err := s.SetFlows(flows); err != nil {
				return err
			}
			chunk := uint32(4096)
			if gen == string(loadgen.LiveFrames) {
				chunk = sendChunk
			}
			for start := time.Now(); time.Since(start) < length; {
				if err := s.Send(chunk); err != nil {
					return err
				}
			}
			return nil
		})
	case "trafgen":
		conf := filepath.Join(g.work, "syn.trafgen")
		spec := fmt.Sprintf("{ eth(da=%s, sa=%s), ipv4(sa=198.18.0.1, da=%s), tcp(sp=dinc(1024, 65000), dp=80, syn) }\n", g.dstMAC, g.srcMAC, g.target)
		if err := os.WriteFile(conf, []byte(spec), 0o644); err != nil {
			return err
		}
		return g.timed(length, "trafgen", "-i", conf, "-o", "s0", "--cpus", "1", "-q")
	case "hping3":
		return g.timed(length, "hping3", "-S", "--flood", "--rand-source", "-p", "80", g.target.String())
	}
	return fmt.Errorf("no generator %q", gen)
}

// timed runs a tool pinned to CPU 0 in the source namespace until length
// has passed, then stops it with SIGINT.
func (g *genLab) timed(length time.Duration, tool string, args ...string) error {
	cmd := g.src.Exec("taskset", append([]string{"-c", "0", tool}, args...)...)
	// A process group of its own: trafgen forks a worker per CPU, and
	// the signal must reach them too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	time.Sleep(length)
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return fmt.Errorf("%s did not stop on SIGINT", tool)
	}
	return nil
}
