package testutil

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/safchain/ethtool"
	"github.com/vishvananda/netlink"

	"github.com/xipvs/xipvs/bench/loadgen"
)

// FloodTrial is legitimate traffic measured while a spoofed-source SYN
// flood runs at the generator's full rate: what the e2e tests assert and
// the bench's flood scenario reports, for xipvs and for the peers.
type FloodTrial struct {
	// Client makes the legitimate connections to Target (an HTTP server
	// answering any path; /stream must send bytes until the client
	// closes).
	Client *Host
	Target netip.AddrPort
	// Attacker floods Target through NextHop (the director's MAC) from
	// sources counting up from SpoofBase.
	Attacker  *Host
	NextHop   net.HardwareAddr
	SpoofBase netip.Addr
	// Conns legitimate connections, Parallel at a time, each given
	// Timeout to connect and be answered (curl -m 2).
	Conns, Parallel int
	Timeout         time.Duration
	// Stream measures a download from /stream opened before the flood.
	Stream bool
	// Probe, if set, is timed a few times during the flood (xipvsadm -Ln).
	Probe func() error
	// FloodIface is the attacker's interface the flood leaves by
	// (default eth0).
	FloodIface string
	// Tool is the flood's generator: "" NewSYNFlood's sender (live
	// frames where the kernel allows them, millions of SYNs per second
	// from one CPU; else an AF_XDP socket, about 1M SYN/s), or
	// ToolHping3 (hping3 -S --flood --rand-source from the attacker's
	// stack, the tool the flood was made with; Rate and
	// FloodIface do not apply, its sources are any IPv4 address).
	Tool string
	// Rate paces the flood (SYNs per second, roughly); 0 is the
	// generator's full rate.
	Rate int
}

// FloodResult is what a FloodTrial measured.
type FloodResult struct {
	Tried, Served int
	// Connect times of the connections that were served.
	ConnectP50, ConnectP99, ConnectMax time.Duration
	// Retransmits counts served connections that took longer than a
	// SYN retransmission (1 s) to connect.
	Retransmits int
	// StreamBefore and StreamDuring are the download's rate (bytes/s)
	// in the second before the flood and during it.
	StreamBefore, StreamDuring float64
	ProbeMax                   time.Duration
	ProbeErr                   error
	// FloodSent SYNs in FloodTime, sent by Generator (live-frames,
	// af_xdp or hping3).
	FloodSent uint64
	FloodTime time.Duration
	Generator string
	// RingRefused counts the generator's frames the director's
	// receive ring on the client's link (the peer of the client's eth0)
	// had no room for: a veth's ring holds 256 frames. ClientRefused
	// counts the client host's own packets refused there: the legitimate
	// client's, and hping3's (it sends through the host's stack).
	// RingShared says the two cannot be told apart (an AF_XDP sender's
	// frames are socket buffers, counted with the host's): then
	// ClientRefused holds both and RingRefused nothing.
	RingRefused, ClientRefused uint64
	RingShared                 bool
}

// ToolHping3 is FloodTrial.Tool for hping3.
const ToolHping3 = "hping3"

// String is the result in one line.
func (r FloodResult) String() string {
	s := fmt.Sprintf("%d/%d served, connect p50 %v p99 %v max %v, %d after a retransmit, flood %.0f SYN/s (%s)",
		r.Served, r.Tried, r.ConnectP50.Round(time.Microsecond), r.ConnectP99.Round(time.Microsecond),
		r.ConnectMax.Round(time.Microsecond), r.Retransmits, r.FloodRate(), r.Generator)
	if r.StreamBefore > 0 {
		s += fmt.Sprintf(", download %.0f -> %.0f MB/s (%.0f%%)", r.StreamBefore/1e6, r.StreamDuring/1e6, 100*r.StreamRatio())
	}
	if r.ProbeMax > 0 {
		s += fmt.Sprintf(", probe max %v", r.ProbeMax.Round(time.Millisecond))
	}
	switch {
	case r.RingShared && r.ClientRefused > 0:
		s += fmt.Sprintf(", refused by the director's full rx ring: %d of the generator's frames and the host's own packets together", r.ClientRefused)
	case r.RingRefused > 0 || r.ClientRefused > 0:
		s += fmt.Sprintf(", refused by the director's full rx ring: %d of the generator's frames, %d of the host's own packets", r.RingRefused, r.ClientRefused)
	}
	return s
}

// FloodRate is the flood's SYNs per second.
func (r FloodResult) FloodRate() float64 {
	if r.FloodTime <= 0 {
		return 0
	}
	return float64(r.FloodSent) / r.FloodTime.Seconds()
}

// StreamRatio is the download's rate during the flood over before it.
func (r FloodResult) StreamRatio() float64 {
	if r.StreamBefore == 0 {
		return 0
	}
	return r.StreamDuring / r.StreamBefore
}

// Run runs the trial.
func (ft FloodTrial) Run() (FloodResult, error) {
	var res FloodResult
	var flood *SYNFlood
	if ft.Tool == "" {
		var err error
		if flood, err = NewSYNFloodOn(ft.Attacker, cmp.Or(ft.FloodIface, "eth0"), ft.NextHop, ft.Target, ft.SpoofBase); err != nil {
			return res, err
		}
		defer flood.Close()
		res.Generator = string(flood.Method())
		res.RingShared = flood.Method() != loadgen.LiveFrames
	} else if ft.Tool != ToolHping3 {
		return res, fmt.Errorf("flood tool %q: want %q or NewSYNFlood's sender (\"\")", ft.Tool, ToolHping3)
	} else {
		res.Generator = ToolHping3
	}

	// The download, opened and measured before the flood starts.
	var streamed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if ft.Stream {
		var c net.Conn
		if err := ft.Client.Do(func() (err error) {
			c, err = net.DialTimeout("tcp4", ft.Target.String(), 5*time.Second)
			return
		}); err != nil {
			return res, fmt.Errorf("download: %w", err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /stream HTTP/1.1\r\nHost: vip\r\n\r\n")
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			for {
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := c.Read(buf)
				streamed.Add(int64(n))
				if err != nil {
					return
				}
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
		time.Sleep(300 * time.Millisecond) // slow start
		b0 := streamed.Load()
		time.Sleep(time.Second)
		res.StreamBefore = float64(streamed.Load() - b0)
	}

	// The flood, flat out, until the trial ends.
	drops0, err := ft.ringDrops()
	if err != nil {
		return res, err
	}
	stopFlood, err := ft.startFlood(flood)
	if err != nil {
		return res, err
	}
	floodStart := time.Now()
	time.Sleep(300 * time.Millisecond)
	s0, t0 := streamed.Load(), time.Now()

	// The legitimate connections.
	type outcome struct {
		ok      bool
		connect time.Duration
	}
	outcomes := make(chan outcome, ft.Conns)
	jobs := make(chan struct{}, ft.Conns)
	for i := 0; i < ft.Conns; i++ {
		jobs <- struct{}{}
	}
	close(jobs)
	var cw sync.WaitGroup
	for w := 0; w < max(ft.Parallel, 1); w++ {
		cw.Add(1)
		go func() {
			defer cw.Done()
			for range jobs {
				ok, d := ft.legit()
				outcomes <- outcome{ok, d}
			}
		}()
	}
	if ft.Probe != nil {
		for i := 0; i < 5; i++ {
			t := time.Now()
			if err := ft.Probe(); err != nil && res.ProbeErr == nil {
				res.ProbeErr = err
			}
			res.ProbeMax = max(res.ProbeMax, time.Since(t))
			time.Sleep(100 * time.Millisecond)
		}
	}
	cw.Wait()
	close(outcomes)
	if ft.Stream {
		res.StreamDuring = float64(streamed.Load()-s0) / time.Since(t0).Seconds()
	}
	res.FloodSent, err = stopFlood()
	res.FloodTime = time.Since(floodStart)
	if err != nil {
		return res, err
	}
	close(stop)
	drops1, err := ft.ringDrops()
	if err != nil {
		return res, err
	}
	res.RingRefused = drops1.xdp - drops0.xdp
	if all := drops1.all - drops0.all; all > res.RingRefused {
		res.ClientRefused = all - res.RingRefused
	}
	if res.RingShared {
		res.ClientRefused += res.RingRefused
		res.RingRefused = 0
	}

	var times []time.Duration
	for o := range outcomes {
		res.Tried++
		if !o.ok {
			continue
		}
		res.Served++
		times = append(times, o.connect)
		if o.connect > 900*time.Millisecond {
			res.Retransmits++
		}
	}
	slices.Sort(times)
	if n := len(times); n > 0 {
		res.ConnectP50 = times[n/2]
		res.ConnectP99 = times[min(n-1, n*99/100)]
		res.ConnectMax = times[n-1]
	}
	return res, nil
}

// startFlood starts the flood; the function it returns stops it and
// reports how many SYNs were sent.
func (ft FloodTrial) startFlood(flood *SYNFlood) (func() (uint64, error), error) {
	if ft.Tool == ToolHping3 {
		return ft.startHping3()
	}
	floodDone := make(chan error, 1)
	var floodStop atomic.Bool
	go func() {
		// Paced: each call sends what the rate owes since the start
		// (a live-frames call costs ~25 ms of its own, which this
		// absorbs), as one burst at the generator's speed: a paced
		// live-frames flood arrives in bursts of about rate/40 frames,
		// an AF_XDP one in bursts of 1000 or more, not as a steady
		// stream.
		start := time.Now()
		var sent uint64
		for !floodStop.Load() {
			n := uint64(1 << 20)
			if ft.Rate > 0 {
				owed := uint64(time.Since(start).Seconds()*float64(ft.Rate)) - sent
				if owed < 1000 {
					time.Sleep(time.Millisecond)
					continue
				}
				n = min(owed, 1<<20)
			}
			if err := flood.Send(uint32(n)); err != nil {
				floodDone <- err
				return
			}
			sent += n
		}
		floodDone <- nil
	}()
	return func() (uint64, error) {
		floodStop.Store(true)
		if err := <-floodDone; err != nil {
			return 0, err
		}
		return flood.Sent()
	}, nil
}

var hpingSent = regexp.MustCompile(`(\d+) packets transmitted`)

// startHping3 runs hping3 -S --flood --rand-source at the target from the
// attacker's stack; stopped by SIGINT, it prints what it sent.
func (ft FloodTrial) startHping3() (func() (uint64, error), error) {
	cmd := ft.Attacker.Exec("hping3", "-S", "--flood", "--rand-source", "-p", strconv.Itoa(int(ft.Target.Port())), ft.Target.Addr().String())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("hping3: %w", err)
	}
	return func() (uint64, error) {
		_ = cmd.Process.Signal(os.Interrupt)
		werr := cmd.Wait()
		m := hpingSent.FindSubmatch(out.Bytes())
		if m == nil {
			return 0, fmt.Errorf("hping3 (%v) printed no statistics: %s", werr, out.Bytes())
		}
		return strconv.ParseUint(string(m[1]), 10, 64)
	}, nil
}

type ringDrops struct{ xdp, all uint64 }

// ringDrops reads the drop counters of the client's eth0 (a veth): its
// tx drops count what its peer's full ring refused, both of XDP frames
// sent into it (the generator's, also counted apart) and of the stack's
// packets.
func (ft FloodTrial) ringDrops() (ringDrops, error) {
	var d ringDrops
	err := ft.Client.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if st := l.Attrs().Statistics; st != nil {
			d.all = st.TxDropped
		}
		e, err := ethtool.NewEthtool()
		if err != nil {
			return err
		}
		defer e.Close()
		stats, err := e.Stats("eth0")
		if err != nil {
			return fmt.Errorf("ethtool -S eth0: %w", err)
		}
		for k, v := range stats {
			if strings.HasPrefix(k, "tx_queue_") && strings.HasSuffix(k, "_xdp_xmit_errors") {
				d.xdp += v
			}
		}
		return nil
	})
	return d, err
}

// legit makes one legitimate connection: connect, GET /, read the
// answer, all within the trial's timeout.
func (ft FloodTrial) legit() (bool, time.Duration) {
	deadline := time.Now().Add(ft.Timeout)
	var c net.Conn
	start := time.Now()
	err := ft.Client.Do(func() (err error) {
		c, err = net.DialTimeout("tcp4", ft.Target.String(), ft.Timeout)
		return
	})
	connect := time.Since(start)
	if err != nil {
		return false, connect
	}
	defer c.Close()
	_ = c.SetDeadline(deadline)
	fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false, connect
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err == nil && resp.StatusCode == 200, connect
}

// ServeFloodTarget serves what a FloodTrial asks on port of h: a short
// answer on every path, and /stream sending until the client closes.
func ServeFloodTarget(h *Host, port int) (io.Closer, error) {
	var ln net.Listener
	if err := h.Do(func() (err error) { ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port)); return }); err != nil {
		return nil, err
	}
	chunk := make([]byte, 64<<10)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			for {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}
		fmt.Fprint(w, "ok")
	})}
	go srv.Serve(ln)
	return srv, nil
}
