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
)

var opNames = map[Op]string{
	OpAddService: "add-service", OpEditService: "edit-service", OpDelService: "delete-service",
	OpClear: "clear", OpRestore: "restore", OpSave: "save", OpAddDest: "add-server",
	OpEditDest: "edit-server", OpDelDest: "delete-server", OpList: "list", OpZero: "zero",
	OpSetTimeout: "set", OpHelp: "help", OpVersion: "version",
	OpAddMark: "add-mark", OpDelMark: "del-mark", OpGetMark: "get-mark",
	OpAddLaddr: "add-laddr", OpDelLaddr: "del-laddr", OpGetLaddr: "get-laddr",
}

func (o Op) String() string { return opNames[o] }

// ListFormat is how -L prints.
type ListFormat struct {
	Numeric, Conn, Stats, Rate, Exact, Timeout, Thresholds, PersistentConn, NoSort bool
	// Health lists the health checks' states (xipvs).
	Health bool
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
	// Given records which options appeared, by long name.
	Given map[string]bool
}

// ParseError is a command line ipvsadm would refuse; it exits with 2.
type ParseError struct{ Msg string }

func (e *ParseError) Error() string { return e.Msg }

func perr(format string, args ...any) error {
	return &ParseError{Msg: fmt.Sprintf(format, args...)}
}

type optSpec struct {
	long  string
	short byte
	arg   int // 0 none, 1 required, 2 optional
}

var optSpecs = []optSpec{
	{"add-service", 'A', 0}, {"edit-service", 'E', 0}, {"delete-service", 'D', 0},
	{"clear", 'C', 0}, {"restore", 'R', 0}, {"save", 'S', 0},
	{"add-server", 'a', 0}, {"edit-server", 'e', 0}, {"delete-server", 'd', 0},
	{"list", 'L', 0}, {"list", 'l', 0}, {"zero", 'Z', 0}, {"set", 0, 1},
	{"help", 'h', 0}, {"version", 'v', 0},
	{"tcp-service", 't', 1}, {"udp-service", 'u', 1}, {"fwmark-service", 'f', 1},
	{"scheduler", 's', 1}, {"persistent", 'p', 2}, {"netmask", 'M', 1},
	{"sched-flags", 'b', 1}, {"real-server", 'r', 1},
	{"gatewaying", 'g', 0}, {"ipip", 'i', 0}, {"masquerading", 'm', 0},
	{"weight", 'w', 1}, {"u-threshold", 'x', 1}, {"l-threshold", 'y', 1},
	{"numeric", 'n', 0}, {"connection", 'c', 0}, {"timeout", 0, 0},
	{"stats", 0, 0}, {"rate", 0, 0}, {"exact", 0, 0}, {"thresholds", 0, 0},
	{"persistent-conn", 0, 0}, {"nosort", 0, 0}, {"sort", 0, 0}, {"ops", 'o', 0},
	{"add-mark", 0, 0}, {"del-mark", 0, 0}, {"get-mark", 0, 0},
	{"fullnat", 0, 0}, {"add-laddr", 'P', 0}, {"del-laddr", 'Q', 0}, {"get-laddr", 'G', 0},
	{"laddr", 'z', 1}, {"ifname", 'F', 1}, {"exact", 'X', 0},
	{"tun-type", 0, 1}, {"tun-port", 0, 1}, {"tun-nocsum", 0, 0}, {"tun-csum", 0, 0}, {"tun-remcsum", 0, 0},
	// Accepted only to be refused with a reason (see unsupported).
	{"pe", 0, 1}, {"sctp-service", 'q', 1}, {"ipv6", '6', 0},
	{"start-daemon", 0, 1}, {"stop-daemon", 0, 1}, {"daemon", 0, 0},
	{"mcast-interface", 0, 1}, {"syncid", 0, 1},
	// xipvs's health checks (on -A/-E for the service's reals, on -a/-e
	// for one real), failure policy and sorry server (-A/-E).
	{"check", 0, 1}, {"check-port", 0, 1}, {"check-path", 0, 1}, {"check-status", 0, 1},
	{"check-body", 0, 1}, {"check-send", 0, 1}, {"check-expect", 0, 1}, {"check-exec", 0, 1},
	{"check-interval", 0, 1}, {"check-timeout", 0, 1}, {"rise", 0, 1}, {"fall", 0, 1},
	{"on-failure", 0, 1}, {"sorry-server", 0, 1}, {"sorry-method", 0, 1},
	{"health", 0, 0},
}

// unsupported are ipvsadm options xipvs refuses, with the reason.
var unsupported = map[string]string{
	"pe":              "persistence engines (--pe sip) are not supported: xipvs does not parse SIP",
	"sctp-service":    "SCTP services (-q) are not supported: the data plane handles TCP and UDP",
	"ipv6":            "IPv6 (-6) is not supported yet: the data plane is IPv4 only",
	"start-daemon":    "the connection synchronization daemon is not supported: connections survive a restart of xipvsd through pinned maps, not by syncing to a backup",
	"stop-daemon":     "the connection synchronization daemon is not supported",
	"daemon":          "the connection synchronization daemon is not supported",
	"mcast-interface": "the connection synchronization daemon is not supported",
	"syncid":          "the connection synchronization daemon is not supported",
	"tun-port":        "GUE tunnels are not supported: -i is IP-in-IP (--tun-type ipip)",
	"tun-nocsum":      "GUE tunnels are not supported: -i is IP-in-IP (--tun-type ipip)",
	"tun-csum":        "GUE tunnels are not supported: -i is IP-in-IP (--tun-type ipip)",
	"tun-remcsum":     "GUE tunnels are not supported: -i is IP-in-IP (--tun-type ipip)",
}

// fullnatSpec is what -b means on -a and -e (DPVS's ipvsadm): FULLNAT
// forwarding, no argument. On -A and -E it stays --sched-flags.
var fullnatSpec = lookupLong("fullnat")

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
			if spec := lookupShort(a[j]); spec == nil || spec.arg != 0 {
				break // the rest of the word is an argument
			}
		}
	}
	return false
}

func lookupShort(c byte) *optSpec {
	for i := range optSpecs {
		if optSpecs[i].short == c {
			return &optSpecs[i]
		}
	}
	return nil
}

func lookupLong(name string) *optSpec {
	for i := range optSpecs {
		if optSpecs[i].long == name {
			return &optSpecs[i]
		}
	}
	return nil
}

var commandOps = map[string]Op{
	"add-service": OpAddService, "edit-service": OpEditService, "delete-service": OpDelService,
	"clear": OpClear, "restore": OpRestore, "save": OpSave, "add-server": OpAddDest,
	"edit-server": OpEditDest, "delete-server": OpDelDest, "list": OpList, "zero": OpZero,
	"set": OpSetTimeout, "help": OpHelp, "version": OpVersion,
	"add-mark": OpAddMark, "del-mark": OpDelMark, "get-mark": OpGetMark,
	"add-laddr": OpAddLaddr, "del-laddr": OpDelLaddr, "get-laddr": OpGetLaddr,
}

func (o Op) markOp() bool { return o == OpAddMark || o == OpDelMark || o == OpGetMark }

// ParseArgs parses ipvsadm's arguments (without the program name) as
// ipvsadm 1.31 does: short options may be combined (-Ln) and take their
// argument attached or as the next word; long options take "=value" or
// the next word; -p takes an optional timeout.
func ParseArgs(args []string) (*Command, error) {
	cmd := &Command{Given: map[string]bool{}}
	var positional []string
	type occurrence struct {
		spec *optSpec
		val  string
		has  bool
	}
	var occ []occurrence
	onDest := destCommand(args)
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case strings.HasPrefix(a, "--") && len(a) > 2:
			name, val, hasVal := strings.Cut(a[2:], "=")
			spec := lookupLong(name)
			if spec == nil {
				return nil, perr("unknown option --%s", name)
			}
			if spec.arg == 0 && hasVal {
				return nil, perr("option --%s takes no argument", name)
			}
			if spec.arg == 1 && !hasVal {
				if i+1 >= len(args) {
					return nil, perr("option --%s needs an argument", name)
				}
				i++
				val, hasVal = args[i], true
			}
			if spec.arg == 2 && !hasVal && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				i++
				val, hasVal = args[i], true
			}
			occ = append(occ, occurrence{spec, val, hasVal})
		case strings.HasPrefix(a, "-") && len(a) > 1:
			for j := 1; j < len(a); j++ {
				spec := lookupShort(a[j])
				if a[j] == 'b' && onDest {
					spec = fullnatSpec
				}
				if spec == nil {
					return nil, perr("invalid option -%c", a[j])
				}
				if spec.arg == 0 {
					occ = append(occ, occurrence{spec, "", false})
					continue
				}
				rest := a[j+1:]
				if rest != "" {
					occ = append(occ, occurrence{spec, rest, true})
					break
				}
				switch {
				case spec.arg == 1:
					if i+1 >= len(args) {
						return nil, perr("option -%c needs an argument", a[j])
					}
					i++
					occ = append(occ, occurrence{spec, args[i], true})
				case i+1 < len(args) && !strings.HasPrefix(args[i+1], "-"):
					i++
					occ = append(occ, occurrence{spec, args[i], true})
				default:
					occ = append(occ, occurrence{spec, "", false})
				}
				break
			}
		default:
			positional = append(positional, a)
		}
	}

	// The command decides how -t/-u values read, so find it first.
	op := OpNone
	for _, o := range occ {
		if x, ok := commandOps[o.spec.long]; ok && op == OpNone {
			op = x
		}
	}
	weightGiven := false
	sorryArg := ""
	var markTargets []occurrence
	for _, o := range occ {
		name := o.spec.long
		if op, ok := commandOps[name]; ok {
			if cmd.Op != OpNone && cmd.Op != op {
				return nil, perr("multiple commands specified")
			}
			cmd.Op = op
			if op == OpSetTimeout {
				positional = append([]string{o.val}, positional...)
			}
			continue
		}
		if cmd.Given[name] && name != "sort" && name != "numeric" {
			return nil, perr("multiple %s options specified", name)
		}
		cmd.Given[name] = true
		if why, ok := unsupported[name]; ok {
			return nil, perr("%s", why)
		}
		chk := &cmd.Service.Check
		if op == OpAddDest || op == OpEditDest {
			chk = &cmd.Dest.Check
		}
		switch name {
		case "check":
			chk.Type = o.val
		case "check-port":
			p, err := strconv.ParseUint(o.val, 10, 16)
			if err != nil || p == 0 {
				return nil, perr("illegal check port %q", o.val)
			}
			chk.Port = uint16(p)
		case "check-path":
			chk.Path = o.val
		case "check-body":
			chk.Body = o.val
		case "check-send":
			chk.Send = o.val
		case "check-expect":
			chk.Expect = o.val
		case "check-exec":
			chk.Exec = o.val
		case "check-status":
			v, err := strconv.Atoi(o.val)
			if err != nil {
				return nil, perr("illegal check status %q", o.val)
			}
			chk.Status = v
		case "check-interval", "check-timeout":
			d, err := parseSeconds(o.val)
			if err != nil || d == 0 {
				return nil, perr("illegal --%s %q (seconds)", name, o.val)
			}
			if name == "check-interval" {
				chk.Interval = d
			} else {
				chk.Timeout = d
			}
		case "rise", "fall":
			v, err := strconv.Atoi(o.val)
			if err != nil || v < 1 || v > 1000 {
				return nil, perr("illegal --%s %q (1..1000)", name, o.val)
			}
			if name == "rise" {
				chk.Rise = v
			} else {
				chk.Fall = v
			}
		case "on-failure":
			cmd.Service.OnFailure = o.val
		case "sorry-server":
			sorryArg = o.val
		case "sorry-method":
			f, ok := methods[strings.ToLower(o.val)]
			if !ok {
				return nil, perr("illegal --sorry-method %q: want dr, tun, nat or fullnat", o.val)
			}
			cmd.Service.Sorry.Fwd = f
		case "health":
			cmd.List.Health = true
		case "tun-type":
			if o.val != "ipip" {
				return nil, perr("tunnel type %q is not supported: -i is IP-in-IP (--tun-type ipip)", o.val)
			}
		case "tcp-service", "udp-service":
			proto := TCP
			if name == "udp-service" {
				proto = UDP
			}
			if op.markOp() {
				markTargets = append(markTargets, o)
				cmd.Service.Proto = proto
				continue
			}
			if cmd.HasService {
				return nil, perr("multiple service options specified")
			}
			addr, port, err := parseHostPort(o.val, proto, true)
			if err != nil {
				return nil, perr("illegal virtual server address[:port] specified: %v", err)
			}
			cmd.HasService = true
			cmd.Service.Proto, cmd.Service.Addr, cmd.Service.Port = proto, addr, port
		case "fwmark-service":
			if cmd.HasService {
				return nil, perr("multiple service options specified")
			}
			m, err := strconv.ParseUint(o.val, 10, 32)
			if err != nil || m == 0 {
				return nil, perr("illegal virtual server fwmark specified: %q", o.val)
			}
			cmd.HasService = true
			cmd.Service.FWMark = uint32(m)
		case "scheduler":
			cmd.Service.Scheduler = o.val
		case "persistent":
			cmd.Service.Persistent = true
			cmd.Service.Timeout = DefaultTimeout
			if o.has {
				t, err := strconv.ParseUint(o.val, 10, 32)
				if err != nil || t == 0 {
					return nil, perr("illegal timeout for persistent service: %q", o.val)
				}
				cmd.Service.Timeout = uint32(t)
			}
		case "netmask":
			p, err := parseNetmask(o.val)
			if err != nil {
				return nil, perr("illegal virtual server persistent mask specified: %q", o.val)
			}
			cmd.Service.Netmask = p
		case "sched-flags":
			cmd.Service.SchedFlags = strings.Split(o.val, ",")
		case "real-server":
			addr, port, err := parseHostPort(o.val, cmd.Service.Proto, false)
			if err != nil {
				return nil, perr("illegal real server address[:port] specified: %v", err)
			}
			cmd.HasDest = true
			cmd.Dest.Addr, cmd.Dest.Port = addr, port
		case "gatewaying", "ipip", "masquerading", "fullnat":
			if b2i(cmd.Given["gatewaying"])+b2i(cmd.Given["ipip"])+b2i(cmd.Given["masquerading"])+b2i(cmd.Given["fullnat"]) > 1 {
				return nil, perr("multiple forwarding methods specified")
			}
			cmd.Dest.Fwd = map[string]Fwd{"gatewaying": FwdRoute, "ipip": FwdTunnel, "masquerading": FwdMasq, "fullnat": FwdFullNAT}[name]
		case "laddr":
			a, err := netip.ParseAddr(o.val)
			if err != nil || !a.Is4() {
				return nil, perr("illegal local address specified: %q", o.val)
			}
			cmd.LocalAddr = a
		case "ifname":
			// DPVS names the device that holds the local address; xipvs
			// finds the egress from the routing table. Accepted so DPVS
			// lines run unchanged.
		case "weight":
			w, err := strconv.Atoi(o.val)
			if err != nil || w < 0 || w > MaxWeight {
				return nil, perr("illegal weight specified: %q", o.val)
			}
			cmd.Dest.Weight = w
			weightGiven = true
		case "u-threshold", "l-threshold":
			t, err := strconv.ParseUint(o.val, 10, 32)
			if err != nil {
				return nil, perr("illegal %s specified: %q", name, o.val)
			}
			if name == "u-threshold" {
				cmd.Dest.UThreshold = uint32(t)
			} else {
				cmd.Dest.LThreshold = uint32(t)
			}
		case "numeric":
			cmd.List.Numeric = true
		case "connection":
			cmd.List.Conn = true
		case "timeout":
			cmd.List.Timeout = true
		case "stats":
			cmd.List.Stats = true
		case "rate":
			cmd.List.Rate = true
		case "exact":
			cmd.List.Exact = true
		case "thresholds":
			cmd.List.Thresholds = true
		case "persistent-conn":
			cmd.List.PersistentConn = true
		case "nosort":
			cmd.List.NoSort = true
		case "sort":
			cmd.List.NoSort = false
		case "ops":
			cmd.Service.OnePacket = true
		}
	}
	if cmd.Op == OpNone {
		if len(occ) == 0 && len(positional) == 0 {
			cmd.Op = OpList // bare ipvsadm lists
		} else if cmd.Given["numeric"] || cmd.Given["connection"] || cmd.Given["stats"] || cmd.Given["rate"] {
			cmd.Op = OpList
		} else {
			return nil, perr("no command specified")
		}
	}
	if sorryArg != "" {
		addr, port, err := parseHostPort(sorryArg, cmd.Service.Proto, false)
		if err != nil {
			return nil, perr("illegal sorry server %q: %v", sorryArg, err)
		}
		if port == 0 {
			port = cmd.Service.Port
		}
		cmd.Service.Sorry.Addr = netip.AddrPortFrom(addr, port)
	}
	for _, n := range []string{"on-failure", "sorry-server", "sorry-method"} {
		if cmd.Given[n] && cmd.Op != OpAddService && cmd.Op != OpEditService {
			return nil, perr("--%s is for -A and -E", n)
		}
	}
	if cmd.Given["check"] || cmd.Given["rise"] || cmd.Given["fall"] {
		switch cmd.Op {
		case OpAddService, OpEditService, OpAddDest, OpEditDest:
		default:
			return nil, perr("health-check options are for -A, -E, -a and -e")
		}
	}
	if cmd.Op == OpSetTimeout {
		if len(positional) != 3 {
			return nil, perr("--set needs three timeouts: tcp tcpfin udp")
		}
		for i, p := range positional {
			v, err := strconv.Atoi(p)
			if err != nil || v < 0 {
				return nil, perr("illegal timeout %q", p)
			}
			cmd.Timeouts[i] = v
		}
		positional = nil
	}
	if len(positional) > 0 {
		return nil, perr("unexpected argument %q", positional[0])
	}
	if op.markOp() {
		if cmd.Service.FWMark == 0 && op != OpGetMark {
			return nil, perr("--%s needs a mark (-f MARK)", op)
		}
		for _, o := range markTargets {
			rules, err := parseMarkTarget(cmd.Service.FWMark, cmd.Service.Proto, o.val)
			if err != nil {
				return nil, perr("illegal port group address[:ports] specified: %v", err)
			}
			cmd.Marks = append(cmd.Marks, rules...)
		}
		if op == OpAddMark && len(cmd.Marks) == 0 {
			return nil, perr("--add-mark needs -t or -u ADDR[:PORTS]")
		}
		for _, r := range cmd.Marks {
			if err := r.Validate(); err != nil {
				return nil, perr("%v", err)
			}
		}
		cmd.HasService = false
		return cmd, nil
	}
	if cmd.HasService && cmd.Service.FWMark != 0 && cmd.Service.Proto == 0 {
		cmd.Service.Proto = TCP
	}
	if cmd.HasDest && cmd.Service.FWMark == 0 && (cmd.Dest.Port == 0 || !cmd.Dest.Fwd.Rewrites()) {
		// ipvsadm: a real server without a port takes the virtual
		// port, and so does every direct-routing or tunnel real (those
		// methods cannot change the port; ipvsadm overrides it
		// silently, so "-r RS:80 -g" on a :443 service means RS:443).
		cmd.Dest.Port = cmd.Service.Port
	}
	if !weightGiven {
		cmd.Dest.Weight = DefaultWeight
	}
	if cmd.Service.Persistent && !cmd.Service.Netmask.IsValid() {
		cmd.Service.Netmask = netip.PrefixFrom(netip.IPv4Unspecified(), 32)
	}
	if (cmd.Op == OpAddService || cmd.Op == OpEditService) && cmd.Service.Scheduler == "" {
		cmd.Service.Scheduler = DefaultScheduler
	}
	return cmd, cmd.check()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
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
	if i := strings.LastIndexByte(s, ':'); i >= 0 && !strings.Contains(s[:i], ":") {
		host, portStr = s[:i], s[i+1:]
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
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

// parseNetmask accepts a dotted mask (255.255.255.0) or a prefix length.
func parseNetmask(s string) (netip.Prefix, error) {
	if n, err := strconv.Atoi(s); err == nil && n >= 0 && n <= 32 {
		return netip.PrefixFrom(netip.IPv4Unspecified(), n), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Prefix{}, fmt.Errorf("bad netmask %q", s)
	}
	b := a.As4()
	m := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	ones := 0
	for ones < 32 && m&(1<<(31-ones)) != 0 {
		ones++
	}
	if ones < 32 && m<<ones != 0 {
		return netip.Prefix{}, fmt.Errorf("netmask %q is not contiguous", s)
	}
	return netip.PrefixFrom(netip.IPv4Unspecified(), ones), nil
}
