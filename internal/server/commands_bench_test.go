package server

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/xipvs/xipvs/config"
)

// BenchmarkCommandPath compares one -A applied directly with the same
// command applied as a whole configuration by difference (what routing
// every command through Reconcile would cost), over n services.
func BenchmarkCommandPath(b *testing.B) {
	for _, n := range []int{100, 1000, 4000} {
		setup := func() *Server {
			s, _, _ := newTestServer(b)
			cfg := &config.Config{}
			for i := range n {
				k := config.ServiceKey{Proto: config.TCP, Addr: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), Port: 80}
				cfg.Services = append(cfg.Services, config.ServiceConfig{Service: config.Service{ServiceKey: k, Scheduler: "rr"},
					Dests: []config.Dest{{Addr: rs1, Port: 80, Weight: 1}}})
			}
			if err := s.Reconcile(cfg); err != nil {
				b.Fatal(err)
			}
			return s
		}
		svc := func(i int) config.Service {
			return config.Service{ServiceKey: config.ServiceKey{Proto: config.UDP, Addr: vip, Port: uint16(i%60000 + 1)}, Scheduler: "rr"}
		}
		b.Run(fmt.Sprintf("direct/%d", n), func(b *testing.B) {
			s := setup()
			i := 0
			for b.Loop() {
				if err := s.AddService(svc(i)); err != nil {
					b.Fatal(err)
				}
				if err := s.DeleteService(svc(i).ServiceKey); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run(fmt.Sprintf("by-difference/%d", n), func(b *testing.B) {
			s := setup()
			i := 0
			for b.Loop() {
				want := s.Config()
				want.Services = append(want.Services, config.ServiceConfig{Service: svc(i)})
				if err := s.Reconcile(want); err != nil {
					b.Fatal(err)
				}
				if err := s.DeleteService(svc(i).ServiceKey); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
