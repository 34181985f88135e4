// Command xipvsd is the xipvs director daemon: it attaches the XDP
// director to the given interfaces, serves new flows over AF_XDP, and
// takes configuration from xipvsadm over a root-only Unix socket. This
// file parses flags; internal/daemon runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/api"
	"github.com/xipvs/xipvs/internal/daemon"
)

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
XDP director natively to each interface and forwards established flows in
XDP. New flows of rr and wrr services are scheduled in XDP from the cycle of
picks xipvsd computes; those of other services go to xipvsd over AF_XDP, in
batches. Configure it with xipvsadm, which takes ipvsadm's arguments.

Restarts: the maps and XDP links are pinned under --pin-dir and the
configuration is saved to --state-file at every change. When xipvsd exits
(cleanly or killed), established connections keep flowing in XDP, rr and
wrr services keep taking new flows, and other new flows are dropped
(clients retransmit); the next xipvsd adopts the pins and the state and
serves new flows again. xipvsd --cleanup removes it all. In a network
namespace other than the host's, the default socket, state file and pin
directory carry the namespace's inode, so directors in two namespaces never
share them (xipvsadm run in the namespace finds its socket).
Configuration: with --config FILE (YAML, an ipvsadm rules file, or a
keepalived.conf: its virtual_server blocks) xipvsd
applies the file at start and again on SIGHUP or "xipvsadm reload", by
difference and all or nothing; --dry-run validates it and exits.
Prometheus /metrics is served on --metrics-addr.

Scale-out: with --bgp-asn, --bgp-router-id and --bgp-peer (or a bgp:
section in the YAML file) xipvsd announces each VIP as a /32 or /128 while a
service of it has a healthy real, withdraws it when none is left, and on
SIGTERM withdraws everything and forwards on for --bgp-drain before it
stops. Behind ECMP, give every director the same configuration, use mh (or
sh) and --sloppy-tcp, so that a flow moved to another director is picked up
on the same real. xipvsadm -L --bgp shows the sessions and routes.

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
	defSocket, defState, defPins := api.Defaults()
	socket := fs.String("socket", "", "control socket (default $XIPVS_SOCKET or "+defSocket+")")
	connTable := fs.Uint("conn-table-size", dataplane.DefaultConnTableSize, "entries in each of the two connection tables: embryonic (an LRU) and established (never evicted); 1024 to 268435456")
	svcTable := fs.Uint("service-table-size", dataplane.DefaultServiceTableSize,
		"services map capacity: the most (VIP, port, protocol) keys services and port groups claim,\nso the most services")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	sweep := fs.Duration("sweep-interval", time.Second, "how often idle connections are aged out")
	sweepAging := fs.Bool("sweep-aging", false, "age established connections by walking the whole table at every sweep, as xipvs 0.2 did,\ninstead of by the deadline index (whose cost follows the connections that come and go)")
	dryRun := fs.Bool("dry-run", false, "validate the options and interfaces, then exit: 0 when valid, 1 when not, 3 when a\nkeepalived.conf loads but some of its lines cannot be honoured (its meaning would change)")
	pinDir := fs.String("pin-dir", defPins,
		"bpffs directory for the pinned maps and XDP links; they outlive xipvsd, so established\nflows keep flowing while it is down or restarting (\"\" to not pin)")
	stateFile := fs.String("state-file", defState, "where the configuration is kept for a restart to adopt")
	flush := fs.Bool("flush", false, "discard pinned maps and saved state (every connection) before starting")
	cleanup := fs.Bool("cleanup", false, "remove the pinned maps and links (detaching XDP) and the saved state, then exit")
	expireQuiescent := fs.Bool("expire-quiescent-template", false,
		"drop a persistence template when its real is quiesced (weight 0), as IPVS's\nexpire_quiescent_template sysctl; off, persistent clients stay on a quiesced real")
	configFile := fs.String("config", "", "configuration file to apply at start and on SIGHUP or \"xipvsadm reload\":\nYAML (see README), an ipvsadm rules file as ipvsadm-save writes, or a keepalived.conf\n(its LVS part; --dry-run lists the lines used, ignored and not honoured)")
	metricsAddr := fs.String("metrics-addr", "127.0.0.1:9639", "where Prometheus /metrics is served (\"\" to not serve it)")
	pprofOn := fs.Bool("pprof", false, "also serve Go's profiles under /debug/pprof/ on --metrics-addr")
	showVersion := fs.Bool("version", false, "print the version and exit")
	var goSchedules listFlag
	fs.Var(&goSchedules, "go-schedules", "VIP:PORT[,VIP:PORT...]: services whose new flows Go's slow path schedules, none in XDP\n(to diagnose a difference, or to measure the slow path); repeatable")
	spAuto := fs.Bool("synproxy-auto", true,
		"engage the SYN proxy by itself for every TCP service of NAT and FULLNAT reals while the\nslow path is overloaded (its AF_XDP rings drop new flows) or new SYNs pass --synproxy-auto-rate")
	spAutoRate := fs.Uint64("synproxy-auto-rate", 0, "new SYNs per second to services that engage the automatic SYN proxy (0: only overload)")
	spMSS := fs.Uint("synproxy-mss", dataplane.DefaultProxyMSS, "the MSS the SYN proxy's SYN-ACKs advertise (8 less for FULLNAT, for TOA)")
	spWScale := fs.Uint("synproxy-wscale", dataplane.DefaultProxyWScale, "the window scale the SYN proxy's SYN-ACKs advertise (0 to 14)")
	admitRate := fs.Uint64("admit-rate", 0,
		"admission control: SYNs per second from sources that have not completed a handshake\nwithin the hour, across the director; the rest are dropped and counted (xdp_shed). Known\nsources always pass. 0: no limit")
	sloppyTCP := fs.Bool("sloppy-tcp", false,
		"schedule a TCP packet that has no connection even if it is not a SYN (IPVS's sloppy_tcp):\nneeded behind ECMP, where a flow can move to this director mid-stream (with mh or sh\nevery director picks the same real). Off, such packets pass to the kernel (pass_no_conn)")
	admitBurst := fs.Uint64("admit-burst", 64, "admission control: SYNs from new sources one CPU may take at once")
	var bgpPeers, bgpCommunities, bgpAnnounce multiFlag
	bgpASN := fs.Uint("bgp-asn", 0, "BGP: the local AS number; with --bgp-router-id and --bgp-peer, xipvsd announces each VIP\nas a /32 or /128 while a service of it has a healthy real (see README, Scale-out)")
	bgpRouterID := fs.String("bgp-router-id", "", "BGP: the router id (an IPv4 address of this director)")
	fs.Var(&bgpPeers, "bgp-peer", "BGP: a neighbour, ADDR,ASN[,hold_time=S][,password=P][,port=N][,multihop=TTL][,bfd][,bfd_interval=D];\nrepeat for more (hold time default "+config.DefaultBGPHoldTime.String()+", bfd_interval "+config.DefaultBFDInterval.String()+":\na director is found down in 3 intervals)")
	bgpNextHop := fs.String("bgp-next-hop", "", "BGP: the IPv4 routes' next hop (default: the session's local address)")
	bgpNextHop6 := fs.String("bgp-next-hop6", "", "BGP: the IPv6 routes' next hop (needed for IPv6 VIPs over IPv4 sessions)")
	fs.Var(&bgpCommunities, "bgp-community", "BGP: a community ASN:VALUE (or no-export...) on every route; repeatable")
	bgpMED := fs.Int64("bgp-med", -1, "BGP: the routes' MED (-1: none)")
	fs.Var(&bgpAnnounce, "bgp-announce", "BGP: a prefix or address announced whatever the health (fwmark services' VIPs); repeatable")
	bgpDrain := fs.Duration("bgp-drain", config.DefaultBGPDrain, "BGP: on SIGTERM, how long xipvsd goes on forwarding after withdrawing its routes")
	bgpListen := fs.Uint("bgp-listen-port", 0, "BGP: also accept sessions on this TCP port (0: connect out only)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	// --help is asked for: to stdout, exit 0; a usage error's hint goes
	// to stderr.
	for _, a := range os.Args[1:] {
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(os.Stdout)
		}
	}
	_ = fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Println("xipvsd", daemon.Version)
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
		if err := daemon.Cleanup(*pinDir, *stateFile); err != nil {
			fmt.Fprintf(os.Stderr, "xipvsd: cleanup: %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("xipvsd: removed %s and %s\n", *pinDir, *stateFile)
		return
	}
	flagBGP, err := bgpFromFlags(*bgpASN, *bgpRouterID, bgpPeers, *bgpNextHop, *bgpNextHop6, bgpCommunities, *bgpMED, bgpAnnounce, *bgpDrain, *bgpListen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "xipvsd: %v\n", err)
		os.Exit(2)
	}
	if *spMSS < 536 || *spMSS > 9000 || *spWScale > 14 {
		fmt.Fprintf(os.Stderr, "xipvsd: --synproxy-mss %d / --synproxy-wscale %d: want an MSS of 536 to 9000 and a scale of 0 to 14\n", *spMSS, *spWScale)
		os.Exit(2)
	}
	const minTable, maxTable = 1024, 1 << 28
	if *connTable < minTable || *connTable > maxTable {
		fmt.Fprintf(os.Stderr, "xipvsd: --conn-table-size %d: want %d to %d entries\n", *connTable, minTable, maxTable)
		os.Exit(2)
	}
	var goSched []netip.AddrPort
	for _, v := range goSchedules {
		ap, err := netip.ParseAddrPort(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "xipvsd: --go-schedules %q: want VIP:PORT ([v6]:PORT for IPv6)\n", v)
			os.Exit(2)
		}
		goSched = append(goSched, ap)
	}
	opts := daemon.Options{SweepAging: *sweepAging, GoSchedules: goSched, Interfaces: ifaces, Socket: api.SocketPath(*socket), ConnTableSize: uint32(*connTable), ServiceTableSize: uint32(*svcTable),
		SweepInterval: *sweep, ExpireQuiescentTemplate: *expireQuiescent, PinDir: *pinDir, StateFile: *stateFile,
		Flush: *flush, ConfigFile: *configFile, MetricsAddr: *metricsAddr, Pprof: *pprofOn,
		Defence: dataplane.Defence{MSS: uint16(*spMSS), WScale: uint8(*spWScale), AdmitRate: *admitRate, AdmitBurst: *admitBurst,
			Auto: *spAuto, AutoSYNRate: *spAutoRate, SloppyTCP: *sloppyTCP},
		BGP: flagBGP}
	if err := daemon.Prepare(&opts); err != nil {
		fmt.Fprintf(os.Stderr, "xipvsd: %v\n", err)
		var ue *daemon.UsageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, "Run 'xipvsd --help' for the options.")
			os.Exit(2)
		}
		os.Exit(1)
	}
	if *dryRun {
		if err := daemon.DryRun(&opts, os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "xipvsd: %v\n", err)
			if errors.As(err, new(*daemon.NotHonouredError)) {
				os.Exit(3)
			}
			os.Exit(1)
		}
		return
	}
	if err := daemon.Run(context.Background(), log, opts); err != nil {
		log.Error("xipvsd stopped", "err", err)
		os.Exit(1)
	}
}

// multiFlag is a repeatable flag whose values may hold commas.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// bgpFromFlags builds the BGP settings of the --bgp-* flags (nil when
// none is given).
func bgpFromFlags(asn uint, routerID string, peers []string, nh, nh6 string, communities []string, med int64,
	announce []string, drain time.Duration, listen uint) (*config.BGP, error) {
	if asn == 0 && routerID == "" && len(peers) == 0 && nh == "" && nh6 == "" && len(communities) == 0 && med < 0 && len(announce) == 0 && listen == 0 {
		return nil, nil
	}
	if asn > math.MaxUint32 || listen > math.MaxUint16 || med > math.MaxUint32 {
		return nil, fmt.Errorf("--bgp-asn %d / --bgp-listen-port %d / --bgp-med %d: out of range", asn, listen, med)
	}
	b := &config.BGP{ASN: uint32(asn), ListenPort: uint16(listen), Drain: drain}
	parse := func(name, s string) (netip.Addr, error) {
		if s == "" {
			return netip.Addr{}, nil
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return a, fmt.Errorf("%s %q: not an IP address", name, s)
		}
		return a.Unmap(), nil
	}
	var err error
	if b.RouterID, err = parse("--bgp-router-id", routerID); err != nil {
		return nil, err
	}
	if b.NextHop, err = parse("--bgp-next-hop", nh); err != nil {
		return nil, err
	}
	if b.NextHop6, err = parse("--bgp-next-hop6", nh6); err != nil {
		return nil, err
	}
	for _, p := range peers {
		bp, err := config.ParseBGPPeer(p)
		if err != nil {
			return nil, err
		}
		b.Peers = append(b.Peers, bp)
	}
	for _, c := range communities {
		v, err := config.ParseCommunity(c)
		if err != nil {
			return nil, err
		}
		b.Communities = append(b.Communities, v)
	}
	if med >= 0 {
		v := uint32(med)
		b.MED = &v
	}
	for _, a := range announce {
		p, err := config.ParseAnnounce(a)
		if err != nil {
			return nil, err
		}
		b.Announce = append(b.Announce, p)
	}
	b.SetDefaults()
	return b, b.Validate()
}
