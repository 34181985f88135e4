package bench

import (
	"net"
	"net/netip"
	"testing"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

// BenchmarkDirector reports the kernel's own ns per packet for the
// director's paths: a DR connection hit (service lookup, connection
// lookup, state check, MAC rewrite, XDP_TX), a packet that is not for a
// service (XDP_PASS), and a new flow with no AF_XDP socket (XDP_DROP).
func BenchmarkDirector(b *testing.B) {
	testutil.RequirePrivileged(b)
	d, err := dataplane.Open(dataplane.Options{ConnTableSize: 1 << 16})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	vip := netip.MustParseAddr("192.0.2.10")
	cl := netip.MustParseAddr("198.51.100.7")
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	if err := d.SetInterfaceForTest(1, mac, 0); err != nil {
		b.Fatal(err)
	}
	if err := d.SetService(dataplane.ServiceKey{VIP: vip, Port: 80, Proto: 6}, 1); err != nil {
		b.Fatal(err)
	}
	if err := d.SetReal(1, dataplane.Real{Addr: netip.MustParseAddr("10.0.0.11"), Ifindex: 1, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 0x11}, Fwd: dataplane.FwdRoute}); err != nil {
		b.Fatal(err)
	}
	// Fill the table so the hit is found among many entries.
	for i := 0; i < 50000; i++ {
		k := dataplane.ConnKey{Src: netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), Dst: vip, SrcPort: 40000, DstPort: 80, Proto: 6}
		if err := d.SetConn(k, dataplane.Conn{RealID: 1, ServiceID: 1, State: conntrack.StateEstablished, LastSeen: dataplane.Now()}); err != nil {
			b.Fatal(err)
		}
	}
	hitKey := dataplane.ConnKey{Src: cl, Dst: vip, SrcPort: 40000, DstPort: 80, Proto: 6}
	if err := d.SetConn(hitKey, dataplane.Conn{RealID: 1, ServiceID: 1, State: conntrack.StateEstablished, LastSeen: dataplane.Now()}); err != nil {
		b.Fatal(err)
	}
	cases := []struct {
		name string
		f    testutil.Frame
		want dataplane.Verdict
	}{
		{"dr-hit", testutil.Frame{Src: cl, Dst: vip, SrcPort: 40000, DstPort: 80, ACK: true}, dataplane.XDPTx},
		{"not-service", testutil.Frame{Src: cl, Dst: vip, SrcPort: 40000, DstPort: 22, ACK: true}, dataplane.XDPPass},
		{"new-flow-no-xsk", testutil.Frame{Src: cl, Dst: vip, SrcPort: 40001, DstPort: 80, SYN: true}, dataplane.XDPDrop},
	}
	for _, size := range []int{64, 1500} {
		for _, c := range cases {
			f := c.f
			f.Payload = make([]byte, size-14-20-20)
			frame := f.Build()
			b.Run(c.name+"/"+map[int]string{64: "64B", 1500: "1500B"}[size], func(b *testing.B) {
				const repeat = 1_000_000
				var total float64
				runs := 0
				for b.Loop() {
					v, per, err := d.Benchmark(frame, repeat)
					if err != nil {
						b.Fatal(err)
					}
					if v != c.want {
						b.Fatalf("verdict %v, want %v", v, c.want)
					}
					total += float64(per.Nanoseconds())
					runs++
				}
				b.ReportMetric(total/float64(runs), "ns/packet")
			})
		}
	}
}

// BenchmarkModes reports ns per packet of each forwarding mode's hit
// path. BPF_PROG_RUN with Repeat runs the program again on the frame it
// rewrote, so NAT and FULLNAT are measured on a pair of entries that
// rewrite the frame back and forth (every run a full rewrite: addresses,
// ports, checksums, MACs). TUN grows the frame on every run, so it is
// measured one packet per call against DR measured the same way, and
// reported as DR's repeat cost plus that difference.
func BenchmarkModes(b *testing.B) {
	testutil.RequirePrivileged(b)
	d, err := dataplane.Open(dataplane.Options{ConnTableSize: 1 << 16})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	var (
		vip  = netip.MustParseAddr("192.0.2.10")
		cl   = netip.MustParseAddr("198.51.100.7")
		rip  = netip.MustParseAddr("10.0.0.11")
		lip  = netip.MustParseAddr("10.0.0.250")
		mac  = net.HardwareAddr{2, 0, 0, 0, 0, 1}
		rmac = net.HardwareAddr{2, 0, 0, 0, 0, 0x11}
	)
	if err := d.SetInterfaceForTest(1, mac, 0); err != nil {
		b.Fatal(err)
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
			b.Fatal(err)
		}
	}
	// Services: the VIP, and RIP:8080 for the entries that rewrite back.
	for _, k := range []dataplane.ServiceKey{{VIP: vip, Port: 80, Proto: 6}, {VIP: rip, Port: 8080, Proto: 6}} {
		if err := d.SetService(k, 1); err != nil {
			b.Fatal(err)
		}
	}
	tuple := func(s netip.Addr, sp uint16, dst netip.Addr, dp uint16) dataplane.ConnKey {
		return dataplane.ConnKey{Src: s, Dst: dst, SrcPort: sp, DstPort: dp, Proto: 6}
	}
	est := func(real uint32, flags dataplane.ConnFlags, k, out dataplane.ConnKey) {
		c := dataplane.Conn{RealID: real, ServiceID: 1, State: conntrack.StateEstablished, LastSeen: dataplane.Now(), Flags: flags, Out: out,
			Ifindex: 1, DstMAC: rmac, SrcMAC: mac}
		if err := d.SetConn(k, c); err != nil {
			b.Fatal(err)
		}
	}
	// Filler, so that hits are found among many entries.
	for i := 0; i < 50000; i++ {
		est(1, 0, tuple(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), 40000, vip, 80), dataplane.ConnKey{})
	}
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

	frame := func(k dataplane.ConnKey) []byte {
		return testutil.Frame{Src: k.Src, Dst: k.Dst, SrcPort: k.SrcPort, DstPort: k.DstPort, ACK: true, Payload: make([]byte, 64-54)}.Build()
	}
	repeatCost := func(b *testing.B, f []byte) float64 {
		v, per, err := d.Benchmark(f, 1_000_000)
		if err != nil || v != dataplane.XDPTx {
			b.Fatalf("verdict %v err %v", v, err)
		}
		return float64(per.Nanoseconds())
	}
	// singleCost averages the kernel's time for one run per call.
	singleCost := func(b *testing.B, f []byte) float64 {
		const calls = 20000
		var total float64
		for i := 0; i < calls; i++ {
			v, per, err := d.Benchmark(f, 1)
			if err != nil || v != dataplane.XDPTx {
				b.Fatalf("verdict %v err %v", v, err)
			}
			total += float64(per.Nanoseconds())
		}
		return total / calls
	}
	cases := []struct {
		name string
		k    dataplane.ConnKey
	}{
		{"dr", tuple(cl, 1001, vip, 80)},
		{"nat", tuple(cl, 1003, vip, 80)},
		{"nat-reply", tuple(rip, 8080, cl, 1004)},
		{"fullnat", tuple(cl, 1005, vip, 80)},
		{"fullnat-reply", tuple(rip, 8080, lip, 30006)},
	}
	for _, c := range cases {
		f := frame(c.k)
		b.Run(c.name, func(b *testing.B) {
			var total float64
			runs := 0
			for b.Loop() {
				total += repeatCost(b, f)
				runs++
			}
			b.ReportMetric(total/float64(runs), "ns/packet")
		})
	}
	b.Run("tun", func(b *testing.B) {
		dr, tun := frame(tuple(cl, 1001, vip, 80)), frame(tuple(cl, 1002, vip, 80))
		var total float64
		runs := 0
		for b.Loop() {
			total += repeatCost(b, dr) + singleCost(b, tun) - singleCost(b, dr)
			runs++
		}
		b.ReportMetric(total/float64(runs), "ns/packet")
	})
}
