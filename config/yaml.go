package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// File is xipvsd's declarative configuration file (YAML). Every field is
// optional; an unknown field is an error, so a typo is not ignored.
//
//	interfaces: [eth0]
//	timeouts: {tcp: 900, tcpfin: 120, udp: 300}
//	marks:
//	  - {mark: 6666, tcp: "192.168.0.220:80,443"}
//	services:
//	  - tcp: 192.168.0.220:80        # or udp: ADDR:PORT, or fwmark: N
//	    scheduler: wrr               # default wlc
//	    persistent: 300              # seconds; omit for none
//	    netmask: 255.255.255.0
//	    sched_flags: [sh-port]
//	    local_addrs: [10.0.0.100]    # FULLNAT
//	    reals:
//	      - {addr: 192.168.0.10:80, method: dr, weight: 2}
//	      - {addr: 192.168.0.11, method: nat, u_threshold: 1000}
//	sync_daemons:                    # ipvsadm --start-daemon
//	  - {state: master, mcast_interface: eth0, syncid: 7}
//	bgp:                             # see FileBGP
//	  asn: 65001
//	  router_id: 10.0.0.2
//	  peers: [{addr: 10.0.0.1, asn: 65000}]
type File struct {
	Interfaces []string      `yaml:"interfaces"`
	BGP        *FileBGP      `yaml:"bgp"`
	Sync       []FileSync    `yaml:"sync_daemons"`
	Timeouts   *FileTimeouts `yaml:"timeouts"`
	Marks      []FileMark    `yaml:"marks"`
	Services   []FileService `yaml:"services"`
}

// FileTimeouts are --set's timeouts in seconds.
type FileTimeouts struct {
	TCP    int `yaml:"tcp"`
	TCPFin int `yaml:"tcpfin"`
	UDP    int `yaml:"udp"`
}

// FileMark is a port group: --add-mark -f Mark -t TCP / -u UDP.
type FileMark struct {
	Mark uint32 `yaml:"mark"`
	TCP  string `yaml:"tcp"`
	UDP  string `yaml:"udp"`
}

// FileService is a virtual service and its real servers.
type FileService struct {
	TCP        string     `yaml:"tcp"`
	UDP        string     `yaml:"udp"`
	FWMark     uint32     `yaml:"fwmark"`
	IPv6       bool       `yaml:"ipv6"` // an IPv6 fwmark service (-f MARK -6)
	Scheduler  string     `yaml:"scheduler"`
	Persistent *uint32    `yaml:"persistent"`
	Netmask    string     `yaml:"netmask"`
	SchedFlags []string   `yaml:"sched_flags"`
	OnePacket  bool       `yaml:"ops"`
	SynProxy   bool       `yaml:"synproxy"`
	LocalAddrs []string   `yaml:"local_addrs"`
	Reals      []FileReal `yaml:"reals"`
	// Check is the health check of every real; OnFailure is quiesce
	// (default) or remove; Sorry takes new flows while all reals fail.
	Check     *FileCheck `yaml:"check"`
	OnFailure string     `yaml:"on_failure"`
	Sorry     *FileReal  `yaml:"sorry_server"`
}

// FileCheck is a health check (see Check; durations in seconds or Go's
// form: 2, 0.5, 500ms).
type FileCheck struct {
	Type   string `yaml:"type"`
	Port   uint16 `yaml:"port"`
	Path   string `yaml:"path"`
	Status int    `yaml:"status"`
	// StatusCodes: codes and ranges that pass instead, "200,300-399".
	StatusCodes string `yaml:"status_codes"`
	Body        string `yaml:"body"`
	Digest      string `yaml:"digest"`
	// StartDown: reals are down until their first check passes.
	StartDown bool   `yaml:"start_down"`
	Send      string `yaml:"send"`
	Expect    string `yaml:"expect"`
	Exec      string `yaml:"exec"`
	Interval  string `yaml:"interval"`
	Timeout   string `yaml:"timeout"`
	Rise      int    `yaml:"rise"`
	Fall      int    `yaml:"fall"`
}

func (fc *FileCheck) check() (Check, error) {
	if fc == nil {
		return Check{}, nil
	}
	c := Check{Type: fc.Type, Port: fc.Port, Path: fc.Path, Status: fc.Status, StatusCodes: fc.StatusCodes, Body: fc.Body, Digest: strings.ToLower(fc.Digest), StartDown: fc.StartDown, Send: fc.Send,
		Expect: fc.Expect, Exec: fc.Exec, Rise: fc.Rise, Fall: fc.Fall}
	if c.Type == "" {
		return Check{}, invalid("check: no type (tcp, http, https, udp, exec or none)")
	}
	for _, d := range []struct {
		s   string
		dst *time.Duration
	}{{fc.Interval, &c.Interval}, {fc.Timeout, &c.Timeout}} {
		if d.s == "" {
			continue
		}
		v, err := parseSeconds(d.s)
		if err != nil || v == 0 {
			return Check{}, invalid("check: bad duration %q", d.s)
		}
		*d.dst = v
	}
	return c, c.Validate()
}

// FileReal is a real server. Method is dr (the default), tun, nat or
// fullnat; ipvsadm's letters g, i, m and b are accepted too.
type FileReal struct {
	Addr       string     `yaml:"addr"`
	Method     string     `yaml:"method"`
	Weight     *int       `yaml:"weight"`
	UThreshold uint32     `yaml:"u_threshold"`
	LThreshold uint32     `yaml:"l_threshold"`
	Check      *FileCheck `yaml:"check"`
}

// Loaded is what a configuration file holds: the services (Config), and
// from a YAML file the interfaces and the BGP speaker's settings.
type Loaded struct {
	Config     *Config
	Interfaces []string
	BGP        *BGP
	// Sync are the connection sync daemons to run (at most a master
	// and a backup).
	Sync []SyncDaemon
	// Keepalived says, for a keepalived.conf, what became of each line.
	Keepalived []KeepalivedLine
}

// FileSync is a connection sync daemon in the YAML file, with
// ipvsadm --start-daemon's option names.
type FileSync struct {
	State     string `yaml:"state"`
	Interface string `yaml:"mcast_interface"`
	SyncID    uint8  `yaml:"syncid"`
	MaxLen    int    `yaml:"sync_maxlen"`
	Group     string `yaml:"mcast_group"`
	Port      uint16 `yaml:"mcast_port"`
	TTL       uint8  `yaml:"mcast_ttl"`
	KeyFile   string `yaml:"sync_key_file"`
}

func (f FileSync) daemon() (SyncDaemon, error) {
	d := SyncDaemon{Role: f.State, Interface: f.Interface, SyncID: f.SyncID, MaxLen: f.MaxLen, Port: f.Port, TTL: f.TTL, KeyFile: f.KeyFile}
	if d.Role != "master" && d.Role != "backup" {
		return d, invalid("sync_daemons: state %q: want master or backup", f.State)
	}
	if d.Interface == "" {
		return d, invalid("sync_daemons: %s: no mcast_interface", d.Role)
	}
	if f.Group != "" {
		g, err := netip.ParseAddr(f.Group)
		if err != nil || !g.IsMulticast() {
			return d, invalid("sync_daemons: %s: mcast_group %q is not a multicast address", d.Role, f.Group)
		}
		d.Group = g
	}
	return d, nil
}

// ParseYAML reads a YAML configuration file into a Config; the error
// names the offending service or real.
func ParseYAML(r io.Reader) (*Config, []string, error) {
	l, err := ParseYAMLFile(r)
	if err != nil {
		return nil, nil, err
	}
	return l.Config, l.Interfaces, nil
}

// ParseYAMLFile reads a whole YAML configuration file.
func ParseYAMLFile(r io.Reader) (*Loaded, error) {
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	var f File
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("yaml: %w", err)
	}
	c, err := f.services()
	if err != nil {
		return nil, err
	}
	l := &Loaded{Config: c, Interfaces: f.Interfaces}
	for _, fs := range f.Sync {
		d, err := fs.daemon()
		if err != nil {
			return nil, err
		}
		for _, o := range l.Sync {
			if o.Role == d.Role {
				return nil, invalid("sync_daemons: two %s daemons", d.Role)
			}
		}
		l.Sync = append(l.Sync, d)
	}
	if f.BGP != nil {
		if l.BGP, err = f.BGP.parse(); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func (f *File) services() (*Config, error) {
	c := &Config{}
	if t := f.Timeouts; t != nil {
		if t.TCP < 0 || t.TCPFin < 0 || t.UDP < 0 {
			return nil, invalid("timeouts must not be negative")
		}
		c.Timeouts = [3]int{t.TCP, t.TCPFin, t.UDP}
	}
	for i, m := range f.Marks {
		if (m.TCP == "") == (m.UDP == "") {
			return nil, invalid("marks[%d]: give one of tcp or udp", i)
		}
		proto, target := TCP, m.TCP
		if m.UDP != "" {
			proto, target = UDP, m.UDP
		}
		rules, err := parseMarkTarget(m.Mark, proto, target)
		if err != nil {
			return nil, invalid("marks[%d]: %v", i, err)
		}
		cmd := &Command{Op: OpAddMark, Marks: rules}
		for _, r := range rules {
			if err := r.Validate(); err != nil {
				return nil, fmt.Errorf("marks[%d]: %w", i, err)
			}
		}
		if err := c.Apply(cmd); err != nil {
			return nil, fmt.Errorf("marks[%d]: %w", i, err)
		}
	}
	for i, fs := range f.Services {
		sc, err := fs.service()
		if err != nil {
			return nil, fmt.Errorf("services[%d]: %w", i, err)
		}
		if c.Find(sc.Service.ServiceKey) >= 0 {
			return nil, fmt.Errorf("services[%d] %s: %w", i, sc.Service.ServiceKey, ErrServiceExists)
		}
		c.Services = append(c.Services, *sc)
	}
	return c, nil
}

func (fs FileService) service() (*ServiceConfig, error) {
	var svc Service
	n := 0
	for _, x := range []bool{fs.TCP != "", fs.UDP != "", fs.FWMark != 0} {
		if x {
			n++
		}
	}
	if n != 1 {
		return nil, invalid("give exactly one of tcp, udp or fwmark")
	}
	switch {
	case fs.FWMark != 0:
		svc.FWMark, svc.Proto, svc.V6 = fs.FWMark, TCP, fs.IPv6
	default:
		proto, s := TCP, fs.TCP
		if fs.UDP != "" {
			proto, s = UDP, fs.UDP
		}
		addr, port, err := parseHostPort(s, proto, true)
		if err != nil {
			return nil, invalid("%v", err)
		}
		svc.Proto, svc.Addr, svc.Port = proto, addr, port
		if fs.IPv6 {
			return nil, invalid("ipv6 is for fwmark services; an address service's family is its address's")
		}
	}
	svc.Scheduler = fs.Scheduler
	if fs.Persistent != nil {
		svc.Persistent, svc.Timeout = true, *fs.Persistent
	}
	if fs.Netmask != "" {
		if !svc.Persistent {
			return nil, invalid("netmask needs persistent")
		}
		p, err := parseNetmask(fs.Netmask, svc.IsV6())
		if err != nil {
			return nil, invalid("%v", err)
		}
		svc.Netmask = p
	}
	svc.SchedFlags, svc.OnePacket, svc.SynProxy = fs.SchedFlags, fs.OnePacket, fs.SynProxy
	chk, err := fs.Check.check()
	if err != nil {
		return nil, err
	}
	svc.Check, svc.OnFailure = chk, fs.OnFailure
	if fs.Sorry != nil {
		sd, err := fs.Sorry.dest(svc.ServiceKey)
		if err != nil {
			return nil, fmt.Errorf("sorry_server: %w", err)
		}
		svc.Sorry = SorryServer{Addr: sd.AddrPort(), Fwd: sd.Fwd}
	}
	svc.SetDefaults()
	if err := svc.Validate(); err != nil {
		return nil, err
	}
	sc := &ServiceConfig{Service: svc}
	for _, l := range fs.LocalAddrs {
		a, err := netip.ParseAddr(l)
		if err != nil || a.Zone() != "" {
			return nil, invalid("local address %q is not an IP address", l)
		}
		if a = a.Unmap(); a.Is6() != svc.IsV6() {
			return nil, invalid("local address %v is not of the service's family (%s)", a, family(svc.IsV6()))
		}
		if slices.Contains(sc.LocalAddrs, a) {
			return nil, fmt.Errorf("%w: %v", ErrLaddrExists, a)
		}
		sc.LocalAddrs = append(sc.LocalAddrs, a)
	}
	for j, r := range fs.Reals {
		d, err := r.dest(svc.ServiceKey)
		if err != nil {
			return nil, fmt.Errorf("reals[%d]: %w", j, err)
		}
		if sc.FindDest(d.Addr, d.Port) >= 0 {
			return nil, fmt.Errorf("reals[%d] %s: %w", j, d.AddrPort(), ErrDestExists)
		}
		// Listed order is list order: the first real is the first the
		// schedulers see (as if the file's -a lines were in reverse).
		sc.Dests = append(sc.Dests, d)
	}
	return sc, nil
}

func (r FileReal) dest(svc ServiceKey) (Dest, error) {
	fwd, ok := fwdByYAML(r.Method)
	if !ok {
		return Dest{}, invalid("method %q: want dr, tun, nat or fullnat", r.Method)
	}
	addr, port, err := parseHostPort(r.Addr, svc.Proto, false)
	if err != nil {
		return Dest{}, invalid("%v", err)
	}
	if svc.FWMark == 0 && port == 0 {
		port = svc.Port // no port is the virtual port, as in ipvsadm
	}
	// Unlike ipvsadm, a DR or TUN real given another port is refused
	// rather than silently moved to the virtual port (Validate).
	d := Dest{Addr: addr, Port: port, Fwd: fwd, Weight: DefaultWeight, UThreshold: r.UThreshold, LThreshold: r.LThreshold}
	if r.Weight != nil {
		d.Weight = *r.Weight
	}
	chk, err := r.Check.check()
	if err != nil {
		return Dest{}, err
	}
	d.Check = chk
	return d, d.Validate(svc)
}

// Load reads a configuration file: YAML, an ipvsadm rules file (what
// ipvsadm-save writes) when its first command line starts with "-", or
// a keepalived.conf (its LVS part) when it starts with a keepalived
// keyword.
// It returns the interfaces a YAML file names.
func Load(path string) (*Config, []string, error) {
	l, err := LoadFile(path)
	if err != nil {
		return nil, nil, err
	}
	return l.Config, l.Interfaces, nil
}

// LoadFile reads a configuration file as Load does, with the BGP
// settings of a YAML file.
func LoadFile(path string) (*Loaded, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if IsKeepalived(b) {
		k, err := ParseKeepalived(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return &Loaded{Config: k.Config, Keepalived: k.Lines, Sync: k.Sync}, nil
	}
	if IsRules(b) {
		lines, err := ReadRules(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		rules, daemons, _ := SplitDaemons(lines)
		c, err := ApplyLines(&Config{}, rules)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		l := &Loaded{Config: c}
		for _, d := range daemons {
			if d.Op != OpStartDaemon {
				return nil, fmt.Errorf("%s: --stop-daemon in a configuration file", path)
			}
			l.Sync = append(l.Sync, d.Daemon)
		}
		return l, nil
	}
	l, err := ParseYAMLFile(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return l, nil
}

// IsRules reports whether b reads as an ipvsadm rules file: its first
// line that is not blank or a comment is a command starting with "-" (or
// "ipvsadm -"). An empty file is an empty rules file.
func IsRules(b []byte) bool {
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		for _, p := range []string{"ipvsadm ", "xipvsadm ", "/sbin/ipvsadm ", "/usr/sbin/ipvsadm "} {
			l = strings.TrimPrefix(l, p)
		}
		return strings.HasPrefix(l, "-")
	}
	return true
}

// Summary is a one-line description of c for logs and --dry-run.
func (c *Config) Summary() string {
	reals := 0
	for _, s := range c.Services {
		reals += len(s.Dests)
	}
	return strconv.Itoa(len(c.Services)) + " services, " + strconv.Itoa(reals) + " real servers, " +
		strconv.Itoa(len(c.Marks)) + " port groups"
}
