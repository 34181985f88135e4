package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xipvs/xipvs/internal/testutil"
)

// The TCP lab: real TCP stacks end to end. The client (cl) and the
// director (lb eth0) share the outside LAN; the director (lb eth1) and two
// real servers share the inside LAN, the reals routing through the
// director. All three balancers run on lb with the same service, so each
// sees both directions: xipvs in NAT mode, nftables DNAT, HAProxy in TCP
// mode. The reals answer a one-byte protocol: 'q' is answered and the
// server closes; any other byte is echoed.
var (
	tcpVIP   = netip.MustParseAddr("10.79.0.100")
	tcpReals = []netip.Addr{netip.MustParseAddr("10.80.0.11"), netip.MustParseAddr("10.80.0.12")}
)

type tcpLab struct {
	lab       *testutil.Lab
	cl, lb    *testutil.Host
	listeners []net.Listener
	wg        sync.WaitGroup
}

func newTCPLab(prefix string, o Options) (_ *tcpLab, err error) {
	t := &tcpLab{}
	defer func() {
		if err != nil {
			err = errors.Join(err, t.Close())
		}
	}()
	t.lab, err = testutil.NewLab(testutil.LabPlan{Prefix: prefix, Outside: "10.79.0", Inside: "10.80.0",
		InsideReals: len(tcpReals), VIPs: []netip.Addr{tcpVIP}})
	if err != nil {
		return nil, err
	}
	t.cl, t.lb = t.lab.Client, t.lab.Director
	if err := t.cl.IP("route", "add", "10.80.0.0/24", "via", "10.79.0.2"); err != nil {
		return nil, err
	}
	for _, h := range []*testutil.Host{t.cl, t.lb} {
		for _, kv := range [][2]string{{"net.ipv4.ip_local_port_range", "1024 65000"}, {"net.ipv4.tcp_tw_reuse", "1"}} {
			if err := h.Sysctl(kv[0], kv[1]); err != nil {
				return nil, err
			}
		}
	}
	if err := t.lb.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		return nil, err
	}
	for i, rs := range t.lab.Reals {
		if rs.Addr.Addr() != tcpReals[i] {
			return nil, fmt.Errorf("lab real %s at %v, want %v", rs.Name, rs.Addr, tcpReals[i])
		}
		if err := rs.IP("route", "add", "default", "via", "10.80.0.1"); err != nil {
			return nil, err
		}
		if err := rs.Sysctl("net.core.somaxconn", "4096"); err != nil {
			return nil, err
		}
		var ln net.Listener
		if err := rs.Do(func() (err error) { ln, err = net.Listen("tcp4", ":80"); return }); err != nil {
			return nil, err
		}
		t.listeners = append(t.listeners, ln)
		t.wg.Add(1)
		go t.serve(ln)
	}
	return t, nil
}

func (t *tcpLab) serve(ln net.Listener) {
	defer t.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			b := make([]byte, 1)
			for {
				if _, err := io.ReadFull(c, b); err != nil {
					return
				}
				if _, err := c.Write(b); err != nil || b[0] == 'q' {
					return
				}
			}
		}()
	}
}

// Close stops the servers and removes every namespace.
func (t *tcpLab) Close() error {
	for _, ln := range t.listeners {
		ln.Close()
	}
	t.wg.Wait()
	if t.lab == nil {
		return nil
	}
	return t.lab.Close()
}

// connectRate runs o.Clients clients for o.Sample, each connecting to
// the VIP, asking one byte and closing, and returns completed
// connections per second and the number of failed attempts.
func (t *tcpLab) connectRate(o Options, to netip.Addr) (float64, uint64, error) {
	var ok, failed atomic.Uint64
	var wg sync.WaitGroup
	errs := make(chan error, o.Clients)
	start := time.Now()
	deadline := start.Add(o.Sample)
	addr := netip.AddrPortFrom(to, 80).String()
	for i := 0; i < o.Clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- t.cl.Do(func() error {
				d := net.Dialer{Timeout: time.Second}
				b := []byte{'q'}
				for time.Now().Before(deadline) {
					c, err := d.Dial("tcp4", addr)
					if err != nil {
						failed.Add(1)
						continue
					}
					_ = c.SetDeadline(time.Now().Add(time.Second))
					if _, err := c.Write(b); err != nil {
						failed.Add(1)
					} else if _, err := io.ReadFull(c, b); err != nil {
						failed.Add(1)
					} else {
						ok.Add(1)
					}
					c.Close()
				}
				return nil
			})
		}()
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	for err := range errs {
		if err != nil {
			return 0, 0, err
		}
	}
	return float64(ok.Load()) / took.Seconds(), failed.Load(), nil
}

// latency returns o.Pings connect times (SYN sent to SYN-ACK received:
// what a blocking connect waits for) and o.Pings one-byte round trips on
// one established connection, in microseconds. Raw blocking syscalls on a
// locked thread keep Go's scheduler out of the numbers.
func (t *tcpLab) latency(o Options) (first, est []float64, err error) {
	sa := &unix.SockaddrInet4{Port: 80, Addr: tcpVIP.As4()}
	dial := func() (int, time.Duration, error) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return -1, 0, err
		}
		// A lost SYN fails the sample in seconds, not minutes; so does a
		// lost answer.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_SYNCNT, 2); err != nil {
			unix.Close(fd)
			return -1, 0, err
		}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5}); err != nil {
			unix.Close(fd)
			return -1, 0, err
		}
		t0 := time.Now()
		for {
			err = unix.Connect(fd, sa)
			if err != unix.EINTR {
				break
			}
		}
		took := time.Since(t0)
		if err != nil {
			unix.Close(fd)
			return -1, 0, fmt.Errorf("connect %v: %w", tcpVIP, err)
		}
		return fd, took, nil
	}
	rt := func(fd int, c byte) error {
		b := []byte{c}
		if _, err := unix.Write(fd, b); err != nil {
			return err
		}
		for {
			n, err := unix.Read(fd, b)
			if err == unix.EINTR {
				continue
			}
			if err == unix.EAGAIN {
				return fmt.Errorf("no answer to a one-byte request within 5 s on an established connection")
			}
			if err != nil {
				return err
			}
			if n != 1 {
				return io.ErrUnexpectedEOF
			}
			return nil
		}
	}
	err = t.cl.Do(func() error {
		for i := 0; i < o.Pings; i++ {
			fd, took, err := dial()
			if err != nil {
				return err
			}
			first = append(first, float64(took.Nanoseconds())/1e3)
			err = rt(fd, 'q')
			unix.Close(fd)
			if err != nil {
				return err
			}
		}
		fd, _, err := dial()
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for i := 0; i < o.Pings; i++ {
			t0 := time.Now()
			if err := rt(fd, 'e'); err != nil {
				return err
			}
			est = append(est, float64(time.Since(t0).Nanoseconds())/1e3)
		}
		return nil
	})
	return first, est, err
}

func percentile(v []float64, p float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(p * float64(len(s)-1))
	return s[i]
}

// measure records one round's connect rate to `to` and, when
// withLatency, latencies of subject.
func (t *tcpLab) measure(r *Report, o Options, run int, subject string, to netip.Addr, withLatency bool) error {
	cps, failed, err := t.connectRate(o, to)
	if err != nil {
		return err
	}
	res := r.sample(Result{Key: "tcp-connect/" + subject, Scenario: "tcp-connect", Subject: subject, Unit: UnitCPS, Generator: GenTCP}, run, cps)
	res.Detail["clients"] = o.Clients
	addDetail(res, "failed_attempts", failed)
	if !withLatency {
		return nil
	}
	first, est, err := t.latency(o)
	if err != nil {
		return err
	}
	for kind, v := range map[string][]float64{"first-packet": first, "established": est} {
		for _, p := range []struct {
			name string
			q    float64
		}{{"p50", 0.50}, {"p99", 0.99}} {
			k := fmt.Sprintf("latency/%s-%s/%s", subject, kind, p.name)
			x := r.sample(Result{Key: k, Scenario: "latency", Subject: subject + " " + kind + " " + p.name, Unit: UnitUs, Generator: GenTCP}, run, percentile(v, p.q))
			x.Detail["per_sample_of"] = o.Pings
		}
	}
	return nil
}

const nftTCP = `table ip xipvs_bench {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %s tcp dport 80 dnat to numgen inc mod 2 map { 0 : %s, 1 : %s }
	}
}
`

const haproxyCfg = `global
	maxconn 8000
defaults
	mode tcp
	timeout connect 2s
	timeout client 10s
	timeout server 10s
frontend bench
	bind %s:80
	default_backend reals
backend reals
	balance roundrobin
	server rs1 %s:80
	server rs2 %s:80
`

// round measures every subject of the TCP lab once, set up and torn down
// in turn: routed with no balancer (the endpoints' own limit), xipvs NAT,
// nftables DNAT, HAProxy (tcp mode).
func (t *tcpLab) round(ctx context.Context, r *Report, o Options, run int, work string) error {
	if err := t.measure(r, o, run, "routed-no-balancer", tcpReals[0], false); err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	if err := t.xipvs(r, o, run, work); err != nil {
		return fmt.Errorf("xipvs: %w", err)
	}
	if installed("nft") && ctx.Err() == nil {
		if err := nft(t.lb.Netns, fmt.Sprintf(nftTCP, tcpVIP, tcpReals[0], tcpReals[1])); err != nil {
			return err
		}
		err := t.measure(r, o, run, "nftables", tcpVIP, true)
		if err = errors.Join(err, t.lb.Exec("nft", "delete", "table", "ip", "xipvs_bench").Run()); err != nil {
			return fmt.Errorf("nftables: %w", err)
		}
	}
	if installed("haproxy") && ctx.Err() == nil {
		if err := t.haproxy(r, o, run, work); err != nil {
			return fmt.Errorf("haproxy: %w", err)
		}
	}
	return ctx.Err()
}

func (t *tcpLab) xipvs(r *Report, o Options, run int, work string) (err error) {
	x, err := startXipvs(t.lb.Netns, o, work, "tcp", false, "eth0,eth1")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\nxipvsd log:\n%s", err, x.d.Logs())
		}
		x.stop()
	}()
	vs := tcpVIP.String() + ":80"
	if err := x.run("-A", "-t", vs, "-s", "rr"); err != nil {
		return err
	}
	for _, rip := range tcpReals {
		if err := x.run("-a", "-t", vs, "-r", rip.String()+":80", "-m"); err != nil {
			return err
		}
	}
	return t.measure(r, o, run, "xipvs-nat", tcpVIP, true)
}

func (t *tcpLab) haproxy(r *Report, o Options, run int, work string) error {
	cfg := filepath.Join(work, "haproxy.cfg")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, haproxyCfg, tcpVIP, tcpReals[0], tcpReals[1]), 0o644); err != nil {
		return err
	}
	cmd := t.lb.Exec("haproxy", "-f", cfg, "-db")
	var logs lockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	defer func() {
		_ = cmd.Process.Signal(unix.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	if err := t.waitServing(done); err != nil {
		return fmt.Errorf("%w: %s", err, logs.String())
	}
	return t.measure(r, o, run, "haproxy", tcpVIP, false)
}

// waitServing waits until the VIP answers, or the process ends.
func (t *tcpLab) waitServing(done <-chan struct{}) error {
	addr := netip.AddrPortFrom(tcpVIP, 80).String()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		select {
		case <-done:
			return errors.New("exited")
		default:
		}
		var c net.Conn
		if t.cl.Do(func() (err error) { c, err = net.DialTimeout("tcp4", addr, 200*time.Millisecond); return }) == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("not serving after 10 s")
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
