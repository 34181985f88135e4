package server

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/neigh"
	"github.com/xipvs/xipvs/internal/testutil"
)

// resolved is a neighbour table that knows every real's MAC.
type resolved struct{}

func (resolved) Watch(netip.Addr, int)           {}
func (resolved) Unwatch(netip.Addr)              {}
func (resolved) MAC(netip.Addr) net.HardwareAddr { return net.HardwareAddr{2, 0xee, 0, 0, 9, 1} }

// TestMillionFULLNATFlowsNeverShareAPort: a million new FULLNAT
// connections opened in XDP (the director program run on each SYN) with
// local ports from the service's ring, which the server fills from its
// pools of two local addresses (129,024 ports), far fewer than the
// flows: the connection table (64k entries) evicts embryonic
// connections, and the server's reclaim walk frees their ports for the
// ring, while one connection in 1000 is established and lives on. At every reclaim, every 64th refill and at the end: no port in
// the ring is held by a live connection (the server's side), no two live
// connections hold one local address and port toward a real, and every
// live connection's reply entry names its own client (XDP's side: it
// also refuses a port whose reply entry exists): a port is never handed
// out again while its connection lives.
func TestMillionFULLNATFlowsNeverShareAPort(t *testing.T) {
	testutil.RequirePrivileged(t)
	flows := 1_000_000
	if testing.Short() {
		flows = 100_000
	}
	d, err := dataplane.OpenHarness(1 << 16)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if err := d.SetInterface(1, net.HardwareAddr{2, 0xee, 0, 0, 0, 1}, 0); err != nil {
		t.Fatal(err)
	}
	s := New(Options{Dataplane: testutil.OnLo{Harness: d}, Neighbors: resolved{}, Logger: slog.New(slog.DiscardHandler),
		Route: func(netip.Addr) (neigh.NextHop, error) { return neigh.NextHop{Ifindex: 1, MTU: 1500}, nil }})
	if err := s.ApplyLines(context.Background(), lines(t, `-A -t 192.0.2.10:80 -s wlc
--add-laddr -z 10.9.0.250 -t 192.0.2.10:80
--add-laddr -z 10.9.0.251 -t 192.0.2.10:80
-a -t 192.0.2.10:80 -r 10.1.0.51:8080 -b
-a -t 192.0.2.10:80 -r 10.1.0.52:8080 -b -w 2
`)); err != nil {
		t.Fatal(err)
	}
	sv := s.byID[svcID(s, "-A -t 192.0.2.10:80")]
	if sv.ring == 0 {
		t.Fatal("the FULLNAT service has no ring")
	}
	refill := func() {
		s.mu.Lock()
		s.fillRing(sv)
		s.mu.Unlock()
	}
	reclaim := func() {
		s.mu.Lock()
		s.reclaimWanted, s.lastReclaim = true, s.opts.Now()-time.Hour
		s.mu.Unlock()
		s.reclaimPorts()
		refill()
	}
	checks := 0
	check := func() {
		checks++
		owner := map[dataplane.ConnKey]dataplane.ConnKey{} // local address and port toward a real: the client
		var fwd []dataplane.ConnKey
		var conns []dataplane.Conn
		live := map[netip.AddrPort]bool{} // local ports a live entry holds
		if err := d.WalkConns(func(k dataplane.ConnKey, c dataplane.Conn) bool {
			switch {
			case c.Flags&dataplane.ConnFullNAT == 0:
			case c.Flags&dataplane.ConnReply != 0:
				live[netip.AddrPortFrom(k.Dst, k.DstPort)] = true
			default:
				fwd, conns = append(fwd, k), append(conns, c)
				live[netip.AddrPortFrom(c.Out.Src, c.Out.SrcPort)] = true
			}
			return true
		}); err != nil {
			t.Fatal(err)
		}
		// What the server handed XDP is held by no live connection.
		s.mu.Lock()
		addrOf := map[uint32]netip.Addr{}
		for a, id := range s.laddrIDs {
			addrOf[id] = a
		}
		s.mu.Unlock()
		if err := d.RingPorts(func(_ uint32, _ uint8, p dataplane.LocalSlot) {
			if lp := netip.AddrPortFrom(addrOf[p.AddrID], p.Port); live[lp] {
				t.Fatalf("the ring holds %v, which a live connection holds", lp)
			}
		}); err != nil {
			t.Fatal(err)
		}
		for i, k := range fwd {
			peer := conns[i].Peer(conntrack.ProtoTCP)
			if other, ok := owner[peer]; ok {
				t.Fatalf("local %v:%d toward %v held by %v and %v", peer.Dst, peer.DstPort, peer.Src, other, k)
			}
			owner[peer] = k
			r, found, err := d.LookupConn(peer)
			if err != nil {
				t.Fatal(err)
			}
			if !found {
				continue // evicted: the forward entry goes with it at the sweep
			}
			if r.Out.Dst != k.Src || r.Out.DstPort != k.SrcPort {
				t.Fatalf("the reply entry of %v names the client %v:%d", k, r.Out.Dst, r.Out.DstPort)
			}
		}
	}
	// Every 1000th connection is established (SYN-ACK from the real, ACK
	// from the client): it stays in the table however many follow, and
	// its port comes round in the pool while it lives.
	established := 0
	establish := func(k dataplane.ConnKey) {
		c, found, err := d.LookupConn(k)
		if err != nil || !found {
			t.Fatalf("%v: %+v %v %v", k, c, found, err)
		}
		mac := net.HardwareAddr{2, 0xee, 0, 0, 0, 1}
		for _, f := range []testutil.Frame{
			{DstMAC: mac, Src: c.Out.Dst, Dst: c.Out.Src, SrcPort: c.Out.DstPort, DstPort: c.Out.SrcPort, SYN: true, ACK: true},
			{DstMAC: mac, Src: k.Src, Dst: k.Dst, SrcPort: k.SrcPort, DstPort: k.DstPort, ACK: true},
		} {
			if v, _, err := d.Run(f.Build(), 0, 0); err != nil || v != dataplane.XDPTx {
				t.Fatalf("%v: the handshake's %+v: %v %v", k, f, v, err)
			}
		}
		if c, _, _ := d.LookupConn(k); c.State != conntrack.StateEstablished {
			t.Fatalf("%v: %v after its handshake", k, c.State)
		}
		established++
	}
	refill()
	opened, refills, reclaims := 0, 0, 0
	for i := 0; i < flows; i++ {
		src := netip.AddrFrom4([4]byte{198, 18 + byte(i>>23), byte(i >> 15), byte(i >> 7)})
		sport := uint16(1024 + i&127)
		frame := testutil.Frame{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 9}, DstMAC: net.HardwareAddr{2, 0xee, 0, 0, 0, 1},
			Src: src, Dst: netip.MustParseAddr("192.0.2.10"), SrcPort: sport, DstPort: 80, SYN: true}.Build()
		for try := 0; ; try++ {
			v, _, err := d.Run(frame, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if v == dataplane.XDPTx {
				opened++
				if i%1000 == 0 {
					establish(dataplane.ConnKey{Src: src, Dst: netip.MustParseAddr("192.0.2.10"), SrcPort: sport, DstPort: 80, Proto: conntrack.ProtoTCP})
				}
				break
			}
			// The ring ran dry: filled again, from ports the reclaim walk
			// found free if the pools are used up.
			switch try {
			case 0:
				refills++
				refill()
				if refills%64 == 0 {
					check()
				}
			case 1:
				reclaims++
				reclaim()
				check()
			default:
				t.Fatalf("flow %d: %v with the ring refilled after a reclaim", i, v)
			}
		}
	}
	check()
	t.Logf("%d FULLNAT connections opened in XDP (%d established); %d refills, %d reclaim walks, %d checks", opened, established, refills, reclaims, checks)
	if opened != flows {
		t.Errorf("%d of %d opened", opened, flows)
	}
	if reclaims == 0 {
		t.Error("no reclaim walk: the ports were never reused, the test tests nothing")
	}
}
