package testutil

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Long streams for failover tests and demos: the client sends a 4-byte
// seed, the real sends StreamData(seed) in chunks with pauses (about
// 12 s), and the client checks its SHA-256. Meanwhile the client sends a
// one-byte tick every 100 ms that the real times: in DR the
// client-to-real direction is the one that crosses the directors, so the
// longest silence between ticks across an event is how long that event
// cut the stream.
const (
	streamChunk  = 8 << 10
	streamChunks = 48 // 384 KiB per stream
	streamPause  = 250 * time.Millisecond
	streamTick   = 100 * time.Millisecond
)

// StreamData is what a stream's real sends for seed.
func StreamData(seed uint32) []byte {
	r := rand.New(rand.NewPCG(uint64(seed), 19))
	b := make([]byte, streamChunk*streamChunks)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}

// StreamServer serves streams on a port of each of some hosts.
type StreamServer struct {
	lns   []net.Listener
	ticks sync.Map // seed -> *tickRec
}

// tickRec times the longest silence, across an event, between the ticks
// a real receives from its client.
type tickRec struct {
	event *atomic.Int64 // unix ns, 0 before the event
	gap   *atomic.Int64 // ns: the longest wait for a tick that came after the event
}

// ServeStreams runs the stream server on port of every host.
func ServeStreams(hosts []*Host, port int) (*StreamServer, error) {
	s := &StreamServer{}
	for _, h := range hosts {
		var ln net.Listener
		if err := h.Do(func() (err error) { ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port)); return }); err != nil {
			s.Close()
			return nil, err
		}
		s.lns = append(s.lns, ln)
		go s.accept(ln)
	}
	return s, nil
}

// Close stops serving.
func (s *StreamServer) Close() {
	for _, ln := range s.lns {
		ln.Close()
	}
}

func (s *StreamServer) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go s.serve(c)
	}
}

func (s *StreamServer) serve(c net.Conn) {
	defer c.Close()
	var seed [4]byte
	if _, err := io.ReadFull(c, seed[:]); err != nil {
		return
	}
	sd := binary.BigEndian.Uint32(seed[:])
	r, _ := s.ticks.Load(sd)
	ticksDone := make(chan struct{})
	go func() {
		defer close(ticksDone)
		var b [1]byte
		last := time.Now().UnixNano()
		for {
			if _, err := c.Read(b[:]); err != nil {
				return
			}
			now := time.Now().UnixNano()
			if tr, ok := r.(*tickRec); ok {
				if ev := tr.event.Load(); ev != 0 && now > ev && now-last > tr.gap.Load() {
					tr.gap.Store(now - last)
				}
			}
			last = now
		}
	}()
	data := StreamData(sd)
	for i := 0; i < streamChunks; i++ {
		if _, err := c.Write(data[i*streamChunk : (i+1)*streamChunk]); err != nil {
			return
		}
		time.Sleep(streamPause)
	}
	// FIN, then wait for the client's: closing with its ticks unread
	// would answer them with a RST.
	_ = c.(*net.TCPConn).CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	<-ticksDone
}

// Streams are long TCP streams from a client, read in the background.
type Streams struct {
	errs  []error
	wg    sync.WaitGroup
	event atomic.Int64 // unix ns of the event whose cut is timed
	// gap[i] is the longest the real of stream i waited for a tick that
	// arrived after the event.
	gap []atomic.Int64
}

// StartStreams opens n streams from client to vs (served by s), with
// seeds from seedBase, and reads them in the background.
func (s *StreamServer) StartStreams(client *Host, n int, vs netip.AddrPort, seedBase uint32) (*Streams, error) {
	st := &Streams{errs: make([]error, n), gap: make([]atomic.Int64, n)}
	for i := 0; i < n; i++ {
		var c net.Conn
		if err := client.Do(func() (err error) { c, err = net.DialTimeout("tcp", vs.String(), 5*time.Second); return }); err != nil {
			st.wg.Wait()
			return nil, fmt.Errorf("stream %d: %w", i, err)
		}
		seed := seedBase + uint32(i)
		s.ticks.Store(seed, &tickRec{event: &st.event, gap: &st.gap[i]})
		st.wg.Add(1)
		go st.read(i, seed, c)
	}
	return st, nil
}

func (st *Streams) read(i int, seed uint32, c net.Conn) {
	defer st.wg.Done()
	defer c.Close()
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], seed)
	if _, err := c.Write(b[:]); err != nil {
		st.errs[i] = err
		return
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(streamTick)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if _, err := c.Write([]byte{1}); err != nil {
					return
				}
			}
		}
	}()
	_ = c.SetDeadline(time.Now().Add(90 * time.Second))
	h := sha256.New()
	buf := make([]byte, 64<<10)
	total := 0
	for {
		m, err := c.Read(buf)
		h.Write(buf[:m])
		total += m
		if err == io.EOF {
			break
		}
		if err != nil {
			st.errs[i] = fmt.Errorf("after %d bytes: %w", total, err)
			return
		}
	}
	if want := sha256.Sum256(StreamData(seed)); string(h.Sum(nil)) != string(want[:]) {
		st.errs[i] = fmt.Errorf("payload corrupted or short: %d bytes", total)
	}
}

// Mark records now as the event whose cut is timed.
func (st *Streams) Mark() time.Time {
	now := time.Now()
	st.event.Store(now.UnixNano())
	return now
}

// Wait waits for every stream and returns each one's error (nil: it
// completed with the right SHA-256) and the cuts across the event,
// longest first.
func (st *Streams) Wait() (errs []error, cuts []time.Duration) {
	st.wg.Wait()
	for i := range st.gap {
		cuts = append(cuts, time.Duration(st.gap[i].Load()))
	}
	sort.Slice(cuts, func(i, j int) bool { return cuts[i] > cuts[j] })
	return st.errs, cuts
}

// WaitAndReport is Wait for the demos: it prints each broken stream and
// returns how many broke and the longest cut.
func (st *Streams) WaitAndReport() (broken int, longest time.Duration) {
	errs, cuts := st.Wait()
	for i, e := range errs {
		if e != nil {
			broken++
			fmt.Printf("    stream %d: %v\n", i, e)
		}
	}
	return broken, cuts[0]
}
