package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestKeepalived reads testdata/keepalived (written for this test in
// keepalived's documentation style: DR, NAT, TUN, a group, a fwmark
// service, an include) and checks the services against what keepalived
// would give IPVS for it, derived by hand from keepalived's semantics.
func TestKeepalived(t *testing.T) {
	path := "testdata/keepalived/keepalived.conf"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !IsKeepalived(b) || IsKeepalived([]byte("-A -t 1.2.3.4:80\n")) || IsKeepalived([]byte("services: []\n")) {
		t.Fatal("detection by content")
	}
	l, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c := l.Config
	if len(c.Services) != 5 {
		t.Fatalf("%d services: %+v", len(c.Services), c.Services)
	}
	get := func(k ServiceKey) ServiceConfig {
		t.Helper()
		i := c.Find(k)
		if i < 0 {
			t.Fatalf("no service %s", k)
		}
		return c.Services[i]
	}
	http := func(interval, timeout time.Duration, fall int) Check {
		return Check{Type: "http", Path: "/health", Status: 200, Interval: interval, Timeout: timeout, Rise: 1, Fall: fall}
	}
	// DR, wrr, persistence 50 s per /24; the reals in IPVS's order (the
	// newest first: keepalived adds them in the file's order).
	web := get(ServiceKey{Proto: TCP, Addr: netip.MustParseAddr("10.80.0.100"), Port: 80})
	if s := web.Service; s.Scheduler != "wrr" || !s.Persistent || s.Timeout != 50 || s.Netmask.Bits() != 24 || s.OnFailure != OnFailureQuiesce {
		t.Errorf("web service %+v", s)
	}
	want := []Dest{
		{Addr: netip.MustParseAddr("10.80.0.12"), Port: 80, Fwd: FwdRoute, Weight: 1, Check: http(2*time.Second, time.Second, 3)},
		{Addr: netip.MustParseAddr("10.80.0.11"), Port: 80, Fwd: FwdRoute, Weight: 3, Check: func() Check {
			c := http(2*time.Second, time.Second, 3)
			c.Digest = "9b3a0c85a887a256d6939da88aabd8cd"
			return c
		}()},
	}
	for i, d := range web.Dests {
		if i >= len(want) || d != want[i] {
			t.Errorf("web real %d: %+v", i, d)
		}
	}
	// NAT with a sorry server (NAT too), failed reals quiesced.
	api := get(ServiceKey{Proto: TCP, Addr: netip.MustParseAddr("10.80.0.101"), Port: 8080})
	if s := api.Service; s.Scheduler != "wlc" || s.Persistent || s.OnFailure != OnFailureQuiesce ||
		s.Sorry != (SorryServer{Addr: netip.MustParseAddrPort("10.81.0.99:8080"), Fwd: FwdMasq}) {
		t.Errorf("api service %+v", s)
	}
	want = []Dest{
		{Addr: netip.MustParseAddr("10.81.0.14"), Port: 8080, Fwd: FwdMasq, Weight: 2,
			Check: Check{Type: "exec", Exec: "/bin/true 10.81.0.14", Interval: 3 * time.Second, Timeout: 2 * time.Second, Rise: 1, Fall: 2, StartDown: true}},
		{Addr: netip.MustParseAddr("10.81.0.13"), Port: 8080, Fwd: FwdMasq, Weight: 1,
			Check: Check{Type: "tcp", Port: 9000, Interval: 3 * time.Second, Timeout: 2 * time.Second, Rise: 1, Fall: 2, StartDown: true}},
	}
	for i, d := range api.Dests {
		if i >= len(want) || d != want[i] {
			t.Errorf("api real %d: %+v", i, d)
		}
	}
	// The group: one UDP TUN service per VIP of the range; no check, so
	// no inhibit: a failed real would be removed (keepalived's default).
	for _, vip := range []string{"10.80.0.110", "10.80.0.111"} {
		dns := get(ServiceKey{Proto: UDP, Addr: netip.MustParseAddr(vip), Port: 53})
		if s := dns.Service; s.Scheduler != "rr" || s.OnFailure != OnFailureRemove || len(dns.Dests) != 1 ||
			dns.Dests[0] != (Dest{Addr: netip.MustParseAddr("10.82.0.15"), Port: 53, Fwd: FwdTunnel, Weight: 1}) {
			t.Errorf("dns %s: %+v", vip, dns)
		}
	}
	// fwmark 7, sh, DR; delay_loop's default (60 s), connect_timeout's
	// (5 s), retry's (1).
	fwm := get(ServiceKey{FWMark: 7, Proto: TCP})
	if s := fwm.Service; s.Scheduler != "sh" || len(fwm.Dests) != 1 || fwm.Dests[0] != (Dest{Addr: netip.MustParseAddr("10.80.0.16"), Fwd: FwdRoute, Weight: 1,
		Check: Check{Type: "tcp", Port: 443, Interval: 60 * time.Second, Timeout: 5 * time.Second, Rise: 1, Fall: 2}}) {
		t.Errorf("fwmark service %+v", fwm)
	}

	// What became of the lines: VRRP and global_defs ignored, what xipvs
	// cannot honour named, the rest used.
	use := map[string]string{}
	for _, kl := range l.Keepalived {
		use[filepath.Base(kl.File)+":"+kl.Text] = kl.Use
	}
	for text, want := range map[string]string{
		"keepalived.conf:router_id LVS_DEVEL":                     UseIgnored,
		"keepalived.conf:vrrp_instance VI_1 {":                    UseIgnored,
		"keepalived.conf:auth_pass 1111":                          UseIgnored,
		"keepalived.conf:lb_algo wrr":                             UseUsed,
		"keepalived.conf:digest 9b3a0c85a887a256d6939da88aabd8cd": UseUsed,
		"nat.conf:alpha":                                          UseUsed,
		"keepalived.conf:delay_before_retry 1":                    UseCannot,
		"keepalived.conf:virtual_server 10.80.0.100 80 {":         UseCannot, // inhibit_on_failure on one real only
		"nat.conf:quorum 1":                                       UseCannot,
		`nat.conf:notify_down "/usr/local/bin/page-ops down"`:     UseCannot,
		"nat.conf:sorry_server 10.81.0.99 8080":                   UseUsed,
		"nat.conf:10.80.0.110-111 53":                             UseUsed,
		`nat.conf:misc_path "/bin/true 10.81.0.14"`:               UseUsed,
	} {
		if use[text] != want {
			t.Errorf("%s: %q, want %q", text, use[text], want)
		}
	}
}

func TestKeepalivedErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ conf, want string }{
		{"virtual_server 10.0.0.1 80 {\n lb_algo p2c\n}\n", "not an xipvs scheduler"},
		{"virtual_server 10.0.0.1 80 {\n lb_kind NOPE\n}\n", "lb_kind"},
		{"virtual_server 10.0.0.1 80 {\n protocol SCTP\n}\n", "TCP and UDP"},
		{"virtual_server group NONE {\n}\n", "not defined"},
		{"virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n weight x\n }\n}\n", "weight"},
		{"virtual_server 10.0.0.1 80 {\n", "not closed"},
		{"virtual_server 10.0.0.1 80 {\n}\n}\n", "without {"},
		{"virtual_server 10.0.0.1 80 {\n}\nvirtual_server 10.0.0.1 80 {\n}\n", "already exists"},
		{"virtual_server 10.0.0.1 80 {\n real_server 10.0.0.2 80 {\n HTTP_GET {\n url {\n path health\n }\n }\n }\n}\n", "must start with /"},
	} {
		p := filepath.Join(dir, "k.conf")
		if err := os.WriteFile(p, []byte(tc.conf), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadFile(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.conf, err, tc.want)
		}
	}
}

// TestKeepalivedSyncDaemons: lvs_sync_daemon_interface in a
// vrrp_instance, and lvs_sync_daemon in global_defs, ask for the sync
// daemons (master and backup: keepalived switches them with VRRP, xipvs
// runs both), their id the instance's virtual_router_id unless given;
// the line is used, not filed as VRRP.
func TestKeepalivedSyncDaemons(t *testing.T) {
	for _, c := range []struct {
		conf string
		want SyncDaemon
		line string
	}{
		{"vrrp_instance VI_1 {\n state MASTER\n interface eth0\n virtual_router_id 51\n lvs_sync_daemon_interface eth1\n}\n",
			SyncDaemon{Interface: "eth1", SyncID: 51}, "lvs_sync_daemon_interface eth1"},
		{"global_defs {\n router_id LVS_1\n lvs_sync_daemon eth0 VI_1 id 7 port 9000 group 224.0.0.99\n}\nvrrp_instance VI_1 {\n virtual_router_id 51\n}\n",
			SyncDaemon{Interface: "eth0", SyncID: 7, Port: 9000, Group: netip.MustParseAddr("224.0.0.99")}, "lvs_sync_daemon eth0 VI_1 id 7 port 9000 group 224.0.0.99"},
		{"global_defs {\n lvs_sync_daemon eth2 VI_2\n}\nvrrp_instance VI_2 {\n virtual_router_id 33\n}\n",
			SyncDaemon{Interface: "eth2", SyncID: 33}, "lvs_sync_daemon eth2 VI_2"},
	} {
		p := filepath.Join(t.TempDir(), "keepalived.conf")
		if err := os.WriteFile(p, []byte(c.conf), 0o600); err != nil {
			t.Fatal(err)
		}
		k, err := ParseKeepalived(p)
		if err != nil {
			t.Fatal(err)
		}
		master, backup := c.want, c.want
		master.Role, backup.Role = "master", "backup"
		if len(k.Sync) != 2 || k.Sync[0] != master || k.Sync[1] != backup {
			t.Errorf("%s: sync daemons %+v, want %+v and %+v", c.line, k.Sync, master, backup)
		}
		for _, l := range k.Lines {
			if l.Text == c.line && l.Use != UseUsed {
				t.Errorf("%s: %s (%s)", c.line, l.Use, l.Why)
			}
		}
	}
}
