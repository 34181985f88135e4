package daemon

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xipvs/xipvs/config"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/api"
	"github.com/xipvs/xipvs/internal/neigh"
	"github.com/xipvs/xipvs/internal/server"
	"github.com/xipvs/xipvs/internal/testutil"
)

// heapBytes is the Go heap's live objects as the last GC found them.
func heapBytes() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestListingStreamsInBoundedMemory: xipvsadm -Lnc's request for a table
// of 1M connections (in the data plane's maps) through the API's socket:
// every connection arrives, one line each in ipvsadm's format, the first
// at once; neither side gathers the table, so the live heap of this
// process, which runs both, grows by far less than the listing's size
// at any garbage collection during it.
func TestListingStreamsInBoundedMemory(t *testing.T) {
	testutil.RequirePrivileged(t)
	const n = 1 << 20
	// Twice the room: the harness writes the embryonic table, an LRU,
	// which may evict before it is quite full.
	d, err := dataplane.OpenHarness(2 * n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if err := d.SetInterface(1, net.HardwareAddr{2, 0xee, 0, 0, 0, 1}, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.FillEstablished(n, netip.MustParseAddr("192.0.2.10"), func(int) uint32 { return 1 }); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := server.New(server.Options{Dataplane: testutil.OnLo{Harness: d}, Logger: log,
		Route: func(netip.Addr) (neigh.NextHop, error) { return neigh.NextHop{Ifindex: 1, MTU: 1500}, nil }})
	// The real the connections name (id 1, the first given out).
	if err := srv.ApplyLines(context.Background(), []config.Line{
		{Args: []string{"-A", "-t", "192.0.2.10:80", "-s", "rr"}}, {Args: []string{"-a", "-t", "192.0.2.10:80", "-r", "10.1.0.11", "-g"}},
	}); err != nil {
		t.Fatal(err)
	}
	b := &backend{srv: srv, connTable: n, log: log}
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: api.Handler(b, statusOf)}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	runtime.GC()
	before := heapBytes()
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if h := heapBytes(); h > peak.Load() {
				peak.Store(h)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	pr, pw := io.Pipe()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		err := api.NewClient(sock).StreamConns(pw)
		pw.CloseWithError(err)
		done <- err
	}()
	sc := bufio.NewScanner(pr)
	lines := 0
	var first time.Duration
	for sc.Scan() {
		if lines == 0 {
			first = time.Since(start)
			if !regexp.MustCompile(`^TCP 1[45]:[0-5][0-9] ESTABLISHED 10\.[0-9.]+:40000 +192\.0\.2\.10:80 +10\.1\.0\.11:80$`).MatchString(sc.Text()) {
				t.Errorf("first line %q", sc.Text())
			}
		}
		lines++
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	close(stop)
	<-sampled
	grew := int64(peak.Load()) - int64(before)
	t.Logf("%d lines, the first after %v, %.2fM lines/s; heap grew by at most %.1f MB", lines, first.Round(time.Millisecond),
		float64(lines)/took.Seconds()/1e6, float64(grew)/1e6)
	if lines != n {
		t.Errorf("%d lines, want %d", lines, n)
	}
	// Gathered, 1M connections are more than 100 MB of Go objects (the
	// API's Conn alone is 104 bytes, its text 80).
	if grew > 32<<20 {
		t.Errorf("the heap grew by %d MB during the listing", grew>>20)
	}
}
