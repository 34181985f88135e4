package server

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/xipvs/xipvs/internal/neigh"
)

// v1Commands are the commands after which xipvs 0.1 wrote
// testdata/state-v1.json (see testdata/README.md).
const v1Commands = `-A -t 10.0.0.100:80 -s wrr
-a -t 10.0.0.100:80 -r 10.0.0.11 -g -w 3 -x 100 -y 50
-a -t 10.0.0.100:80 -r 10.0.0.12 -i
-A -t 10.0.0.100:443 -s sh -b sh-port,sh-fallback -p 600 -M 255.255.255.0 --check http --check-path /health --check-interval 2 --on-failure remove --sorry-server 10.0.0.99:443
-a -t 10.0.0.100:443 -r 10.0.0.13:8443 -m -w 0 --check tcp --check-port 8443
-A -u 10.0.0.100:53 -s rr
-a -u 10.0.0.100:53 -r 10.0.0.14 -b
-A -f 6666 -s rr -p
-a -f 6666 -r 10.0.0.15 -g
--add-mark -f 6666 -t 10.0.0.100:8080,9000-9010
--set 1000 100 200
--add-laddr -z 10.0.0.101 -u 10.0.0.100:53
`

// TestAdoptV1State: a state file written by xipvs 0.1 is adopted with
// the configuration its commands made and the real ids it recorded.
func TestAdoptV1State(t *testing.T) {
	st, err := ReadStateFile("testdata/state-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	s, dp, _ := newTestServer(t)
	withTunnelSource(s)
	if err := s.Restore(st, dp); err != nil {
		t.Fatal(err)
	}
	want := rules(t, v1Commands)
	got := s.Config()
	// Compare as the rules file -S would write: normalized services.
	for i := range want.Services {
		want.Services[i].Service.SetDefaults()
	}
	if !reflect.DeepEqual(got, want) {
		gj, _ := json.MarshalIndent(got, "", " ")
		wj, _ := json.MarshalIndent(want, "", " ")
		t.Errorf("adopted configuration:\n%s\nwant:\n%s", gj, wj)
	}
	// The real ids are the file's, read here without the code under test.
	var raw struct {
		Services []struct {
			Dests []struct {
				RealID uint32 `json:"real_id"`
				Config struct{ Addr string }
			} `json:"dests"`
		} `json:"services"`
	}
	b, err := os.ReadFile("testdata/state-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, sv := range raw.Services {
		for _, d := range sv.Dests {
			r, ok := dp.Reals[d.RealID]
			if !ok || r.Addr.String() != d.Config.Addr {
				t.Errorf("real id %d: %+v, want %s", d.RealID, r, d.Config.Addr)
			}
			n++
		}
	}
	if n != 5 {
		t.Errorf("%d reals in the file, want 5", n)
	}
}

// TestStateRoundTrip: what this version writes, it reads back the same,
// with every key spelled by its tag.
func TestStateRoundTrip(t *testing.T) {
	var saved State
	s, _, _ := newTestServer(t)
	s.opts.Persist = func(st State) error { saved = st; return nil }
	withTunnelSource(s)
	if err := s.ApplyLines(context.Background(), lines(t, v1Commands)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "state.json")
	if err := WriteStateFile(path, saved); err != nil {
		t.Fatal(err)
	}
	back, err := ReadStateFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, saved) {
		t.Errorf("read back:\n%+v\nwrote:\n%+v", back, saved)
	}
	b, _ := os.ReadFile(path)
	for _, goName := range []string{`"Scheduler"`, `"SchedFlags"`, `"UThreshold"`, `"Addr"`, `"Fwd"`} {
		if strings.Contains(string(b), goName) {
			t.Errorf("state file has a Go field name %s: %s", goName, b)
		}
	}
	if !strings.Contains(string(b), `"fwd": "fullnat"`) {
		t.Errorf("forwarding methods not by name: %s", b)
	}
}

// withTunnelSource gives routes a source address, as TUN reals need.
func withTunnelSource(s *Server) {
	s.opts.Route = func(netip.Addr) (neigh.NextHop, error) {
		return neigh.NextHop{Ifindex: 2, MTU: 1500, Src: netip.MustParseAddr("10.0.0.2")}, nil
	}
}
