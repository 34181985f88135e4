package config

// keepalived.go: keepalived.conf as a configuration source. The LVS part
// (virtual_server, virtual_server_group, real_server and its checkers,
// DPVS's local_address_group) is read into a Config; the rest (VRRP,
// global_defs, scripts) is reported as ignored, and what xipvs cannot
// honour as such, line by line, for --dry-run.

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// KeepalivedLine is what became of one line of a keepalived.conf.
type KeepalivedLine struct {
	File string
	N    int
	Text string
	// Use is "used", "ignored" or "cannot honour"; Why says why.
	Use, Why string
}

// Line uses.
const (
	UseUsed    = "used"
	UseIgnored = "ignored"
	UseCannot  = "cannot honour"
)

// kaToken is a word of a keepalived.conf with where it is.
type kaToken struct {
	s    string
	file string
	line int
}

// kaNode is a statement: its words, and its block if it has one.
type kaNode struct {
	words []kaToken
	block []*kaNode
}

func (n *kaNode) key() string { return n.words[0].s }
func (n *kaNode) args() []string {
	out := make([]string, 0, len(n.words)-1)
	for _, w := range n.words[1:] {
		out = append(out, w.s)
	}
	return out
}

// IsKeepalived reports whether b reads as a keepalived.conf: its first
// statement is one of keepalived's top-level keywords.
func IsKeepalived(b []byte) bool {
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' || l[0] == '!' {
			continue
		}
		f := strings.Fields(l)[0]
		f = strings.TrimSuffix(f, "{")
		switch f {
		case "global_defs", "vrrp_instance", "vrrp_sync_group", "vrrp_script", "virtual_server", "virtual_server_group",
			"static_ipaddress", "static_routes", "static_rules", "include", "local_address_group", "linkbeat_interfaces",
			"net_namespace", "vrrp_track_process", "bfd_instance":
			return true
		}
		return false
	}
	return false
}

// kaLexer reads keepalived.conf files, following include.
type kaLexer struct {
	lines map[string][]string // file -> its lines
	depth int
}

// tokens splits a file into words ({ and } are words), comments (# and
// !) dropped, quoted strings kept whole, include expanded in place.
func (lx *kaLexer) tokens(path string) ([]kaToken, error) {
	if lx.depth > 8 {
		return nil, fmt.Errorf("%s: include nested too deep", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(string(b), "\n")
	lx.lines[path] = lines
	var out []kaToken
	for i, l := range lines {
		words, err := kaWords(l)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, i+1, err)
		}
		if len(words) >= 2 && words[0] == "include" {
			lx.depth++
			for _, pat := range words[1:] {
				if !filepath.IsAbs(pat) {
					pat = filepath.Join(filepath.Dir(path), pat)
				}
				files, err := filepath.Glob(pat)
				if err != nil {
					return nil, fmt.Errorf("%s:%d: include %s: %w", path, i+1, pat, err)
				}
				slices.Sort(files)
				for _, f := range files {
					t, err := lx.tokens(f)
					if err != nil {
						return nil, err
					}
					out = append(out, t...)
				}
			}
			lx.depth--
			continue
		}
		for _, w := range words {
			out = append(out, kaToken{s: w, file: path, line: i + 1})
		}
		// A line ends a statement: mark it with an empty word.
		if len(words) > 0 {
			out = append(out, kaToken{file: path, line: i + 1})
		}
	}
	return out, nil
}

// kaWords splits one line into words.
func kaWords(l string) ([]string, error) {
	var out []string
	for i := 0; i < len(l); {
		c := l[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r':
			i++
		case c == '#' || c == '!':
			return out, nil
		case c == '{' || c == '}':
			out = append(out, string(c))
			i++
		case c == '"':
			j := strings.IndexByte(l[i+1:], '"')
			if j < 0 {
				return nil, errors.New("unterminated quoted string")
			}
			out = append(out, l[i+1:i+1+j])
			i += j + 2
		default:
			j := i
			for j < len(l) && !strings.ContainsRune(" \t\r{}#!", rune(l[j])) {
				j++
			}
			out = append(out, l[i:j])
			i = j
		}
	}
	return out, nil
}

// kaParse builds the statement tree.
func kaParse(toks []kaToken) ([]*kaNode, error) {
	var parse func(i int, nested bool) ([]*kaNode, int, error)
	parse = func(i int, nested bool) ([]*kaNode, int, error) {
		var nodes []*kaNode
		var cur *kaNode
		for i < len(toks) {
			t := toks[i]
			switch t.s {
			case "":
				cur = nil
				i++
			case "{":
				if cur == nil {
					return nil, 0, fmt.Errorf("%s:%d: { without a keyword", t.file, t.line)
				}
				block, j, err := parse(i+1, true)
				if err != nil {
					return nil, 0, err
				}
				cur.block = block
				cur = nil
				i = j
			case "}":
				if !nested {
					return nil, 0, fmt.Errorf("%s:%d: } without {", t.file, t.line)
				}
				return nodes, i + 1, nil
			default:
				if cur == nil {
					cur = &kaNode{}
					nodes = append(nodes, cur)
				}
				cur.words = append(cur.words, t)
				i++
			}
		}
		if nested {
			return nil, 0, errors.New("unbalanced braces: a block is not closed")
		}
		return nodes, i, nil
	}
	nodes, _, err := parse(0, false)
	return nodes, err
}

// Keepalived is a keepalived.conf as xipvsd reads it.
type Keepalived struct {
	Config *Config
	Lines  []KeepalivedLine
	// Sync are the connection sync daemons lvs_sync_daemon (global_defs)
	// or lvs_sync_daemon_interface (vrrp_instance) ask for.
	Sync []SyncDaemon
}

// kaReader collects the result of reading the tree.
type kaReader struct {
	lx     *kaLexer
	uses   map[string]map[int]KeepalivedLine
	groups map[string][]*kaNode // virtual_server_group
	laddrs map[string][]netip.Addr
	cfg    *Config
	sync   []SyncDaemon
}

func (r *kaReader) mark(t kaToken, use, why string) {
	m := r.uses[t.file]
	if m == nil {
		m = map[int]KeepalivedLine{}
		r.uses[t.file] = m
	}
	// The strongest verdict of a line wins: cannot honour > used > ignored.
	rank := map[string]int{UseIgnored: 0, UseUsed: 1, UseCannot: 2}
	if old, ok := m[t.line]; ok && rank[old.Use] >= rank[use] {
		return
	}
	m[t.line] = KeepalivedLine{File: t.file, N: t.line, Use: use, Why: why}
}

// markAll marks a node and everything in it.
func (r *kaReader) markAll(n *kaNode, use, why string) {
	r.mark(n.words[0], use, why)
	for _, c := range n.block {
		r.markAll(c, use, why)
	}
}

// ParseKeepalived reads path (a keepalived.conf, with its includes).
func ParseKeepalived(path string) (*Keepalived, error) {
	lx := &kaLexer{lines: map[string][]string{}}
	toks, err := lx.tokens(path)
	if err != nil {
		return nil, err
	}
	nodes, err := kaParse(toks)
	if err != nil {
		return nil, err
	}
	r := &kaReader{lx: lx, uses: map[string]map[int]KeepalivedLine{}, groups: map[string][]*kaNode{},
		laddrs: map[string][]netip.Addr{}, cfg: &Config{}}
	// Groups first: a virtual_server may name one defined after it.
	for _, n := range nodes {
		switch n.key() {
		case "virtual_server_group":
			if len(n.words) != 2 {
				return nil, kaErr(n, "virtual_server_group needs a name")
			}
			r.groups[n.words[1].s] = n.block
		case "local_address_group":
			if len(n.words) != 2 {
				return nil, kaErr(n, "local_address_group needs a name")
			}
			for _, c := range n.block {
				a, err := netip.ParseAddr(c.key())
				if err != nil {
					return nil, kaErr(c, "local address %q: %v", c.key(), err)
				}
				r.laddrs[n.words[1].s] = append(r.laddrs[n.words[1].s], a)
				r.mark(c.words[0], UseUsed, "FULLNAT local address")
			}
			r.mark(n.words[0], UseUsed, "")
		}
	}
	for _, n := range nodes {
		switch n.key() {
		case "virtual_server":
			if err := r.virtualServer(n); err != nil {
				return nil, err
			}
		case "virtual_server_group", "local_address_group":
		case "global_defs":
			r.markAll(n, UseIgnored, "global settings (keepalived's own)")
			if err := r.syncDaemons(n, nodes); err != nil {
				return nil, err
			}
		case "vrrp_instance", "vrrp_sync_group", "vrrp_script", "vrrp_track_process", "static_ipaddress", "static_routes",
			"static_rules", "linkbeat_interfaces", "bfd_instance", "net_namespace":
			r.markAll(n, UseIgnored, "VRRP and addresses are keepalived's (run it for them, without virtual_server blocks)")
			if n.key() == "vrrp_instance" {
				if err := r.syncDaemons(n, nodes); err != nil {
					return nil, err
				}
			}
		default:
			r.markAll(n, UseIgnored, "not an LVS keyword")
		}
	}
	k := &Keepalived{Config: r.cfg, Sync: r.sync}
	files := make([]string, 0, len(r.uses))
	for f := range lx.lines {
		files = append(files, f)
	}
	slices.Sort(files)
	for _, f := range files {
		for i, l := range lx.lines[f] {
			u, ok := r.uses[f][i+1]
			if !ok {
				continue
			}
			u.Text = strings.TrimSpace(l)
			k.Lines = append(k.Lines, u)
		}
	}
	return k, nil
}

func kaErr(n *kaNode, format string, args ...any) error {
	return invalid("%s:%d: %s", n.words[0].file, n.words[0].line, fmt.Sprintf(format, args...))
}

// syncDaemons reads block n's lvs_sync_daemon (global_defs: IFACE
// [INSTANCE] [id N] [maxlen N] [port N] [ttl N] [group ADDR]) or
// lvs_sync_daemon_interface (a vrrp_instance's: IFACE). keepalived runs
// the master while the instance is MASTER and the backup while it is
// BACKUP; xipvs, which does not run VRRP, runs both, as ipvsadm lets a
// director do: each side sends what it has and takes the other's. The
// id defaults to the instance's virtual_router_id, as keepalived's.
func (r *kaReader) syncDaemons(n *kaNode, nodes []*kaNode) error {
	instance := ""
	if n.key() == "vrrp_instance" && len(n.words) > 1 {
		instance = n.words[1].s
	}
	for _, c := range n.block {
		if c.key() != "lvs_sync_daemon" && c.key() != "lvs_sync_daemon_interface" {
			continue
		}
		a := c.args()
		if len(a) == 0 {
			return kaErr(c, "%s needs an interface", c.key())
		}
		if len(r.sync) > 0 {
			r.mark(c.words[0], UseCannot, "one sync daemon pair: the first one's")
			continue
		}
		d := SyncDaemon{Interface: a[0]}
		rest := a[1:]
		if c.key() == "lvs_sync_daemon" && len(rest) > 0 && !slices.Contains([]string{"id", "maxlen", "port", "ttl", "group"}, rest[0]) {
			instance, rest = rest[0], rest[1:]
		}
		id := -1
		for i := 0; i+1 < len(rest); i += 2 {
			v := rest[i+1]
			n, err := strconv.Atoi(v)
			switch rest[i] {
			case "id":
				if err != nil || n < 0 || n > 255 {
					return kaErr(c, "sync id %q: want 0 to 255", v)
				}
				id = n
			case "maxlen":
				d.MaxLen = n
			case "port":
				d.Port = uint16(n)
			case "ttl":
				d.TTL = uint8(n)
			case "group":
				g, gerr := netip.ParseAddr(v)
				if gerr != nil {
					return kaErr(c, "sync group %q: %v", v, gerr)
				}
				d.Group, err = g, nil
			default:
				return kaErr(c, "%s: unknown option %q", c.key(), rest[i])
			}
			if err != nil {
				return kaErr(c, "%s %s %q: %v", c.key(), rest[i], v, err)
			}
		}
		if id < 0 {
			id = int(routerID(nodes, instance))
		}
		d.SyncID = uint8(id)
		master, backup := d, d
		master.Role, backup.Role = "master", "backup"
		r.sync = append(r.sync, master, backup)
		r.mark(c.words[0], UseUsed, fmt.Sprintf("sync daemons master and backup on %s, id %d (keepalived switches them with VRRP; xipvs runs both)", d.Interface, id))
	}
	return nil
}

// routerID is vrrp_instance name's virtual_router_id (0: none).
func routerID(nodes []*kaNode, name string) uint8 {
	for _, n := range nodes {
		if n.key() != "vrrp_instance" || len(n.words) < 2 || n.words[1].s != name {
			continue
		}
		for _, c := range n.block {
			if a := c.args(); c.key() == "virtual_router_id" && len(a) == 1 {
				if v, err := strconv.Atoi(a[0]); err == nil && v >= 0 && v <= 255 {
					return uint8(v)
				}
			}
		}
	}
	return 0
}
