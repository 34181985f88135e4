package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/xipvs/xipvs/internal/testutil"
)

// chromium finds the browser, or skips (fails under
// XIPVS_REQUIRE_PRIVILEGED: .ci/run installs it).
func chromium(t *testing.T) string {
	t.Helper()
	for _, b := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(b); err == nil {
			return p
		}
	}
	if os.Getenv("XIPVS_REQUIRE_PRIVILEGED") != "" {
		t.Fatal("chromium not installed (apt-get install chromium; .ci/run installs it)")
	}
	t.Skip("chromium not installed (apt-get install chromium)")
	return ""
}

// TestStatusPage opens xipvsd's status page in a real browser (headless
// chromium driven by chromedp): it renders the running daemon's
// services and reals with their health, and its numbers change after
// traffic; a real failing its check shows weight 0, as -Ln does; once
// xipvsd stops, the page says so and greys what it last showed.
func TestStatusPage(t *testing.T) {
	browser := chromium(t)
	lab := newDRLab(t, "sp", "--metrics-addr", "127.0.0.1:9639")
	lab.serveHTTP(t)
	vs := lab.vip.String() + ":80"
	lab.adm(t, "-A", "-t", vs, "-s", "rr", "--check", "http", "--check-interval", "0.5")
	lab.adm(t, "-a", "-t", vs, "-r", "10.77.0.11", "-g", "-w", "3")
	lab.adm(t, "-a", "-t", vs, "-r", "10.77.0.12", "-g")

	// The page is served on the director's loopback: a proxy on the
	// test's own loopback reaches it for the browser.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var up net.Conn
				if err := lab.lb.Do(func() (err error) { up, err = net.Dial("tcp", "127.0.0.1:9639"); return }); err != nil {
					return
				}
				defer up.Close()
				go io.Copy(up, c)
				io.Copy(c, up)
			}()
		}
	}()
	url := "http://" + ln.Addr().String() + "/"

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.WindowSize(390, 844)) // a phone's viewport
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	sel := `section.service[data-service="TCP 10.77.0.100:80"]`
	// One query and read in the page itself: the page re-renders its
	// tables every second, and a node chromedp found can be gone by the
	// time it reads it ("No node with given id found").
	text := func(css string) string {
		t.Helper()
		js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e ? e.innerText : "\x00none"; })()`, css)
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("%s: %v", css, err)
		}
		if v == "\x00none" {
			t.Fatalf("%s: no such element", css)
		}
		return strings.TrimSpace(v)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(sel))); err != nil {
		t.Fatalf("page: %v", err)
	}
	title, err := chromedp.Run(ctx, chromedp.Title())
	if err != nil {
		t.Fatal(err)
	}
	if name := text(sel + " .name"); title != "xipvs director" || name != "TCP 10.77.0.100:80 rr" {
		t.Errorf("title %q, service %q", title, name)
	}
	if f := strings.Fields(text(sel + ` tr[data-real="10.77.0.11:80"]`)); len(f) < 3 || f[0] != "10.77.0.11:80" || f[1] != "route" || f[2] != "3" {
		t.Errorf("real row %q", f)
	}
	// The health check comes up.
	deadline := time.Now().Add(15 * time.Second)
	for health := ""; !strings.Contains(health, "UP"); health = text(sel + ` tr[data-real="10.77.0.12:80"] td:nth-child(4)`) {
		if time.Now().After(deadline) {
			t.Fatalf("health never UP on the page: %q", health)
		}
		time.Sleep(300 * time.Millisecond)
	}

	// Traffic: the page's numbers follow.
	conns := func() int {
		x, _ := strconv.Atoi(text(sel + ` tr[data-real="10.77.0.11:80"] .conns`))
		y, _ := strconv.Atoi(text(sel + ` tr[data-real="10.77.0.12:80"] .conns`))
		return x + y
	}
	before := conns()
	for i := 0; i < 10; i++ {
		lab.httpGet(t)
	}
	deadline = time.Now().Add(15 * time.Second)
	for conns() < before+10 {
		if time.Now().After(deadline) {
			t.Fatalf("the page's connection counts did not follow 10 requests: %d, then %d", before, conns())
		}
		time.Sleep(300 * time.Millisecond)
	}
	if fwd := text("#ctr-xdp_forward"); fwd == "0" || fwd == "" {
		t.Errorf("XDP forward counter on the page: %q", fwd)
	}
	if ctl := text("#ctl"); !strings.Contains(ctl, "connection table") || !strings.Contains(ctl, "flood defence") {
		t.Errorf("control section: %q", ctl)
	}

	// A real that fails its check is quiesced: weight 0 on the page, as
	// -Ln shows it.
	if err := lab.rs[1].IP("link", "set", "eth0", "down"); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		f := strings.Fields(text(sel + ` tr[data-real="10.77.0.12:80"]`))
		if len(f) >= 4 && f[2] == "0" && strings.Contains(strings.Join(f, " "), "DOWN") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a failing real on the page: %q, want weight 0 and DOWN", f)
		}
		time.Sleep(300 * time.Millisecond)
	}

	// xipvsd stops: the page says it cannot reach it, and greys what it
	// last showed.
	lab.Daemon.Stop()
	deadline = time.Now().Add(10 * time.Second)
	for {
		stale, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.body.classList.contains("stale")`))
		if err == nil && stale && strings.Contains(text("#error"), "xipvsd unreachable since") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page after xipvsd stopped: %q (stale %v, %v)", text("#error"), stale, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// TestGrafanaDashboard: every metric the Grafana dashboard
// (packaging/grafana) queries is in a running xipvsd's /metrics, with
// the labels its legends name.
func TestGrafanaDashboard(t *testing.T) {
	root, err := testutil.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "packaging/grafana/xipvs-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr   string `json:"expr"`
				Legend string `json:"legendFormat"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	// A director with a checked service and a BGP peer (that never
	// answers: the session metrics exist all the same).
	lab := newDRLab(t, "gd", "--metrics-addr", "127.0.0.1:9639", "--bgp-asn", "65001", "--bgp-router-id", "10.77.0.2",
		"--bgp-peer", "10.77.0.1,65000", "--bgp-drain", "0s")
	lab.serveHTTP(t)
	vs := lab.vip.String() + ":80"
	lab.adm(t, "-A", "-t", vs, "-s", "rr", "--check", "tcp", "--check-interval", "0.5")
	lab.adm(t, "-a", "-t", vs, "-r", "10.77.0.11", "-g")
	lab.httpGet(t)
	time.Sleep(time.Second) // the VIP's route is computed
	resp, err := lab.lb.HTTPClient(5 * time.Second).Get("http://127.0.0.1:9639/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	series := map[string][]string{} // metric -> its sample lines
	for _, l := range strings.Split(string(body), "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		name := l[:strings.IndexAny(l, "{ ")]
		series[name] = append(series[name], l)
	}
	metricRe := regexp.MustCompile(`([a-z][a-z0-9_]*)\{`)
	labelRe := regexp.MustCompile(`\{\{(\w+)\}\}`)
	n := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			names := metricRe.FindAllStringSubmatch(tg.Expr, -1)
			if len(names) == 0 {
				t.Errorf("%s: no metric in %q", p.Title, tg.Expr)
			}
			for _, m := range names {
				n++
				lines, ok := series[m[1]]
				if !ok {
					t.Errorf("%s: %s is not in /metrics", p.Title, m[1])
					continue
				}
				for _, lb := range labelRe.FindAllStringSubmatch(tg.Legend, -1) {
					if !strings.Contains(lines[0], lb[1]+`="`) {
						t.Errorf("%s: %s has no label %s (%s)", p.Title, m[1], lb[1], lines[0])
					}
				}
			}
		}
	}
	t.Logf("%d panels, %d metric references, all in /metrics", len(dash.Panels), n)
}
