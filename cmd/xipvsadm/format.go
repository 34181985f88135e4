package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/internal/api"
	"github.com/xipvs/xipvs/internal/connsync"
	"github.com/xipvs/xipvs/sched"
)

// ipvsVersion is the IPVS version ipvsadm prints; scripts match on it.
const ipvsVersion = "1.2.1"

// sortServices orders services as libipvs's ipvs_cmp_services: fwmark,
// family (IPv4 first), protocol, address, port.
func sortServices(s []api.Service) {
	sort.Slice(s, func(i, j int) bool {
		a, b := s[i].ServiceKey, s[j].ServiceKey
		if a.FWMark != b.FWMark {
			return a.FWMark < b.FWMark
		}
		if a.IsV6() != b.IsV6() {
			return b.IsV6()
		}
		if a.Proto != b.Proto {
			return a.Proto < b.Proto
		}
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c < 0
		}
		return a.Port < b.Port
	})
}

// sortDests orders destinations as ipvs_cmp_dests: address, port.
func sortDests(d []api.Dest) {
	sort.Slice(d, func(i, j int) bool {
		if c := d[i].Addr.Compare(d[j].Addr); c != 0 {
			return c < 0
		}
		return d[i].Port < d[j].Port
	})
}

type namer struct {
	numeric bool
	ports   map[string]string // "80/tcp" -> "http"
}

func newNamer(numeric bool) *namer {
	n := &namer{numeric: numeric}
	if !numeric {
		n.ports = readServices("/etc/services")
	}
	return n
}

// readServices reads port names from an /etc/services file; the first
// name listed for a port wins, as getservbyport's.
func readServices(path string) map[string]string {
	m := map[string]string{}
	f, err := os.Open(path)
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		if _, ok := m[fields[1]]; !ok {
			m[fields[1]] = fields[0]
		}
	}
	return m
}

// addrPort renders an address and port as ipvsadm's addrport_to_anyname:
// an IPv6 address (or its name) in brackets.
func (n *namer) addrPort(a netip.Addr, port uint16, proto config.Proto) string {
	if n.numeric {
		return netip.AddrPortFrom(a, port).String()
	}
	host := a.String()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if names, err := net.DefaultResolver.LookupAddr(ctx, host); err == nil && len(names) > 0 {
		host = strings.TrimSuffix(names[0], ".")
	}
	p := strconv.Itoa(int(port))
	if name, ok := n.ports[p+"/"+strings.ToLower(proto.String())]; ok {
		p = name
	}
	if a.Is6() {
		host = "[" + host + "]"
	}
	return host + ":" + p
}

// serviceName is a service as ipvsadm's print_service_entry names it: in
// a listing "TCP  ADDR:PORT" (IPv4 names cut to 33 columns) or "FWM  N"
// ("FWM  N IPv6"); in rules (-S) "-t ADDR:PORT" or "-f N" ("-f N -6").
func serviceName(n *namer, k config.ServiceKey, rule bool) string {
	mark := strconv.FormatUint(uint64(k.FWMark), 10)
	switch {
	case k.FWMark != 0 && rule && k.V6:
		return "-f " + mark + " -6"
	case k.FWMark != 0 && rule:
		return "-f " + mark
	case k.FWMark != 0 && k.V6:
		return "FWM  " + mark + " IPv6"
	case k.FWMark != 0:
		return "FWM  " + mark
	case rule && k.Proto == config.UDP:
		return "-u " + n.addrPort(k.Addr, k.Port, k.Proto)
	case rule:
		return "-t " + n.addrPort(k.Addr, k.Port, k.Proto)
	}
	name := k.Proto.String() + "  " + n.addrPort(k.Addr, k.Port, k.Proto)
	if !k.Addr.Is6() {
		name = truncate(name, 33)
	}
	return name
}

// destName is a real server in a listing: IPv4 names cut to 28 columns,
// IPv6 ones whole, as ipvsadm prints them.
func destName(n *namer, a netip.Addr, port uint16, proto config.Proto) string {
	name := n.addrPort(a, port, proto)
	if !a.Is6() {
		name = truncate(name, 28)
	}
	return name
}

// maskArg renders a persistence netmask other than the family's full
// one as ipvsadm does (dotted for IPv4, a prefix length for IPv6), or "".
func maskArg(k config.ServiceKey, m netip.Prefix) string {
	if !m.IsValid() || m.Bits() == k.MaskBits() {
		return ""
	}
	if k.IsV6() {
		return strconv.Itoa(m.Bits())
	}
	return maskString(m.Bits())
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// printList writes ipvsadm -L output in the format f selects, with
// ipvsadm's precedence: --stats, --rate, --thresholds, --persistent-conn,
// else the plain listing. With only, just that service, without the
// version line.
func printList(w io.Writer, size int, svcs []api.Service, f config.ListFormat, only *config.ServiceKey) error {
	bw := bufio.NewWriter(w)
	n := newNamer(f.Numeric)
	if only != nil {
		var found []api.Service
		for _, s := range svcs {
			if s.ServiceKey == *only {
				found = append(found, s)
			}
		}
		if len(found) == 0 {
			return fmt.Errorf("No such service")
		}
		svcs = found
	} else {
		fmt.Fprintf(bw, "IP Virtual Server version %s (size=%d)\n", ipvsVersion, size)
	}
	if !f.NoSort {
		sortServices(svcs)
	}
	printTitle(bw, f)
	for _, s := range svcs {
		printService(bw, n, s, f)
	}
	return bw.Flush()
}

// printTitle writes the column headings of format f (ipvsadm's
// print_title).
func printTitle(w io.Writer, f config.ListFormat) {
	const stat = "%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n"
	switch {
	case f.Stats:
		fmt.Fprintf(w, stat, "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes")
	case f.Rate:
		fmt.Fprintf(w, stat, "Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS")
	case f.Thresholds:
		fmt.Fprintf(w, "%-33s %-10s %-10s %-10s %-10s\n  -> RemoteAddress:Port\n",
			"Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn")
	case f.PersistentConn:
		fmt.Fprintf(w, "%-33s %-9s %-11s %-10s %-10s\n  -> RemoteAddress:Port\n",
			"Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn")
	default:
		fmt.Fprint(w, "Prot LocalAddress:Port Scheduler Flags\n"+
			"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")
	}
}

// largenum renders a counter as ipvsadm's print_largenum: 9 columns,
// scaled to K, M, G or T past 8 digits, or exact (--exact) in at least 9.
func largenum(v uint64, exact bool) string {
	if exact {
		s := strconv.FormatUint(v, 10)
		return fmt.Sprintf("%*s", max(9, len(s)+1), s)
	}
	switch {
	case v < 100_000_000:
		return fmt.Sprintf("%9d", v)
	case v < 1_000_000_000:
		return fmt.Sprintf("%8dK", v/1_000)
	case v < 100_000_000_000:
		return fmt.Sprintf("%8dM", v/1_000_000)
	case v < 100_000_000_000_000:
		return fmt.Sprintf("%8dG", v/1_000_000_000)
	}
	return fmt.Sprintf("%8dT", v/1_000_000_000_000)
}

// printService writes one service and its reals.
func printService(w io.Writer, n *namer, s api.Service, f config.ListFormat) {
	name := serviceName(n, s.ServiceKey, false)
	ln := func(v uint64) string { return largenum(v, f.Exact) }
	switch {
	case f.Stats:
		st := s.Stats
		fmt.Fprintf(w, "%-33s%s%s%s%s%s\n", name, ln(st.Conns), ln(st.InPkts), ln(st.OutPkts), ln(st.InBytes), ln(st.OutBytes))
	case f.Rate:
		r := s.Rates
		fmt.Fprintf(w, "%-33s%s%s%s%s%s\n", name, ln(r.CPS), ln(r.InPPS), ln(r.OutPPS), ln(r.InBPS), ln(r.OutBPS))
	default:
		fmt.Fprintf(w, "%s %s", name, s.Scheduler)
		if f, err := sched.ParseFlags(s.Scheduler, s.SchedFlags); err == nil && f != 0 {
			fmt.Fprintf(w, " (%s)", strings.Join(f.Names(s.Scheduler), ","))
		}
		if s.Persistent {
			fmt.Fprintf(w, " persistent %d", s.Timeout)
			if m := maskArg(s.ServiceKey, s.Netmask); m != "" {
				fmt.Fprintf(w, " mask %s", m)
			}
		}
		if s.OnePacket {
			fmt.Fprint(w, " ops")
		}
		if s.SynProxy {
			fmt.Fprint(w, " synproxy")
		}
		fmt.Fprintln(w)
	}
	if !f.NoSort {
		sortDests(s.Dests)
	}
	for _, d := range s.Dests {
		if d.Failing() && s.OnFailure == config.OnFailureRemove {
			continue // removed while it fails, as keepalived removes it
		}
		d.Weight = d.ServingWeight() // 0 while it fails: quiesced
		dn := destName(n, d.Addr, d.Port, s.Proto)
		switch {
		case f.Stats:
			st := d.Stats
			fmt.Fprintf(w, "  -> %-28s%s%s%s%s%s\n", dn, ln(st.Conns), ln(st.InPkts), ln(st.OutPkts), ln(st.InBytes), ln(st.OutBytes))
		case f.Rate:
			r := d.Rates
			fmt.Fprintf(w, "  -> %-28s %8d %8d %8d%s%s\n", dn, uint32(r.CPS), uint32(r.InPPS), uint32(r.OutPPS), ln(r.InBPS), ln(r.OutBPS))
		case f.Thresholds:
			fmt.Fprintf(w, "  -> %-28s %-10d %-10d %-10d %-10d\n", dn, d.UThreshold, d.LThreshold, d.ActiveConns, d.InactConns)
		case f.PersistentConn:
			fmt.Fprintf(w, "  -> %-28s %-9d %-11d %-10d %-10d\n", dn, d.Weight, d.PersistConns, d.ActiveConns, d.InactConns)
		default:
			fmt.Fprintf(w, "  -> %-28s %-7s %-6d %-10d %-10d\n", dn, d.Fwd.String(), d.Weight, d.ActiveConns, d.InactConns)
		}
	}
}

// printRules writes the configuration as ipvsadm -S does (ipvsadm-save's
// format, which -R reads back): "-A" per service and "-a" per real, names
// unless numeric. Port groups (--add-mark) come first and FULLNAT local
// addresses (--add-laddr) after their service, so xipvsadm -R restores
// everything xipvs holds; ipvsadm never wrote those lines.
func printRules(w io.Writer, svcs []api.Service, marks []config.MarkRule, laddrs []api.ServiceLaddrs, numeric, noSort bool) error {
	bw := bufio.NewWriter(w)
	n := newNamer(numeric)
	for _, r := range marks {
		fmt.Fprintf(bw, "--add-mark %s\n", r)
	}
	if !noSort {
		sortServices(svcs)
	}
	for _, s := range svcs {
		name := serviceName(n, s.ServiceKey, true)
		fmt.Fprintf(bw, "-A %s -s %s", name, s.Scheduler)
		if s.Persistent {
			fmt.Fprintf(bw, " -p %d", s.Timeout)
			if m := maskArg(s.ServiceKey, s.Netmask); m != "" {
				fmt.Fprintf(bw, " -M %s", m)
			}
		}
		if s.OnePacket {
			fmt.Fprint(bw, " -o")
		}
		if s.SynProxy {
			fmt.Fprint(bw, " -j enable")
		}
		if f, err := sched.ParseFlags(s.Scheduler, s.SchedFlags); err == nil && f != 0 {
			fmt.Fprintf(bw, " -b %s", strings.Join(f.Names(s.Scheduler), ","))
		}
		fmt.Fprint(bw, s.Check.Args())
		if s.OnFailure != "" {
			fmt.Fprintf(bw, " --on-failure %s", s.OnFailure)
		}
		if s.Sorry.IsSet() {
			fmt.Fprintf(bw, " --sorry-server %s", s.Sorry.Addr)
			if s.Sorry.Fwd != config.FwdRoute {
				fmt.Fprintf(bw, " --sorry-method %s", strings.TrimPrefix(s.Sorry.Fwd.Switch(), "-"))
			}
		}
		fmt.Fprintln(bw)
		if !noSort {
			sortDests(s.Dests)
		}
		for _, d := range s.Dests {
			fmt.Fprintf(bw, "-a %s -r %s %s -w %d", name, n.addrPort(d.Addr, d.Port, s.Proto), d.Fwd.Switch(), d.Weight)
			if d.Fwd == config.FwdTunnel {
				fmt.Fprint(bw, " --tun-type ipip")
			}
			if d.UThreshold != 0 {
				fmt.Fprintf(bw, " -x %d", d.UThreshold)
			}
			if d.LThreshold != 0 {
				fmt.Fprintf(bw, " -y %d", d.LThreshold)
			}
			fmt.Fprint(bw, d.Check.Args())
			fmt.Fprintln(bw)
		}
		for _, sl := range laddrs {
			if sl.Service == s.ServiceKey {
				for _, l := range sl.Laddrs {
					fmt.Fprintf(bw, "--add-laddr %s -z %s\n", name, l.Addr)
				}
			}
		}
	}
	return bw.Flush()
}

func maskString(bits int) string {
	m := uint32(0xffffffff) << (32 - bits)
	if bits == 0 {
		m = 0
	}
	return fmt.Sprintf("%d.%d.%d.%d", m>>24, m>>16&0xff, m>>8&0xff, m&0xff)
}

func printTimeouts(w io.Writer, t api.Timeouts) {
	fmt.Fprintf(w, "Timeout (tcp tcpfin udp): %d %d %d\n", t.TCP, t.TCPFin, t.UDP)
}

// printMarks writes the port-group bindings as the --add-mark lines that
// recreate them (all marks, or one).
func printMarks(w io.Writer, rules []config.MarkRule, mark uint32) {
	for _, r := range rules {
		if mark == 0 || r.Mark == mark {
			fmt.Fprintf(w, "--add-mark %s\n", r)
		}
	}
}

// printConns writes ipvsadm -c output: the header, then one line per
// connection as each reaches it (in the director's table order, as
// ipvsadm lists /proc/net/ip_vs_conn), with names unless f.Numeric.
func printConns(w io.Writer, f config.ListFormat, each func(func(api.Conn) error) error) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteString(api.ConnHeader)
	n := newNamer(f.Numeric)
	var line []byte
	first := true
	err := each(func(c api.Conn) error {
		if f.Numeric {
			line = api.AppendConnLine(line[:0], c)
		} else {
			e := max(c.ExpireSeconds, 0)
			line = fmt.Appendf(line[:0], "%-3s %02d:%02d %-11s %-18s %-18s %s\n", c.Proto.String(), e/60, e%60, c.State,
				n.addrPort(c.Client.Addr(), c.Client.Port(), c.Proto),
				n.addrPort(c.Virtual.Addr(), c.Virtual.Port(), c.Proto),
				n.addrPort(c.Real.Addr(), c.Real.Port(), c.Proto))
		}
		if _, err := bw.Write(line); err != nil {
			return err
		}
		if first {
			first = false
			return bw.Flush() // the first line at once
		}
		return nil
	})
	return errors.Join(err, bw.Flush())
}

// listJSON is -L --json: the services (one with -t/-u/-f) with their
// reals, counters, rates and health, or with -c the connections, as
// the API gives them.
func listJSON(w io.Writer, c *api.Client, f config.ListFormat, one bool, k config.ServiceKey) error {
	if f.Conn {
		return c.StreamConnsJSON(w)
	}
	svcs, err := c.Services()
	if err != nil {
		return err
	}
	if one {
		svcs = slices.DeleteFunc(svcs, func(s api.Service) bool { return s.ServiceKey != k })
	}
	if svcs == nil {
		svcs = []api.Service{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(svcs)
}

// streamConns is printConns of the director's table with -n: its lines
// copied as xipvsd writes them (api.AppendConnLine), the first at once.
func streamConns(w io.Writer, c *api.Client) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	bw.WriteString(api.ConnHeader)
	err := c.StreamConns(&flushFirst{w: bw})
	return errors.Join(err, bw.Flush())
}

// flushFirst flushes its writer after the first write.
type flushFirst struct {
	w    *bufio.Writer
	done bool
}

func (f *flushFirst) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil && !f.done {
		f.done, err = true, f.w.Flush()
	}
	return n, err
}

// printLaddrs lists FULLNAT local addresses as DPVS's ipvsadm -G does:
// a line per service with its count, then one per local address with
// the connections using it.
func printLaddrs(w io.Writer, all []api.ServiceLaddrs, only *config.ServiceKey) {
	fmt.Fprintf(w, "%-20s %-8s %-20s %-10s %-10s\n", "VIP:VPORT", "TOTAL", "SNAT_IP", "CONFLICTS", "CONNS")
	for _, s := range all {
		if only != nil && s.Service != *only {
			continue
		}
		name := netip.AddrPortFrom(s.Service.Addr, s.Service.Port).String()
		if s.Service.FWMark != 0 {
			name = fmt.Sprintf("FWM %d", s.Service.FWMark)
			if s.Service.V6 {
				name += " IPv6"
			}
		}
		fmt.Fprintf(w, "%-20s %-8d\n", name, len(s.Laddrs))
		for _, l := range s.Laddrs {
			fmt.Fprintf(w, "%-20s %-8s %-20s %-10d %-10d\n", "", "", l.Addr, 0, l.Conns)
		}
	}
}

// printHealth lists every real's health check state (xipvsadm -L
// --health): the configured weight, UP/DOWN (or "-" without a check),
// since when, and the last failure's reason; then the sorry server.
func printHealth(w io.Writer, svcs []api.Service, numeric bool) error {
	bw := bufio.NewWriter(w)
	n := newNamer(numeric)
	sortServices(svcs)
	fmt.Fprint(bw, "Prot LocalAddress:Port Check OnFailure\n"+
		"  -> RemoteAddress:Port           Weight Health Since                Reason\n")
	for _, s := range svcs {
		name := serviceName(n, s.ServiceKey, false)
		check := s.Check.Type
		if check == "" {
			check = "-"
		}
		onf := s.OnFailure
		if onf == "" {
			onf = config.OnFailureQuiesce
		}
		fmt.Fprintf(bw, "%s %s %s\n", name, check, onf)
		sortDests(s.Dests)
		for _, d := range s.Dests {
			state, since := "-", "-"
			if d.Health.Checked {
				state = "UP"
				if !d.Health.Up {
					state = "DOWN"
				}
				if !d.Health.Since.IsZero() {
					since = d.Health.Since.UTC().Format("2006-01-02T15:04:05Z")
				}
			}
			reason := d.Health.Reason
			if d.Health.Up {
				reason = ""
			}
			fmt.Fprintf(bw, "  -> %-28s %-6d %-6s %-20s %s\n", destName(n, d.Addr, d.Port, s.Proto),
				d.Weight, state, since, reason)
		}
		if s.Sorry.IsSet() {
			state := "standby"
			if s.SorryActive {
				state = "ACTIVE"
			}
			fmt.Fprintf(bw, "  sorry %-25s %s %s\n", s.Sorry.Addr, s.Sorry.Fwd, state)
		}
	}
	return bw.Flush()
}

// printBGP lists the BGP speaker (xipvsadm -L --bgp): its identity, each
// session, and each route with why it is or is not announced.
func printBGP(w io.Writer, st api.BGPStatus) {
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	if !st.Enabled {
		fmt.Fprintln(bw, "BGP is off (xipvsd --bgp-asn/--bgp-router-id/--bgp-peer, or a bgp: section in its YAML file)")
		return
	}
	listen := "connects out only"
	if st.ListenPort != 0 {
		listen = fmt.Sprintf("listens on port %d", st.ListenPort)
	}
	fmt.Fprintf(bw, "BGP AS %d, router id %v, %s", st.ASN, st.RouterID, listen)
	if st.Draining {
		fmt.Fprint(bw, ", DRAINING (routes withdrawn, xipvsd stopping)")
	}
	fmt.Fprintln(bw)
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		d := time.Since(t).Round(time.Second)
		return fmt.Sprintf("%02d:%02d:%02d", int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60)
	}
	fmt.Fprintf(bw, "%-39s %10s %-12s %-9s %5s %-6s %10s\n", "Neighbor", "AS", "State", "For", "Hold", "BFD", "Advertised")
	for _, p := range st.Peers {
		bfd := p.BFD
		if bfd == "" {
			bfd = "-"
		}
		fmt.Fprintf(bw, "%-39s %10d %-12s %-9s %5s %-6s %10d\n", p.Addr, p.ASN, p.State, ago(p.Since),
			fmt.Sprintf("%ds", int(p.HoldTime.Seconds())), bfd, p.Advertised)
		if p.State != "established" && p.LastError != "" {
			fmt.Fprintf(bw, "  last error: %s\n", p.LastError)
		}
	}
	fmt.Fprintf(bw, "%-43s %-10s %-9s %s\n", "Prefix", "Route", "For", "Why")
	for _, r := range st.Routes {
		state := "withdrawn"
		if r.Announced {
			state = "announced"
		}
		fmt.Fprintf(bw, "%-43s %-10s %-9s %s\n", r.Prefix, state, ago(r.Since), r.Why)
	}
}

// printDaemons lists the sync daemons as ipvsadm -L --daemon does.
func printDaemons(w io.Writer, ds []api.SyncDaemon) {
	for _, d := range ds {
		fmt.Fprintf(w, "%s sync daemon (mcast=%s, syncid=%d", d.Role, d.Interface, d.SyncID)
		if d.MaxLen != 0 {
			fmt.Fprintf(w, ", maxlen=%d", d.MaxLen)
		}
		if d.Group.IsValid() {
			fmt.Fprintf(w, ", group=%s", d.Group)
		}
		if d.Port != 0 {
			fmt.Fprintf(w, ", port=%d", d.Port)
		}
		if d.TTL != 0 {
			fmt.Fprintf(w, ", ttl=%d", d.TTL)
		}
		if d.KeyFile != "" {
			fmt.Fprintf(w, ", signed with %s", d.KeyFile)
		}
		fmt.Fprintln(w, ")")
	}
}

// printDaemonRules writes the running sync daemons as --start-daemon
// lines for -S (-R runs them, as ipvsadm -R runs every line), with the
// options that differ from the defaults.
func printDaemonRules(w io.Writer, ds []api.SyncDaemon) {
	for _, d := range ds {
		fmt.Fprintf(w, "--start-daemon %s --mcast-interface %s --syncid %d", d.Role, d.Interface, d.SyncID)
		if d.Group.IsValid() && d.Group != connsync.DefaultGroup {
			fmt.Fprintf(w, " --mcast-group %s", d.Group)
		}
		if d.Port != 0 && d.Port != connsync.DefaultPort {
			fmt.Fprintf(w, " --mcast-port %d", d.Port)
		}
		if d.TTL > 1 {
			fmt.Fprintf(w, " --mcast-ttl %d", d.TTL)
		}
		if d.KeyFile != "" {
			fmt.Fprintf(w, " --sync-key-file %s", d.KeyFile)
		}
		fmt.Fprintln(w)
	}
}
