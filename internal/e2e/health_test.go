package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xipvs/xipvs/internal/testutil"
)

// healthServer serves name on / (keep-alive allowed) and /health with a
// status the test sets.
func healthServer(t *testing.T, h *testutil.Host, name string) *atomic.Int32 {
	t.Helper()
	status := &atomic.Int32{}
	status.Store(200)
	var ln net.Listener
	if err := h.Do(func() (err error) { ln, err = net.Listen("tcp", ":80"); return }); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			w.WriteHeader(int(status.Load()))
			return
		}
		fmt.Fprint(w, name)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return status
}

// keepAlive is one client TCP connection to the VIP carrying HTTP/1.1
// requests one after another.
type keepAlive struct {
	c  net.Conn
	rd *bufio.Reader
}

func (k *keepAlive) get(t *testing.T) string {
	t.Helper()
	_ = k.c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(k.c, "GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
	resp, err := http.ReadResponse(k.rd, nil)
	if err != nil {
		t.Fatalf("request on the established connection: %v", err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
	return b.String()
}

// One real fails its HTTP check while its TCP service stays up: within
// three intervals every new connection goes to the other real, while an
// established connection to the failing real keeps being served; back
// to health, it takes new flows again; with both failing, the sorry
// server takes them.
func TestHealthCheckQuiesceAndSorry(t *testing.T) {
	lab := newDRLab(t, "hc")
	sorry, err := lab.Out.AddHost("sorry", netip.MustParsePrefix("10.77.0.13/24"), testutil.HostOptions{TxChecksumOff: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := sorry.MakeRealServer(lab.vip); err != nil {
		t.Fatal(err)
	}
	st1 := healthServer(t, lab.rs[0], "rs1")
	st2 := healthServer(t, lab.rs[1], "rs2")
	healthServer(t, sorry, "sorry")

	const interval = 300 * time.Millisecond
	lab.adm(t, "-A", "-t", "10.77.0.100:80", "-s", "rr", "--check", "http", "--check-path", "/health",
		"--check-interval", "0.3", "--check-timeout", "0.2", "--rise", "2", "--fall", "2",
		"--sorry-server", "10.77.0.13")
	lab.adm(t, "-a", "-t", "10.77.0.100:80", "-r", "10.77.0.11", "-g")
	lab.adm(t, "-a", "-t", "10.77.0.100:80", "-r", "10.77.0.12", "-g")
	seen := map[string]int{}
	for i := 0; i < 4; i++ {
		seen[lab.httpGet(t)]++
	}
	if seen["rs1"] != 2 || seen["rs2"] != 2 {
		t.Fatalf("healthy rr split %v", seen)
	}

	// An established connection on rs1.
	var ka *keepAlive
	for i := 0; i < 4 && ka == nil; i++ {
		var c net.Conn
		if err := lab.cl.Do(func() (err error) { c, err = net.Dial("tcp", "10.77.0.100:80"); return }); err != nil {
			t.Fatal(err)
		}
		k := &keepAlive{c: c, rd: bufio.NewReader(c)}
		if k.get(t) == "rs1" {
			ka = k
			defer c.Close()
		} else {
			c.Close()
		}
	}
	if ka == nil {
		t.Fatal("no connection landed on rs1")
	}

	st1.Store(500)
	time.Sleep(3 * interval)
	for i := 0; i < 10; i++ {
		if got := lab.httpGet(t); got != "rs2" {
			t.Fatalf("new connection %d after rs1 failed (3 intervals): answered by %s", i, got)
		}
	}
	for i := 0; i < 3; i++ {
		if got := ka.get(t); got != "rs1" {
			t.Fatalf("established connection: answered by %q, want rs1 (quiesced, not cut)", got)
		}
	}
	health := lab.adm(t, "-L", "-n", "--health")
	t.Logf("--health:\n%s", health)
	if !strings.Contains(health, "10.77.0.11:80") || !strings.Contains(health, "DOWN") || !strings.Contains(health, "HTTP 500, want 200") {
		t.Errorf("--health:\n%s", health)
	}
	if l := lab.adm(t, "-Ln"); !strings.Contains(l, destLine("10.77.0.11:80", "Route", 0)) {
		t.Errorf("-Ln does not show rs1 quiesced:\n%s", l)
	}
	if s := lab.adm(t, "-Sn"); !strings.Contains(s, "-r 10.77.0.11:80 -g -w 1") {
		t.Errorf("-S lost the configured weight:\n%s", s)
	}

	// Back to health: rs1 takes new flows again.
	st1.Store(200)
	deadline := time.Now().Add(2*interval + 3*time.Second)
	back := false
	for time.Now().Before(deadline) && !back {
		back = lab.httpGet(t) == "rs1"
		time.Sleep(50 * time.Millisecond)
	}
	if !back {
		t.Fatal("rs1 healthy again but no new connection reached it")
	}

	// Both fail: the sorry server.
	st1.Store(503)
	st2.Store(503)
	time.Sleep(3 * interval)
	for i := 0; i < 4; i++ {
		if got := lab.httpGet(t); got != "sorry" {
			t.Fatalf("both reals down: answered by %q, want the sorry server", got)
		}
	}
	if h := lab.adm(t, "-L", "-n", "--health"); !strings.Contains(h, "ACTIVE") {
		t.Errorf("--health does not show the sorry server active:\n%s", h)
	}
	st2.Store(200)
	deadline = time.Now().Add(2*interval + 3*time.Second)
	for time.Now().Before(deadline) {
		if lab.httpGet(t) == "rs2" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := 0; i < 4; i++ {
		if got := lab.httpGet(t); got != "rs2" {
			t.Fatalf("rs2 back, rs1 down: answered by %q", got)
		}
	}
	// Every transition logged once, with its reason.
	logs := lab.Daemon.Logs()
	if n := strings.Count(logs, `msg="real server failed its check" service="TCP  10.77.0.100:80" real=10.77.0.11:80`); n != 2 {
		t.Errorf("rs1 failure logged %d times, want 2:\n%s", n, logs)
	}
	if !strings.Contains(logs, "sorry server takes new flows") {
		t.Errorf("sorry transition not logged")
	}
}
