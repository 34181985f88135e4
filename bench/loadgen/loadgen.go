// Package loadgen holds the benchmark harness's XDP programs
// (bpf/loadgen.bpf.c): a live-frames packet generator, a sink that counts
// frames per destination MAC and drops them, and the ceiling forwarder
// (MAC rewrite and XDP_TX, nothing else). They are tools of the bench, not
// part of the director.
package loadgen

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/xipvs/xipvs/dataplane"
)

// Programs are the loaded generator, sink and ceiling programs.
type Programs struct {
	objs     loadgenObjects
	mu       sync.Mutex
	attached []*Attachment // still attached: detached by Close
}

// Options configures Open.
type Options struct {
	// CeilingDst and CeilingSrc are the MACs the ceiling program writes.
	CeilingDst, CeilingSrc net.HardwareAddr
}

// Open loads the harness's programs.
func Open(o Options) (*Programs, error) {
	spec, err := loadLoadgen()
	if err != nil {
		return nil, fmt.Errorf("load loadgen spec: %w", err)
	}
	for name, mac := range map[string]net.HardwareAddr{"ceiling_dst": o.CeilingDst, "ceiling_src": o.CeilingSrc} {
		var v [6]byte
		copy(v[:], mac)
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	g := &Programs{}
	if err := spec.LoadAndAssign(&g.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load loadgen: %+v", ve)
		}
		return nil, fmt.Errorf("load loadgen: %w", err)
	}
	return g, nil
}

// Close detaches what Programs attached and unloads it.
func (g *Programs) Close() error {
	g.mu.Lock()
	attached := g.attached
	g.attached = nil
	g.mu.Unlock()
	var err error
	for i := len(attached) - 1; i >= 0; i-- {
		err = errors.Join(err, attached[i].Close())
	}
	return errors.Join(err, g.objs.Close())
}

// Attachment is one program attached to one interface; Close detaches it
// (so does the Programs' Close). Programs keeps every attachment it made,
// so that one whose caller dropped it is not detached by the garbage
// collector (a bpf_link's finalizer) in the middle of a measurement.
type Attachment struct {
	mu sync.Mutex
	l  link.Link
}

// Close detaches the program.
func (a *Attachment) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.l == nil {
		return nil
	}
	err := a.l.Close()
	a.l = nil
	return err
}

func (g *Programs) attach(p *ebpf.Program, ifindex int) (*Attachment, error) {
	l, err := link.AttachXDP(link.XDPOptions{Program: p, Interface: ifindex, Flags: link.XDPDriverMode})
	if err != nil {
		return nil, fmt.Errorf("attach %s to ifindex %d: %w", p, ifindex, err)
	}
	a := &Attachment{l: l}
	g.mu.Lock()
	g.attached = append(g.attached, a)
	g.mu.Unlock()
	return a, nil
}

// AttachSink attaches the counting sink natively to ifindex, in the
// calling thread's network namespace.
func (g *Programs) AttachSink(ifindex int) (*Attachment, error) {
	return g.attach(g.objs.LoadgenSink, ifindex)
}

// AttachSpoofedDrop attaches natively to ifindex, in the calling thread's
// network namespace, the program that drops what comes back to a flood's
// spoofed sources (198.18.0.0/15) and passes the rest.
func (g *Programs) AttachSpoofedDrop(ifindex int) (*Attachment, error) {
	return g.attach(g.objs.LoadgenSpoofed, ifindex)
}

// AttachRefLB attaches the reference load balancer natively to ifindex,
// in the calling thread's network namespace.
func (g *Programs) AttachRefLB(ifindex int) (*Attachment, error) {
	return g.attach(g.objs.LoadgenReflb, ifindex)
}

// RefTuple is a flow of the reference load balancer (addresses in
// network order as netip gives them).
type RefTuple struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto            uint8
}

func be16(v uint16) uint16 { return v<<8 | v>>8 }

// SetRefService makes (vip, port, proto) a service of the reference LB.
func (g *Programs) SetRefService(vip netip.Addr, port uint16, proto uint8) error {
	k := loadgenRefSvcKey{Vip: binary.NativeEndian.Uint32(vip.AsSlice()), Port: be16(port), Proto: proto}
	if err := g.objs.RefServices.Put(&k, uint32(1)); err != nil {
		return fmt.Errorf("reference service: %w", err)
	}
	return nil
}

// SetRefConns gives the reference LB its connections, each to mac.
func (g *Programs) SetRefConns(flows []RefTuple, macs []net.HardwareAddr) error {
	keys := make([]loadgenRefConnKey, len(flows))
	vals := make([]loadgenRefConn, len(flows))
	for i, f := range flows {
		keys[i] = loadgenRefConnKey{Saddr: binary.NativeEndian.Uint32(f.Src.AsSlice()), Daddr: binary.NativeEndian.Uint32(f.Dst.AsSlice()),
			Sport: be16(f.SrcPort), Dport: be16(f.DstPort), Proto: f.Proto}
		copy(vals[i].Mac[:], macs[i])
	}
	if _, err := g.objs.RefConns.BatchUpdate(keys, vals, nil); err != nil {
		return fmt.Errorf("reference connections: %w", err)
	}
	return nil
}

// AttachCeiling attaches the ceiling forwarder natively to ifindex, in
// the calling thread's network namespace.
func (g *Programs) AttachCeiling(ifindex int) (*Attachment, error) {
	return g.attach(g.objs.LoadgenCeiling, ifindex)
}

// SinkCount is what the sink counted for one destination MAC.
type SinkCount struct{ Pkts, Bytes uint64 }

// SinkCounts returns the sink's counts by the last byte of the
// destination MAC, summed over CPUs; MACs with nothing counted are left out.
func (g *Programs) SinkCounts() (map[byte]SinkCount, error) {
	out := map[byte]SinkCount{}
	var (
		k  uint32
		vs []loadgenSinkCount
	)
	it := g.objs.SinkCounts.Iterate()
	for it.Next(&k, &vs) {
		var c SinkCount
		for _, v := range vs {
			c.Pkts += v.Pkts
			c.Bytes += v.Bytes
		}
		if c.Pkts != 0 {
			out[byte(k)] = c
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read sink counts: %w", err)
	}
	return out, nil
}

// ResetSink zeroes the sink's counts.
func (g *Programs) ResetSink() error {
	zero := make([]loadgenSinkCount, ebpf.MustPossibleCPU())
	for k := uint32(0); k < 256; k++ {
		if err := g.objs.SinkCounts.Put(k, zero); err != nil {
			return fmt.Errorf("reset sink counts: %w", err)
		}
	}
	return nil
}

// Flows is what Send generates: Template with flow n's source address
// and port written in, n counting up from Start. Flow n has source
// address AddrBase + n/Ports and source port PortBase + n%Ports; with
// Count set, n wraps at Count, so Count distinct flows repeat in order.
type Flows struct {
	// Template is the whole frame: Ethernet, IPv4 without options (or
	// IPv6 without extension headers), TCP without options, then the
	// payload (which is sent as it is).
	Template []byte
	AddrBase netip.Addr
	PortBase uint16
	Ports    uint32
	Count    uint32
	Start    uint64
	// Tagged reserves the template's last TagLen bytes for the closed
	// loop's tag (Loop sets it): they take part in the TCP checksum
	// frame by frame. The payload must be at least TagLen bytes long and
	// the TCP segment of even length.
	Tagged bool
}

// TagLen is the length of the closed loop's tag at the end of a frame.
const TagLen = int(loadgenLoopConstLOOP_TAG_LEN)

const (
	genHdrLen  = 54
	genIPOff   = 14
	genTCPOff  = 34
	gen6HdrLen = 74
	gen6TCPOff = 54
)

// config validates f and returns the generator's configuration for it.
func (f Flows) config() (loadgenGenCfg, error) {
	var cfg loadgenGenCfg
	t := f.Template
	v4 := len(t) >= genHdrLen && binary.BigEndian.Uint16(t[12:]) == unix.ETH_P_IP &&
		t[genIPOff] == 0x45 && t[genIPOff+9] == unix.IPPROTO_TCP && t[genTCPOff+12]>>4 == 5
	v6 := len(t) >= gen6HdrLen && binary.BigEndian.Uint16(t[12:]) == unix.ETH_P_IPV6 &&
		t[genIPOff]>>4 == 6 && t[genIPOff+6] == unix.IPPROTO_TCP && t[gen6TCPOff+12]>>4 == 5
	if !v4 && !v6 {
		return cfg, errors.New("generator template: want Ethernet, IPv4 without options or IPv6 without extension headers, TCP without options")
	}
	if len(t) > int(loadgenLoopConstLOOP_MAX_FRAME) {
		return cfg, fmt.Errorf("generator template: %d bytes, more than %d", len(t), loadgenLoopConstLOOP_MAX_FRAME)
	}
	if f.AddrBase.Is4() != v4 {
		return cfg, fmt.Errorf("generator source base %v: not of the template's family", f.AddrBase)
	}
	if f.Ports == 0 || f.Ports > 65536-uint32(f.PortBase) {
		return cfg, fmt.Errorf("generator: %d ports from %d do not fit", f.Ports, f.PortBase)
	}
	hdr := genHdrLen
	if v6 {
		hdr = gen6HdrLen
	}
	tail := 0
	if f.Tagged {
		tail = TagLen
		if len(t)-hdr < TagLen || (len(t)-hdr)%2 != 0 {
			return cfg, fmt.Errorf("generator template: a %d-byte payload cannot end in the loop's tag (at least %d bytes, even)", len(t)-hdr, TagLen)
		}
		cfg.Tail = 1
	}
	cfg.PortBase = f.PortBase
	cfg.Ports = f.Ports
	cfg.Flows = f.Count
	cfg.Len = uint32(len(t))
	if v4 {
		copy(cfg.Hdr[:], t[:genHdrLen])
		a := f.AddrBase.As4()
		cfg.AddrBase = binary.BigEndian.Uint32(a[:])
		cfg.IpSum, cfg.TcpSum = genSums(t, tail)
	} else {
		copy(cfg.Hdr[:], t[:gen6HdrLen])
		a := f.AddrBase.As16()
		cfg.AddrBase = binary.BigEndian.Uint32(a[12:])
		cfg.TcpSum = genSums6(t, tail)
		cfg.V6 = 1
	}
	return cfg, nil
}

// SetFlows loads f into the generator and sets its sequence to f.Start.
// An IPv6 template varies the last 32 bits of the source address.
func (g *Programs) SetFlows(f Flows) error {
	cfg, err := f.config()
	if err != nil {
		return err
	}
	zero := uint32(0)
	if err := g.objs.GenConfig.Put(zero, &cfg); err != nil {
		return fmt.Errorf("set generator config: %w", err)
	}
	if err := g.objs.GenSeq.Put(zero, f.Start); err != nil {
		return fmt.Errorf("set generator sequence: %w", err)
	}
	return nil
}

// Seq returns how many frames the generator has numbered (Start included).
func (g *Programs) Seq() (uint64, error) {
	var v uint64
	if err := g.objs.GenSeq.Lookup(uint32(0), &v); err != nil {
		return 0, fmt.Errorf("read generator sequence: %w", err)
	}
	return v, nil
}

// genSums returns the checksum bases the generator completes: the one's
// complement sums, as the program loads 16-bit words (little endian on
// bpfel), of the IPv4 header without its checksum and source address, and
// of the TCP pseudo header, header and payload without the checksum, the
// source address, the source port and the last tail bytes (the loop's
// tag, added frame by frame).
func genSums(t []byte, tail int) (ip, tcp uint32) {
	le := func(b []byte) uint32 { return uint32(binary.LittleEndian.Uint16(b)) }
	iph := t[genIPOff : genIPOff+20]
	for i := 0; i < 20; i += 2 {
		if i == 10 || i == 12 || i == 14 {
			continue // checksum, source address
		}
		ip += le(iph[i:])
	}
	totLen := int(binary.BigEndian.Uint16(iph[2:]))
	seg := t[genTCPOff : genIPOff+totLen-tail]
	// Pseudo header: destination address, zero + protocol, TCP length.
	tcp += le(iph[16:]) + le(iph[18:])
	var w [2]byte
	w[1] = unix.IPPROTO_TCP
	tcp += le(w[:])
	binary.BigEndian.PutUint16(w[:], uint16(len(seg)+tail))
	tcp += le(w[:])
	for i := 0; i+1 < len(seg); i += 2 {
		if i == 0 || i == 16 {
			continue // source port, checksum
		}
		tcp += le(seg[i:])
	}
	if len(seg)%2 == 1 {
		tcp += uint32(seg[len(seg)-1]) // the last byte is the low byte of a little-endian load
	}
	return ip, tcp
}

// genSums6 is genSums for an IPv6 template: the TCP checksum base over
// the pseudo header (source address but its last 32 bits, destination,
// length, next header) and the segment without the checksum, the source
// port and the tail.
func genSums6(t []byte, tail int) (tcp uint32) {
	le := func(b []byte) uint32 { return uint32(binary.LittleEndian.Uint16(b)) }
	ip := t[genIPOff : genIPOff+40]
	segLen := int(binary.BigEndian.Uint16(ip[4:]))
	seg := t[gen6TCPOff : gen6TCPOff+segLen-tail]
	for i := 8; i < 40; i += 2 {
		if i == 20 || i == 22 {
			continue // the source address's last 32 bits
		}
		tcp += le(ip[i:])
	}
	var w [4]byte
	binary.BigEndian.PutUint32(w[:], uint32(segLen))
	tcp += le(w[0:]) + le(w[2:])
	binary.BigEndian.PutUint32(w[:], unix.IPPROTO_TCP)
	tcp += le(w[0:]) + le(w[2:])
	for i := 0; i+1 < len(seg); i += 2 {
		if i == 0 || i == 16 {
			continue // source port, checksum
		}
		tcp += le(seg[i:])
	}
	if len(seg)%2 == 1 {
		tcp += uint32(seg[len(seg)-1])
	}
	return tcp
}

// Send runs the generator n times in live-frames mode, in the calling
// thread's network namespace, as if each frame arrived on ifindex: each
// run writes the next flow into a frame made from f.Template and
// transmits it out of ifindex. batch is the kernel's frames per batch
// (0: its default, 64).
func (g *Programs) Send(ifindex int, template []byte, n, batch uint32) error {
	opts := &ebpf.RunOptions{
		Data:      template,
		Context:   xdpMd{DataEnd: uint32(len(template)), IngressIfindex: uint32(ifindex)},
		Repeat:    n,
		Flags:     unix.BPF_F_TEST_XDP_LIVE_FRAMES,
		BatchSize: batch,
	}
	if _, err := g.objs.LoadgenGen.Run(opts); err != nil {
		return fmt.Errorf("generate %d frames on ifindex %d: %w", n, ifindex, err)
	}
	return nil
}

// Program names one of the harness's programs.
type Program int

// The harness's programs.
const (
	Gen Program = iota
	Sink
	Ceiling
	RefLB
	LoopProg
)

func (g *Programs) prog(p Program) (*ebpf.Program, error) {
	switch p {
	case Gen:
		return g.objs.LoadgenGen, nil
	case Sink:
		return g.objs.LoadgenSink, nil
	case Ceiling:
		return g.objs.LoadgenCeiling, nil
	case RefLB:
		return g.objs.LoadgenReflb, nil
	case LoopProg:
		return g.objs.LoadgenLoop, nil
	}
	return nil, fmt.Errorf("no loadgen program %d", p)
}

// Run runs program p once on frame (not live: nothing is transmitted)
// and returns its verdict and the frame as it left it.
func (g *Programs) Run(p Program, frame []byte) (dataplane.Verdict, []byte, error) {
	prog, err := g.prog(p)
	if err != nil {
		return 0, nil, err
	}
	opts := &ebpf.RunOptions{Data: frame, DataOut: make([]byte, 4096)}
	ret, err := prog.Run(opts)
	if err != nil {
		return 0, nil, fmt.Errorf("run %s: %w", prog, err)
	}
	return dataplane.Verdict(ret), opts.DataOut, nil
}

// Benchmark runs program p repeat times on frame (BPF_PROG_RUN with
// Repeat, not live) and returns its verdict and the mean time per run.
func (g *Programs) Benchmark(p Program, frame []byte, repeat int) (dataplane.Verdict, time.Duration, error) {
	prog, err := g.prog(p)
	if err != nil {
		return 0, 0, err
	}
	ret, dur, err := prog.Benchmark(frame, repeat, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("benchmark %s: %w", prog, err)
	}
	return dataplane.Verdict(ret), dur, nil
}

// xdpMd mirrors struct xdp_md for BPF_PROG_RUN's context.
type xdpMd struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}
