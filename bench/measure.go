package bench

// measure.go: one rate sample on the wire: frames through a director for a
// while, by the closed loop or live frames, counted at the reals' MACs.

import (
	"errors"
	"math"
	"runtime"
	"time"

	"github.com/xipvs/xipvs/bench/loadgen"
)

// sample is one measurement: frames generated, frames counted per real
// server and the time it took.
type sample struct {
	sent    uint64
	counted map[byte]loadgen.SinkCount
	took    time.Duration
}

func (s sample) total() uint64 {
	var t uint64
	for _, c := range s.counted {
		t += c.Pkts
	}
	return t
}

// measure runs f's flows through d for dur and counts what d forwards:
// with live frames from senders generator threads, else with the closed
// loop (seeded on min(senders, d's queues) queues).
func (w *wire) measure(d *director, f loadgen.Flows, dur time.Duration, senders int) (sample, error) {
	if err := w.settle(); err != nil {
		return sample{}, err
	}
	if w.method == loadgen.LiveFrames {
		return w.measureLive(d, f, dur, senders)
	}
	return w.measureLoop(d, f, dur)
}

// measureLoop runs f's flows around d's closed loop for dur.
func (w *wire) measureLoop(d *director, f loadgen.Flows, dur time.Duration) (sample, error) {
	if err := w.lg.ResetSink(); err != nil {
		return sample{}, err
	}
	start := time.Now()
	if err := d.loop.Start(f); err != nil {
		return sample{}, err
	}
	time.Sleep(dur)
	counted, err := w.lg.SinkCounts()
	took := time.Since(start)
	st, serr := d.loop.Stop()
	if err = errors.Join(err, serr); err != nil {
		return sample{}, err
	}
	return sample{sent: st.Looped + uint64(loadgen.DefaultSlots) + st.Revived, counted: counted, took: took}, nil
}

// measureLive sends f's flows into d for dur from senders live-frames
// generator threads and counts what reaches the sink.
func (w *wire) measureLive(d *director, f loadgen.Flows, dur time.Duration, senders int) (sample, error) {
	if err := w.lg.SetFlows(f); err != nil {
		return sample{}, err
	}
	if err := w.lg.ResetSink(); err != nil {
		return sample{}, err
	}
	// Each sender pinned to its CPU: one alone is slower than the hop it
	// feeds (every frame's whole path runs in its softirq), and unpinned
	// senders make the hop's NAPI wander between CPUs, which gives
	// bimodal rates. A veth hands each sender's frames to the receive
	// queue of its CPU.
	start := time.Now()
	errs := make(chan error, senders)
	for i := 0; i < senders; i++ {
		go func() {
			errs <- w.gen.Do(func() error {
				restore, err := pinThread(i % runtime.NumCPU())
				if err != nil {
					return err
				}
				defer restore()
				for time.Since(start) < dur {
					if err := w.lg.Send(d.genIf, f.Template, sendChunk, 0); err != nil {
						return err
					}
				}
				return nil
			})
		}()
	}
	var err error
	for i := 0; i < senders; i++ {
		err = errors.Join(err, <-errs)
	}
	took := time.Since(start)
	if err != nil {
		return sample{}, err
	}
	// What is still in flight lands within microseconds.
	time.Sleep(20 * time.Millisecond)
	seq, err := w.lg.Seq()
	if err != nil {
		return sample{}, err
	}
	counted, err := w.lg.SinkCounts()
	if err != nil {
		return sample{}, err
	}
	return sample{sent: seq - f.Start, counted: counted, took: took}, nil
}

// settle waits (up to 2 s) until nothing reaches the sinks, which share
// one count: a slow path still draining the previous sample's backlog
// would otherwise be counted in the next one's.
func (w *wire) settle() error {
	last := uint64(math.MaxUint64)
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		c, err := w.lg.SinkCounts()
		if err != nil {
			return err
		}
		var n uint64
		for _, v := range c {
			n += v.Pkts
		}
		if n == last {
			return nil
		}
		last = n
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// paced sends n frames of f from its start into d in small chunks,
// pausing between them, so that a slow path can take every one.
func (w *wire) paced(d *director, f loadgen.Flows, n int) error {
	if err := d.sender.SetFlows(f); err != nil {
		return err
	}
	for sent := 0; sent < n; sent += setupChunk {
		if err := w.gen.Do(func() error { return d.sender.Send(uint32(min(setupChunk, n-sent))) }); err != nil {
			return err
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}
