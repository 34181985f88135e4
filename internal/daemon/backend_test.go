package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/dataplane/slowpath"
	"github.com/xipvs/xipvs/internal/api"
	"github.com/xipvs/xipvs/internal/bgp"
	"github.com/xipvs/xipvs/internal/neigh"
	"github.com/xipvs/xipvs/internal/server"
	"github.com/xipvs/xipvs/internal/testutil"
)

// fakeCounters stands in for the data plane's counters.
type fakeCounters struct{ *testutil.FakeDataplane }

func (fakeCounters) Counters() ([dataplane.NumStats]uint64, error) {
	var c [dataplane.NumStats]uint64
	c[dataplane.StatFwd] = 7
	return c, nil
}
func (fakeCounters) SlowPathStats() slowpath.Stats {
	return slowpath.Stats{NewConns: 3}
}
func (fakeCounters) DefenceStatus() dataplane.DefenceStatus { return dataplane.DefenceStatus{} }

func newBackend(t *testing.T, configFile string) *backend {
	t.Helper()
	dp := testutil.NewFakeDataplane()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := server.New(server.Options{Dataplane: dp, Logger: log,
		Route: func(netip.Addr) (neigh.NextHop, error) { return neigh.NextHop{Ifindex: 2, MTU: 1500}, nil }})
	return &backend{srv: srv, dp: fakeCounters{dp}, connTable: 1024, configFile: configFile, log: log}
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "xipvs.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func services(b *backend) []string {
	var out []string
	for _, s := range b.Config().Services {
		out = append(out, s.Service.ServiceKey.String())
	}
	return out
}

// TestReload: a reload applies the file; a bad file, or one naming other
// interfaces, is refused with 400 and changes nothing.
func TestReload(t *testing.T) {
	if err := newBackend(t, "").Reload(context.Background()); statusOf(err) != http.StatusBadRequest {
		t.Errorf("reload without --config: %v (status %d)", err, statusOf(err))
	}
	path := writeFile(t, "interfaces: [eth0]\nservices:\n  - tcp: 192.0.2.1:80\n    reals: [{addr: 10.0.0.11}]\n")
	b := newBackend(t, path)
	if err := b.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []string{"TCP  192.0.2.1:80"}
	if got := services(b); !slicesEqual(got, want) {
		t.Fatalf("after reload: %v, want %v", got, want)
	}
	for _, bad := range []string{
		"services:\n  - tcp: 192.0.2.1:80\n    scheduler: nosuch\n",
		"interfaces: [eth9]\nservices: []\n",
		"services: [\n",
	} {
		if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		err := b.Reload(context.Background())
		if st := statusOf(err); st != http.StatusBadRequest {
			t.Errorf("reload of %q: %v (status %d), want 400", bad, err, st)
		}
		if got := services(b); !slicesEqual(got, want) {
			t.Errorf("a refused reload changed the configuration: %v", got)
		}
	}
}

// TestRestoreAllOrNothing: -R's lines go through the server's lock and
// apply all or nothing.
func TestRestoreAllOrNothing(t *testing.T) {
	b := newBackend(t, "")
	read := func(s string) []config.Line {
		ls, err := config.ReadRules(strings.NewReader(s))
		if err != nil {
			t.Fatal(err)
		}
		return ls
	}
	if err := b.Restore(context.Background(), read("-A -t 192.0.2.1:80 -s rr\n-a -t 192.0.2.1:80 -r 10.0.0.11 -g\n")); err != nil {
		t.Fatal(err)
	}
	err := b.Restore(context.Background(), read("-A -t 192.0.2.2:80 -s rr\n-a -t 192.0.2.3:80 -r 10.0.0.11 -g\n"))
	if !errors.Is(err, server.ErrSvcNotDefined) || statusOf(err) != http.StatusNotFound {
		t.Errorf("restore with a missing service: %v (status %d)", err, statusOf(err))
	}
	if got, want := services(b), []string{"TCP  192.0.2.1:80"}; !slicesEqual(got, want) {
		t.Errorf("after a failed restore: %v, want %v", got, want)
	}
}

func TestSetTimeoutsRange(t *testing.T) {
	b := newBackend(t, "")
	for _, bad := range []api.Timeouts{{TCP: -1}, {UDP: config.MaxTimeout + 1}} {
		if err := b.SetTimeouts(bad); statusOf(err) != http.StatusBadRequest {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	if err := b.SetTimeouts(api.Timeouts{TCP: 60}); err != nil || b.GetTimeouts().TCP != 60 {
		t.Errorf("set tcp 60: %v, %+v", err, b.GetTimeouts())
	}
}

func TestStatusOf(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{server.ErrNoService, http.StatusNotFound},
		{server.ErrServiceExists, http.StatusConflict},
		{config.ErrNoScheduler, http.StatusBadRequest},
		{&config.ParseError{Msg: "x"}, http.StatusBadRequest},
		{&api.Error{Message: "x", Status: http.StatusTeapot}, http.StatusTeapot},
		{errors.New("map full"), http.StatusInternalServerError},
	} {
		if got := statusOf(c.err); got != c.want {
			t.Errorf("statusOf(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

// TestInfoCounters: the data plane's counters appear under their enum
// names.
func TestInfoCounters(t *testing.T) {
	info := newBackend(t, "").Info()
	if info.Counters["xdp_forward"] != 7 || info.Counters["xdp_rx"] != 7 || info.Counters["slow_new_conns"] != 3 {
		t.Errorf("counters %v", info.Counters)
	}
	if len(info.Interfaces) != 1 || info.Interfaces[0] != "eth0" {
		t.Errorf("interfaces %v", info.Interfaces)
	}
}

func slicesEqual(a, b []string) bool { return strings.Join(a, "|") == strings.Join(b, "|") }

// TestReloadBGP: a bgp section is applied by a reload when the BGP
// settings come from the file, refused (nothing changed) when they come
// from flags, and its removal stops the speaker.
func TestReloadBGP(t *testing.T) {
	withBGP := "services:\n  - tcp: 192.0.2.1:80\n    reals: [{addr: 10.0.0.11}]\n" +
		"bgp:\n  asn: 65001\n  router_id: 192.0.2.9\n  peers: [{addr: 127.0.0.1, asn: 65000, port: 1}]\n"
	path := writeFile(t, withBGP)
	ctx := context.Background()

	b := newBackend(t, path)
	b.bgp = bgp.New(b.log)
	t.Cleanup(b.bgp.Stop)
	if err := b.Reload(ctx); statusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "one place") {
		t.Errorf("bgp section with BGP from flags: %v", err)
	}
	if len(services(b)) != 0 || b.BGP(ctx).Enabled {
		t.Errorf("a refused reload changed something: %v, %+v", services(b), b.BGP(ctx))
	}

	b.bgpFromFile = true
	if err := b.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	st := b.BGP(ctx)
	if !st.Enabled || st.ASN != 65001 || len(st.Peers) != 1 || st.Peers[0].Addr != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("after the reload: %+v", st)
	}
	if err := os.WriteFile(path, []byte("services: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if st := b.BGP(ctx); st.Enabled {
		t.Errorf("bgp section removed, speaker still running: %+v", st)
	}
}

// TestDryRunNotHonoured: --dry-run of a keepalived.conf whose every line
// is honoured is fine; one with a line xipvs cannot honour (quorum)
// still loads but is reported, so xipvsd exits 3.
func TestDryRunNotHonoured(t *testing.T) {
	vs := "virtual_server 127.0.0.100 80 {\n lb_algo rr\n lb_kind DR\n real_server 127.0.0.2 80 {\n weight 1\n }\n%s}\n"
	for _, c := range []struct {
		extra string
		bad   bool
	}{{"", false}, {" quorum 1\n", true}} {
		p := filepath.Join(t.TempDir(), "keepalived.conf")
		if err := os.WriteFile(p, []byte(fmt.Sprintf(vs, c.extra)), 0o600); err != nil {
			t.Fatal(err)
		}
		o := Options{Interfaces: []string{"lo"}, ConfigFile: p}
		if err := Prepare(&o); err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		err := DryRun(&o, &out)
		var nh *NotHonouredError
		if got := errors.As(err, &nh); got != c.bad || (!c.bad && err != nil) {
			t.Errorf("%q: %v\n%s", c.extra, err, out.String())
		}
		if c.bad && (nh.Lines != 1 || !strings.Contains(out.String(), "quorum 1")) {
			t.Errorf("%q: %d lines not honoured:\n%s", c.extra, nh.Lines, out.String())
		}
	}
}
