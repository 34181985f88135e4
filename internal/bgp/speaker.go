// Package bgp is xipvsd's BGP speaker, GoBGP as a library: it announces
// each VIP as a /32 or /128 to the routers while the VIP has a service
// with a healthy real, withdraws it when none is healthy, and withdraws
// everything before xipvsd stops, so that routers spreading flows over
// several directors with ECMP move them to the others. It imports no
// routes: a director takes no routing decision from BGP.
package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	gobgpapi "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/internal/api"
)

// VIP is a VIP's health as the speaker is told it.
type VIP struct {
	// Up: some service of the VIP has a healthy real (or a sorry server).
	Up bool
	// Why is the reason, for listings: "2 of 3 reals healthy".
	Why string
}

// route is a prefix's state.
type route struct {
	want  bool
	why   string
	since time.Time
	added bool // the path is in GoBGP's table
}

// Speaker is the BGP speaker. Its methods are safe for concurrent use.
type Speaker struct {
	log *slog.Logger

	mu       sync.Mutex
	cfg      *config.BGP // nil: not running
	s        *server.BgpServer
	stopW    context.CancelFunc // ends the peer-event watch
	routes   map[netip.Prefix]*route
	vips     map[netip.Addr]VIP
	draining bool
	events   map[netip.Addr]peerEvent
}

// peerEvent is a session's last transition.
type peerEvent struct {
	since time.Time
	err   string
}

// New returns a speaker that runs nothing until Configure.
func New(log *slog.Logger) *Speaker {
	return &Speaker{log: log.With("component", "bgp"), routes: map[netip.Prefix]*route{}, events: map[netip.Addr]peerEvent{}}
}

// Configure starts the speaker with cfg, applies a new cfg by difference
// (peers added, removed or changed; routes re-announced if their
// attributes changed), or with nil withdraws everything and stops it. A
// new ASN, router id or listen port restarts the speaker (its sessions
// reset).
func (sp *Speaker) Configure(ctx context.Context, cfg *config.BGP) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	old := sp.cfg
	switch {
	case cfg == nil && old == nil:
		return nil
	case cfg == nil:
		sp.stopLocked()
		return nil
	case old != nil && old.Equal(cfg):
		return nil
	case old != nil && (old.ASN != cfg.ASN || old.RouterID != cfg.RouterID || old.ListenPort != cfg.ListenPort):
		sp.log.Info("BGP identity changed: restarting the speaker", "asn", cfg.ASN, "router_id", cfg.RouterID.String())
		sp.stopLocked()
		old = nil
	}
	if old == nil {
		if err := sp.startLocked(ctx, cfg); err != nil {
			return err
		}
		old = &config.BGP{}
	}
	// Peers by difference.
	have := map[netip.Addr]config.BGPPeer{}
	for _, p := range old.Peers {
		have[p.Addr] = p
	}
	for _, p := range cfg.Peers {
		o, ok := have[p.Addr]
		delete(have, p.Addr)
		if ok && o == p {
			continue
		}
		if ok {
			if err := sp.s.DeletePeer(ctx, &gobgpapi.DeletePeerRequest{Address: p.Addr.String()}); err != nil {
				return fmt.Errorf("bgp: peer %v: %w", p.Addr, err)
			}
		}
		if err := sp.s.AddPeer(ctx, &gobgpapi.AddPeerRequest{Peer: peerOf(p)}); err != nil {
			return fmt.Errorf("bgp: peer %v: %w", p.Addr, err)
		}
		sp.log.Info("BGP peer configured", "peer", p.Addr.String(), "asn", p.ASN, "hold_time", p.HoldTime.String(), "bfd", p.BFD)
	}
	for a := range have {
		if err := sp.s.DeletePeer(ctx, &gobgpapi.DeletePeerRequest{Address: a.String()}); err != nil {
			return fmt.Errorf("bgp: peer %v: %w", a, err)
		}
		sp.log.Info("BGP peer removed", "peer", a.String())
	}
	reannounce := !old.SameRoutes(cfg)
	sp.cfg = cfg
	if reannounce {
		for _, r := range sp.routes {
			r.added = false // AddPath replaces the path with the new attributes
		}
	}
	return sp.syncLocked()
}

// startLocked starts GoBGP with cfg's identity.
func (sp *Speaker) startLocked(ctx context.Context, cfg *config.BGP) error {
	lvl := &slog.LevelVar{}
	lvl.Set(slog.LevelWarn) // GoBGP's chatter stays out of xipvsd's log
	s := server.NewBgpServer(server.LoggerOption(sp.log, lvl))
	go s.Serve()
	port := int32(cfg.ListenPort)
	if port == 0 {
		port = -1 // connect out only
	}
	if err := s.StartBgp(ctx, &gobgpapi.StartBgpRequest{Global: &gobgpapi.Global{
		Asn: cfg.ASN, RouterId: cfg.RouterID.String(), ListenPort: port}}); err != nil {
		s.Stop()
		return fmt.Errorf("bgp: start: %w", err)
	}
	// Routes from the routers are not wanted: only our own (local) ones
	// enter the table (GoBGP's import policy sees those too).
	local := &gobgpapi.Policy{Name: "xipvs-local-only", Statements: []*gobgpapi.Statement{{Name: "local",
		Conditions: &gobgpapi.Conditions{RouteType: gobgpapi.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &gobgpapi.Actions{RouteAction: gobgpapi.RouteAction_ROUTE_ACTION_ACCEPT}}}}
	if err := s.AddPolicy(ctx, &gobgpapi.AddPolicyRequest{Policy: local}); err != nil {
		s.Stop()
		return fmt.Errorf("bgp: import policy: %w", err)
	}
	if err := s.SetPolicyAssignment(ctx, &gobgpapi.SetPolicyAssignmentRequest{Assignment: &gobgpapi.PolicyAssignment{
		Name: "global", Direction: gobgpapi.PolicyDirection_POLICY_DIRECTION_IMPORT, Policies: []*gobgpapi.Policy{{Name: local.Name}},
		DefaultAction: gobgpapi.RouteAction_ROUTE_ACTION_REJECT}}); err != nil {
		s.Stop()
		return fmt.Errorf("bgp: import policy: %w", err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	if err := s.WatchEvent(wctx, server.WatchEventMessageCallbacks{OnPeerUpdate: sp.onPeer}, server.WatchPeer()); err != nil {
		cancel()
		s.Stop()
		return fmt.Errorf("bgp: watch: %w", err)
	}
	sp.s, sp.stopW, sp.cfg = s, cancel, cfg
	sp.log.Info("BGP speaker started", "asn", cfg.ASN, "router_id", cfg.RouterID.String(), "listen_port", cfg.ListenPort)
	return nil
}

// onPeer logs session transitions.
func (sp *Speaker) onPeer(ev *apiutil.WatchEventMessage_PeerEvent, t time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	p := ev.Peer
	state := fsmName(p.State.SessionState)
	sp.mu.Lock()
	prev := sp.events[p.State.NeighborAddress]
	e := peerEvent{since: t, err: prev.err}
	if p.State.DisconnectMessage != "" {
		e.err = p.State.DisconnectMessage
	}
	sp.events[p.State.NeighborAddress] = e
	sp.mu.Unlock()
	if p.State.SessionState == bgp.BGP_FSM_ESTABLISHED {
		sp.log.Info("BGP session established", "peer", p.State.NeighborAddress.String(), "asn", p.State.PeerASN)
	} else if state == "idle" || state == "active" {
		sp.log.Warn("BGP session down", "peer", p.State.NeighborAddress.String(), "state", state, "reason", p.State.DisconnectMessage)
	}
}

func fsmName(s bgp.FSMState) string {
	n := strings.ToLower(strings.TrimPrefix(s.String(), "BGP_FSM_"))
	if n == "" {
		return "idle"
	}
	return n
}

// stopLocked withdraws every route and stops GoBGP (its sessions end
// with a Cease notification).
func (sp *Speaker) stopLocked() {
	if sp.s == nil {
		return
	}
	_ = sp.s.DeletePath(apiutil.DeletePathRequest{DeleteAll: true})
	sp.stopW()
	// Stop is StopBgp (the sessions' Cease) and the rest; a StopBgp of
	// our own before it made it log an ERROR at every drain.
	sp.s.Stop()
	sp.s, sp.cfg = nil, nil
	for _, r := range sp.routes {
		r.added = false
	}
	sp.log.Info("BGP speaker stopped")
}

// peerOf is GoBGP's peer for p: IPv4 and IPv6 unicast, the hold time
// with keepalives at a third of it, BFD if asked.
func peerOf(p config.BGPPeer) *gobgpapi.Peer {
	hold := uint64(p.HoldTime / time.Second)
	peer := &gobgpapi.Peer{
		Conf:      &gobgpapi.PeerConf{NeighborAddress: p.Addr.String(), PeerAsn: p.ASN, AuthPassword: p.Password},
		Timers:    &gobgpapi.Timers{Config: &gobgpapi.TimersConfig{HoldTime: hold, KeepaliveInterval: max(hold/3, 1), ConnectRetry: 5}},
		Transport: &gobgpapi.Transport{RemotePort: uint32(p.Port)},
		AfiSafis: []*gobgpapi.AfiSafi{
			{Config: &gobgpapi.AfiSafiConfig{Family: &gobgpapi.Family{Afi: gobgpapi.Family_AFI_IP, Safi: gobgpapi.Family_SAFI_UNICAST}, Enabled: true}},
			{Config: &gobgpapi.AfiSafiConfig{Family: &gobgpapi.Family{Afi: gobgpapi.Family_AFI_IP6, Safi: gobgpapi.Family_SAFI_UNICAST}, Enabled: true}},
		},
	}
	if p.Multihop > 0 {
		peer.EbgpMultihop = &gobgpapi.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.Multihop)}
	}
	if p.BFD {
		us := uint32(p.BFDInterval / time.Microsecond)
		peer.Bfd = &gobgpapi.BfdPeerConfig{Enabled: true, DesiredMinimumTxInterval: us, RequiredMinimumReceive: us, DetectionMultiplier: 3}
	}
	return peer
}

// SetVIPs tells the speaker every VIP's health: a healthy VIP's /32 or
// /128 is announced, an unhealthy one's withdrawn.
func (sp *Speaker) SetVIPs(vips map[netip.Addr]VIP) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.vips = vips
	if sp.cfg != nil {
		if err := sp.syncLocked(); err != nil {
			sp.log.Warn("BGP: updating routes", "err", err)
		}
	}
}

// syncLocked announces and withdraws by difference.
func (sp *Speaker) syncLocked() error {
	now := time.Now()
	want := map[netip.Prefix]VIP{}
	for a, v := range sp.vips {
		want[config.HostPrefix(a)] = v
	}
	if sp.cfg != nil {
		for _, p := range sp.cfg.Announce {
			want[p] = VIP{Up: true, Why: "announced unconditionally"}
		}
	}
	if sp.draining {
		for p := range want {
			want[p] = VIP{Up: false, Why: "draining: xipvsd is stopping"}
		}
	}
	var errs []string
	for p, r := range sp.routes {
		if _, ok := want[p]; !ok {
			if r.added {
				if err := sp.withdrawLocked(p); err != nil {
					errs = append(errs, err.Error())
					continue
				}
			}
			delete(sp.routes, p)
		}
	}
	for p, v := range want {
		r := sp.routes[p]
		if r == nil {
			r = &route{since: now}
			sp.routes[p] = r
		}
		if r.want != v.Up {
			r.since = now
		}
		r.want, r.why = v.Up, v.Why
		if sp.s == nil {
			continue
		}
		switch {
		case v.Up && !r.added:
			if err := sp.announceLocked(p); err != nil {
				errs = append(errs, err.Error())
				continue
			}
			r.added = true
			sp.log.Info("BGP: announcing", "prefix", p.String(), "why", v.Why)
		case !v.Up && r.added:
			if err := sp.withdrawLocked(p); err != nil {
				errs = append(errs, err.Error())
				continue
			}
			r.added = false
			sp.log.Warn("BGP: withdrawn", "prefix", p.String(), "why", v.Why)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// path is p's route with the configured attributes.
func (sp *Speaker) path(p netip.Prefix) (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(p)
	if err != nil {
		return nil, err
	}
	fam, nh := bgp.RF_IPv4_UC, sp.cfg.NextHop
	if p.Addr().Is6() {
		fam, nh = bgp.RF_IPv6_UC, sp.cfg.NextHop6
		if !nh.IsValid() {
			nh = netip.IPv6Unspecified() // GoBGP puts the session's address
		}
	} else if !nh.IsValid() {
		nh = netip.IPv4Unspecified()
	}
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	if fam == bgp.RF_IPv4_UC {
		a, err := bgp.NewPathAttributeNextHop(nh)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, a)
	} else {
		a, err := bgp.NewPathAttributeMpReachNLRI(fam, []bgp.PathNLRI{{NLRI: nlri}}, nh)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, a)
	}
	if len(sp.cfg.Communities) > 0 {
		attrs = append(attrs, bgp.NewPathAttributeCommunities(sp.cfg.Communities))
	}
	if sp.cfg.MED != nil {
		attrs = append(attrs, bgp.NewPathAttributeMultiExitDisc(*sp.cfg.MED))
	}
	return &apiutil.Path{Family: fam, Nlri: nlri, Attrs: attrs}, nil
}

func (sp *Speaker) announceLocked(p netip.Prefix) error {
	path, err := sp.path(p)
	if err != nil {
		return fmt.Errorf("bgp: %v: %w", p, err)
	}
	if _, err := sp.s.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{path}}); err != nil {
		return fmt.Errorf("bgp: announce %v: %w", p, err)
	}
	return nil
}

func (sp *Speaker) withdrawLocked(p netip.Prefix) error {
	path, err := sp.path(p)
	if err != nil {
		return fmt.Errorf("bgp: %v: %w", p, err)
	}
	if err := sp.s.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{path}}); err != nil {
		return fmt.Errorf("bgp: withdraw %v: %w", p, err)
	}
	return nil
}

// Drain withdraws every route, so that the routers move the flows to the
// other directors, and waits the configured drain time (or until ctx
// ends) while xipvsd goes on forwarding. It returns at once without BGP.
func (sp *Speaker) Drain(ctx context.Context) {
	sp.mu.Lock()
	if sp.cfg == nil {
		sp.mu.Unlock()
		return
	}
	sp.draining = true
	err := sp.syncLocked()
	wait := sp.cfg.Drain
	sp.mu.Unlock()
	if err != nil {
		sp.log.Warn("BGP drain: withdrawing", "err", err)
	}
	sp.log.Info("BGP drain: routes withdrawn; forwarding on while the routers move the flows", "for", wait.String())
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// Stop withdraws everything and stops the speaker.
func (sp *Speaker) Stop() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.stopLocked()
}

// Status is the speaker's state for listings and metrics.
func (sp *Speaker) Status(ctx context.Context) api.BGPStatus {
	if sp == nil {
		return api.BGPStatus{}
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.cfg == nil {
		return api.BGPStatus{}
	}
	st := api.BGPStatus{Enabled: true, ASN: sp.cfg.ASN, RouterID: sp.cfg.RouterID, ListenPort: sp.cfg.ListenPort, Draining: sp.draining}
	cfgPeers := map[string]config.BGPPeer{}
	for _, p := range sp.cfg.Peers {
		cfgPeers[p.Addr.String()] = p
	}
	_ = sp.s.ListPeer(ctx, &gobgpapi.ListPeerRequest{EnableAdvertised: true}, func(p *gobgpapi.Peer) {
		a, _ := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		bp := api.BGPPeer{Addr: a, ASN: p.GetConf().GetPeerAsn(), State: "idle",
			HoldTime: cfgPeers[a.String()].HoldTime}
		if s := p.GetState(); s != nil {
			bp.State = strings.ToLower(strings.TrimPrefix(s.GetSessionState().String(), "SESSION_STATE_"))
			if bs := s.GetBfdState(); bs != nil && cfgPeers[a.String()].BFD {
				bp.BFD = strings.ToLower(strings.TrimPrefix(bs.GetSessionState().String(), "BFD_SESSION_STATE_"))
			}
		}
		if bp.State == "unspecified" {
			bp.State = "idle"
		}
		if ts := p.GetTimers().GetState(); ts != nil && ts.GetNegotiatedHoldTime() > 0 && bp.State == "established" {
			bp.HoldTime = time.Duration(ts.GetNegotiatedHoldTime()) * time.Second
		}
		for _, af := range p.GetAfiSafis() {
			bp.Advertised += af.GetState().GetAdvertised()
		}
		if e, ok := sp.events[a]; ok {
			bp.Since, bp.LastError = e.since, e.err
		}
		st.Peers = append(st.Peers, bp)
	})
	slices.SortFunc(st.Peers, func(x, y api.BGPPeer) int { return x.Addr.Compare(y.Addr) })
	for _, p := range slices.SortedFunc(maps.Keys(sp.routes), func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) }) {
		r := sp.routes[p]
		st.Routes = append(st.Routes, api.BGPRoute{Prefix: p, Announced: r.added, Why: r.why, Since: r.since})
	}
	return st
}
