package bench

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xipvs/xipvs/bench/loadgen"
	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

// costModes are the hit paths costLab measures; costSubjects adds the
// references and the director's path for a packet that is no service's.
var (
	costModes    = []string{"dr", "tun", "nat", "nat-reply", "fullnat", "fullnat-reply"}
	costSubjects = append([]string{"ceiling", "reference-lb", "not-ours", "vip-other-port"}, costModes...)
)

// costLab is the director loaded without interfaces, with one established
// connection per forwarding mode among 50,000 others, for measuring the
// hit path with BPF_PROG_RUN. BPF_PROG_RUN with Repeat runs the program
// again on the frame it rewrote, so NAT and FULLNAT are measured on a pair
// of entries that rewrite the frame back and forth (every run a full
// rewrite: addresses, ports, checksums, MACs). TUN grows the frame on
// every run, so it is measured one packet per call against DR measured
// the same way, and reported as DR's repeat cost plus that difference.
//
// The references run on the same frames: the ceiling (MAC rewrite and
// XDP_TX) and the reference load balancer (loadgen_reflb: one service
// lookup, one LRU connection lookup among the same 50,001 connections,
// MAC rewrite, XDP_TX).
type costLab struct {
	d         *dataplane.Harness
	lg        *loadgen.Programs
	mac, rmac net.HardwareAddr
	keys      map[string]dataplane.ConnKey
}

func newCostLab() (_ *costLab, err error) {
	d, err := dataplane.OpenHarness(1 << 16)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	var (
		vip  = netip.MustParseAddr("192.0.2.10")
		cl   = netip.MustParseAddr("198.51.100.7")
		rip  = netip.MustParseAddr("10.0.0.11")
		lip  = netip.MustParseAddr("10.0.0.250")
		mac  = net.HardwareAddr{2, 0, 0, 0, 0, 1}
		rmac = net.HardwareAddr{2, 0, 0, 0, 0, 0x11}
	)
	if err := d.SetInterface(1, mac, 0); err != nil {
		return nil, err
	}
	reals := map[uint32]dataplane.Real{
		1: {Addr: rip, Ifindex: 1, MAC: rmac, Fwd: dataplane.FwdRoute},
		2: {Addr: rip, Ifindex: 1, MAC: rmac, Fwd: dataplane.FwdTunnel, MTU: 9000, TunnelSrc: netip.MustParseAddr("10.0.0.2")},
		3: {Addr: rip, Ifindex: 1, MAC: rmac, Fwd: dataplane.FwdMasq, MTU: 1500},
		4: {Addr: rip, Ifindex: 1, MAC: rmac, Fwd: dataplane.FwdFullNAT, MTU: 1500},
		// The back-and-forth reply entries also start from the VIP.
		5: {Addr: vip, Ifindex: 1, MAC: rmac, Fwd: dataplane.FwdMasq, MTU: 1500},
	}
	for id, r := range reals {
		if err := d.SetReal(id, r); err != nil {
			return nil, err
		}
	}
	// Services: the VIP, and RIP:8080 for the entries that rewrite back.
	for _, k := range []dataplane.ServiceKey{{VIP: vip, Port: 80, Proto: 6}, {VIP: rip, Port: 8080, Proto: 6}} {
		if err := d.SetService(k, 1, 0); err != nil {
			return nil, err
		}
	}
	tuple := func(s netip.Addr, sp uint16, dst netip.Addr, dp uint16) dataplane.ConnKey {
		return dataplane.ConnKey{Src: s, Dst: dst, SrcPort: sp, DstPort: dp, Proto: 6}
	}
	est := func(real uint32, flags dataplane.ConnFlags, k, out dataplane.ConnKey) {
		if err != nil {
			return
		}
		c := dataplane.Conn{RealID: real, ServiceID: 1, State: conntrack.StateEstablished, LastSeen: dataplane.Now(),
			Flags: flags | dataplane.ConnSynSeen, Out: out, Ifindex: 1, DstMAC: rmac, SrcMAC: mac}
		err = d.SetEstConn(k, c) // established connections live in the established table
	}
	// Filler, so that hits are found among many entries; the reference
	// LB gets the same.
	var refFlows []loadgen.RefTuple
	var refMACs []net.HardwareAddr
	for i := 0; i < 50000; i++ {
		k := tuple(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), 40000, vip, 80)
		est(1, 0, k, dataplane.ConnKey{})
		refFlows = append(refFlows, loadgen.RefTuple{Src: k.Src, Dst: k.Dst, SrcPort: k.SrcPort, DstPort: k.DstPort, Proto: 6})
		refMACs = append(refMACs, rmac)
	}
	refFlows = append(refFlows, loadgen.RefTuple{Src: cl, Dst: vip, SrcPort: 1001, DstPort: 80, Proto: 6})
	refMACs = append(refMACs, rmac)
	// DR and TUN: one entry each (their rewrite keeps the tuple).
	est(1, 0, tuple(cl, 1001, vip, 80), dataplane.ConnKey{})
	est(2, 0, tuple(cl, 1002, vip, 80), dataplane.ConnKey{})
	// NAT forward: client -> VIP:80 becomes client -> RIP:8080, whose
	// entry rewrites it back.
	a, z := tuple(cl, 1003, vip, 80), tuple(cl, 1003, rip, 8080)
	est(3, 0, a, z)
	est(3, 0, z, a)
	// NAT reply: RIP:8080 -> client becomes VIP:80 -> client and back.
	a, z = tuple(rip, 8080, cl, 1004), tuple(vip, 80, cl, 1004)
	est(3, dataplane.ConnReply, a, z)
	est(3, dataplane.ConnReply, z, a)
	// FULLNAT forward: both ends rewritten.
	a, z = tuple(cl, 1005, vip, 80), tuple(lip, 30005, rip, 8080)
	est(4, dataplane.ConnFullNAT, a, z)
	est(4, dataplane.ConnFullNAT, z, a)
	// FULLNAT reply.
	a, z = tuple(rip, 8080, lip, 30006), tuple(vip, 80, cl, 1006)
	est(4, dataplane.ConnFullNAT|dataplane.ConnReply, a, z)
	est(4, dataplane.ConnFullNAT|dataplane.ConnReply, z, a)
	if err != nil {
		return nil, err
	}
	lg, err := loadgen.Open(loadgen.Options{CeilingDst: rmac, CeilingSrc: mac})
	if err != nil {
		return nil, err
	}
	if err := errors.Join(lg.SetRefService(vip, 80, 6), lg.SetRefConns(refFlows, refMACs)); err != nil {
		lg.Close()
		return nil, err
	}
	return &costLab{d: d, lg: lg, mac: mac, rmac: rmac, keys: map[string]dataplane.ConnKey{
		"dr":            tuple(cl, 1001, vip, 80),
		"tun":           tuple(cl, 1002, vip, 80),
		"nat":           tuple(cl, 1003, vip, 80),
		"nat-reply":     tuple(rip, 8080, cl, 1004),
		"fullnat":       tuple(cl, 1005, vip, 80),
		"fullnat-reply": tuple(rip, 8080, lip, 30006),
	}}, nil
}

func (c *costLab) Close() error { return errors.Join(c.lg.Close(), c.d.Close()) }

// fixChecksums rebuilds f's checksums after a field was changed.
func fixChecksums(f []byte) []byte {
	p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
	buf := gopacket.NewSerializeBuffer()
	tcp := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	_ = tcp.SetNetworkLayerForChecksum(ip)
	_ = gopacket.SerializePacket(buf, gopacket.SerializeOptions{ComputeChecksums: true}, p)
	return buf.Bytes()
}

// frame is a 64-byte ACK of mode's connection.
func (c *costLab) frame(mode string) []byte {
	k := c.keys[mode]
	return testutil.Frame{Src: k.Src, Dst: k.Dst, SrcPort: k.SrcPort, DstPort: k.DstPort, ACK: true, Payload: make([]byte, 64-54)}.Build()
}

func (c *costLab) repeatCost(f []byte, repeat int) (float64, error) {
	v, per, err := c.d.Benchmark(f, repeat)
	if err != nil {
		return 0, err
	}
	if v != dataplane.XDPTx {
		return 0, fmt.Errorf("verdict %v, want XDP_TX", v)
	}
	return float64(per.Nanoseconds()), nil
}

// singleCost averages the kernel's time for one run per call.
func (c *costLab) singleCost(f []byte, calls int) (float64, error) {
	var total float64
	for i := 0; i < calls; i++ {
		ns, err := c.repeatCost(f, 1)
		if err != nil {
			return 0, err
		}
		total += ns
	}
	return total / float64(calls), nil
}

// cost returns ns per packet of subject's path.
func (c *costLab) cost(subject string, repeat int) (float64, error) {
	switch subject {
	case "ceiling", "reference-lb":
		p := map[string]loadgen.Program{"ceiling": loadgen.Ceiling, "reference-lb": loadgen.RefLB}[subject]
		v, per, err := c.lg.Benchmark(p, c.frame("dr"), repeat)
		if err != nil {
			return 0, err
		}
		if v != dataplane.XDPTx {
			return 0, fmt.Errorf("%s: verdict %v, want XDP_TX", subject, v)
		}
		return float64(per.Nanoseconds()), nil
	case "not-ours", "vip-other-port":
		f := c.frame("dr")
		if subject == "not-ours" {
			f[14+16+3]++ // to another host
		} else {
			f[14+20+3] = 22 // to port 22 of the VIP: no service there
		}
		v, per, err := c.d.Benchmark(fixChecksums(f), repeat)
		if err != nil {
			return 0, err
		}
		if v != dataplane.XDPPass {
			return 0, fmt.Errorf("%s: verdict %v, want XDP_PASS", subject, v)
		}
		return float64(per.Nanoseconds()), nil
	}
	mode := subject
	if mode != "tun" {
		return c.repeatCost(c.frame(mode), repeat)
	}
	dr, tun := c.frame("dr"), c.frame("tun")
	calls := max(repeat/50, 1000)
	base, err := c.repeatCost(dr, repeat)
	if err != nil {
		return 0, err
	}
	t, err := c.singleCost(tun, calls)
	if err != nil {
		return 0, err
	}
	d, err := c.singleCost(dr, calls)
	if err != nil {
		return 0, err
	}
	return base + t - d, nil
}
