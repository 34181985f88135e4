// Package health checks real servers, as keepalived's checkers do for
// LVS: TCP connect, HTTP(S) GET, UDP send/expect and exec, each with an
// interval, a timeout and rise/fall counts. One goroutine per checked
// real, so a slow or hanging check delays nobody else; a check never
// outlives its timeout.
package health

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/xipvs/xipvs/config"
)

// Key names one checked real of one service (the sorry server is not
// checked).
type Key struct {
	Service config.ServiceKey
	Real    netip.AddrPort
}

func (k Key) String() string { return k.Service.String() + " -> " + k.Real.String() }

// Target is what to check: the address (the real's, with the check's
// port if it has one) and how.
type Target struct {
	Addr  netip.AddrPort
	Check config.Check // with defaults filled in
}

// ProbeFunc runs one check; nil is healthy.
type ProbeFunc func(ctx context.Context, t Target) error

// Probe runs t's check once, within ctx.
func Probe(ctx context.Context, t Target) error {
	c := t.Check
	switch c.Type {
	case "tcp":
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", t.Addr.String())
		if err != nil {
			return err
		}
		return conn.Close()
	case "http", "https":
		return probeHTTP(ctx, t)
	case "udp":
		return probeUDP(ctx, t)
	case "exec":
		return probeExec(ctx, t)
	}
	return fmt.Errorf("unknown check type %q", c.Type)
}

// execOutputKept is how much of an exec check's output is kept (for the
// reason a failure gives); the rest is read and thrown away.
const execOutputKept = 4096

// probeExec runs an exec check in a process group of its own: on a
// timeout, and after it exits, the whole group is killed, so no child
// it left behind piles up; its output is read to the end but only the
// first execOutputKept bytes are kept.
func probeExec(ctx context.Context, t Target) error {
	c := t.Check
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", c.Exec)
	cmd.Env = append(os.Environ(), "XIPVS_REAL_ADDR="+t.Addr.Addr().String(),
		"XIPVS_REAL_PORT="+strconv.Itoa(int(t.Addr.Port())))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 100 * time.Millisecond
	out := &headWriter{max: execOutputKept}
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	if cmd.Process != nil {
		// Whatever the check left running in its group goes with it.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("exec %q: timed out", c.Exec)
		}
		msg := strings.TrimSpace(string(out.b))
		if len(msg) > 120 {
			msg = msg[:120]
		}
		return fmt.Errorf("exec %q: %v %s", c.Exec, err, msg)
	}
	return nil
}

// headWriter keeps the first max bytes written to it and counts the rest.
type headWriter struct {
	mu  sync.Mutex
	b   []byte
	max int
	n   int64
}

func (w *headWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if room := w.max - len(w.b); room > 0 {
		w.b = append(w.b, p[:min(room, len(p))]...)
	}
	w.n += int64(len(p))
	return len(p), nil
}

// bodyKept is how much of an HTTP check's body the text it must contain
// is looked for in; the digest covers the whole body.
const bodyKept = 1 << 20

func probeHTTP(ctx context.Context, t Target) error {
	c := t.Check
	u := c.Type + "://" + t.Addr.String() + c.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "xipvsd-health-check")
	tr := &http.Transport{DisableKeepAlives: true,
		// Real servers are checked by address; their certificates name
		// the service, so they are not verified (keepalived's SSL_GET
		// does not verify either).
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if !c.StatusOK(resp.StatusCode) {
		return fmt.Errorf("HTTP %d, want %s", resp.StatusCode, c.WantStatus())
	}
	// The body streamed: the digest over all of it (keepalived's
	// HTTP_GET digest is the whole page's), the text looked for in its
	// first bodyKept bytes; the check's timeout bounds the reading.
	digest := md5.New()
	head := &headWriter{max: bodyKept}
	if c.Body == "" {
		head.max = 0
	}
	if _, err := io.Copy(io.MultiWriter(digest, head), resp.Body); err != nil {
		return fmt.Errorf("HTTP %d, reading the body: %w", resp.StatusCode, err)
	}
	if c.Body != "" && !bytes.Contains(head.b, []byte(c.Body)) {
		return fmt.Errorf("HTTP %d without %q in the body", resp.StatusCode, c.Body)
	}
	if c.Digest != "" {
		if sum := digest.Sum(nil); hex.EncodeToString(sum) != c.Digest {
			return fmt.Errorf("HTTP %d, body digest %x, want %s", resp.StatusCode, sum, c.Digest)
		}
	}
	return nil
}

func probeUDP(ctx context.Context, t Target) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", t.Addr.String())
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	send := t.Check.Send
	if send == "" {
		send = "\n"
	}
	if _, err := conn.Write([]byte(send)); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		return fmt.Errorf("no UDP answer: %w", err)
	}
	if t.Check.Expect != "" && !bytes.Contains(buf[:n], []byte(t.Check.Expect)) {
		return fmt.Errorf("UDP answer without %q", t.Check.Expect)
	}
	return nil
}

// State is a real's rise/fall state machine. A real starts up (so a new
// configuration serves at once, as keepalived does by default); Fall
// failures in a row fail it, Rise successes in a row restore it.
type State struct {
	Up        bool
	oks, errs int
}

// Observe folds one check result into s and reports whether Up changed.
func (s *State) Observe(err error, rise, fall int) bool {
	if err == nil {
		s.errs = 0
		s.oks++
		if !s.Up && s.oks >= rise {
			s.Up = true
			return true
		}
		return false
	}
	s.oks = 0
	s.errs++
	if s.Up && s.errs >= fall {
		s.Up = false
		return true
	}
	return false
}

// ChangeFunc is told each transition once, with the reason of a failure.
type ChangeFunc func(k Key, up bool, reason string)

// Monitor runs the checks of a set of targets.
type Monitor struct {
	probe    ProbeFunc
	onChange ChangeFunc

	mu      sync.Mutex
	runners map[Key]*runner
	closed  bool
}

type runner struct {
	t      Target
	cancel context.CancelFunc
	done   chan struct{}
}

// NewMonitor returns a monitor that checks with probe (Probe if nil) and
// reports transitions to onChange.
func NewMonitor(probe ProbeFunc, onChange ChangeFunc) *Monitor {
	if probe == nil {
		probe = Probe
	}
	return &Monitor{probe: probe, onChange: onChange, runners: map[Key]*runner{}}
}

// Set makes the monitor check exactly want: new targets start, removed
// ones stop, changed ones restart; a (re)started check starts from
// up(k), the state its real is in.
func (m *Monitor) Set(want map[Key]Target, up func(Key) bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	for k, r := range m.runners {
		if t, ok := want[k]; !ok || t != r.t {
			r.cancel()
			delete(m.runners, k)
		}
	}
	for k, t := range want {
		if _, ok := m.runners[k]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		r := &runner{t: t, cancel: cancel, done: make(chan struct{})}
		m.runners[k] = r
		go m.run(ctx, k, r, up == nil || up(k))
	}
}

// Close stops every check and waits for them.
func (m *Monitor) Close() {
	m.mu.Lock()
	m.closed = true
	rs := m.runners
	m.runners = nil
	m.mu.Unlock()
	for _, r := range rs {
		r.cancel()
	}
	for _, r := range rs {
		<-r.done
	}
}

func (m *Monitor) run(ctx context.Context, k Key, r *runner, up bool) {
	defer close(r.done)
	c := r.t.Check
	st := State{Up: up}
	// Spread the first checks over an interval so thousands of reals do
	// not all fire on the same tick.
	wait := time.Duration(rand.Int64N(int64(c.Interval)))
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = c.Interval
		pctx, cancel := context.WithTimeout(ctx, c.Timeout)
		err := m.probe(pctx, r.t)
		if err != nil && pctx.Err() == context.DeadlineExceeded && !errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("timed out after %v: %w", c.Timeout, err)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		if st.Observe(err, c.Rise, c.Fall) {
			reason := ""
			if err != nil {
				reason = err.Error()
			}
			m.onChange(k, st.Up, reason)
		}
	}
}
