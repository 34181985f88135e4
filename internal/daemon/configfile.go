package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/internal/api"
	"github.com/xipvs/xipvs/internal/neigh"
	"github.com/xipvs/xipvs/internal/server"
)

// xipvsd's configuration file, read and applied in one way: Prepare reads
// it at start (and settles what the flags leave to it), and applyFile
// applies it, at start and on every SIGHUP or "xipvsadm reload" alike,
// after checkFile has held it against the director.

// UsageError is an error in how xipvsd was invoked (flags and
// configuration file disagree, or no interface): xipvsd exits 2.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Prepare reads o.ConfigFile, if any, into o: its services, sync daemons
// and keepalived report, its interfaces when -i gave none, its BGP
// settings (the flags must not give them too). It fails, changing
// nothing that runs, on a file that does not load or disagrees with the
// flags, and when no interface is named at all.
func Prepare(o *Options) error {
	if o.ConfigFile != "" {
		l, err := config.LoadFile(o.ConfigFile)
		if err != nil {
			return err
		}
		if o.BGP != nil && l.BGP != nil {
			return &UsageError{fmt.Errorf("%s has a bgp section and --bgp-* flags are given: give BGP settings in one place", o.ConfigFile)}
		}
		if l.BGP != nil {
			o.BGP, o.bgpFromFile = l.BGP, true
		}
		if len(o.Interfaces) == 0 {
			o.Interfaces = l.Interfaces
		}
		if err := checkFile(o.ConfigFile, l, o.Interfaces, o.bgpFromFile); err != nil {
			return err
		}
		o.file = l
	}
	if len(o.Interfaces) == 0 {
		return &UsageError{errors.New("no interface given (-i IFACE, or interfaces: in --config)")}
	}
	return nil
}

// checkFile holds a loaded file against the director it is for: the
// interfaces it runs on (or was given) and where its BGP settings come
// from (the file, or the --bgp-* flags).
func checkFile(path string, l *config.Loaded, ifaces []string, bgpFromFile bool) error {
	if len(l.Interfaces) > 0 && !slices.Equal(l.Interfaces, ifaces) {
		return fmt.Errorf("%s names interfaces %s, xipvsd runs on %s: interfaces change only with a restart",
			path, strings.Join(l.Interfaces, ","), strings.Join(ifaces, ","))
	}
	if l.BGP != nil && !bgpFromFile {
		return fmt.Errorf("%s has a bgp section, but xipvsd's BGP settings come from its --bgp-* flags: give them in one place", path)
	}
	return nil
}

// DryRun validates the interfaces and the prepared configuration with
// the routes to its real servers, as the daemon would apply it, and
// writes what it found to w.
func DryRun(o *Options, w io.Writer) error {
	idx := map[int]bool{}
	for _, n := range o.Interfaces {
		ifc, err := net.InterfaceByName(n)
		if err != nil {
			return fmt.Errorf("interface %s: %w", n, err)
		}
		idx[ifc.Index] = true
	}
	if o.file != nil {
		if err := server.Check(o.file.Config, neigh.RouteTo, func(i int) bool { return idx[i] }, neigh.LocalAddress); err != nil {
			return err
		}
	}
	if o.BGP != nil {
		fmt.Fprintf(w, "xipvsd: BGP: AS %d, router id %v, %d peers\n", o.BGP.ASN, o.BGP.RouterID, len(o.BGP.Peers))
	}
	if o.file == nil {
		fmt.Fprintln(w, "xipvsd: configuration OK")
		return nil
	}
	printKeepalived(w, o.file.Keepalived)
	for _, d := range o.file.Sync {
		fmt.Fprintf(w, "xipvsd: sync daemon %s on %s, id %d\n", d.Role, d.Interface, d.SyncID)
	}
	fmt.Fprintf(w, "xipvsd: configuration OK: %s\n", o.file.Config.Summary())
	if n := notHonoured(o.file.Keepalived); n > 0 {
		return &NotHonouredError{Lines: n}
	}
	return nil
}

// NotHonouredError is DryRun's when the file loads but some of its
// lines cannot be honoured here: xipvsd would run it, with another
// meaning than keepalived's. xipvsd --dry-run exits 3 with it.
type NotHonouredError struct{ Lines int }

func (e *NotHonouredError) Error() string {
	return fmt.Sprintf("%d line(s) of the configuration cannot be honoured (listed above): it would run here with another meaning", e.Lines)
}

// notHonoured counts the keepalived.conf lines xipvs cannot honour.
func notHonoured(lines []config.KeepalivedLine) int {
	n := 0
	for _, l := range lines {
		if l.Use == config.UseCannot {
			n++
		}
	}
	return n
}

// Reload re-reads the configuration file and applies it (applyFile); on
// any error the running configuration stays as it was.
func (b *backend) Reload(ctx context.Context) error {
	if b.configFile == "" {
		return &api.Error{Message: "xipvsd runs without --config: nothing to reload", Status: http.StatusBadRequest}
	}
	l, err := config.LoadFile(b.configFile)
	if err != nil {
		return &api.Error{Message: "reload: " + err.Error(), Status: http.StatusBadRequest}
	}
	if err := b.applyFile(ctx, l, "reloaded"); err != nil {
		return prefixed("reload", err)
	}
	return nil
}

// applyFile applies a configuration file as read, at start and on every
// reload (how says which, in the log line that ends it): checked against the director first (nothing changes if it does
// not fit), then its services and port groups by difference (all or
// nothing), its sync daemons, and its BGP settings when they come from
// the file. A keepalived.conf has no port groups (LVS admins bind marks
// with iptables): those added with xipvsadm --add-mark stay.
func (b *backend) applyFile(ctx context.Context, l *config.Loaded, how string) error {
	var have []string
	for _, i := range b.dp.Interfaces() {
		have = append(have, i.Name)
	}
	if err := checkFile(b.configFile, l, have, b.bgpFromFile); err != nil {
		return &api.Error{Message: err.Error(), Status: http.StatusBadRequest}
	}
	cfg := l.Config
	if l.Keepalived != nil {
		cfg.Marks = b.srv.Config().Marks
		logKeepalived(b.log, l.Keepalived)
	}
	if err := b.srv.ReconcileContext(ctx, cfg); err != nil {
		return fmt.Errorf("%s: %w", b.configFile, err)
	}
	if err := b.applySync(l.Sync); err != nil {
		return fmt.Errorf("%s: services applied; sync daemons: %w", b.configFile, err)
	}
	if b.bgpFromFile {
		b.bgp.SetVIPs(vipHealth(b.srv)) // the VIPs' health under cfg
		if err := b.bgp.Configure(ctx, l.BGP); err != nil {
			return fmt.Errorf("%s: services applied; %w", b.configFile, err)
		}
	}
	b.log.Info("configuration "+how, "file", b.configFile, "summary", cfg.Summary())
	return nil
}

// prefixed puts what was being done in front of err's message, keeping
// an API error's status.
func prefixed(what string, err error) error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return &api.Error{Message: what + ": " + ae.Message, Status: ae.Status}
	}
	return fmt.Errorf("%s %w", what, err)
}

// logKeepalived warns, once per load, of each keepalived.conf line xipvsd
// cannot honour.
func logKeepalived(log *slog.Logger, lines []config.KeepalivedLine) {
	for _, l := range lines {
		if l.Use == config.UseCannot {
			log.Warn("keepalived.conf: cannot honour", "file", l.File, "line", l.N, "text", l.Text, "why", l.Why)
		}
	}
}

// printKeepalived says, for --dry-run of a keepalived.conf, which lines
// xipvsd used, ignored, and cannot honour, grouped in that order.
func printKeepalived(w io.Writer, lines []config.KeepalivedLine) {
	if len(lines) == 0 {
		return
	}
	for _, use := range []string{config.UseUsed, config.UseIgnored, config.UseCannot} {
		n := 0
		for _, l := range lines {
			if l.Use == use {
				n++
			}
		}
		fmt.Fprintf(w, "keepalived.conf: %d lines %s\n", n, use)
		for _, l := range lines {
			if l.Use != use {
				continue
			}
			fmt.Fprintf(w, "  %s:%d: %s", l.File, l.N, l.Text)
			if l.Why != "" {
				fmt.Fprintf(w, "  (%s)", l.Why)
			}
			fmt.Fprintln(w)
		}
	}
}
