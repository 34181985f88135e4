package config

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/xipvs/xipvs/sched"
)

// keepalived.conf's virtual_server blocks: their services, reals and
// checkers.

// kaVS is a virtual_server's settings before its keys are expanded.
type kaVS struct {
	svc       Service
	reals     []Dest
	laddrs    []netip.Addr
	inhibit   bool
	alpha     bool
	realInhib []bool
	delayLoop time.Duration
	// fwd is its lb_kind (FwdFullNAT + 1 while unset); laddrGroup its
	// laddr_group_name.
	fwd        Fwd
	laddrGroup string
}

// cannotVS marks a virtual_server keyword xipvs does not honour.
func (r *kaReader) cannotVS(c *kaNode) {
	why := map[string]string{
		"quorum": "no quorum: the VIP is kept whatever the weight of the healthy reals", "hysteresis": "no quorum",
		"quorum_up": "no quorum scripts", "quorum_down": "no quorum scripts",
		"alpha": "checks start with every real up (as without alpha)", "omega": "no quorum scripts",
		"ha_suspend": "checks run on every director", "virtualhost": "no Host header in HTTP checks",
		"retry": "set retry in each checker", "delay_before_retry": "set it in each checker",
		"warmup": "checks start at once", "ops": "one-packet scheduling is not built", "syn_proxy": "use xipvsadm -j",
		"protocol_gre": "TCP and UDP only",
	}[c.key()]
	r.markAll(c, UseCannot, why)
}

// groupEntry reads one line of a virtual_server_group: IP PORT, an
// IPv4 range A.B.C.D-E PORT, or fwmark N.
func (r *kaReader) groupEntry(e *kaNode, proto Proto) ([]ServiceKey, error) {
	a := e.args()
	r.mark(e.words[0], UseUsed, "")
	if e.key() == "fwmark" && len(a) == 1 {
		m, err := strconv.ParseUint(a[0], 10, 32)
		if err != nil || m == 0 {
			return nil, kaErr(e, "fwmark %q", a[0])
		}
		return []ServiceKey{{FWMark: uint32(m), Proto: TCP}}, nil
	}
	if len(a) != 1 {
		return nil, kaErr(e, "virtual_server_group entries are IP PORT, IP-LAST PORT or fwmark N")
	}
	port, err := strconv.ParseUint(a[0], 10, 16)
	if err != nil {
		return nil, kaErr(e, "port %q", a[0])
	}
	first, last := e.key(), ""
	if i := strings.LastIndexByte(first, '-'); i > 0 {
		first, last = first[:i], first[i+1:]
	}
	start, err := netip.ParseAddr(first)
	if err != nil {
		return nil, kaErr(e, "address %q: %v", first, err)
	}
	out := []ServiceKey{{Proto: proto, Addr: start.Unmap(), Port: uint16(port)}}
	if last != "" {
		n, err := strconv.ParseUint(last, 10, 8)
		b := start.As4()
		if err != nil || !start.Is4() || int(n) < int(b[3]) {
			return nil, kaErr(e, "range %s: the last octet must follow the first", e.key())
		}
		for o := int(b[3]) + 1; o <= int(n); o++ {
			b[3] = byte(o)
			out = append(out, ServiceKey{Proto: proto, Addr: netip.AddrFrom4(b), Port: uint16(port)})
		}
	}
	return out, nil
}

// realServer reads one real_server block.
func (r *kaReader) realServer(n *kaNode, svc ServiceKey) (Dest, bool, error) {
	r.mark(n.words[0], UseUsed, "")
	a := n.args()
	if len(a) < 1 || len(a) > 2 {
		return Dest{}, false, kaErr(n, "real_server wants IP [PORT]")
	}
	addr, err := netip.ParseAddr(a[0])
	if err != nil {
		return Dest{}, false, kaErr(n, "real server address %q: %v", a[0], err)
	}
	d := Dest{Addr: addr.Unmap(), Weight: DefaultWeight}
	if len(a) == 2 {
		p, err := strconv.ParseUint(a[1], 10, 16)
		if err != nil {
			return Dest{}, false, kaErr(n, "real server port %q", a[1])
		}
		d.Port = uint16(p)
	}
	inhibit := false
	checks := 0
	for _, c := range n.block {
		args := c.args()
		switch c.key() {
		case "weight":
			if len(args) != 1 {
				return Dest{}, false, kaErr(c, "weight takes one value")
			}
			w, err := strconv.Atoi(args[0])
			if err != nil || w < 0 {
				return Dest{}, false, kaErr(c, "weight %q", args[0])
			}
			d.Weight = w
			r.mark(c.words[0], UseUsed, "")
		case "inhibit_on_failure":
			inhibit = true
			r.mark(c.words[0], UseUsed, "the real is quiesced (weight 0) while it fails")
		case "uthreshold", "lthreshold":
			if len(args) != 1 {
				return Dest{}, false, kaErr(c, "%s takes one value", c.key())
			}
			t, err := strconv.ParseUint(args[0], 10, 32)
			if err != nil {
				return Dest{}, false, kaErr(c, "%s %q", c.key(), args[0])
			}
			if c.key() == "uthreshold" {
				d.UThreshold = uint32(t)
			} else {
				d.LThreshold = uint32(t)
			}
			r.mark(c.words[0], UseUsed, "")
		case "TCP_CHECK", "HTTP_GET", "SSL_GET", "MISC_CHECK":
			checks++
			if checks > 1 {
				r.markAll(c, UseCannot, "one check per real in xipvs: the first is used")
				continue
			}
			chk, err := r.checker(c)
			if err != nil {
				return Dest{}, false, err
			}
			d.Check = chk
		case "notify_up", "notify_down":
			r.markAll(c, UseCannot, "no notify scripts: xipvsd logs and counts health transitions")
		case "lvs_method":
			r.markAll(c, UseCannot, "one lb_kind per virtual_server here")
		default:
			r.markAll(c, UseCannot, "unknown real_server keyword")
		}
	}
	_ = svc
	return d, inhibit, nil
}

// checker reads TCP_CHECK, HTTP_GET, SSL_GET or MISC_CHECK.
func (r *kaReader) checker(n *kaNode) (Check, error) {
	r.mark(n.words[0], UseUsed, "")
	c := Check{Rise: 1, Fall: 2, Timeout: 5 * time.Second, Interval: 60 * time.Second}
	switch n.key() {
	case "TCP_CHECK":
		c.Type = "tcp"
	case "HTTP_GET":
		c.Type = "http"
	case "SSL_GET":
		c.Type = "https"
	case "MISC_CHECK":
		c.Type = "exec"
	}
	var retry = 1
	for _, e := range n.block {
		a := e.args()
		one := func() (string, error) {
			if len(a) != 1 {
				return "", kaErr(e, "%s takes one value", e.key())
			}
			return a[0], nil
		}
		switch e.key() {
		case "connect_timeout", "misc_timeout":
			s, err := one()
			if err != nil {
				return c, err
			}
			d, err := parseSeconds(s)
			if err != nil || d <= 0 {
				return c, kaErr(e, "%s %q", e.key(), s)
			}
			c.Timeout = d
			r.mark(e.words[0], UseUsed, "")
		case "connect_port":
			s, err := one()
			if err != nil {
				return c, err
			}
			p, err := strconv.ParseUint(s, 10, 16)
			if err != nil {
				return c, kaErr(e, "connect_port %q", s)
			}
			c.Port = uint16(p)
			r.mark(e.words[0], UseUsed, "")
		case "retry", "nb_get_retry":
			s, err := one()
			if err != nil {
				return c, err
			}
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return c, kaErr(e, "%s %q", e.key(), s)
			}
			retry = n
			r.mark(e.words[0], UseUsed, "failures in a row that fail the real: retry + 1")
		case "delay_before_retry":
			r.mark(e.words[0], UseCannot, "retries come at the check interval (delay_loop)")
		case "url":
			if c.Path != "" {
				r.markAll(e, UseCannot, "one url per check in xipvs: the first is used")
				continue
			}
			r.mark(e.words[0], UseUsed, "")
			for _, u := range e.block {
				ua := u.args()
				switch u.key() {
				case "path":
					if len(ua) != 1 {
						return c, kaErr(u, "path takes one value")
					}
					c.Path = ua[0]
					r.mark(u.words[0], UseUsed, "")
				case "status_code":
					// One code, or codes and ranges: 200 201 300-399.
					if len(ua) == 0 {
						return c, kaErr(u, "status_code takes a code")
					}
					if len(ua) == 1 {
						if s, err := strconv.Atoi(ua[0]); err == nil {
							c.Status = s
							r.mark(u.words[0], UseUsed, "")
							continue
						}
					}
					list := strings.Join(ua, ",")
					if _, err := ParseStatusCodes(list); err != nil {
						return c, kaErr(u, "%v", err)
					}
					c.StatusCodes = list
					r.mark(u.words[0], UseUsed, "")
				case "digest":
					if len(ua) != 1 {
						return c, kaErr(u, "digest takes one value")
					}
					c.Digest = strings.ToLower(ua[0])
					r.mark(u.words[0], UseUsed, "the body's MD5")
				default:
					r.markAll(u, UseCannot, "unknown url keyword")
				}
			}
		case "misc_path":
			s, err := one()
			if err != nil {
				return c, err
			}
			c.Exec = s
			r.mark(e.words[0], UseUsed, "run with /bin/sh -c; exit 0 is healthy")
		case "misc_dynamic":
			r.mark(e.words[0], UseCannot, "exit codes do not set weights")
		case "bindto", "bind_port", "bind_if", "fwmark", "warmup", "virtualhost", "sni_name", "http_protocol", "enable_sni",
			"tls_compliant", "user", "alpha", "retry_delay":
			r.markAll(e, UseCannot, "not an xipvs check setting")
		default:
			r.markAll(e, UseCannot, "unknown checker keyword")
		}
	}
	c.Fall = retry + 1
	if c.Timeout > c.Interval {
		c.Timeout = c.Interval
	}
	return c, c.Validate()
}

// virtualServer reads one virtual_server block into services.
func (r *kaReader) virtualServer(n *kaNode) error {
	r.mark(n.words[0], UseUsed, "")
	keys, err := r.vsKeys(n)
	if err != nil {
		return err
	}
	v := kaVS{svc: Service{Scheduler: "wlc"}, fwd: FwdFullNAT + 1 /* unset */}
	for _, c := range n.block {
		if err := r.vsKeyword(c, &v, keys); err != nil {
			return err
		}
	}
	return r.vsServices(n, &v, keys)
}

// vsKeys are the services a virtual_server block names: IP PORT,
// fwmark N, or every entry of a virtual_server_group, in its protocol.
func (r *kaReader) vsKeys(n *kaNode) ([]ServiceKey, error) {
	args := n.args()
	var keys []ServiceKey
	proto := TCP
	for _, c := range n.block {
		if c.key() == "protocol" && len(c.words) == 2 {
			switch strings.ToUpper(c.words[1].s) {
			case "TCP":
				proto = TCP
			case "UDP":
				proto = UDP
			default:
				r.mark(c.words[0], UseCannot, "only TCP and UDP services")
				return nil, kaErr(c, "protocol %s: xipvs balances TCP and UDP", c.words[1].s)
			}
		}
	}
	switch {
	case len(args) == 2 && args[0] == "fwmark":
		m, err := strconv.ParseUint(args[1], 10, 32)
		if err != nil || m == 0 {
			return nil, kaErr(n, "fwmark %q", args[1])
		}
		keys = append(keys, ServiceKey{FWMark: uint32(m), Proto: TCP})
	case len(args) == 2 && args[0] == "group":
		g, ok := r.groups[args[1]]
		if !ok {
			return nil, kaErr(n, "virtual_server_group %s is not defined", args[1])
		}
		for _, e := range g {
			ks, err := r.groupEntry(e, proto)
			if err != nil {
				return nil, err
			}
			keys = append(keys, ks...)
		}
	case len(args) == 2:
		a, err := netip.ParseAddr(args[0])
		if err != nil {
			return nil, kaErr(n, "virtual server address %q: %v", args[0], err)
		}
		p, err := strconv.ParseUint(args[1], 10, 16)
		if err != nil {
			return nil, kaErr(n, "virtual server port %q", args[1])
		}
		keys = append(keys, ServiceKey{Proto: proto, Addr: a.Unmap(), Port: uint16(p)})
	default:
		return nil, kaErr(n, "virtual_server wants IP PORT, fwmark N or group NAME")
	}
	if len(keys) == 0 {
		return nil, kaErr(n, "virtual_server group %s has no entry", args[1])
	}
	return keys, nil
}

// vsKeyword reads keyword c of a virtual_server block into v; keys are
// the block's services.
func (r *kaReader) vsKeyword(c *kaNode, v *kaVS, keys []ServiceKey) error {
	a := c.args()
	one := func() (string, error) {
		if len(a) != 1 {
			return "", kaErr(c, "%s takes one value", c.key())
		}
		return a[0], nil
	}
	used := func(why string) { r.mark(c.words[0], UseUsed, why) }
	switch c.key() {
	case "protocol":
		used("")
	case "lb_algo", "lvs_sched":
		s, err := one()
		if err != nil {
			return err
		}
		if !slices.Contains(sched.Names(), s) {
			r.mark(c.words[0], UseCannot, "xipvs has "+strings.Join(sched.Names(), " "))
			return kaErr(c, "lb_algo %s: not an xipvs scheduler", s)
		}
		v.svc.Scheduler = s
		used("")
	case "lb_kind", "lvs_method":
		s, err := one()
		if err != nil {
			return err
		}
		f, ok := fwdByLBKind(s)
		if !ok {
			r.mark(c.words[0], UseCannot, "")
			return kaErr(c, "lb_kind %s: want NAT, DR, TUN or FNAT", s)
		}
		v.fwd = f
		used("")
	case "persistence_timeout":
		s, err := one()
		if err != nil {
			return err
		}
		t, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return kaErr(c, "persistence_timeout %q", s)
		}
		if t > 0 {
			v.svc.Persistent, v.svc.Timeout = true, uint32(t)
		}
		used("")
	case "persistence_granularity":
		s, err := one()
		if err != nil {
			return err
		}
		mask, err := parseNetmask(s, keys[0].IsV6())
		if err != nil {
			return kaErr(c, "%v", err)
		}
		v.svc.Netmask = mask
		used("")
	case "delay_loop":
		s, err := one()
		if err != nil {
			return err
		}
		d, err := parseSeconds(s)
		if err != nil || d <= 0 {
			return kaErr(c, "delay_loop %q", s)
		}
		v.delayLoop = d
		used("the checks' interval")
	case "sorry_server":
		if len(a) != 2 {
			return kaErr(c, "sorry_server wants IP PORT")
		}
		addr, err := netip.ParseAddr(a[0])
		p, err2 := strconv.ParseUint(a[1], 10, 16)
		if err != nil || err2 != nil {
			return kaErr(c, "sorry_server %s %s", a[0], a[1])
		}
		v.svc.Sorry.Addr = netip.AddrPortFrom(addr.Unmap(), uint16(p))
		used("")
	case "sorry_server_lvs_method":
		s, err := one()
		if err != nil {
			return err
		}
		f, ok := fwdByLBKind(s)
		if !ok || f == FwdFullNAT { // keepalived's sorry server: NAT, DR or TUN
			return kaErr(c, "sorry_server_lvs_method %s", s)
		}
		v.svc.Sorry.Fwd = f
		used("")
	case "sorry_server_inhibit":
		used("the sorry server takes new flows only while no real is up")
	case "inhibit_on_failure":
		v.inhibit = true
		used("failed reals are quiesced (weight 0), not removed")
	case "laddr_group_name":
		s, err := one()
		if err != nil {
			return err
		}
		v.laddrGroup = s
		used("")
	case "real_server":
		d, inhib, err := r.realServer(c, keys[0])
		if err != nil {
			return err
		}
		v.reals = append(v.reals, d)
		v.realInhib = append(v.realInhib, inhib)
	case "alpha":
		v.alpha = true
		used("reals start down until their first check passes")
	case "quorum", "hysteresis", "quorum_up", "quorum_down", "omega", "ha_suspend", "virtualhost", "retry",
		"delay_before_retry", "warmup", "ops", "syn_proxy", "protocol_gre":
		r.cannotVS(c)
	default:
		r.mark(c.words[0], UseCannot, "unknown virtual_server keyword")
	}
	return nil
}

// vsServices expands v into a service for each of keys, with its reals.
func (r *kaReader) vsServices(n *kaNode, v *kaVS, keys []ServiceKey) error {
	fwd := v.fwd
	if fwd > FwdFullNAT {
		fwd = FwdMasq // keepalived's default lb_kind
	}
	if v.laddrGroup != "" {
		l, ok := r.laddrs[v.laddrGroup]
		if !ok {
			return kaErr(n, "laddr_group_name %s: no such local_address_group", v.laddrGroup)
		}
		v.laddrs = l
	}
	// inhibit_on_failure is per service in xipvs: any real or the
	// service asking for it quiesces the service's failed reals.
	anyInhib := v.inhibit || slices.Contains(v.realInhib, true)
	if anyInhib {
		v.svc.OnFailure = OnFailureQuiesce
	} else {
		v.svc.OnFailure = OnFailureRemove // keepalived removes a failed real
	}
	if anyInhib && !v.inhibit && slices.Contains(v.realInhib, false) {
		r.mark(n.words[0], UseCannot, "inhibit_on_failure on some reals only: xipvs quiesces every failed real of the service")
	}
	for _, k := range keys {
		svc := v.svc
		svc.ServiceKey = k
		if k.FWMark != 0 {
			svc.Proto = TCP
		}
		if svc.Sorry.IsSet() && !slices.ContainsFunc(n.block, func(c *kaNode) bool { return c.key() == "sorry_server_lvs_method" }) {
			svc.Sorry.Fwd = fwd // keepalived: the sorry server takes the service's lb_kind
		}
		svc.SetDefaults()
		if err := svc.Validate(); err != nil {
			return kaErr(n, "%v", err)
		}
		sc := ServiceConfig{Service: svc, LocalAddrs: v.laddrs}
		// keepalived adds the reals in the file's order; IPVS lists the
		// newest first.
		for i := len(v.reals) - 1; i >= 0; i-- {
			d := v.reals[i]
			d.Fwd = fwd
			if d.Port == 0 && k.FWMark == 0 {
				d.Port = k.Port
			}
			if d.Check.Enabled() && v.alpha {
				d.Check.StartDown = true
			}
			if d.Check.Enabled() && v.delayLoop != 0 {
				d.Check.Interval = v.delayLoop
				if d.Check.Timeout > d.Check.Interval {
					d.Check.Timeout = d.Check.Interval
				}
			}
			if err := d.Validate(svc.ServiceKey); err != nil {
				return kaErr(n, "real %v: %v", d.AddrPort(), err)
			}
			if sc.FindDest(d.Addr, d.Port) >= 0 {
				return kaErr(n, "real %v given twice", d.AddrPort())
			}
			sc.Dests = append(sc.Dests, d)
		}
		if r.cfg.Find(svc.ServiceKey) >= 0 {
			return kaErr(n, "%s: %v", svc.ServiceKey, ErrServiceExists)
		}
		r.cfg.Services = append(r.cfg.Services, sc)
	}
	return nil
}
