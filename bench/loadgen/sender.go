package loadgen

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/safchain/ethtool"
	"golang.org/x/sys/unix"

	"github.com/xipvs/xipvs/dataplane/xsk"
)

// Method is how frames are put on the wire.
type Method string

// The methods, fastest first.
const (
	// LiveFrames runs the generator program with BPF_PROG_RUN and
	// BPF_F_TEST_XDP_LIVE_FRAMES: frames from the kernel's page pool,
	// written in BPF and sent with XDP_TX, no socket buffer. Some
	// kernels refuse it (EPERM on 6.18.44 build v1300).
	LiveFrames Method = "live-frames"
	// AFXDP writes frames in Go into an AF_XDP socket's TX ring (copy
	// mode on veth: one socket buffer per frame, no qdisc, no stack).
	AFXDP Method = "af_xdp"
)

var (
	liveOnce sync.Once
	liveErr  error
)

// LiveFramesAllowed reports, as an error saying why not, whether this
// kernel runs XDP programs on live frames. It asks once per process (a
// program that drops its one frame, run live as if it arrived on the
// loopback interface) and remembers the answer.
func (g *Programs) LiveFramesAllowed() error {
	liveOnce.Do(func() {
		frame := make([]byte, 64)
		_, err := g.objs.LoadgenProbe.Run(&ebpf.RunOptions{
			Data:    frame,
			Context: xdpMd{DataEnd: uint32(len(frame)), IngressIfindex: 1},
			Repeat:  1,
			Flags:   unix.BPF_F_TEST_XDP_LIVE_FRAMES,
		})
		if err != nil {
			liveErr = fmt.Errorf("the kernel refuses BPF_PROG_RUN with live frames: %w", err)
		}
	})
	return liveErr
}

// Sender sends a sequence of flows out of one interface, open loop, as
// fast as its method goes: live frames where the kernel allows them,
// else AF_XDP sockets (one per queue of the interface it was given).
// A Sender's sockets also carry the frames a Loop seeds. Send may be
// called from any goroutine, one at a time.
type Sender struct {
	g       *Programs
	method  Method
	ifindex int
	flows   Flows
	w       *writer
	xs      []*xsk.Socket
	seq     uint64 // AF_XDP: frames queued since SetFlows
}

// senderBatch is how many frames a Sender queues per kick: 32-64 gave
// the most frames per second from one vCPU into a veth (about 1 Mpps).
const senderBatch = 64

// NewSender prepares a sender out of ifindex, in the calling thread's
// network namespace, with AF_XDP sockets on its first queues queues.
// method "" picks live frames where the kernel allows them and AF_XDP
// otherwise.
func (g *Programs) NewSender(ifindex, queues int, method Method) (_ *Sender, err error) {
	if method == "" {
		method = AFXDP
		if g.LiveFramesAllowed() == nil {
			method = LiveFrames
		}
	}
	s := &Sender{g: g, method: method, ifindex: ifindex}
	switch method {
	case LiveFrames:
		if err := g.LiveFramesAllowed(); err != nil {
			return nil, err
		}
	case AFXDP:
		if err := noTSO(ifindex); err != nil {
			return nil, err
		}
		for q := 0; q < max(queues, 1); q++ {
			xs, err := xsk.Open(xsk.Config{Ifindex: ifindex, QueueID: q, Mode: xsk.ModeCopy, NumFrame: 4096, RingSize: 1024})
			if err != nil {
				return nil, errors.Join(fmt.Errorf("sender on ifindex %d queue %d: %w", ifindex, q, err), s.Close())
			}
			s.xs = append(s.xs, xs)
		}
	default:
		return nil, fmt.Errorf("sender: no method %q", method)
	}
	return s, nil
}

// tsoFeatures are the ethtool names of NETIF_F_ALL_TSO.
var tsoFeatures = []string{"tx-tcp-segmentation", "tx-tcp-ecn-segmentation", "tx-tcp-mangleid-segmentation", "tx-tcp6-segmentation",
	"tx-tcp-accecn-segmentation"}

// noTSO turns TSO off on interface ifindex (in the calling thread's
// network namespace) and checks that it is off. A veth hands a socket
// buffer from a sender with TSO on to its peer's stack, past the peer's
// native XDP program, unless the buffer could be aggregated
// (veth_skb_is_eligible_for_gro): an AF_XDP sender's frames, which are
// socket buffers in copy mode, would then never meet the program under
// test. Attaching XDP to the peer usually turns the sender's TSO off;
// not always (seen on 6.18).
func noTSO(ifindex int) error {
	ifc, err := net.InterfaceByIndex(ifindex)
	if err != nil {
		return fmt.Errorf("sender: %w", err)
	}
	e, err := ethtool.NewEthtool()
	if err != nil {
		return fmt.Errorf("sender: ethtool: %w", err)
	}
	defer e.Close()
	feats, err := e.Features(ifc.Name)
	if err != nil {
		return fmt.Errorf("sender: features of %s: %w", ifc.Name, err)
	}
	off := map[string]bool{}
	for _, f := range tsoFeatures {
		if feats[f] {
			off[f] = false
		}
	}
	if len(off) == 0 {
		return nil
	}
	if err := e.Change(ifc.Name, off); err != nil {
		return fmt.Errorf("sender: turn TSO off on %s: %w", ifc.Name, err)
	}
	if feats, err = e.Features(ifc.Name); err != nil {
		return fmt.Errorf("sender: features of %s: %w", ifc.Name, err)
	}
	for _, f := range tsoFeatures {
		if feats[f] {
			return fmt.Errorf("sender: %s stays on on %s: frames would pass the peer's XDP program by", f, ifc.Name)
		}
	}
	return nil
}

// Method is how the sender puts frames on the wire.
func (s *Sender) Method() Method { return s.method }

// SetFlows makes f the flows Send sends, from f.Start on.
func (s *Sender) SetFlows(f Flows) error {
	if f.Tagged {
		return errors.New("sender: tagged flows belong to a loop")
	}
	if s.method == LiveFrames {
		if err := s.g.SetFlows(f); err != nil {
			return err
		}
	} else {
		w, err := newWriter(f)
		if err != nil {
			return err
		}
		s.w = w
	}
	s.flows, s.seq = f, 0
	return nil
}

// Send sends the next n flows.
func (s *Sender) Send(n uint32) error {
	if s.method == LiveFrames {
		return s.g.Send(s.ifindex, s.flows.Template, n, 0)
	}
	if s.w == nil {
		return errors.New("sender: no flows set")
	}
	for left := uint64(n); left > 0; {
		q, err := transmit(s.xs[0], min(left, senderBatch), func(buf []byte, i uint64) int {
			return s.w.write(buf, s.w.flow(s.flows.Start+s.seq+i), Tag{})
		})
		s.seq += q
		left -= q
		if err != nil {
			return err
		}
	}
	return nil
}

// transmit queues up to n frames that fill writes (the i-th of the
// batch into buf), kicks the kernel and returns how many it queued. A
// ring that stays full for a second is an error.
func transmit(xs *xsk.Socket, n uint64, fill func(buf []byte, i uint64) int) (uint64, error) {
	var deadline time.Time
	for {
		tx := xs.BeginTx()
		var q uint64
		for ; q < n; q++ {
			buf := tx.Next()
			if buf == nil {
				break
			}
			tx.Commit(fill(buf, q))
		}
		if _, err := tx.Flush(); err != nil || q > 0 {
			return q, err
		}
		if err := xs.Kick(); err != nil {
			return 0, err
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(time.Second)
		} else if time.Now().After(deadline) {
			return 0, errNoRoom
		}
		time.Sleep(10 * time.Microsecond)
	}
}

// Sent is how many frames the sender has sent since SetFlows.
func (s *Sender) Sent() (uint64, error) {
	if s.method == LiveFrames {
		n, err := s.g.Seq()
		return n - s.flows.Start, err
	}
	return s.seq, nil
}

// Close closes the sender's sockets (a Loop on them stops first).
func (s *Sender) Close() error {
	var err error
	for _, xs := range s.xs {
		err = errors.Join(err, xs.Close())
	}
	s.xs = nil
	return err
}
