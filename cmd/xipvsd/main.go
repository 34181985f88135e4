// Command xipvsd is the xipvs director daemon: it attaches the XDP
// director to the given interfaces, serves new flows over AF_XDP, and
// takes configuration from xipvsadm over a root-only Unix socket.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/api"
	"github.com/xipvs/xipvs/internal/health"
	"github.com/xipvs/xipvs/internal/server"
)

const version = "0.1.0"

type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

const usage = `Usage: xipvsd -i IFACE[,IFACE...] [options]

xipvsd is the xipvs director: Linux Virtual Server on XDP. It attaches the
XDP director natively to each interface, hands the first packet of every new
flow to its scheduler over AF_XDP, and forwards established flows in XDP.
Configure it with xipvsadm, which takes ipvsadm's arguments.

Restarts: the maps and XDP links are pinned under --pin-dir and the
configuration is saved to --state-file at every change. When xipvsd exits
(cleanly or killed), established connections keep flowing in XDP and new
flows are dropped (clients retransmit); the next xipvsd adopts the pins and
the state and serves new flows again. xipvsd --cleanup removes it all.
Configuration: with --config FILE (YAML, or an ipvsadm rules file) xipvsd
applies the file at start and again on SIGHUP or "xipvsadm reload", by
difference and all or nothing; --dry-run validates it and exits.
Prometheus /metrics is served on --metrics-addr.

Run it in the host's mount namespace (not under "ip netns exec", whose
private /sys takes the pins with it), or give --pin-dir on a bpffs that
outlives it.

Options:
`

func main() {
	var ifaces listFlag
	fs := flag.NewFlagSet("xipvsd", flag.ExitOnError)
	fs.Var(&ifaces, "i", "director interface(s), comma separated or repeated")
	fs.Var(&ifaces, "interface", "same as -i")
	socket := fs.String("socket", "", "control socket (default $XIPVS_SOCKET or "+api.DefaultSocket+")")
	connTable := fs.Uint("conn-table-size", dataplane.DefaultConnTableSize, "connection table capacity (entries)")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	sweep := fs.Duration("sweep-interval", time.Second, "how often idle connections are aged out")
	dryRun := fs.Bool("dry-run", false, "validate the options and interfaces, then exit")
	pinDir := fs.String("pin-dir", dataplane.DefaultPinDir,
		"bpffs directory for the pinned maps and XDP links; they outlive xipvsd, so established\nflows keep flowing while it is down or restarting (\"\" to not pin)")
	stateFile := fs.String("state-file", "/run/xipvs/state.json", "where the configuration is kept for a restart to adopt")
	flush := fs.Bool("flush", false, "discard pinned maps and saved state (every connection) before starting")
	cleanup := fs.Bool("cleanup", false, "remove the pinned maps and links (detaching XDP) and the saved state, then exit")
	expireQuiescent := fs.Bool("expire-quiescent-template", false,
		"drop a persistence template when its real is quiesced (weight 0), as IPVS's\nexpire_quiescent_template sysctl; off, persistent clients stay on a quiesced real")
	configFile := fs.String("config", "", "configuration file to apply at start and on SIGHUP or xipvsadm --reload:\nYAML (see README), or an ipvsadm rules file as ipvsadm-save writes")
	metricsAddr := fs.String("metrics-addr", "127.0.0.1:9639", "where Prometheus /metrics is served (\"\" to not serve it)")
	pprofOn := fs.Bool("pprof", false, "also serve Go's profiles under /debug/pprof/ on --metrics-addr")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	_ = fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Println("xipvsd", version)
		return
	}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, nil)
	if *logFormat == "json" {
		h = slog.NewJSONHandler(os.Stderr, nil)
	} else if *logFormat != "text" {
		fmt.Fprintf(os.Stderr, "xipvsd: --log-format %q: want text or json\n", *logFormat)
		os.Exit(2)
	}
	log := slog.New(h)
	if *cleanup {
		err := errors.Join(dataplane.Cleanup(*pinDir), removeIfExists(*stateFile))
		if err != nil {
			fmt.Fprintf(os.Stderr, "xipvsd: cleanup: %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("xipvsd: removed %s and %s\n", *pinDir, *stateFile)
		return
	}
	var cfg *config.Config
	if *configFile != "" {
		c, fileIfaces, err := config.Load(*configFile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "xipvsd: %v\n", err)
			os.Exit(1)
		}
		if len(ifaces) == 0 {
			ifaces = fileIfaces
		} else if len(fileIfaces) > 0 && !slices.Equal(ifaces, fileIfaces) {
			fmt.Fprintf(os.Stderr, "xipvsd: -i %s differs from the interfaces of %s (%s)\n", ifaces.String(), *configFile, strings.Join(fileIfaces, ","))
			os.Exit(1)
		}
		cfg = c
	}
	if len(ifaces) == 0 {
		fmt.Fprintln(os.Stderr, "xipvsd: no interface given (-i IFACE, or interfaces: in --config)")
		fs.Usage()
		os.Exit(2)
	}
	if *dryRun {
		if err := dryRunCheck(ifaces, cfg); err != nil {
			fmt.Fprintf(os.Stderr, "xipvsd: %v\n", err)
			os.Exit(1)
		}
		if cfg != nil {
			fmt.Printf("xipvsd: configuration OK: %s\n", cfg.Summary())
		} else {
			fmt.Println("xipvsd: configuration OK")
		}
		return
	}
	opts := runOptions{ifaces: ifaces, socket: api.SocketPath(*socket), connTable: uint32(*connTable), sweep: *sweep,
		expireQuiescent: *expireQuiescent, pinDir: *pinDir, stateFile: *stateFile, flush: *flush,
		configFile: *configFile, config: cfg, metricsAddr: *metricsAddr, pprof: *pprofOn}
	if err := run(log, opts); err != nil {
		log.Error("xipvsd stopped", "err", err)
		os.Exit(1)
	}
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

type runOptions struct {
	ifaces          []string
	socket          string
	connTable       uint32
	sweep           time.Duration
	expireQuiescent bool
	pinDir          string
	stateFile       string
	flush           bool
	configFile      string
	config          *config.Config // configFile's contents, read at start
	metricsAddr     string
	pprof           bool
}

// dryRunCheck validates the interfaces and, if given, the configuration
// with the routes to its real servers, as the daemon would apply it.
func dryRunCheck(ifaces []string, cfg *config.Config) error {
	idx := map[int]bool{}
	for _, n := range ifaces {
		ifc, err := net.InterfaceByName(n)
		if err != nil {
			return fmt.Errorf("interface %s: %w", n, err)
		}
		idx[ifc.Index] = true
	}
	if cfg == nil {
		return nil
	}
	return server.Check(cfg, dataplane.RouteTo, func(i int) bool { return idx[i] })
}

func run(log *slog.Logger, o runOptions) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ifaces, socket, connTable, sweep := o.ifaces, o.socket, o.connTable, o.sweep

	if o.flush {
		if err := removeIfExists(o.stateFile); err != nil {
			return err
		}
	}
	// Read the state before touching the data plane: a bad file stops
	// us with the pinned maps still forwarding.
	st, err := server.ReadStateFile(o.stateFile)
	if err != nil {
		return fmt.Errorf("%w (xipvsd --flush starts over)", err)
	}
	dp, err := dataplane.Open(dataplane.Options{Interfaces: ifaces, ConnTableSize: connTable, Logger: log,
		PinDir: o.pinDir, Flush: o.flush})
	if err != nil {
		return err
	}
	defer dp.Close()

	var srv *server.Server
	resolver := dataplane.NewResolver(log, func(a netip.Addr, ifindex int, mac net.HardwareAddr) {
		srv.OnNeighbor(a, ifindex, mac)
	})
	// Health checks follow the configuration: every change pokes the
	// monitor, which is given the current targets.
	poke := make(chan struct{}, 1)
	srv = server.New(server.Options{Dataplane: dp, Neighbors: resolver, Route: dataplane.RouteTo, Logger: log,
		ExpireQuiescentTemplate: o.expireQuiescent,
		Persist: func(st server.State) error {
			select {
			case poke <- struct{}{}:
			default:
			}
			return server.WriteStateFile(o.stateFile, st)
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
		return fmt.Errorf("adopting %s: %w (xipvsd --flush starts over)", o.stateFile, err)
	}
	poke <- struct{}{} // the adopted configuration's checks
	go resolver.Run(ctx, time.Second)
	go srv.RunSweeper(ctx, sweep)
	go srv.RunEstimator(ctx)
	b := &backend{srv: srv, dp: dp, connTable: int(connTable), configFile: o.configFile, log: log}
	if o.config != nil {
		if err := srv.Reconcile(o.config); err != nil {
			return fmt.Errorf("applying %s: %w", o.configFile, err)
		}
		log.Info("configuration loaded", "file", o.configFile, "summary", o.config.Summary())
	}

	if err := dp.StartSlowPath(srv.NewFlow); err != nil {
		return err
	}

	ln, err := listen(socket)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: api.Handler(b, statusOf), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	if o.metricsAddr != "" {
		ms, mln, err := serveMetrics(o.metricsAddr, srv, dp, o.pprof)
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
			if err := b.Reload(); err != nil {
				log.Error("reload failed; the running configuration is unchanged", "err", err)
			}
		}
	}()
	log.Info("xipvsd ready", "socket", socket, "interfaces", strings.Join(ifaces, ","), "version", version)

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = hs.Shutdown(shutdownCtx)
	_ = os.Remove(socket)
	log.Info("xipvsd stopping")
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
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

// backend adapts the server to the API.
type backend struct {
	srv        *server.Server
	dp         *dataplane.Dataplane
	connTable  int
	configFile string
	log        *slog.Logger
	// mu serializes configuration changes, so a command never lands in
	// the middle of a restore or reload (whose rollback would undo it).
	mu sync.Mutex
}

// locked runs fn holding b.mu.
func (b *backend) locked(fn func() error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return fn()
}

func (b *backend) Config() *config.Config { return b.srv.Config() }

// Restore applies ipvsadm -R's lines to the running configuration: the
// result is computed on a copy, then applied by difference, all or
// nothing.
func (b *backend) Restore(lines []config.Line) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	want, err := config.ApplyLines(b.srv.Config(), lines)
	if err != nil {
		return err
	}
	return b.srv.Reconcile(want)
}

// Reload re-reads --config and applies the difference; on any error the
// running configuration stays as it was.
func (b *backend) Reload() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.configFile == "" {
		return &api.Error{Message: "xipvsd runs without --config: nothing to reload", Status: http.StatusBadRequest}
	}
	cfg, ifaces, err := config.Load(b.configFile)
	if err != nil {
		return &api.Error{Message: "reload: " + err.Error(), Status: http.StatusBadRequest}
	}
	var have []string
	for _, i := range b.dp.Interfaces() {
		have = append(have, i.Name)
	}
	if len(ifaces) > 0 && !slices.Equal(ifaces, have) {
		return &api.Error{Message: fmt.Sprintf("reload: %s names interfaces %s, xipvsd runs on %s: restart to change interfaces",
			b.configFile, strings.Join(ifaces, ","), strings.Join(have, ",")), Status: http.StatusBadRequest}
	}
	if err := b.srv.Reconcile(cfg); err != nil {
		return fmt.Errorf("reload %s: %w", b.configFile, err)
	}
	b.log.Info("configuration reloaded", "file", b.configFile, "summary", cfg.Summary())
	return nil
}

func (b *backend) AddService(s config.Service) error {
	return b.locked(func() error { return b.srv.AddService(s) })
}
func (b *backend) EditService(s config.Service) error {
	return b.locked(func() error { return b.srv.EditService(s) })
}
func (b *backend) DeleteService(k config.ServiceKey) error {
	return b.locked(func() error { return b.srv.DeleteService(k) })
}
func (b *backend) Clear() error { return b.locked(b.srv.Clear) }
func (b *backend) AddMarks(r []config.MarkRule) error {
	return b.locked(func() error { return b.srv.AddMarks(r) })
}
func (b *backend) DeleteMarks(m api.MarkRequest) error {
	return b.locked(func() error { return b.srv.DeleteMarks(m.Mark, m.Rules) })
}
func (b *backend) Conns() ([]api.Conn, error) {
	cs, err := b.srv.Conns()
	out := make([]api.Conn, len(cs))
	for i, c := range cs {
		out[i] = api.Conn{Proto: config.Proto(c.Proto), ExpireSeconds: int(c.Expire / time.Second), State: c.State,
			Client: c.Client, Virtual: c.Virtual, Real: c.Real}
	}
	return out, err
}
func (b *backend) Marks() []config.MarkRule        { return b.srv.Marks() }
func (b *backend) Zero(k *config.ServiceKey) error { return b.srv.Zero(k) }
func (b *backend) AddLocalAddr(l api.LaddrRequest) error {
	return b.locked(func() error { return b.srv.AddLocalAddr(l.Service, l.Addr) })
}
func (b *backend) DeleteLocalAddr(l api.LaddrRequest) error {
	return b.locked(func() error { return b.srv.DeleteLocalAddr(l.Service, l.Addr) })
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
func (b *backend) AddDest(k config.ServiceKey, d config.Dest) error {
	return b.locked(func() error { return b.srv.AddDest(k, d) })
}
func (b *backend) EditDest(k config.ServiceKey, d config.Dest) error {
	return b.locked(func() error { return b.srv.EditDest(k, d) })
}
func (b *backend) DeleteDest(k config.ServiceKey, a netip.Addr, p uint16) error {
	return b.locked(func() error { return b.srv.DeleteDest(k, a, p) })
}

func (b *backend) ListServices() []api.Service {
	var out []api.Service
	for _, s := range b.srv.Services() {
		as := api.Service{Service: s.Service, Stats: s.Stats, Rates: s.Rates, SorryActive: s.SorryActive}
		for _, d := range s.Dests {
			as.Dests = append(as.Dests, api.Dest{Dest: d.Dest, ActiveConns: d.ActiveConns, InactConns: d.InactConns,
				PersistConns: d.PersistConns, Stats: d.Stats, Rates: d.Rates, Health: api.Health(d.Health)})
		}
		out = append(out, as)
	}
	return out
}

func (b *backend) SetTimeouts(t api.Timeouts) error {
	if t.TCP < 0 || t.TCPFin < 0 || t.UDP < 0 {
		return &api.Error{Message: "timeouts must not be negative", Status: http.StatusBadRequest}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.srv.SetTimeouts(time.Duration(t.TCP)*time.Second, time.Duration(t.TCPFin)*time.Second, time.Duration(t.UDP)*time.Second)
	return nil
}

func (b *backend) GetTimeouts() api.Timeouts {
	tcp, fin, udp := b.srv.Timeouts()
	return api.Timeouts{TCP: int(tcp / time.Second), TCPFin: int(fin / time.Second), UDP: int(udp / time.Second)}
}

func (b *backend) Info() api.Info {
	info := api.Info{Version: version, ConnTableSize: b.connTable, Counters: map[string]uint64{}}
	for _, i := range b.dp.Interfaces() {
		info.Interfaces = append(info.Interfaces, i.Name)
	}
	sort.Strings(info.Interfaces)
	if c, err := b.dp.Counters(); err == nil {
		var total uint64
		for i, v := range c {
			info.Counters["xdp_"+dataplane.StatNames()[i]] = v
			total += v
		}
		info.Counters["xdp_rx"] = total
	}
	sp := b.dp.SlowPathStats()
	info.Counters["slow_received"] = sp.Received
	info.Counters["slow_new_conns"] = sp.NewConns
	info.Counters["slow_forwarded"] = sp.Forwarded
	info.Counters["slow_no_dest"] = sp.NoDest
	info.Counters["slow_unparsable"] = sp.Unparsable
	info.Counters["slow_failed"] = sp.Failed
	info.Counters["fullnat_no_local_port"] = b.srv.LocalPortsExhausted()
	return info
}
