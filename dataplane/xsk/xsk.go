// Package xsk is a thin AF_XDP binding on golang.org/x/sys/unix: one UMEM,
// its fill and completion rings, and one socket's RX and TX rings, bound to
// one interface queue.
//
// A Socket is used by one receiving goroutine; Transmit may be called from
// any goroutine (it takes the socket's TX lock). Frames handed to a receive
// callback are views into the UMEM and are valid only during the callback.
package xsk

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Mode is how the socket was bound.
type Mode int

// Bind modes. ModeAuto tries zero-copy and falls back to copy mode.
const (
	ModeAuto Mode = iota
	ModeCopy
	ModeZeroCopy
)

func (m Mode) String() string {
	switch m {
	case ModeCopy:
		return "copy"
	case ModeZeroCopy:
		return "zerocopy"
	default:
		return "auto"
	}
}

// Config describes one socket. Zero fields take the defaults.
type Config struct {
	Ifindex  int
	QueueID  int
	Mode     Mode
	NumFrame int // UMEM frames, half for RX and half for TX (default 4096)
	// FrameSize must be 2048 or 4096 (default 2048).
	FrameSize int
	// RingSize applies to all four rings; a power of two (default 2048).
	RingSize int
	// NeedWakeup binds with XDP_USE_NEED_WAKEUP (default true via
	// DisableNeedWakeup=false).
	DisableNeedWakeup bool
}

// ErrFrameTooLarge is returned by Transmit for a frame over FrameSize.
var ErrFrameTooLarge = errors.New("frame larger than an AF_XDP frame")

// xdpMaxTxSkbBudget is XDP_MAX_TX_SKB_BUDGET (linux/if_xdp.h, 6.17).
const xdpMaxTxSkbBudget = 9

// ErrTxFull is returned by Transmit when no TX frame or ring slot is free.
var ErrTxFull = errors.New("AF_XDP tx ring full")

type ring struct {
	mem      []byte
	producer *uint32
	consumer *uint32
	flags    *uint32
	desc     unsafe.Pointer
	mask     uint32
	size     uint32
}

func (r *ring) u64(i uint32) *uint64 {
	return (*uint64)(unsafe.Add(r.desc, uintptr(i&r.mask)*8))
}

func (r *ring) xdpDesc(i uint32) *unix.XDPDesc {
	return (*unix.XDPDesc)(unsafe.Add(r.desc, uintptr(i&r.mask)*unsafe.Sizeof(unix.XDPDesc{})))
}

// Socket is one AF_XDP socket with its own UMEM.
type Socket struct {
	fd        int
	umem      []byte
	frameSize uint64
	mode      Mode
	wakeup    bool

	fill, comp, rx, tx ring

	txMu   sync.Mutex
	txFree []uint64 // UMEM addresses of free TX frames

	rxAddrs []uint64 // scratch for Receive's refill, owned by the receiver
	rxHeld  uint32   // frames handed out by Peek, not yet released

	closeOnce sync.Once
}

// Open creates, maps and binds a socket as cfg says.
func Open(cfg Config) (*Socket, error) {
	if cfg.NumFrame == 0 {
		cfg.NumFrame = 4096
	}
	if cfg.FrameSize == 0 {
		cfg.FrameSize = 2048
	}
	if cfg.RingSize == 0 {
		cfg.RingSize = 2048
	}
	if cfg.FrameSize != 2048 && cfg.FrameSize != 4096 {
		return nil, fmt.Errorf("xsk: frame size %d: must be 2048 or 4096", cfg.FrameSize)
	}
	if cfg.RingSize&(cfg.RingSize-1) != 0 || cfg.RingSize <= 0 {
		return nil, fmt.Errorf("xsk: ring size %d: must be a power of two", cfg.RingSize)
	}
	if cfg.NumFrame < 2*cfg.RingSize {
		// Half the frames feed the fill ring; they must fit it.
		cfg.NumFrame = 2 * cfg.RingSize
	}
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("xsk: socket: %w", err)
	}
	s := &Socket{fd: fd, frameSize: uint64(cfg.FrameSize), wakeup: !cfg.DisableNeedWakeup}
	if err := s.setup(cfg); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Socket) setup(cfg Config) error {
	var err error
	s.umem, err = unix.Mmap(-1, 0, cfg.NumFrame*cfg.FrameSize,
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("xsk: mmap umem: %w", err)
	}
	reg := unix.XDPUmemReg{
		Addr: uint64(uintptr(unsafe.Pointer(&s.umem[0]))),
		Len:  uint64(len(s.umem)),
		Size: uint32(cfg.FrameSize),
	}
	if err := setsockopt(s.fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		return fmt.Errorf("xsk: register umem: %w", err)
	}
	for _, opt := range []int{unix.XDP_UMEM_FILL_RING, unix.XDP_UMEM_COMPLETION_RING, unix.XDP_RX_RING, unix.XDP_TX_RING} {
		if err := unix.SetsockoptInt(s.fd, unix.SOL_XDP, opt, cfg.RingSize); err != nil {
			return fmt.Errorf("xsk: ring size option %d: %w", opt, err)
		}
	}
	var off unix.XDPMmapOffsets
	if err := getsockopt(s.fd, unix.XDP_MMAP_OFFSETS, unsafe.Pointer(&off), unsafe.Sizeof(off)); err != nil {
		return fmt.Errorf("xsk: mmap offsets: %w", err)
	}
	n := uint32(cfg.RingSize)
	if s.fill, err = mapRing(s.fd, unix.XDP_UMEM_PGOFF_FILL_RING, off.Fr, n, 8); err != nil {
		return fmt.Errorf("xsk: map fill ring: %w", err)
	}
	if s.comp, err = mapRing(s.fd, unix.XDP_UMEM_PGOFF_COMPLETION_RING, off.Cr, n, 8); err != nil {
		return fmt.Errorf("xsk: map completion ring: %w", err)
	}
	descSize := uint64(unsafe.Sizeof(unix.XDPDesc{}))
	if s.rx, err = mapRing(s.fd, unix.XDP_PGOFF_RX_RING, off.Rx, n, descSize); err != nil {
		return fmt.Errorf("xsk: map rx ring: %w", err)
	}
	if s.tx, err = mapRing(s.fd, unix.XDP_PGOFF_TX_RING, off.Tx, n, descSize); err != nil {
		return fmt.Errorf("xsk: map tx ring: %w", err)
	}

	// The first half of the frames feeds the fill ring, the second half
	// is the TX free list.
	half := uint64(cfg.NumFrame / 2)
	prod := *s.fill.producer
	for i := uint64(0); i < half && i < uint64(n); i++ {
		*s.fill.u64(prod) = i * s.frameSize
		prod++
	}
	atomic.StoreUint32(s.fill.producer, prod)
	for i := half; i < uint64(cfg.NumFrame); i++ {
		s.txFree = append(s.txFree, i*s.frameSize)
	}

	flags := uint16(0)
	if s.wakeup {
		flags |= unix.XDP_USE_NEED_WAKEUP
	}
	modes := []Mode{cfg.Mode}
	if cfg.Mode == ModeAuto {
		modes = []Mode{ModeZeroCopy, ModeCopy}
	}
	for _, m := range modes {
		f := flags
		if m == ModeZeroCopy {
			f |= unix.XDP_ZEROCOPY
		} else {
			f |= unix.XDP_COPY
		}
		sa := &unix.SockaddrXDP{Flags: f, Ifindex: uint32(cfg.Ifindex), QueueID: uint32(cfg.QueueID)}
		err = bindQueue(s.fd, sa)
		if err == nil {
			s.mode = m
			// Copy mode sends at most this many frames per kick (32 by
			// default; the option exists since Linux 6.17): a whole
			// batch in one kick where the kernel allows it.
			_ = unix.SetsockoptInt(s.fd, unix.SOL_XDP, xdpMaxTxSkbBudget, cfg.RingSize)
			return nil
		}
		if cfg.Mode == ModeAuto && m == ModeZeroCopy && (errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)) {
			continue
		}
		break
	}
	return fmt.Errorf("xsk: bind ifindex %d queue %d: %w", cfg.Ifindex, cfg.QueueID, err)
}

// bindQueue binds an XDP socket to its queue. A queue whose previous socket
// was just closed stays busy for a moment: the kernel clears the queue's
// buffer pool from a workqueue after the last reference goes
// (xp_put_pool -> xp_release_deferred), so EBUSY is retried for up to two
// seconds before it is reported.
func bindQueue(fd int, sa *unix.SockaddrXDP) error {
	deadline := time.Now().Add(2 * time.Second)
	for {
		err := unix.Bind(fd, sa)
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mapRing(fd int, pgoff int64, off unix.XDPRingOffset, n uint32, descSize uint64) (ring, error) {
	size := off.Desc + uint64(n)*descSize
	mem, err := unix.Mmap(fd, pgoff, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return ring{}, err
	}
	base := unsafe.Pointer(&mem[0])
	return ring{
		mem:      mem,
		producer: (*uint32)(unsafe.Add(base, off.Producer)),
		consumer: (*uint32)(unsafe.Add(base, off.Consumer)),
		flags:    (*uint32)(unsafe.Add(base, off.Flags)),
		desc:     unsafe.Add(base, off.Desc),
		mask:     n - 1,
		size:     n,
	}, nil
}

func setsockopt(fd, opt int, p unsafe.Pointer, size uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), size, 0)
	if e != 0 {
		return e
	}
	return nil
}

func getsockopt(fd, opt int, p unsafe.Pointer, size uintptr) error {
	l := uint32(size)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// FD is the socket's file descriptor, for an XSKMAP entry.
func (s *Socket) FD() int { return s.fd }

// Mode is the mode the socket was bound in (copy or zerocopy).
func (s *Socket) Mode() Mode { return s.mode }

// Poll waits up to timeoutMs for received frames; it reports whether any
// are ready. A timeout is not an error.
func (s *Socket) Poll(timeoutMs int) (bool, error) {
	if s.rxReady() > 0 {
		return true, nil
	}
	fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
	_, err := unix.Poll(fds, timeoutMs)
	if err != nil && !errors.Is(err, unix.EINTR) {
		return false, fmt.Errorf("xsk: poll: %w", err)
	}
	return s.rxReady() > 0, nil
}

func (s *Socket) rxReady() uint32 {
	return atomic.LoadUint32(s.rx.producer) - atomic.LoadUint32(s.rx.consumer)
}

// Receive hands up to max received frames to fn, in order, then returns
// their frames to the fill ring. It returns how many frames it handled.
func (s *Socket) Receive(max int, fn func(frame []byte)) int {
	cons := atomic.LoadUint32(s.rx.consumer)
	avail := atomic.LoadUint32(s.rx.producer) - cons
	if avail == 0 {
		return 0
	}
	if max > 0 && avail > uint32(max) {
		avail = uint32(max)
	}
	addrs := s.rxAddrs[:0]
	for i := uint32(0); i < avail; i++ {
		d := s.rx.xdpDesc(cons + i)
		// The address carries the headroom offset; the frame to refill
		// is the one that contains it.
		addrs = append(addrs, d.Addr-d.Addr%s.frameSize)
		fn(s.umem[d.Addr : d.Addr+uint64(d.Len)])
	}
	atomic.StoreUint32(s.rx.consumer, cons+avail)
	s.refill(addrs)
	s.rxAddrs = addrs
	return int(avail)
}

// Peek fills frames with views of up to len(frames) received frames and
// returns how many. The frames stay the caller's, in the UMEM, until
// Release: a batch can be parsed, decided and transmitted before any of
// its frames is reused. Peek after Peek without Release returns the
// frames after those already held.
func (s *Socket) Peek(frames [][]byte) int {
	cons := atomic.LoadUint32(s.rx.consumer) + s.rxHeld
	avail := atomic.LoadUint32(s.rx.producer) - cons
	n := min(avail, uint32(len(frames)))
	for i := uint32(0); i < n; i++ {
		d := s.rx.xdpDesc(cons + i)
		frames[i] = s.umem[d.Addr : d.Addr+uint64(d.Len)]
	}
	s.rxHeld += n
	return int(n)
}

// Release gives every frame Peek handed out back to the kernel.
func (s *Socket) Release() {
	n := s.rxHeld
	if n == 0 {
		return
	}
	cons := atomic.LoadUint32(s.rx.consumer)
	addrs := s.rxAddrs[:0]
	for i := uint32(0); i < n; i++ {
		d := s.rx.xdpDesc(cons + i)
		addrs = append(addrs, d.Addr-d.Addr%s.frameSize)
	}
	atomic.StoreUint32(s.rx.consumer, cons+n)
	s.rxHeld = 0
	s.refill(addrs)
	s.rxAddrs = addrs
}

// refill gives frames back to the kernel. The fill ring holds every RX
// frame, so there is always room.
func (s *Socket) refill(addrs []uint64) {
	prod := atomic.LoadUint32(s.fill.producer)
	for _, a := range addrs {
		*s.fill.u64(prod) = a
		prod++
	}
	atomic.StoreUint32(s.fill.producer, prod)
	if s.wakeup && atomic.LoadUint32(s.fill.flags)&unix.XDP_RING_NEED_WAKEUP != 0 {
		// A zero-timeout poll wakes the driver's RX processing.
		fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
		_, _ = unix.Poll(fds, 0)
	}
}

// reclaim moves completed TX frames back to the free list. txMu held.
func (s *Socket) reclaim() {
	cons := atomic.LoadUint32(s.comp.consumer)
	n := atomic.LoadUint32(s.comp.producer) - cons
	for i := uint32(0); i < n; i++ {
		s.txFree = append(s.txFree, *s.comp.u64(cons + i))
	}
	atomic.StoreUint32(s.comp.consumer, cons+n)
}

// Tx is a batch of frames being queued on one socket's TX ring, from
// BeginTx to Flush. It holds the socket's TX lock.
type Tx struct {
	s      *Socket
	prod   uint32 // next descriptor to fill
	queued uint32
}

// BeginTx starts a TX batch; Flush ends it. Frames written with Next and
// Commit are published together and sent with as few kicks as the kernel
// allows.
func (s *Socket) BeginTx() *Tx {
	s.txMu.Lock()
	s.reclaim()
	return &Tx{s: s, prod: atomic.LoadUint32(s.tx.producer)}
}

// Next returns a free TX frame to write an outgoing frame into (its
// length is the UMEM frame size), or nil when the ring or the frames are
// exhausted.
func (t *Tx) Next() []byte {
	s := t.s
	if len(s.txFree) == 0 || t.prod-atomic.LoadUint32(s.tx.consumer) >= s.tx.size {
		s.reclaim()
		if len(s.txFree) == 0 || t.prod-atomic.LoadUint32(s.tx.consumer) >= s.tx.size {
			return nil
		}
	}
	addr := s.txFree[len(s.txFree)-1]
	return s.umem[addr : addr+s.frameSize]
}

// Commit queues the first n bytes of the frame Next returned.
func (t *Tx) Commit(n int) {
	s := t.s
	addr := s.txFree[len(s.txFree)-1]
	s.txFree = s.txFree[:len(s.txFree)-1]
	d := s.tx.xdpDesc(t.prod)
	d.Addr, d.Len, d.Options = addr, uint32(n), 0
	t.prod++
	t.queued++
}

// Flush publishes the batch, kicks the kernel until it has taken every
// queued frame (copy mode sends a bounded number per kick), and releases
// the TX lock. It reports how many frames the batch queued.
func (t *Tx) Flush() (int, error) {
	s := t.s
	defer s.txMu.Unlock()
	if t.queued == 0 {
		return 0, nil
	}
	atomic.StoreUint32(s.tx.producer, t.prod)
	return int(t.queued), s.drain()
}

// drain kicks until the kernel has consumed the TX ring (or a bounded
// number of tries). txMu held.
func (s *Socket) drain() error {
	for try := 0; try < 64; try++ {
		if err := s.kick(); err != nil {
			return err
		}
		if atomic.LoadUint32(s.tx.consumer) == atomic.LoadUint32(s.tx.producer) {
			return nil
		}
	}
	return nil
}

// Kick asks the kernel to send what the TX ring holds (copy mode sends
// a bounded number per kick, and a full peer can refuse some).
func (s *Socket) Kick() error {
	s.txMu.Lock()
	defer s.txMu.Unlock()
	return s.drain()
}

// Transmit copies frame into a TX frame, queues it and kicks the kernel.
func (s *Socket) Transmit(frame []byte) error {
	if uint64(len(frame)) > s.frameSize {
		return ErrFrameTooLarge
	}
	s.txMu.Lock()
	defer s.txMu.Unlock()
	s.reclaim()
	prod := atomic.LoadUint32(s.tx.producer)
	if len(s.txFree) == 0 || prod-atomic.LoadUint32(s.tx.consumer) >= s.tx.size {
		s.kick()
		return ErrTxFull
	}
	addr := s.txFree[len(s.txFree)-1]
	s.txFree = s.txFree[:len(s.txFree)-1]
	copy(s.umem[addr:addr+uint64(len(frame))], frame)
	d := s.tx.xdpDesc(prod)
	d.Addr = addr
	d.Len = uint32(len(frame))
	d.Options = 0
	atomic.StoreUint32(s.tx.producer, prod+1)
	return s.drain()
}

// kick tells the kernel there is TX work. In copy mode the send is done
// synchronously by sendto. txMu held.
func (s *Socket) kick() error {
	if s.wakeup && atomic.LoadUint32(s.tx.flags)&unix.XDP_RING_NEED_WAKEUP == 0 {
		return nil
	}
	for {
		_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(s.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0, unix.EAGAIN, unix.EBUSY, unix.ENOBUFS:
			return nil
		case unix.EINTR:
			continue
		default:
			return fmt.Errorf("xsk: sendto: %w", e)
		}
	}
}

// Stats returns the kernel's counters for the socket.
func (s *Socket) Stats() (unix.XDPStatistics, error) {
	var st unix.XDPStatistics
	err := getsockopt(s.fd, unix.XDP_STATISTICS, unsafe.Pointer(&st), unsafe.Sizeof(st))
	if err != nil {
		return st, fmt.Errorf("xsk: statistics: %w", err)
	}
	return st, nil
}

// Close unmaps the rings and UMEM and closes the socket.
func (s *Socket) Close() error {
	var err error
	s.closeOnce.Do(func() {
		for _, r := range []*ring{&s.tx, &s.rx, &s.comp, &s.fill} {
			if r.mem != nil {
				err = errors.Join(err, unix.Munmap(r.mem))
				r.mem = nil
			}
		}
		if s.fd >= 0 {
			err = errors.Join(err, unix.Close(s.fd))
			s.fd = -1
		}
		if s.umem != nil {
			err = errors.Join(err, unix.Munmap(s.umem))
			s.umem = nil
		}
	})
	return err
}
