package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
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
	// JSON lists services (or with -c connections) as JSON, for
	// scripts (xipvs).
	JSON bool
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
