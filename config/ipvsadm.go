package config

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Op is an ipvsadm command.
type Op int

// ipvsadm commands.
const (
	OpNone        Op = iota
	OpAddService     // -A
	OpEditService    // -E
	OpDelService     // -D
	OpClear          // -C
	OpRestore        // -R
	OpSave           // -S
	OpAddDest        // -a
	OpEditDest       // -e
	OpDelDest        // -d
	OpList           // -L, -l
	OpZero           // -Z
	OpSetTimeout     // --set
	OpHelp           // -h
	OpVersion        // -v
	OpAddMark        // --add-mark (xipvs: port groups for -f services)
	OpDelMark        // --del-mark
	OpGetMark        // --get-mark
	OpAddLaddr       // --add-laddr (DPVS: FULLNAT local addresses)
	OpDelLaddr       // --del-laddr
	OpGetLaddr       // --get-laddr
	OpStartDaemon    // --start-daemon master|backup
	OpStopDaemon     // --stop-daemon master|backup
)

var opNames = map[Op]string{
	OpAddService: "add-service", OpEditService: "edit-service", OpDelService: "delete-service",
	OpClear: "clear", OpRestore: "restore", OpSave: "save", OpAddDest: "add-server",
	OpEditDest: "edit-server", OpDelDest: "delete-server", OpList: "list", OpZero: "zero",
	OpSetTimeout: "set", OpHelp: "help", OpVersion: "version",
	OpAddMark: "add-mark", OpDelMark: "del-mark", OpGetMark: "get-mark",
	OpAddLaddr: "add-laddr", OpDelLaddr: "del-laddr", OpGetLaddr: "get-laddr",
	OpStartDaemon: "start-daemon", OpStopDaemon: "stop-daemon",
}

func (o Op) String() string { return opNames[o] }

// ListFormat is how -L prints.
type ListFormat struct {
	Numeric, Conn, Stats, Rate, Exact, Timeout, Thresholds, PersistentConn, NoSort bool
	// Health lists the health checks' states (xipvs).
	Health bool
	// BGP lists the BGP speaker's sessions and routes (xipvs).
	BGP bool
	// Daemon lists the connection sync daemons (ipvsadm -L --daemon).
	Daemon bool
}

// SyncDaemon is a connection sync daemon's settings (ipvsadm
// --start-daemon ROLE --mcast-interface IF --syncid N ...; the YAML
// file's sync_daemons). Zero values take ipvsadm's defaults.
type SyncDaemon struct {
	Role      string     `json:"role" yaml:"state"`
	Interface string     `json:"mcast_interface" yaml:"mcast_interface"`
	SyncID    uint8      `json:"syncid" yaml:"syncid"`
	MaxLen    int        `json:"sync_maxlen,omitempty" yaml:"sync_maxlen"`
	Group     netip.Addr `json:"mcast_group,omitzero" yaml:"mcast_group"`
	Port      uint16     `json:"mcast_port,omitempty" yaml:"mcast_port"`
	TTL       uint8      `json:"mcast_ttl,omitempty" yaml:"mcast_ttl"`
	// KeyFile holds the pair's shared key (xipvs's --sync-key-file, not
	// ipvsadm's): a master signs its messages with it, a backup refuses
	// every message it did not sign. Kernel peers ignore the signature.
	KeyFile string `json:"sync_key_file,omitempty" yaml:"sync_key_file"`
}

// Command is one parsed ipvsadm command line.
type Command struct {
	Op Op
	// HasService is set when -t, -u or -f named a service.
	HasService bool
	Service    Service
	HasDest    bool
	Dest       Dest
	List       ListFormat
	// Timeouts for --set: tcp, tcpfin, udp seconds (0 = unchanged).
	Timeouts [3]int
	// Marks are the bindings of --add-mark and --del-mark (-f MARK with
	// -t/-u ADDR[:PORTS]); --del-mark -f MARK alone names every binding
	// of the mark and leaves Marks empty.
	Marks []MarkRule
	// LocalAddr is -z of --add-laddr and --del-laddr.
	LocalAddr netip.Addr
	// Daemon is --start-daemon's (and --stop-daemon's role).
	Daemon SyncDaemon
	// Given records which options appeared, by long name.
	Given map[string]bool
}

// ParseError is a command line ipvsadm would refuse; it exits with 2.
type ParseError struct{ Msg string }

func (e *ParseError) Error() string { return e.Msg }

func perr(format string, args ...any) error {
	return &ParseError{Msg: fmt.Sprintf(format, args...)}
}

// argKind is whether an option takes an argument.
type argKind int

const (
	noArg argKind = iota
	needArg
	optArg // -p [timeout]
)

// option is one ipvsadm option: its names, its argument, and what it
// means. A command option names its Op; every other option has a set
// function that records its value on the command being parsed.
type option struct {
	long  string
	short byte
	arg   argKind
	op    Op
	set   func(p *parser, val string, has bool) error
}

// listFlag is a -L modifier.
func listFlag(f func(*ListFormat)) func(*parser, string, bool) error {
	return func(p *parser, _ string, _ bool) error { f(&p.cmd.List); return nil }
}

// checkField sets a health-check field: the service's (-A/-E) or the
// real's (-a/-e).
func checkField(f func(c *Check, val string) error) func(*parser, string, bool) error {
	return func(p *parser, val string, _ bool) error {
		c := &p.cmd.Service.Check
		if p.op == OpAddDest || p.op == OpEditDest {
			c = &p.cmd.Dest.Check
		}
		return f(c, val)
	}
}

// forwarding selects a forwarding method (-g, -i, -m, -b on -a/-e).
func forwarding(f Fwd) func(*parser, string, bool) error {
	return func(p *parser, _ string, _ bool) error {
		if p.fwdGiven {
			return perr("multiple forwarding methods specified")
		}
		p.fwdGiven = true
		p.cmd.Dest.Fwd = f
		return nil
	}
}

// fwdOption is the switch that selects forwarding method f (FwdMethods):
// -g, -i and -m, and --fullnat, whose -b is DPVS's on -a and -e only (on
// -A and -E, -b stays --sched-flags: see ParseArgs).
func fwdOption(f Fwd) option {
	m := FwdMethods[f]
	o := option{long: m.Long, set: forwarding(f)}
	if f != FwdFullNAT {
		o.short = m.Switch[1]
	}
	return o
}

// refused is an ipvsadm option xipvs does not support, with the reason.
func refused(why string) func(*parser, string, bool) error {
	return func(*parser, string, bool) error { return perr("%s", why) }
}

const (
	noGUE = "GUE tunnels are not supported: -i is IP-in-IP (--tun-type ipip)"
)

// options is ipvsadm 1.31's option table, with DPVS's FULLNAT options
// and xipvs's port groups and health checks.
var options = []option{
	// Commands.
	{long: "add-service", short: 'A', op: OpAddService},
	{long: "edit-service", short: 'E', op: OpEditService},
	{long: "delete-service", short: 'D', op: OpDelService},
	{long: "clear", short: 'C', op: OpClear},
	{long: "restore", short: 'R', op: OpRestore},
	{long: "save", short: 'S', op: OpSave},
	{long: "add-server", short: 'a', op: OpAddDest},
	{long: "edit-server", short: 'e', op: OpEditDest},
	{long: "delete-server", short: 'd', op: OpDelDest},
	{long: "list", short: 'L', op: OpList},
	{long: "list", short: 'l', op: OpList},
	{long: "zero", short: 'Z', op: OpZero},
	{long: "set", arg: needArg, op: OpSetTimeout},
	{long: "help", short: 'h', op: OpHelp},
	{long: "version", short: 'v', op: OpVersion},
	{long: "add-mark", op: OpAddMark},
	{long: "del-mark", op: OpDelMark},
	{long: "get-mark", op: OpGetMark},
	{long: "add-laddr", short: 'P', op: OpAddLaddr},
	{long: "del-laddr", short: 'Q', op: OpDelLaddr},
	{long: "get-laddr", short: 'G', op: OpGetLaddr},
	{long: "start-daemon", arg: needArg, op: OpStartDaemon},
	{long: "stop-daemon", arg: needArg, op: OpStopDaemon},

	// Services.
	{long: "tcp-service", short: 't', arg: needArg, set: func(p *parser, v string, _ bool) error { return p.service(TCP, v) }},
	{long: "udp-service", short: 'u', arg: needArg, set: func(p *parser, v string, _ bool) error { return p.service(UDP, v) }},
	{long: "fwmark-service", short: 'f', arg: needArg, set: (*parser).fwmark},
	{long: "scheduler", short: 's', arg: needArg, set: func(p *parser, v string, _ bool) error { p.cmd.Service.Scheduler = v; return nil }},
	{long: "persistent", short: 'p', arg: optArg, set: (*parser).persistent},
	// -M is read once the service's family is known (finish).
	{long: "netmask", short: 'M', arg: needArg, set: func(p *parser, v string, _ bool) error { p.netmask = v; return nil }},
	{long: "sched-flags", short: 'b', arg: needArg, set: func(p *parser, v string, _ bool) error {
		p.cmd.Service.SchedFlags = strings.Split(v, ",")
		return nil
	}},
	{long: "ops", short: 'o', set: func(p *parser, _ string, _ bool) error { p.cmd.Service.OnePacket = true; return nil }},
	// DPVS's spelling: -j enable|disable.
	{long: "synproxy", short: 'j', arg: needArg, set: func(p *parser, v string, _ bool) error {
		switch v {
		case "enable":
			p.cmd.Service.SynProxy = true
		case "disable":
			p.cmd.Service.SynProxy = false
		default:
			return perr("synproxy switch must be enable or disable: %q", v)
		}
		return nil
	}},

	// Real servers.
	{long: "real-server", short: 'r', arg: needArg, set: func(p *parser, v string, _ bool) error {
		addr, port, err := parseHostPort(v, p.cmd.Service.Proto, false)
		if err != nil {
			return perr("illegal real server address[:port] specified: %v", err)
		}
		p.cmd.HasDest = true
		p.cmd.Dest.Addr, p.cmd.Dest.Port = addr, port
		return nil
	}},
	fwdOption(FwdRoute),
	fwdOption(FwdTunnel),
	fwdOption(FwdMasq),
	fwdOption(FwdFullNAT),
	{long: "weight", short: 'w', arg: needArg, set: func(p *parser, v string, _ bool) error {
		w, err := strconv.Atoi(v)
		if err != nil || w < 0 || w > MaxWeight {
			return perr("illegal weight specified: %q", v)
		}
		p.cmd.Dest.Weight, p.weightGiven = w, true
		return nil
	}},
	{long: "u-threshold", short: 'x', arg: needArg, set: func(p *parser, v string, _ bool) error {
		return threshold(&p.cmd.Dest.UThreshold, "u-threshold", v)
	}},
	{long: "l-threshold", short: 'y', arg: needArg, set: func(p *parser, v string, _ bool) error {
		return threshold(&p.cmd.Dest.LThreshold, "l-threshold", v)
	}},
	{long: "tun-type", arg: needArg, set: func(_ *parser, v string, _ bool) error {
		if v != "ipip" {
			return perr("tunnel type %q is not supported: -i is IP-in-IP (--tun-type ipip)", v)
		}
		return nil
	}},

	// FULLNAT local addresses (DPVS).
	{long: "laddr", short: 'z', arg: needArg, set: func(p *parser, v string, _ bool) error {
		a, err := netip.ParseAddr(v)
		if err != nil || a.Zone() != "" {
			return perr("illegal local address specified: %q", v)
		}
		p.cmd.LocalAddr = a.Unmap()
		return nil
	}},
	// DPVS names the device that holds the local address; xipvs finds
	// the egress from the routing table. Accepted so DPVS lines run.
	{long: "ifname", short: 'F', arg: needArg, set: func(*parser, string, bool) error { return nil }},

	// Listing.
	{long: "numeric", short: 'n', set: listFlag(func(l *ListFormat) { l.Numeric = true })},
	{long: "connection", short: 'c', set: listFlag(func(l *ListFormat) { l.Conn = true })},
	{long: "timeout", set: listFlag(func(l *ListFormat) { l.Timeout = true })},
	{long: "stats", set: listFlag(func(l *ListFormat) { l.Stats = true })},
	{long: "rate", set: listFlag(func(l *ListFormat) { l.Rate = true })},
	{long: "exact", short: 'X', set: listFlag(func(l *ListFormat) { l.Exact = true })},
	{long: "thresholds", set: listFlag(func(l *ListFormat) { l.Thresholds = true })},
	{long: "persistent-conn", set: listFlag(func(l *ListFormat) { l.PersistentConn = true })},
	{long: "nosort", set: listFlag(func(l *ListFormat) { l.NoSort = true })},
	{long: "sort", set: listFlag(func(l *ListFormat) { l.NoSort = false })},
	{long: "health", set: listFlag(func(l *ListFormat) { l.Health = true })},
	{long: "bgp", set: listFlag(func(l *ListFormat) { l.BGP = true })},

	// Health checks (on -A/-E for the service's reals, on -a/-e for one
	// real), failure policy and sorry server (-A/-E).
	{long: "check", arg: needArg, set: checkField(func(c *Check, v string) error { c.Type = v; return nil })},
	{long: "check-port", arg: needArg, set: checkField(func(c *Check, v string) error {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			return perr("illegal check port %q", v)
		}
		c.Port = uint16(n)
		return nil
	})},
	{long: "check-path", arg: needArg, set: checkField(func(c *Check, v string) error { c.Path = v; return nil })},
	{long: "check-status", arg: needArg, set: checkField(func(c *Check, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return perr("illegal check status %q", v)
		}
		c.Status = n
		return nil
	})},
	{long: "check-body", arg: needArg, set: checkField(func(c *Check, v string) error { c.Body = v; return nil })},
	{long: "check-digest", arg: needArg, set: checkField(func(c *Check, v string) error { c.Digest = strings.ToLower(v); return nil })},
	{long: "check-start-down", set: checkField(func(c *Check, _ string) error { c.StartDown = true; return nil })},
	{long: "check-send", arg: needArg, set: checkField(func(c *Check, v string) error { c.Send = v; return nil })},
	{long: "check-expect", arg: needArg, set: checkField(func(c *Check, v string) error { c.Expect = v; return nil })},
	{long: "check-exec", arg: needArg, set: checkField(func(c *Check, v string) error { c.Exec = v; return nil })},
	{long: "check-interval", arg: needArg, set: checkField(func(c *Check, v string) error {
		return durationArg(&c.Interval, "check-interval", v)
	})},
	{long: "check-timeout", arg: needArg, set: checkField(func(c *Check, v string) error {
		return durationArg(&c.Timeout, "check-timeout", v)
	})},
	{long: "rise", arg: needArg, set: checkField(func(c *Check, v string) error { return count(&c.Rise, "rise", v) })},
	{long: "fall", arg: needArg, set: checkField(func(c *Check, v string) error { return count(&c.Fall, "fall", v) })},
	{long: "on-failure", arg: needArg, set: func(p *parser, v string, _ bool) error { p.cmd.Service.OnFailure = v; return nil }},
	{long: "sorry-server", arg: needArg, set: func(p *parser, v string, _ bool) error { p.sorry = v; return nil }},
	{long: "sorry-method", arg: needArg, set: func(p *parser, v string, _ bool) error {
		f, ok := fwdByYAML(v)
		if !ok {
			return perr("illegal --sorry-method %q: want dr, tun, nat or fullnat", v)
		}
		p.cmd.Service.Sorry.Fwd = f
		return nil
	}},

	// Accepted only to be refused with a reason.
	{long: "pe", arg: needArg, set: refused("persistence engines (--pe sip) are not supported: xipvs does not parse SIP")},
	{long: "sctp-service", short: 'q', arg: needArg, set: refused("SCTP services (-q) are not supported: the data plane handles TCP and UDP")},
	// -6 may come before or after -f (ipvsadm 1.32 takes either order).
	{long: "ipv6", short: '6', set: func(p *parser, _ string, _ bool) error { p.v6 = true; return nil }},
	// Connection sync (with --start-daemon).
	{long: "daemon", set: listFlag(func(l *ListFormat) { l.Daemon = true })},
	{long: "mcast-interface", arg: needArg, set: func(p *parser, v string, _ bool) error { p.cmd.Daemon.Interface = v; return nil }},
	{long: "syncid", arg: needArg, set: func(p *parser, v string, _ bool) error {
		n, err := strconv.ParseUint(v, 10, 8)
		if err != nil {
			return perr("illegal syncid specified: %q (0 to 255)", v)
		}
		p.cmd.Daemon.SyncID = uint8(n)
		return nil
	}},
	{long: "sync-maxlen", arg: needArg, set: func(p *parser, v string, _ bool) error {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			return perr("illegal sync-maxlen specified: %q", v)
		}
		p.cmd.Daemon.MaxLen = int(n)
		return nil
	}},
	{long: "mcast-group", arg: needArg, set: func(p *parser, v string, _ bool) error {
		a, err := netip.ParseAddr(v)
		if err != nil || !a.IsMulticast() {
			return perr("illegal mcast-group specified: %q", v)
		}
		p.cmd.Daemon.Group = a
		return nil
	}},
	{long: "mcast-port", arg: needArg, set: func(p *parser, v string, _ bool) error {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			return perr("illegal mcast-port specified: %q", v)
		}
		p.cmd.Daemon.Port = uint16(n)
		return nil
	}},
	{long: "sync-key-file", arg: needArg, set: func(p *parser, v string, _ bool) error {
		if v == "" {
			return perr("illegal sync-key-file specified: empty")
		}
		p.cmd.Daemon.KeyFile = v
		return nil
	}},
	{long: "mcast-ttl", arg: needArg, set: func(p *parser, v string, _ bool) error {
		n, err := strconv.ParseUint(v, 10, 8)
		if err != nil || n == 0 {
			return perr("illegal mcast-ttl specified: %q (1 to 255)", v)
		}
		p.cmd.Daemon.TTL = uint8(n)
		return nil
	}},
	{long: "tun-port", arg: needArg, set: refused(noGUE)},
	{long: "tun-nocsum", set: refused(noGUE)},
	{long: "tun-csum", set: refused(noGUE)},
	{long: "tun-remcsum", set: refused(noGUE)},
}

func threshold(dst *uint32, name, v string) error {
	t, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return perr("illegal %s specified: %q", name, v)
	}
	*dst = uint32(t)
	return nil
}

func durationArg(dst *time.Duration, name, v string) error {
	d, err := parseSeconds(v)
	if err != nil || d == 0 {
		return perr("illegal --%s %q (seconds)", name, v)
	}
	*dst = d
	return nil
}

func count(dst *int, name, v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		return perr("illegal --%s %q (1..1000)", name, v)
	}
	*dst = n
	return nil
}

// fullnatOption is what -b means on -a and -e.
var fullnatOption = lookupLong("fullnat")

func lookupShort(c byte) *option {
	for i := range options {
		if options[i].short == c {
			return &options[i]
		}
	}
	return nil
}

func lookupLong(name string) *option {
	for i := range options {
		if options[i].long == name {
			return &options[i]
		}
	}
	return nil
}

// destCommand reports whether args hold -a or -e (also combined with
// other short flags, or spelled long), which decides how -b reads.
func destCommand(args []string) bool {
	for _, a := range args {
		if a == "--add-server" || a == "--edit-server" {
			return true
		}
		if strings.HasPrefix(a, "--") || !strings.HasPrefix(a, "-") {
			continue
		}
		for j := 1; j < len(a); j++ {
			if a[j] == 'a' || a[j] == 'e' {
				return true
			}
			if o := lookupShort(a[j]); o == nil || o.arg != noArg {
				break // the rest of the word is an argument
			}
		}
	}
	return false
}

func (o Op) markOp() bool { return o == OpAddMark || o == OpDelMark || o == OpGetMark }

// occurrence is one option found on the command line.
type occurrence struct {
	opt *option
	val string
	has bool
}

// parser holds what ParseArgs learns while it applies the options.
type parser struct {
	cmd         *Command
	op          Op // the command, found before any option is applied
	positional  []string
	weightGiven bool
	fwdGiven    bool
	sorry       string
	markTargets []string
	v6          bool   // -6
	netmask     string // -M, read in finish
}

// ParseArgs parses ipvsadm's arguments (without the program name) as
// ipvsadm 1.31 does: short options may be combined (-Ln) and take their
// argument attached or as the next word; long options take "=value" or
// the next word; -p takes an optional timeout.
func ParseArgs(args []string) (*Command, error) {
	occ, positional, err := scan(args)
	if err != nil {
		return nil, err
	}
	p := &parser{cmd: &Command{Given: map[string]bool{}}, positional: positional}
	// The command decides how -t/-u values and check options read.
	for _, o := range occ {
		if o.opt.op != OpNone {
			p.op = o.opt.op
			break
		}
	}
	for _, o := range occ {
		if err := p.apply(o); err != nil {
			return nil, err
		}
	}
	if err := p.finish(); err != nil {
		return nil, err
	}
	return p.cmd, p.cmd.check()
}

// scan splits args into options (with their arguments) and positional
// words.
func scan(args []string) ([]occurrence, []string, error) {
	var occ []occurrence
	var positional []string
	onDest := destCommand(args)
	for i := 0; i < len(args); i++ {
		a := args[i]
		// next takes the following word as an argument, for needArg
		// always, for optArg when it is not an option.
		next := func(o *option) (string, bool) {
			if i+1 < len(args) && (o.arg == needArg || !strings.HasPrefix(args[i+1], "-")) {
				i++
				return args[i], true
			}
			return "", false
		}
		switch {
		case strings.HasPrefix(a, "--") && len(a) > 2:
			name, val, has := strings.Cut(a[2:], "=")
			o := lookupLong(name)
			switch {
			case o == nil:
				return nil, nil, perr("unknown option --%s", name)
			case o.arg == noArg && has:
				return nil, nil, perr("option --%s takes no argument", name)
			case o.arg != noArg && !has:
				val, has = next(o)
				if o.arg == needArg && !has {
					return nil, nil, perr("option --%s needs an argument", name)
				}
			}
			occ = append(occ, occurrence{o, val, has})
		case strings.HasPrefix(a, "-") && len(a) > 1:
			for j := 1; j < len(a); j++ {
				o := lookupShort(a[j])
				if a[j] == 'b' && onDest {
					o = fullnatOption
				}
				if o == nil {
					return nil, nil, perr("invalid option -%c", a[j])
				}
				if o.arg == noArg {
					occ = append(occ, occurrence{o, "", false})
					continue
				}
				// The rest of the word, or the next word, is the argument.
				val, has := a[j+1:], j+1 < len(a)
				if !has {
					val, has = next(o)
					if o.arg == needArg && !has {
						return nil, nil, perr("option -%c needs an argument", a[j])
					}
				}
				occ = append(occ, occurrence{o, val, has})
				break
			}
		default:
			positional = append(positional, a)
		}
	}
	return occ, positional, nil
}

// apply records one option on the command.
func (p *parser) apply(o occurrence) error {
	cmd, name := p.cmd, o.opt.long
	if o.opt.op != OpNone {
		if cmd.Op != OpNone && cmd.Op != o.opt.op {
			return perr("multiple commands specified")
		}
		cmd.Op = o.opt.op
		switch o.opt.op {
		case OpSetTimeout:
			p.positional = append([]string{o.val}, p.positional...)
		case OpStartDaemon, OpStopDaemon:
			if o.val != "master" && o.val != "backup" {
				return perr("illegal %s parameter specified: %q (master or backup)", name, o.val)
			}
			cmd.Daemon.Role = o.val
		}
		return nil
	}
	if cmd.Given[name] && name != "sort" && name != "numeric" {
		return perr("multiple %s options specified", name)
	}
	cmd.Given[name] = true
	return o.opt.set(p, o.val, o.has)
}

// service records -t/-u: a service, or a port group's address for the
// mark commands.
func (p *parser) service(proto Proto, v string) error {
	if p.op.markOp() {
		p.markTargets = append(p.markTargets, v)
		p.cmd.Service.Proto = proto
		return nil
	}
	if p.cmd.HasService {
		return perr("multiple service options specified")
	}
	addr, port, err := parseHostPort(v, proto, true)
	if err != nil {
		return perr("illegal virtual server address[:port] specified: %v", err)
	}
	p.cmd.HasService = true
	p.cmd.Service.Proto, p.cmd.Service.Addr, p.cmd.Service.Port = proto, addr, port
	return nil
}

func (p *parser) fwmark(v string, _ bool) error {
	if p.cmd.HasService {
		return perr("multiple service options specified")
	}
	m, err := strconv.ParseUint(v, 10, 32)
	if err != nil || m == 0 {
		return perr("illegal virtual server fwmark specified: %q", v)
	}
	p.cmd.HasService = true
	p.cmd.Service.FWMark = uint32(m)
	return nil
}

func (p *parser) persistent(v string, has bool) error {
	p.cmd.Service.Persistent = true
	if has {
		t, err := strconv.ParseUint(v, 10, 32)
		if err != nil || t == 0 {
			return perr("illegal timeout for persistent service: %q", v)
		}
		p.cmd.Service.Timeout = uint32(t)
	}
	return nil
}

// finish completes the command once every option is applied: the
// command itself, arguments that belong to it, and ipvsadm's defaults.
func (p *parser) finish() error {
	cmd := p.cmd
	if cmd.Op == OpNone {
		g := cmd.Given
		switch {
		case len(g) == 0 && len(p.positional) == 0:
			cmd.Op = OpList // bare ipvsadm lists
		case g["numeric"] || g["connection"] || g["stats"] || g["rate"]:
			cmd.Op = OpList
		default:
			return perr("no command specified")
		}
	}
	if p.sorry != "" {
		addr, port, err := parseHostPort(p.sorry, cmd.Service.Proto, false)
		if err != nil {
			return perr("illegal sorry server %q: %v", p.sorry, err)
		}
		if port == 0 {
			port = cmd.Service.Port
		}
		cmd.Service.Sorry.Addr = netip.AddrPortFrom(addr, port)
	}
	for _, n := range []string{"on-failure", "sorry-server", "sorry-method"} {
		if cmd.Given[n] && cmd.Op != OpAddService && cmd.Op != OpEditService {
			return perr("--%s is for -A and -E", n)
		}
	}
	if cmd.Given["check"] || cmd.Given["rise"] || cmd.Given["fall"] {
		switch cmd.Op {
		case OpAddService, OpEditService, OpAddDest, OpEditDest:
		default:
			return perr("health-check options are for -A, -E, -a and -e")
		}
	}
	for _, n := range []string{"mcast-interface", "syncid", "sync-maxlen", "mcast-group", "mcast-port", "mcast-ttl", "sync-key-file"} {
		if cmd.Given[n] && cmd.Op != OpStartDaemon {
			return perr("--%s is for --start-daemon", n)
		}
	}
	if cmd.Op == OpStartDaemon && cmd.Daemon.Interface == "" {
		return perr("--start-daemon needs --mcast-interface")
	}
	if cmd.Op == OpSetTimeout {
		if err := p.timeouts(); err != nil {
			return err
		}
	}
	if len(p.positional) > 0 {
		return perr("unexpected argument %q", p.positional[0])
	}
	if cmd.Op.markOp() {
		return p.marks()
	}
	if cmd.HasService && cmd.Service.FWMark != 0 && cmd.Service.Proto == 0 {
		cmd.Service.Proto = TCP
	}
	if p.v6 {
		if cmd.Service.FWMark == 0 {
			return perr("-6 must go with -f (an IPv6 firewall-mark service); an address service's family is its address's")
		}
		cmd.Service.V6 = true
	}
	if p.netmask != "" {
		m, err := parseNetmask(p.netmask, cmd.Service.IsV6())
		if err != nil {
			return perr("%v", err)
		}
		cmd.Service.Netmask = m
	}
	if cmd.HasDest && cmd.Service.FWMark == 0 && (cmd.Dest.Port == 0 || !cmd.Dest.Fwd.Rewrites()) {
		// ipvsadm: a real server without a port takes the virtual
		// port, and so does every direct-routing or tunnel real (those
		// methods cannot change the port; ipvsadm overrides it
		// silently, so "-r RS:80 -g" on a :443 service means RS:443).
		cmd.Dest.Port = cmd.Service.Port
	}
	if !p.weightGiven {
		cmd.Dest.Weight = DefaultWeight
	}
	if cmd.Op == OpAddService || cmd.Op == OpEditService {
		cmd.Service.SetDefaults()
	}
	return nil
}

// timeouts reads --set's three values (tcp tcpfin udp).
func (p *parser) timeouts() error {
	if len(p.positional) != 3 {
		return perr("--set needs three timeouts: tcp tcpfin udp")
	}
	for i, s := range p.positional {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 || v > MaxTimeout {
			return perr("illegal timeout %q (0..%d seconds)", s, MaxTimeout)
		}
		p.cmd.Timeouts[i] = v
	}
	p.positional = nil
	return nil
}

// marks builds the port-group rules of --add-mark and --del-mark.
func (p *parser) marks() error {
	cmd := p.cmd
	if cmd.Service.FWMark == 0 && cmd.Op != OpGetMark {
		return perr("--%s needs a mark (-f MARK)", cmd.Op)
	}
	for _, v := range p.markTargets {
		rules, err := parseMarkTarget(cmd.Service.FWMark, cmd.Service.Proto, v)
		if err != nil {
			return perr("illegal port group address[:ports] specified: %v", err)
		}
		cmd.Marks = append(cmd.Marks, rules...)
	}
	if cmd.Op == OpAddMark && len(cmd.Marks) == 0 {
		return perr("--add-mark needs -t or -u ADDR[:PORTS]")
	}
	for _, r := range cmd.Marks {
		if err := r.Validate(); err != nil {
			return perr("%v", err)
		}
	}
	cmd.HasService = false
	return nil
}

// check enforces which options each command needs, as ipvsadm does.
func (c *Command) check() error {
	switch c.Op {
	case OpAddService, OpEditService, OpDelService:
		if !c.HasService {
			return perr("%s: no service specified (-t, -u or -f)", c.Op)
		}
		if c.HasDest {
			return perr("%s: -r is for real server commands", c.Op)
		}
	case OpAddDest, OpEditDest, OpDelDest:
		if !c.HasService {
			return perr("%s: no service specified (-t, -u or -f)", c.Op)
		}
		if !c.HasDest {
			return perr("%s: no real server specified (-r)", c.Op)
		}
	case OpAddLaddr, OpDelLaddr, OpGetLaddr:
		if !c.HasService && c.Op != OpGetLaddr {
			return perr("%s: no service specified (-t, -u or -f)", c.Op)
		}
		if !c.LocalAddr.IsValid() && c.Op != OpGetLaddr {
			return perr("%s: no local address specified (-z)", c.Op)
		}
	}
	if c.Given["laddr"] && c.Op != OpAddLaddr && c.Op != OpDelLaddr {
		return perr("-z is for --add-laddr and --del-laddr")
	}
	if c.LocalAddr.IsValid() && c.HasService && c.LocalAddr.Is6() != c.Service.IsV6() {
		return perr("local address %v is not of the service's family (%s)", c.LocalAddr, family(c.Service.IsV6()))
	}
	if c.HasService && (c.Op == OpAddService || c.Op == OpEditService) {
		if err := c.Service.Validate(); err != nil {
			return err
		}
	}
	if c.HasDest && (c.Op == OpAddDest || c.Op == OpEditDest) {
		if err := c.Dest.Validate(c.Service.ServiceKey); err != nil {
			return err
		}
	}
	return nil
}

// parseHostPort parses "ADDR[:PORT]" where PORT may be a service name
// from /etc/services. A service (-t/-u) address needs no port only with
// persistence; that is checked by Service.Validate.
func parseHostPort(s string, proto Proto, service bool) (netip.Addr, uint16, error) {
	host, portStr := s, ""
	switch {
	case strings.HasPrefix(s, "["):
		// [IPv6]:PORT or [IPv6], as ipvsadm writes them.
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return netip.Addr{}, 0, fmt.Errorf("%q: no closing bracket", s)
		}
		host = s[1:end]
		if rest := s[end+1:]; rest != "" {
			if rest[0] != ':' || len(rest) == 1 {
				return netip.Addr{}, 0, fmt.Errorf("%q: want [ADDRESS]:PORT", s)
			}
			portStr = rest[1:]
		}
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() {
			return netip.Addr{}, 0, fmt.Errorf("%q is not an IPv6 address", host)
		}
	case strings.Count(s, ":") == 1:
		i := strings.IndexByte(s, ':')
		host, portStr = s[:i], s[i+1:]
	}
	addr, err := resolveHost(host)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	if portStr == "" {
		return addr, 0, nil
	}
	port, err := parsePort(portStr, proto)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	return addr, port, nil
}

// resolveHost takes an IP address or a host name (as ipvsadm's
// host_to_addr: /etc/hosts, then DNS), the first IPv4 address of a name.
func resolveHost(host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap(), nil
	}
	if host == "" || strings.ContainsAny(host, " /") {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", host)
	}
	a, err := LookupHost(host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address or a known host name", host)
	}
	return a, nil
}

// LookupHost resolves a host name to its first IPv4 address; tests and
// fuzzing replace it to stay off the network.
var LookupHost = func(host string) (netip.Addr, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
	if err != nil {
		return netip.Addr{}, err
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("%s: no IPv4 address", host)
	}
	return addrs[0].Unmap(), nil
}

func parsePort(s string, proto Proto) (uint16, error) {
	if n, err := strconv.ParseUint(s, 10, 16); err == nil {
		return uint16(n), nil
	}
	network := "tcp"
	if proto == UDP {
		network = "udp"
	}
	n, err := net.LookupPort(network, s)
	if err != nil {
		return 0, fmt.Errorf("unknown port %q", s)
	}
	return uint16(n), nil
}

// parseNetmask reads a persistence netmask as ipvsadm's -M does: for an
// IPv4 service a dotted mask (255.255.255.0) or a prefix length, for an
// IPv6 one a prefix length 1..128.
func parseNetmask(s string, v6 bool) (netip.Prefix, error) {
	if v6 {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 128 {
			return netip.Prefix{}, fmt.Errorf("illegal ipv6 netmask specified: %q (1..128)", s)
		}
		return netip.PrefixFrom(netip.IPv6Unspecified(), n), nil
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 && n <= 32 {
		return netip.PrefixFrom(netip.IPv4Unspecified(), n), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Prefix{}, fmt.Errorf("illegal virtual server persistent mask specified: %q", s)
	}
	b := a.As4()
	m := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	ones := 0
	for ones < 32 && m&(1<<(31-ones)) != 0 {
		ones++
	}
	if ones < 32 && m<<ones != 0 {
		return netip.Prefix{}, fmt.Errorf("illegal virtual server persistent mask specified: %q is not contiguous", s)
	}
	return netip.PrefixFrom(netip.IPv4Unspecified(), ones), nil
}

// OptionNames lists every option xipvsadm parses, as typed: --long and,
// where there is one, -s. Shell completion is generated from it.
func OptionNames() []string {
	seen := map[string]bool{}
	var out []string
	for _, o := range options {
		for _, n := range []string{"--" + o.long, string([]byte{'-', o.short})} {
			if n == "-\x00" || seen[n] {
				continue
			}
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}
