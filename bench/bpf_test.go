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
	d, err := dataplane.OpenHarness(1 << 16)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	vip := netip.MustParseAddr("192.0.2.10")
	cl := netip.MustParseAddr("198.51.100.7")
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	if err := d.SetInterface(1, mac, 0); err != nil {
		b.Fatal(err)
	}
	if err := d.SetService(dataplane.ServiceKey{VIP: vip, Port: 80, Proto: 6}, 1, 0); err != nil {
		b.Fatal(err)
	}
	if err := d.SetReal(1, dataplane.Real{Addr: netip.MustParseAddr("10.0.0.11"), Ifindex: 1, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 0x11}, Fwd: dataplane.FwdRoute}); err != nil {
		b.Fatal(err)
	}
	// Fill the table so the hit is found among many entries.
	for i := 0; i < 50000; i++ {
		k := dataplane.ConnKey{Src: netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), Dst: vip, SrcPort: 40000, DstPort: 80, Proto: 6}
		if err := d.SetEstConn(k, dataplane.Conn{RealID: 1, ServiceID: 1, State: conntrack.StateEstablished, LastSeen: dataplane.Now(), Flags: dataplane.ConnSynSeen}); err != nil {
			b.Fatal(err)
		}
	}
	hitKey := dataplane.ConnKey{Src: cl, Dst: vip, SrcPort: 40000, DstPort: 80, Proto: 6}
	if err := d.SetEstConn(hitKey, dataplane.Conn{RealID: 1, ServiceID: 1, State: conntrack.StateEstablished, LastSeen: dataplane.Now(), Flags: dataplane.ConnSynSeen}); err != nil {
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
// path, on costLab (see there how rewriting modes are measured).
func BenchmarkModes(b *testing.B) {
	testutil.RequirePrivileged(b)
	lab, err := newCostLab()
	if err != nil {
		b.Fatal(err)
	}
	defer lab.Close()
	for _, mode := range costSubjects {
		b.Run(mode, func(b *testing.B) {
			var total float64
			runs := 0
			for b.Loop() {
				ns, err := lab.cost(mode, 1_000_000)
				if err != nil {
					b.Fatal(err)
				}
				total += ns
				runs++
			}
			b.ReportMetric(total/float64(runs), "ns/packet")
		})
	}
}
