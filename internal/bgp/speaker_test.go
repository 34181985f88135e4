package bgp

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	gobgpapi "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/xipvs/xipvs/config"
)

// router is a GoBGP instance on loopback standing in for a router: it
// accepts the speaker's session and keeps what it learns.
type router struct {
	s    *server.BgpServer
	port uint16
}

func newRouter(t *testing.T) *router {
	t.Helper()
	r := &router{s: server.NewBgpServer(server.LoggerOption(slog.New(slog.NewTextHandler(io.Discard, nil)), nil)),
		port: uint16(20000 + rand.IntN(20000))}
	go r.s.Serve()
	ctx := context.Background()
	if err := r.s.StartBgp(ctx, &gobgpapi.StartBgpRequest{Global: &gobgpapi.Global{Asn: 65000, RouterId: "192.0.2.254",
		ListenPort: int32(r.port), ListenAddresses: []string{"127.0.0.1"}}}); err != nil {
		t.Skipf("router on 127.0.0.1:%d: %v", r.port, err)
	}
	t.Cleanup(r.s.Stop)
	peer := &gobgpapi.Peer{Conf: &gobgpapi.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: 65001},
		Transport: &gobgpapi.Transport{PassiveMode: true},
		AfiSafis: []*gobgpapi.AfiSafi{
			{Config: &gobgpapi.AfiSafiConfig{Family: &gobgpapi.Family{Afi: gobgpapi.Family_AFI_IP, Safi: gobgpapi.Family_SAFI_UNICAST}, Enabled: true}},
			{Config: &gobgpapi.AfiSafiConfig{Family: &gobgpapi.Family{Afi: gobgpapi.Family_AFI_IP6, Safi: gobgpapi.Family_SAFI_UNICAST}, Enabled: true}},
		}}
	if err := r.s.AddPeer(ctx, &gobgpapi.AddPeerRequest{Peer: peer}); err != nil {
		t.Fatal(err)
	}
	return r
}

// learnt is a route as the router holds it.
type learnt struct {
	nextHop     netip.Addr
	communities []uint32
	med         int64 // -1: none
}

// routes returns what the router learnt, by prefix.
func (r *router) routes(t *testing.T) map[netip.Prefix]learnt {
	t.Helper()
	out := map[netip.Prefix]learnt{}
	for _, fam := range []bgp.Family{bgp.RF_IPv4_UC, bgp.RF_IPv6_UC} {
		err := r.s.ListPath(apiutil.ListPathRequest{TableType: gobgpapi.TableType_TABLE_TYPE_GLOBAL, Family: fam},
			func(prefix bgp.NLRI, paths []*apiutil.Path) {
				for _, p := range paths {
					if p.Withdrawal {
						continue
					}
					l := learnt{med: -1}
					for _, a := range p.Attrs {
						switch v := a.(type) {
						case *bgp.PathAttributeNextHop:
							l.nextHop = v.Value
						case *bgp.PathAttributeMpReachNLRI:
							l.nextHop = v.Nexthop
						case *bgp.PathAttributeCommunities:
							l.communities = v.Value
						case *bgp.PathAttributeMultiExitDisc:
							l.med = int64(v.Value)
						}
					}
					pfx, err := netip.ParsePrefix(prefix.String())
					if err != nil {
						t.Errorf("prefix %q: %v", prefix, err)
						continue
					}
					out[pfx] = l
				}
			})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// waitFor polls the router until cond holds.
func (r *router) waitFor(t *testing.T, what string, cond func(map[netip.Prefix]learnt) bool) map[netip.Prefix]learnt {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := r.routes(t)
		if cond(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("router: %s; it has %+v", what, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// uptime is when the router's session with the speaker came up.
func (r *router) uptime(t *testing.T) time.Time {
	t.Helper()
	var up time.Time
	_ = r.s.ListPeer(context.Background(), &gobgpapi.ListPeerRequest{}, func(p *gobgpapi.Peer) {
		if ts := p.GetTimers().GetState().GetUptime(); ts != nil {
			up = ts.AsTime()
		}
	})
	return up
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// TestSpeaker runs the speaker against a GoBGP router on loopback: what
// it announces and with which attributes, withdrawal of an unhealthy
// VIP, a reload applied by difference (the session stays up), the drain,
// and the stop.
func TestSpeaker(t *testing.T) {
	r := newRouter(t)
	sp := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(sp.Stop)
	med := uint32(5)
	cfg := &config.BGP{ASN: 65001, RouterID: netip.MustParseAddr("192.0.2.1"),
		Peers:   []config.BGPPeer{{Addr: netip.MustParseAddr("127.0.0.1"), ASN: 65000, Port: r.port, HoldTime: 9 * time.Second}},
		NextHop: netip.MustParseAddr("192.0.2.9"), NextHop6: netip.MustParseAddr("2001:db8::ff"),
		Communities: []uint32{65000<<16 | 100}, MED: &med}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sp.SetVIPs(map[netip.Addr]VIP{
		netip.MustParseAddr("10.0.0.1"):    {Up: true, Why: "2 of 2 reals healthy"},
		netip.MustParseAddr("10.0.0.2"):    {Up: false, Why: "0 of 1 reals healthy"},
		netip.MustParseAddr("2001:db8::1"): {Up: true, Why: "1 of 1 reals healthy"},
	})
	if err := sp.Configure(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	got := r.waitFor(t, "10.0.0.1/32 and 2001:db8::1/128", func(m map[netip.Prefix]learnt) bool {
		_, a := m[pfx("10.0.0.1/32")]
		_, b := m[pfx("2001:db8::1/128")]
		return a && b
	})
	if _, ok := got[pfx("10.0.0.2/32")]; ok {
		t.Error("the unhealthy VIP 10.0.0.2 is announced")
	}
	if l := got[pfx("10.0.0.1/32")]; l.nextHop != cfg.NextHop || !slices.Equal(l.communities, cfg.Communities) || l.med != 5 {
		t.Errorf("10.0.0.1/32 learnt as %+v, want next hop %v, communities %v, MED 5", l, cfg.NextHop, cfg.Communities)
	}
	if l := got[pfx("2001:db8::1/128")]; l.nextHop != cfg.NextHop6 {
		t.Errorf("2001:db8::1/128 learnt with next hop %v, want %v", l.nextHop, cfg.NextHop6)
	}
	st := sp.Status(ctx)
	if !st.Enabled || len(st.Peers) != 1 || st.Peers[0].State != "established" || len(st.Routes) != 3 {
		t.Fatalf("status %+v", st)
	}
	for _, rt := range st.Routes {
		if want := rt.Prefix != pfx("10.0.0.2/32"); rt.Announced != want || rt.Why == "" {
			t.Errorf("status lists %+v", rt)
		}
	}

	// The VIP's last real fails: withdrawn; it recovers: back.
	sp.SetVIPs(map[netip.Addr]VIP{
		netip.MustParseAddr("10.0.0.1"):    {Up: false, Why: "0 of 2 reals healthy"},
		netip.MustParseAddr("2001:db8::1"): {Up: true, Why: "1 of 1 reals healthy"},
	})
	r.waitFor(t, "10.0.0.1/32 withdrawn", func(m map[netip.Prefix]learnt) bool { _, ok := m[pfx("10.0.0.1/32")]; return !ok })
	sp.SetVIPs(map[netip.Addr]VIP{
		netip.MustParseAddr("10.0.0.1"):    {Up: true, Why: "1 of 2 reals healthy"},
		netip.MustParseAddr("2001:db8::1"): {Up: true, Why: "1 of 1 reals healthy"},
	})
	r.waitFor(t, "10.0.0.1/32 back", func(m map[netip.Prefix]learnt) bool { _, ok := m[pfx("10.0.0.1/32")]; return ok })

	// A reload that changes the communities and adds an unconditional
	// prefix is applied by difference: the session stays up, the routes
	// are re-announced with the new attributes.
	up := r.uptime(t)
	cfg2 := *cfg
	cfg2.Communities = []uint32{65000<<16 | 200}
	cfg2.MED = nil
	cfg2.Announce = []netip.Prefix{pfx("198.51.100.0/24")}
	if err := sp.Configure(ctx, &cfg2); err != nil {
		t.Fatal(err)
	}
	got = r.waitFor(t, "the new communities and 198.51.100.0/24", func(m map[netip.Prefix]learnt) bool {
		l, ok := m[pfx("198.51.100.0/24")]
		return ok && slices.Equal(l.communities, cfg2.Communities) && slices.Equal(m[pfx("10.0.0.1/32")].communities, cfg2.Communities)
	})
	if l := got[pfx("10.0.0.1/32")]; l.med != -1 {
		t.Errorf("MED %d left after it was removed", l.med)
	}
	if now := r.uptime(t); !now.Equal(up) {
		t.Errorf("the session was reset by a change of route attributes (up since %v, now %v)", up, now)
	}

	// Drain: everything withdrawn, and the status says so.
	cfg3 := cfg2
	cfg3.Drain = 0
	if err := sp.Configure(ctx, &cfg3); err != nil {
		t.Fatal(err)
	}
	sp.Drain(ctx)
	r.waitFor(t, "everything withdrawn by the drain", func(m map[netip.Prefix]learnt) bool { return len(m) == 0 })
	if st := sp.Status(ctx); !st.Draining {
		t.Errorf("status after the drain: %+v", st)
	}
	sp.Configure(ctx, nil)
	if st := sp.Status(ctx); st.Enabled {
		t.Errorf("status after the stop: %+v", st)
	}
}
