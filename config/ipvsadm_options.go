package config

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// ipvsadm's options: what each takes and does to the command being
// parsed (ipvsadm.go).

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
	{long: "json", set: listFlag(func(l *ListFormat) { l.JSON = true })},

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
		if n, err := strconv.Atoi(v); err == nil {
			c.Status, c.StatusCodes = n, ""
			return nil
		}
		if _, err := ParseStatusCodes(v); err != nil {
			return perr("illegal check status %q: want a code, or codes and ranges as 200,300-399", v)
		}
		c.Status, c.StatusCodes = 0, v
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
