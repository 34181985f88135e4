package dataplane_test

import (
	"testing"

	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

// BenchmarkFloodPaths times, in the kernel (BPF_PROG_RUN with Repeat),
// what one spoofed SYN costs the director: shed by admission control
// (DR), answered by the SYN proxy (NAT), and scheduled in XDP with no
// defence (rr). go test -run '^$' -bench FloodPaths ./dataplane (root).
func BenchmarkFloodPaths(b *testing.B) {
	d := openDirector(b)
	setupModes(b, d)
	if err := d.SetService(dataplane.ServiceKey{VIP: vip, Port: 81, Proto: 6}, 2, dataplane.SvcSynProxy); err != nil {
		b.Fatal(err)
	}
	if err := d.SetService(dataplane.ServiceKey{VIP: vip, Port: 82, Proto: 6}, 3, 0); err != nil {
		b.Fatal(err)
	}
	if _, err := d.SetPicks(3, []uint32{tunID}, 0); err != nil {
		b.Fatal(err)
	}
	syn := func(port uint16) []byte {
		return testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 40000, DstPort: port, SYN: true, MSS: 1460, Timestamps: true}.Build()
	}
	for _, c := range []struct {
		name  string
		frame []byte
		setup func()
	}{
		{"synproxy-synack", syn(81), func() {}},
		{"admission-shed", syn(80), func() {
			if err := d.SetDefence(dataplane.Defence{AdmitRate: 1, AdmitBurst: 1}); err != nil {
				b.Fatal(err)
			}
		}},
		{"xdp-scheduled-undefended", syn(82), func() {
			if err := d.SetDefence(dataplane.Defence{}); err != nil {
				b.Fatal(err)
			}
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			c.setup()
			v, dur, err := d.Benchmark(c.frame, b.N)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(dur.Nanoseconds()), "ns/packet")
			b.ReportMetric(0, "ns/op")
			b.Logf("verdict %v", v)
		})
	}
}
