package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sort"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/api"
	"github.com/xipvs/xipvs/internal/bgp"
	"github.com/xipvs/xipvs/internal/connsync"
	"github.com/xipvs/xipvs/internal/server"
)

// backend adapts the server to the API: one-line adapters and type
// conversions. The server serializes configuration changes itself.
type backend struct {
	srv        *server.Server
	dp         Counters
	connTable  int
	configFile string
	log        *slog.Logger
	// bgp is the BGP speaker; bgpFromFile: its settings come from the
	// configuration file (reloaded with it), not from flags.
	bgp         *bgp.Speaker
	bgpFromFile bool
	sync        syncDaemons
	// events feed a master sync daemon (nil: none can run).
	events SyncEventSource
}

// statusOf is the HTTP status of a backend error.
func statusOf(err error) int {
	var ae *api.Error
	switch {
	case errors.As(err, &ae) && ae.Status != 0:
		return ae.Status
	case errors.As(err, new(*config.ParseError)):
		return http.StatusBadRequest
	case errors.Is(err, server.ErrNoService), errors.Is(err, server.ErrSvcNotDefined), errors.Is(err, server.ErrNoDest),
		errors.Is(err, server.ErrNoMark), errors.Is(err, server.ErrNoLaddr):
		return http.StatusNotFound
	case errors.Is(err, server.ErrServiceExists), errors.Is(err, server.ErrDestExists),
		errors.Is(err, server.ErrMarkExists), errors.Is(err, server.ErrMarkOverlap), errors.Is(err, server.ErrLaddrExists):
		return http.StatusConflict
	case errors.Is(err, config.ErrInvalid), errors.Is(err, server.ErrUnsupported), errors.Is(err, server.ErrNoScheduler):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

func (b *backend) Config() *config.Config { return b.srv.Config() }

// Restore applies ipvsadm -R's lines, all or nothing.
func (b *backend) Restore(ctx context.Context, lines []config.Line) error {
	rules, daemons, _ := config.SplitDaemons(lines)
	// The daemons' lines are checked before anything is applied.
	for _, d := range daemons {
		if d.Op == config.OpStartDaemon {
			if _, err := connsync.Prepare(d.Daemon); err != nil {
				return &api.Error{Message: err.Error(), Status: http.StatusBadRequest}
			}
		}
	}
	if err := b.srv.ApplyLines(ctx, rules); err != nil {
		return err
	}
	for _, d := range daemons {
		if d.Op == config.OpStopDaemon {
			if err := b.StopDaemon(d.Daemon.Role); err != nil {
				return fmt.Errorf("rules applied; %w", err)
			}
			continue
		}
		if b.runs(d.Daemon) {
			continue // the same daemon: nothing to do (-S | -R is idempotent)
		}
		_ = b.StopDaemon(d.Daemon.Role)
		if err := b.StartDaemon(d.Daemon); err != nil {
			return fmt.Errorf("rules applied; %w", err)
		}
	}
	return nil
}

// BGP is the BGP speaker's state.
func (b *backend) BGP(ctx context.Context) api.BGPStatus { return b.bgp.Status(ctx) }

func (b *backend) AddService(s config.Service) error       { return b.srv.AddService(s) }
func (b *backend) EditService(s config.Service) error      { return b.srv.EditService(s) }
func (b *backend) DeleteService(k config.ServiceKey) error { return b.srv.DeleteService(k) }
func (b *backend) Clear() error                            { return b.srv.Clear() }
func (b *backend) AddMarks(r []config.MarkRule) error      { return b.srv.AddMarks(r) }
func (b *backend) DeleteMarks(m api.MarkRequest) error     { return b.srv.DeleteMarks(m.Mark, m.Rules) }
func (b *backend) Marks() []config.MarkRule                { return b.srv.Marks() }
func (b *backend) Zero(k *config.ServiceKey) error         { return b.srv.Zero(k) }
func (b *backend) AddLocalAddr(l api.LaddrRequest) error {
	return b.srv.AddLocalAddr(l.Service, l.Addr)
}
func (b *backend) DeleteLocalAddr(l api.LaddrRequest) error {
	return b.srv.DeleteLocalAddr(l.Service, l.Addr)
}
func (b *backend) AddDest(k config.ServiceKey, d config.Dest) error {
	return b.srv.AddDest(k, d)
}
func (b *backend) EditDest(k config.ServiceKey, d config.Dest) error {
	return b.srv.EditDest(k, d)
}
func (b *backend) DeleteDest(k config.ServiceKey, a netip.Addr, p uint16) error {
	return b.srv.DeleteDest(k, a, p)
}

func (b *backend) WalkConns(fn func(api.Conn) bool) error {
	return b.srv.WalkConns(func(c server.ConnStatus) bool {
		return fn(api.Conn{Proto: config.Proto(c.Proto), ExpireSeconds: int(c.Expire / time.Second), State: c.State,
			Client: c.Client, Virtual: c.Virtual, Real: c.Real})
	})
}

func (b *backend) LocalAddrs() []api.ServiceLaddrs {
	var out []api.ServiceLaddrs
	for _, s := range b.srv.Config().Services { // the keys; no counters needed
		addrs, err := b.srv.LocalAddrs(s.Service.ServiceKey)
		if err != nil || len(addrs) == 0 {
			continue
		}
		sl := api.ServiceLaddrs{Service: s.Service.ServiceKey}
		for _, a := range addrs {
			sl.Laddrs = append(sl.Laddrs, api.Laddr{Addr: a, Conns: b.srv.LocalPortsInUse(a)})
		}
		out = append(out, sl)
	}
	return out
}

func (b *backend) ListServices() []api.Service {
	var out []api.Service
	for _, s := range b.srv.Services() {
		as := api.Service{Service: s.Service, Stats: s.Stats, Rates: s.Rates, SorryActive: s.SorryActive}
		for _, d := range s.Dests {
			ad := api.Dest{Dest: d.Dest, ActiveConns: d.ActiveConns, InactConns: d.InactConns,
				PersistConns: d.PersistConns, Stats: d.Stats, Rates: d.Rates, Health: api.Health(d.Health)}
			ad.Serving = ad.ServingWeight()
			as.Dests = append(as.Dests, ad)
		}
		out = append(out, as)
	}
	return out
}

func (b *backend) SetTimeouts(t api.Timeouts) error {
	for _, v := range []int{t.TCP, t.TCPFin, t.UDP} {
		if v < 0 || v > config.MaxTimeout {
			return &api.Error{Message: fmt.Sprintf("timeout %d: must be 0..%d seconds", v, config.MaxTimeout), Status: http.StatusBadRequest}
		}
	}
	b.srv.SetTimeouts(time.Duration(t.TCP)*time.Second, time.Duration(t.TCPFin)*time.Second, time.Duration(t.UDP)*time.Second)
	return nil
}

func (b *backend) GetTimeouts() api.Timeouts {
	tcp, fin, udp := b.srv.Timeouts()
	return api.Timeouts{TCP: int(tcp / time.Second), TCPFin: int(fin / time.Second), UDP: int(udp / time.Second)}
}

func (b *backend) Info() api.Info {
	info := api.Info{Version: Version, ConnTableSize: b.connTable, Counters: map[string]uint64{}}
	for _, i := range b.dp.Interfaces() {
		info.Interfaces = append(info.Interfaces, i.Name)
	}
	sort.Strings(info.Interfaces)
	if c, err := b.dp.Counters(); err == nil {
		var total uint64
		for i, v := range c {
			info.Counters["xdp_"+dataplane.StatNames()[i]] = v
			if !dataplane.StatIsEvent(i) {
				total += v
			}
		}
		info.Counters["xdp_rx"] = total
	}
	sp := b.dp.SlowPathStats()
	info.Counters["slow_received"] = sp.Received
	info.Counters["slow_new_conns"] = sp.NewConns
	info.Counters["slow_followed"] = sp.Followed
	info.Counters["slow_batches"] = sp.Batches
	info.Counters["slow_forwarded"] = sp.Forwarded
	info.Counters["slow_no_dest"] = sp.NoDest
	info.Counters["slow_port_unreach"] = sp.PortUnreach
	info.Counters["slow_proxy_opened"] = sp.ProxyOpened
	info.Counters["slow_proxy_established"] = sp.ProxyEstablished
	info.Counters["slow_proxy_failed"] = sp.ProxyFailed
	if b.dp.DefenceStatus().Engaged {
		info.Counters["defence_engaged"] = 1
	} else {
		info.Counters["defence_engaged"] = 0
	}
	info.Counters["slow_unreach_limited"] = sp.UnreachLimited
	info.Counters["slow_unparsable"] = sp.Unparsable
	info.Counters["slow_frag_orphans"] = sp.FragOrphans
	info.Counters["slow_failed"] = sp.Failed
	info.Counters["fullnat_no_local_port"] = b.srv.LocalPortsExhausted()
	info.Counters["fullnat_local_ports_reclaimed"] = b.srv.LocalPortsReclaimed()
	return info
}
