package health

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xipvs/xipvs/config"
)

var errDown = errors.New("down")

func TestStateRiseFall(t *testing.T) {
	st := State{Up: true}
	seq := []struct {
		err     error
		changed bool
		up      bool
	}{
		{errDown, false, true}, {errDown, false, true}, {nil, false, true}, // a success resets the count
		{errDown, false, true}, {errDown, false, true}, {errDown, true, false}, // third in a row: down
		{errDown, false, false}, {nil, false, false}, {errDown, false, false}, // flapping stays down
		{nil, false, false}, {nil, true, true}, // two in a row: up
		{nil, false, true},
	}
	for i, s := range seq {
		if changed := st.Observe(s.err, 2, 3); changed != s.changed || st.Up != s.up {
			t.Fatalf("step %d: changed %v up %v, want %v %v", i, changed, st.Up, s.changed, s.up)
		}
	}
}

// A fake probe that the test flips; the monitor reports each transition
// once, keeps checking other targets while one hangs past its timeout,
// and stops on Set without the target.
func TestMonitor(t *testing.T) {
	var mu sync.Mutex
	failing := map[netip.AddrPort]bool{}
	probe := func(ctx context.Context, tg Target) error {
		if tg.Addr.Port() == 9 { // hangs until the timeout
			<-ctx.Done()
			return ctx.Err()
		}
		mu.Lock()
		defer mu.Unlock()
		if failing[tg.Addr] {
			return errDown
		}
		return nil
	}
	type change struct {
		k    Key
		up   bool
		why  string
		when time.Time
	}
	changes := make(chan change, 100)
	m := NewMonitor(probe, func(k Key, up bool, reason string) { changes <- change{k, up, reason, time.Now()} })
	defer m.Close()
	chk := config.Check{Type: "tcp", Interval: 20 * time.Millisecond, Timeout: 10 * time.Millisecond, Rise: 2, Fall: 3}
	svc := config.ServiceKey{Proto: config.TCP, Addr: netip.MustParseAddr("10.0.0.100"), Port: 80}
	a := netip.MustParseAddrPort("10.0.0.11:80")
	hang := netip.MustParseAddrPort("10.0.0.12:9")
	ka, kh := Key{svc, a}, Key{svc, hang}
	m.Set(map[Key]Target{ka: {a, chk}, kh: {hang, chk}}, nil)

	mu.Lock()
	failing[a] = true
	mu.Unlock()
	start := time.Now()
	var hangDown, aDown bool
	for !(hangDown && aDown) {
		select {
		case c := <-changes:
			switch {
			case c.k == kh && !c.up:
				hangDown = true
				if c.why == "" {
					t.Error("timeout without a reason")
				}
			case c.k == ka && !c.up:
				aDown = true
				if c.why != "down" {
					t.Errorf("reason %q", c.why)
				}
				if d := c.when.Sub(start); d > 10*chk.Interval {
					t.Errorf("down after %v", d)
				}
			default:
				t.Errorf("unexpected %+v", c)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("no transition")
		}
	}
	mu.Lock()
	failing[a] = false
	mu.Unlock()
	select {
	case c := <-changes:
		if c.k != ka || !c.up {
			t.Errorf("got %+v, want %v up", c, ka)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no recovery")
	}
	// Removed targets stop: no more reports after Set without them.
	m.Set(map[Key]Target{}, nil)
	mu.Lock()
	failing[a] = true
	mu.Unlock()
	select {
	case c := <-changes:
		t.Errorf("report after removal: %+v", c)
	case <-time.After(200 * time.Millisecond):
	}
	// A restarted check starts from the state it is given.
	m.Set(map[Key]Target{ka: {a, chk}}, func(Key) bool { return false })
	mu.Lock()
	failing[a] = false
	mu.Unlock()
	select {
	case c := <-changes:
		if !c.up {
			t.Errorf("%+v", c)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("a check started down never came up")
	}
}

// The real probes against listeners on 127.0.0.1.
func TestProbes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	status := 200
	var mu sync.Mutex
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.WriteHeader(status)
		fmt.Fprintf(w, "path=%s ok", r.URL.Path)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	addr := netip.MustParseAddrPort(ln.Addr().String())

	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 100)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if string(buf[:n]) != "silent" {
				_, _ = pc.WriteTo(append([]byte("pong:"), buf[:n]...), from)
			}
		}
	}()
	uaddr := netip.MustParseAddrPort(pc.LocalAddr().String())
	closed := netip.AddrPortFrom(addr.Addr(), 1) // nothing listens on port 1

	run := func(tg Target) error {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		tg.Check = tg.Check.WithDefaults()
		return Probe(ctx, tg)
	}
	for _, tc := range []struct {
		name string
		tg   Target
		ok   bool
	}{
		{"tcp up", Target{addr, config.Check{Type: "tcp"}}, true},
		{"tcp refused", Target{closed, config.Check{Type: "tcp"}}, false},
		{"http 200", Target{addr, config.Check{Type: "http", Path: "/health"}}, true},
		{"http body", Target{addr, config.Check{Type: "http", Path: "/health", Body: "path=/health"}}, true},
		{"http body missing", Target{addr, config.Check{Type: "http", Body: "nope"}}, false},
		// The digest is md5("path=/health ok"), computed outside Go.
		{"http digest", Target{addr, config.Check{Type: "http", Path: "/health", Digest: "309eb97753a52a7a5c9d4327afb8853e"}}, true},
		{"http digest differs", Target{addr, config.Check{Type: "http", Path: "/other", Digest: "309eb97753a52a7a5c9d4327afb8853e"}}, false},
		{"http status", Target{addr, config.Check{Type: "http", Status: 204}}, false},
		{"http status in a list", Target{addr, config.Check{Type: "http", StatusCodes: "204,200"}}, true},
		{"http status in a range", Target{addr, config.Check{Type: "http", StatusCodes: "100-199,200-299"}}, true},
		{"http status outside the list", Target{addr, config.Check{Type: "http", StatusCodes: "201-299,300"}}, false},
		{"udp any answer", Target{uaddr, config.Check{Type: "udp"}}, true},
		{"udp expect", Target{uaddr, config.Check{Type: "udp", Send: "ping", Expect: "pong:ping"}}, true},
		{"udp wrong answer", Target{uaddr, config.Check{Type: "udp", Send: "ping", Expect: "other"}}, false},
		{"udp no answer", Target{uaddr, config.Check{Type: "udp", Send: "silent"}}, false},
		{"exec ok", Target{addr, config.Check{Type: "exec", Exec: `test "$XIPVS_REAL_PORT" = ` + fmt.Sprint(addr.Port())}}, true},
		{"exec fails", Target{addr, config.Check{Type: "exec", Exec: "exit 3"}}, false},
		{"exec hangs", Target{addr, config.Check{Type: "exec", Exec: "sleep 5"}}, false},
	} {
		start := time.Now()
		err := run(tc.tg)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s took %v: past its timeout", tc.name, d)
		}
	}
	mu.Lock()
	status = 500
	mu.Unlock()
	if err := run(Target{addr, config.Check{Type: "http"}}); err == nil {
		t.Error("HTTP 500 passed")
	}
}

// TestProbeBounds (issue 29): an exec check's output is read to its end
// but kept only to execOutputKept bytes (a check printing 64 MB costs
// kilobytes); a check that times out, or exits, takes every child it
// left behind with it; an HTTP check's digest covers the whole body,
// past the first MiB.
func TestProbeBounds(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	err := Probe(ctx, Target{netip.MustParseAddrPort("127.0.0.1:1"), config.Check{Type: "exec", Exec: "head -c 64000000 /dev/zero | tr '\\0' x; exit 1"}})
	runtime.ReadMemStats(&after)
	if err == nil || len(err.Error()) > 300 {
		t.Errorf("a failing check printing 64 MB: %.300v", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Errorf("a check printing 64 MB cost %d MiB", alloc>>20)
	}

	dir := t.TempDir()
	for _, c := range []struct {
		name, script string
		timeout      time.Duration
	}{
		{"timed out", "sleep 60 & echo $! > %s; sleep 60", 300 * time.Millisecond},
		{"exited", "sleep 60 & echo $! > %s; exit 0", 5 * time.Second},
	} {
		pidFile := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-"))
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		_ = Probe(ctx, Target{netip.MustParseAddrPort("127.0.0.1:1"), config.Check{Type: "exec", Exec: fmt.Sprintf(c.script, pidFile)}})
		cancel()
		b, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		pid := strings.TrimSpace(string(b))
		gone := false
		for i := 0; i < 50 && !gone; i++ {
			st, err := os.ReadFile("/proc/" + pid + "/stat")
			gone = err != nil || strings.Contains(string(st), ") Z ") // gone, or a zombie awaiting init
			time.Sleep(20 * time.Millisecond)
		}
		if !gone {
			t.Errorf("%s: the check's child %s still runs", c.name, pid)
			_ = exec.Command("kill", "-9", pid).Run()
		}
	}

	body := bytes.Repeat([]byte("0123456789abcdef"), 3<<20/16) // 3 MiB
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	defer srv.Close()
	addr := netip.MustParseAddrPort(srv.Listener.Addr().String())
	whole, head := md5.Sum(body), md5.Sum(body[:1<<20])
	for _, c := range []struct {
		digest string
		ok     bool
	}{{hex.EncodeToString(whole[:]), true}, {hex.EncodeToString(head[:]), false}} {
		err := Probe(ctx, Target{addr, config.Check{Type: "http", Status: 200, Digest: c.digest}})
		if (err == nil) != c.ok {
			t.Errorf("digest of the %s: %v", map[bool]string{true: "whole body", false: "first MiB"}[c.ok], err)
		}
	}
}
