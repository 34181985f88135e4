package config

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
)

// Errors of operations on the configuration, with ipvsadm's messages
// (libipvs's ipvs_strerror). The daemon returns the same ones.
var (
	ErrServiceExists = errors.New("Service already exists")
	ErrNoService     = errors.New("No such service")
	ErrSvcNotDefined = errors.New("Service not defined")
	ErrDestExists    = errors.New("Destination already exists")
	ErrNoDest        = errors.New("No such destination")
	ErrMarkExists    = errors.New("Port group already exists")
	ErrMarkOverlap   = errors.New("Port group overlaps another")
	ErrNoMark        = errors.New("No such port group")
	ErrLaddrExists   = errors.New("local address already exists")
	ErrNoLaddr       = errors.New("no such local address")
)

// Config is a whole configuration: what xipvsd runs, what a config file
// or an ipvsadm rules file describes, what -S writes.
type Config struct {
	Services []ServiceConfig `json:"services"`
	// index finds a service in Services by key (rebuilt when stale).
	index map[ServiceKey]int
	Marks []MarkRule `json:"marks,omitempty"`
	// Timeouts are --set's tcp, tcpfin and udp seconds; 0 keeps the
	// running (or default) value.
	Timeouts [3]int `json:"timeouts"`
}

// ServiceConfig is a service with its real servers, in the kernel's list
// order (the newest first, as ipvsadm -a inserts), and its FULLNAT local
// addresses.
type ServiceConfig struct {
	Service    Service      `json:"service"`
	Dests      []Dest       `json:"dests"`
	LocalAddrs []netip.Addr `json:"local_addrs,omitempty"`
}

// Clone returns a deep copy of c.
func (c *Config) Clone() *Config {
	out := &Config{Marks: slices.Clone(c.Marks), Timeouts: c.Timeouts}
	for _, s := range c.Services {
		s.Service.SchedFlags = slices.Clone(s.Service.SchedFlags)
		s.Dests = slices.Clone(s.Dests)
		s.LocalAddrs = slices.Clone(s.LocalAddrs)
		out.Services = append(out.Services, s)
	}
	return out
}

// Find returns the index of service k, or -1.
func (c *Config) Find(k ServiceKey) int {
	// An index, so that a configuration of 100,000 services is applied
	// line by line without a linear search per line. It is rebuilt when
	// Services changed length behind its back; a hit is checked.
	if len(c.index) != len(c.Services) {
		c.index = make(map[ServiceKey]int, len(c.Services))
		for i, s := range c.Services {
			c.index[s.Service.ServiceKey] = i
		}
	}
	if i, ok := c.index[k]; ok && i < len(c.Services) && c.Services[i].Service.ServiceKey == k {
		return i
	} else if ok {
		c.index = nil
		return c.Find(k)
	}
	return -1
}

// FindDest returns the index of the real addr:port in s, or -1.
func (s *ServiceConfig) FindDest(addr netip.Addr, port uint16) int {
	return slices.IndexFunc(s.Dests, func(d Dest) bool { return d.Addr == addr && d.Port == port })
}

// Apply performs one configuration command on c, as the daemon would,
// with the daemon's errors; a failed command leaves c unchanged. Commands
// that only read (list, save) and --set of nothing change nothing.
func (c *Config) Apply(cmd *Command) error {
	if err := Allowed(c, cmd); err != nil {
		return err
	}
	k := cmd.Service.ServiceKey
	switch cmd.Op {
	case OpAddService:
		c.Services = append(c.Services, ServiceConfig{Service: cmd.Service})
		if c.index != nil {
			c.index[k] = len(c.Services) - 1
		}
	case OpEditService:
		c.Services[c.Find(k)].Service = cmd.Service
	case OpDelService:
		i := c.Find(k)
		c.Services = slices.Delete(c.Services, i, i+1)
	case OpClear:
		c.Services = nil
	case OpAddDest, OpEditDest, OpDelDest:
		s := &c.Services[c.Find(k)]
		switch j := s.FindDest(cmd.Dest.Addr, cmd.Dest.Port); cmd.Op {
		case OpAddDest:
			s.Dests = slices.Insert(s.Dests, 0, cmd.Dest)
		case OpEditDest:
			s.Dests[j] = cmd.Dest
		default:
			s.Dests = slices.Delete(s.Dests, j, j+1)
		}
	case OpAddLaddr:
		s := &c.Services[c.Find(k)]
		s.LocalAddrs = append(s.LocalAddrs, cmd.LocalAddr)
	case OpDelLaddr:
		s := &c.Services[c.Find(k)]
		j := slices.Index(s.LocalAddrs, cmd.LocalAddr)
		s.LocalAddrs = slices.Delete(s.LocalAddrs, j, j+1)
	case OpAddMark:
		all, err := MergeMarks(c.Marks, cmd.Marks)
		if err != nil {
			return err
		}
		c.Marks = all
	case OpDelMark:
		keep, err := RemoveMarks(c.Marks, cmd.Service.FWMark, cmd.Marks)
		if err != nil {
			return err
		}
		c.Marks = keep
	case OpSetTimeout:
		for i, v := range cmd.Timeouts {
			if v > 0 {
				c.Timeouts[i] = v
			}
		}
	case OpList, OpSave, OpGetMark, OpGetLaddr, OpHelp, OpVersion, OpZero:
	default:
		return fmt.Errorf("%s cannot be used here", cmd.Op)
	}
	return nil
}

// MergeMarks returns have with add appended, refusing a rule that is
// already there or overlaps another (have is not changed).
func MergeMarks(have, add []MarkRule) ([]MarkRule, error) {
	all := slices.Clone(have)
	for _, r := range add {
		for _, o := range all {
			if r == o {
				return nil, fmt.Errorf("%w: port group %s", ErrMarkExists, r)
			}
			if r.Overlaps(o) {
				return nil, fmt.Errorf("%w: %s overlaps %s", ErrMarkOverlap, r, o)
			}
		}
		all = append(all, r)
	}
	return all, nil
}

// Line is one command of a rules file, with its line number.
type Line struct {
	N    int      `json:"n"`
	Args []string `json:"args"`
}

// LineError is a rules-file line that cannot be applied.
type LineError struct {
	N    int
	Text string
	Err  error
}

func (e *LineError) Error() string {
	return fmt.Sprintf("line %d: %s: %v", e.N, e.Text, e.Err)
}

func (e *LineError) Unwrap() error { return e.Err }

// ReadRules reads an ipvsadm rules file (what ipvsadm-save and ipvsadm -S
// write; what ipvsadm -R reads): one command per line, as ipvsadm's
// arguments. Blank lines and lines starting with # are skipped, and a
// leading "ipvsadm" or "xipvsadm" word is allowed, so a shell script's
// lines also read.
func ReadRules(r io.Reader) ([]Line, error) {
	var out []Line
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		args, err := splitWords(text)
		if err != nil {
			return nil, &LineError{N: n, Text: text, Err: err}
		}
		if len(args) > 0 {
			switch strings.TrimPrefix(args[0], "/sbin/") {
			case "ipvsadm", "xipvsadm", "/usr/sbin/ipvsadm":
				args = args[1:]
			}
		}
		out = append(out, Line{N: n, Args: args})
	}
	return out, sc.Err()
}

// splitWords splits a line as a shell would for ipvsadm's arguments:
// on blanks, with '...' and "..." quoting.
func splitWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	in, quote := false, byte(0)
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case quote != 0 && ch == quote:
			quote = 0
		case quote != 0:
			cur.WriteByte(ch)
		case ch == '\'' || ch == '"':
			quote, in = ch, true
		case ch == ' ' || ch == '\t':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(ch)
			in = true
		}
	}
	if quote != 0 {
		return nil, errors.New("unterminated quote")
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}

// parseLine parses one rules-file line; only configuration commands
// belong in a rules file.
func parseLine(l Line) (*Command, error) {
	text := strings.Join(l.Args, " ")
	cmd, err := ParseArgs(l.Args)
	if err != nil {
		return nil, &LineError{N: l.N, Text: text, Err: err}
	}
	switch cmd.Op {
	case OpRestore, OpSave, OpList, OpHelp, OpVersion, OpGetMark, OpGetLaddr, OpZero:
		return nil, &LineError{N: l.N, Text: text, Err: fmt.Errorf("%s is not a configuration command", cmd.Op)}
	}
	return cmd, nil
}

// CheckLines parses every line without applying any: the first that
// does not parse is returned as a *LineError.
func CheckLines(lines []Line) error {
	for _, l := range lines {
		if _, err := parseLine(l); err != nil {
			return err
		}
	}
	return nil
}

// ApplyLines parses and applies rules-file lines to a copy of base and
// returns it; the first line that does not parse or apply stops it with
// a *LineError, and base is untouched either way.
func ApplyLines(base *Config, lines []Line) (*Config, error) {
	c := base.Clone()
	for _, l := range lines {
		cmd, err := parseLine(l)
		if err != nil {
			return nil, err
		}
		if err := c.Apply(cmd); err != nil {
			return nil, &LineError{N: l.N, Text: strings.Join(l.Args, " "), Err: err}
		}
	}
	c.index = nil // a lookup aid, not part of the value
	return c, nil
}

// ParseRules reads a rules file into a configuration (applied to an
// empty one).
func ParseRules(r io.Reader) (*Config, error) {
	lines, err := ReadRules(r)
	if err != nil {
		return nil, err
	}
	return ApplyLines(&Config{}, lines)
}

// SplitDaemons separates a rules file's connection sync daemon lines
// (--start-daemon, --stop-daemon: ipvsadm -R runs them as it runs every
// line) from its rules. Each daemon line is parsed; one that does not
// parse is returned as a *LineError.
func SplitDaemons(lines []Line) (rules []Line, daemons []*Command, err error) {
	for _, l := range lines {
		cmd, err := ParseArgs(l.Args)
		if err == nil && (cmd.Op == OpStartDaemon || cmd.Op == OpStopDaemon) {
			daemons = append(daemons, cmd)
			continue
		}
		rules = append(rules, l)
	}
	return rules, daemons, nil
}
