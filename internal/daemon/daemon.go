// Package daemon is xipvsd: it opens the data plane, builds the server
// over it, adopts the previous run's state, and serves the control API,
// /metrics, reloads and the slow path until its context ends. The
// command in cmd/xipvsd only parses flags.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/dataplane/slowpath"
	"github.com/xipvs/xipvs/internal/api"
	"github.com/xipvs/xipvs/internal/bgp"
	"github.com/xipvs/xipvs/internal/health"
	"github.com/xipvs/xipvs/internal/neigh"
	"github.com/xipvs/xipvs/internal/server"
)

// Version is xipvsd's version.
const Version = "0.1.0"

// Options are xipvsd's settings.
type Options struct {
	Interfaces    []string
	Socket        string
	ConnTableSize uint32
	// SweepAging walks the established tables at every sweep instead of
	// aging them by the deadline index (dataplane.Options.SweepAging).
	SweepAging bool
	// ServiceTableSize is the services map's capacity.
	ServiceTableSize uint32
	SweepInterval    time.Duration
	// ExpireQuiescentTemplate is IPVS's sysctl of that name.
	ExpireQuiescentTemplate bool
	// GoSchedules: services whose new flows only Go schedules.
	GoSchedules []netip.AddrPort
	PinDir      string
	StateFile   string
	// Flush discards the pinned maps and the saved state first.
	Flush bool
	// ConfigFile is applied at start and on every reload (Prepare reads
	// it first).
	ConfigFile  string
	MetricsAddr string
	Pprof       bool
	// Defence is the flood defence (dataplane.Defence).
	Defence dataplane.Defence
	// BGP is the BGP speaker's configuration from the --bgp-* flags
	// (nil: none); Prepare takes the file's instead, when it has one, and
	// reloads then apply its changes.
	BGP *config.BGP

	// What Prepare read: the file, and whether BGP's settings are its.
	file        *config.Loaded
	bgpFromFile bool
}

// Counters is what the API's Info and /metrics read of the data plane.
type Counters interface {
	Interfaces() []dataplane.Interface
	Counters() ([dataplane.NumStats]uint64, error)
	SlowPathStats() slowpath.Stats
	DefenceStatus() dataplane.DefenceStatus
}

// director is the data plane with its slow path, as the API and /metrics
// read them.
type director struct {
	*dataplane.Dataplane
	slow atomic.Pointer[slowpath.SlowPath]
}

// SlowPathStats is the slow path's counters (zero before it starts).
func (d *director) SlowPathStats() slowpath.Stats { return d.slow.Load().Stats() }

// Cleanup removes the pinned maps and links (detaching XDP) and the
// saved state.
func Cleanup(pinDir, stateFile string) error {
	return errors.Join(dataplane.Cleanup(pinDir), removeIfExists(stateFile))
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Run runs the director until ctx ends (or SIGINT/SIGTERM).
func Run(ctx context.Context, log *slog.Logger, o Options) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if o.Flush {
		if err := removeIfExists(o.StateFile); err != nil {
			return err
		}
	}
	// Read the state before touching the data plane: a bad file stops
	// us with the pinned maps still forwarding.
	st, err := server.ReadStateFile(o.StateFile)
	if err != nil {
		return fmt.Errorf("%w (xipvsd --flush starts over)", err)
	}
	dp, err := dataplane.Open(dataplane.Options{Interfaces: o.Interfaces, ConnTableSize: o.ConnTableSize, ServiceTableSize: o.ServiceTableSize, Logger: log,
		PinDir: o.PinDir, Flush: o.Flush, SweepAging: o.SweepAging})
	if err != nil {
		return err
	}
	defer dp.Close()
	dir := &director{Dataplane: dp}

	var srv *server.Server
	resolver := neigh.NewResolver(log, func(a netip.Addr, ifindex int, mac net.HardwareAddr) {
		srv.OnNeighbor(a, ifindex, mac)
	})
	// Health checks follow the configuration: every change pokes the
	// monitor, which is given the current targets.
	poke := make(chan struct{}, 1)
	stateFile := &server.StateFile{Path: o.StateFile}
	var b *backend // its sync daemons are saved with the configuration
	srv = server.New(server.Options{Dataplane: dp, Neighbors: resolver, Route: neigh.RouteTo, Logger: log,
		ExpireQuiescentTemplate: o.ExpireQuiescentTemplate, GoSchedules: o.GoSchedules, LocalAddress: neigh.LocalAddress, ServiceKeys: dp.ServiceTableSize(),
		Reserve: stateFile.Reserve,
		Persist: func(st server.State) error {
			if b != nil {
				st.SyncDaemons = b.commandDaemons()
			}
			return stateFile.Save(st)
		},
		Changed: func() {
			select {
			case poke <- struct{}{}:
			default:
			}
		}})
	monitor := health.NewMonitor(nil, func(k health.Key, up bool, reason string) { srv.SetHealth(k, up, reason) })
	defer monitor.Close()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-poke:
				monitor.Set(srv.HealthTargets(), srv.Healthy)
			}
		}
	}()
	if err := srv.Restore(st, dp); err != nil {
		return fmt.Errorf("adopting %s: %w (xipvsd --flush starts over)", o.StateFile, err)
	}
	poke <- struct{}{} // the adopted configuration's checks
	go resolver.Run(ctx, time.Second)
	go srv.RunEstimator(ctx)
	speaker := bgp.New(log)
	defer speaker.Stop()
	b = &backend{srv: srv, dp: dir, connTable: int(o.ConnTableSize), configFile: o.ConfigFile, log: log,
		bgp: speaker, bgpFromFile: o.bgpFromFile, events: dp}
	if err := dp.SetDefence(o.Defence); err != nil {
		return err
	}
	slow, err := slowpath.Start(dp, srv.NewFlows, log)
	if err != nil {
		return err
	}
	defer slow.Close() // before dp.Close
	dir.slow.Store(slow)
	if o.file != nil {
		if err := b.applyFile(ctx, o.file, "loaded"); err != nil {
			return fmt.Errorf("applying %w", err)
		}
	}
	b.restoreDaemons(st.SyncDaemons)
	// BGP last: routes are announced once this director can forward
	// (from the file, applyFile configured it).
	if !o.bgpFromFile {
		speaker.SetVIPs(vipHealth(srv))
		if err := speaker.Configure(ctx, o.BGP); err != nil {
			return err
		}
	}
	go server.Every(ctx, vipPoll, func() { speaker.SetVIPs(vipHealth(srv)) })

	ln, err := listen(o.Socket)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: api.Handler(b, statusOf), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(ln) }()
	if o.MetricsAddr != "" {
		ms, mln, err := serveMetrics(o.MetricsAddr, b, o.Pprof)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		go func() { _ = ms.Serve(mln) }()
		defer ms.Close()
		log.Info("serving metrics", "addr", mln.Addr().String())
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			if err := b.Reload(ctx); err != nil {
				log.Error("reload failed; the running configuration is unchanged", "err", err)
			}
		}
	}()
	log.Info("xipvsd ready", "socket", o.Socket, "interfaces", strings.Join(o.Interfaces, ","), "version", Version)
	// Aging once xipvsd answers: loading its programs takes a second of
	// verification, and its first sweep after a restart (a full one, the
	// deadline index built from the table) is the heaviest. A kernel that
	// refuses them stops xipvsd: its connections would never age.
	go func() {
		if err := dp.LoadSweep(); err != nil {
			errc <- fmt.Errorf("the connection sweep: %w", err)
			return
		}
		srv.RunSweeper(ctx, o.SweepInterval)
	}()

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	// Graceful drain: withdraw the routes and go on forwarding (and
	// taking commands) while the routers move the flows to the other
	// directors; a second SIGTERM or SIGINT cuts it short.
	stop()
	dctx, dcancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	speaker.Drain(dctx)
	dcancel()
	speaker.Stop()
	b.stopDaemons()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = hs.Shutdown(shutdownCtx)
	_ = os.Remove(o.Socket)
	log.Info("xipvsd stopping")
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// vipPoll is how often the BGP speaker is told the VIPs' health: a VIP
// whose last real fails is withdrawn within a check's fall time plus this.
const vipPoll = 200 * time.Millisecond

// vipHealth is every VIP's health as the speaker takes it.
func vipHealth(srv *server.Server) map[netip.Addr]bgp.VIP {
	out := map[netip.Addr]bgp.VIP{}
	for a, v := range srv.VIPs() {
		why := fmt.Sprintf("%d of %d reals healthy", v.Healthy, v.Reals)
		if v.Healthy == 0 && v.Sorry {
			why += ", sorry server up"
		}
		out[a] = bgp.VIP{Up: v.Up(), Why: why}
	}
	return out
}

// listen opens the control socket, root-only: its directory is 0700 when
// xipvsd creates it and the socket itself 0600.
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("socket %s: another xipvsd is listening", path)
	}
	_ = os.Remove(path)
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}
