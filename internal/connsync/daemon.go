package connsync

// daemon.go: the master and backup sync daemons over UDP multicast, as
// ipvsadm --start-daemon starts them in the kernel.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xipvs/xipvs/config"
)

// Roles.
const (
	Master = "master"
	Backup = "backup"
)

// Defaults, as ipvsadm's and the kernel's.
var DefaultGroup = netip.MustParseAddr("224.0.0.81")

const (
	DefaultPort = 8848
	DefaultTTL  = 1
)

// Config is one sync daemon's settings (ipvsadm --start-daemon).
type Config = config.SyncDaemon

// Prepare validates c and fills in ipvsadm's defaults (group
// 224.0.0.81, port 8848, TTL 1) and the kernel's maxlen (the
// interface's MTU less the IP and UDP headers).
func Prepare(c Config) (Config, error) {
	if c.Role != Master && c.Role != Backup {
		return c, fmt.Errorf("sync daemon state %q: want master or backup", c.Role)
	}
	if c.Interface == "" {
		return c, errors.New("sync daemon: no multicast interface (--mcast-interface)")
	}
	if c.Group.IsValid() && (!c.Group.IsMulticast() || c.Group.Is6()) {
		return c, fmt.Errorf("sync daemon: group %v: want an IPv4 multicast group (IPv6 groups are not supported yet)", c.Group)
	}
	if !c.Group.IsValid() {
		c.Group = DefaultGroup
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	ifi, err := net.InterfaceByName(c.Interface)
	if err != nil {
		return c, fmt.Errorf("sync daemon: interface %q: %w", c.Interface, err)
	}
	if c.KeyFile != "" {
		if _, err := LoadKey(c.KeyFile); err != nil {
			return c, err
		}
	}
	max := ifi.MTU - 28
	if c.MaxLen != 0 && c.MaxLen < HeaderLen+ConnLenV6 {
		return c, fmt.Errorf("sync daemon: maxlen %d: want at least %d", c.MaxLen, HeaderLen+ConnLenV6)
	}
	if c.MaxLen == 0 || c.MaxLen > max {
		c.MaxLen = max
	}
	return c, nil
}

// MinKeyLen is the shortest shared key a sync daemon takes.
const MinKeyLen = 16

// LoadKey reads a sync daemon's shared key: the file's bytes, at least
// MinKeyLen of them, in a file only its owner may read.
func LoadKey(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("sync key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("sync key %s: readable by others (mode %v): chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sync key: %w", err)
	}
	if len(b) < MinKeyLen {
		return nil, fmt.Errorf("sync key %s: %d bytes, want at least %d (head -c 32 /dev/urandom > %s)", path, len(b), MinKeyLen, path)
	}
	return b, nil
}

// Stats counts what a daemon did.
type Stats struct {
	Messages  uint64 `json:"messages"`  // sent (master) or received (backup)
	Conns     uint64 `json:"conns"`     // sent, or inserted
	Bytes     uint64 `json:"bytes"`     // UDP payload
	Malformed uint64 `json:"malformed"` // backup: messages dropped whole
	Skipped   uint64 `json:"skipped"`   // backup: records of another service, real, protocol...
	Errors    uint64 `json:"errors"`    // send or receive errors
	// Unauthenticated counts, on a backup with a key, messages dropped
	// whole: unsigned, signed with another key or altered, or replayed.
	Unauthenticated uint64 `json:"unauthenticated"`
}

// Source feeds a master: it runs until ctx ends (or fails), handing
// send each batch of connections to sync as the data plane reports them
// (events: a connection entering a state IPVS syncs, or living on past
// the refresh period), never a walk of the table.
type Source func(ctx context.Context, send func([]Conn)) error

// Sink takes one connection on a backup; an error skips it (counted).
type Sink func(Conn) error

// Daemon is a running sync daemon.
type Daemon struct {
	Config
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
	conn   *net.UDPConn
	stats  struct{ messages, conns, bytes, malformed, skipped, errors, unauth atomic.Uint64 }
	// key signs (master) or checks (backup) every message; counter is
	// the master's last message counter, seen the backup's by source.
	key     []byte
	counter uint64
	seen    map[netip.Addr]uint64
}

// Stats returns the daemon's counters.
func (d *Daemon) Stats() Stats {
	return Stats{Messages: d.stats.messages.Load(), Conns: d.stats.conns.Load(), Bytes: d.stats.bytes.Load(),
		Malformed: d.stats.malformed.Load(), Skipped: d.stats.skipped.Load(), Errors: d.stats.errors.Load(),
		Unauthenticated: d.stats.unauth.Load()}
}

// Stop stops the daemon and waits for it.
func (d *Daemon) Stop() {
	d.cancel()
	d.conn.Close()
	<-d.done
}

// StartMaster starts a master: it multicasts every batch src hands it,
// packed into messages of at most MaxLen bytes. A failing src is
// counted, logged and run again a second later.
func StartMaster(c Config, src Source, log *slog.Logger) (*Daemon, error) {
	ifi, err := net.InterfaceByName(c.Interface)
	if err != nil {
		return nil, err
	}
	var key []byte
	if c.KeyFile != "" {
		if key, err = LoadKey(c.KeyFile); err != nil {
			return nil, err
		}
	}
	local, err := ifaceAddr4(ifi)
	if err != nil {
		return nil, err
	}
	conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: local.AsSlice()}, &net.UDPAddr{IP: c.Group.AsSlice(), Port: int(c.Port)})
	if err != nil {
		return nil, fmt.Errorf("sync master: %w", err)
	}
	if err := setMcastOpts(conn, ifi.Index, int(c.TTL)); err != nil {
		conn.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Daemon{Config: c, log: log.With("component", "sync", "role", Master), cancel: cancel, done: make(chan struct{}), conn: conn,
		key: key}
	go d.runMaster(ctx, src)
	d.log.Info("sync master started", "mcast_interface", c.Interface, "syncid", c.SyncID, "group", c.Group.String(), "port", c.Port, "maxlen", c.MaxLen,
		"signed", key != nil)
	return d, nil
}

// nextCounter is the next signed message's counter: the wall clock in
// nanoseconds, never below the last one plus one, so that a restarted
// master's messages still count up at its backups.
func (d *Daemon) nextCounter() uint64 {
	n := uint64(time.Now().UnixNano())
	if n <= d.counter {
		n = d.counter + 1
	}
	d.counter = n
	return n
}

func ifaceAddr4(ifi *net.Interface) (netip.Addr, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() {
				return ip.Unmap(), nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("sync daemon: interface %s has no IPv4 address", ifi.Name)
}

// setMcastOpts sets the outgoing interface, TTL and no loopback, as the
// kernel's make_send_sock.
func setMcastOpts(c *net.UDPConn, ifindex, ttl int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		mreq := &unix.IPMreqn{Ifindex: int32(ifindex)}
		if serr = unix.SetsockoptIPMreqn(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_IF, mreq); serr != nil {
			return
		}
		if serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, ttl); serr != nil {
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, 0)
	})
	return errors.Join(err, serr)
}

func (d *Daemon) runMaster(ctx context.Context, src Source) {
	defer close(d.done)
	for {
		err := src(ctx, d.sendConns)
		if ctx.Err() != nil {
			return
		}
		d.stats.errors.Add(1)
		d.log.Warn("sync master: reading the connections to sync; again in a second", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// sendConns multicasts conns.
func (d *Daemon) sendConns(conns []Conn) {
	enc := Encoder{SyncID: d.SyncID, MaxLen: d.MaxLen, Key: d.key, Counter: d.nextCounter}
	for _, c := range conns {
		if full := enc.Add(c); full != nil {
			d.send(full)
		}
		d.stats.conns.Add(1)
	}
	if m := enc.Flush(); m != nil {
		d.send(m)
	}
}

func (d *Daemon) send(msg []byte) {
	if _, err := d.conn.Write(msg); err != nil {
		d.stats.errors.Add(1)
		return
	}
	d.stats.messages.Add(1)
	d.stats.bytes.Add(uint64(len(msg)))
}

// StartBackup starts a backup: it joins the group on the interface and
// hands every connection of every valid message (the sync id, unless 0,
// must match) to sink. As the kernel's (make_receive_sock), its socket
// is bound to the group, not to every address, and to the interface:
// a datagram sent to one of the director's addresses (a VIP), or
// arriving on another interface, never reaches it. With a key, a message
// must be signed by the pair's master with a counter above the last one
// seen from its source. A malformed or unauthenticated message is
// counted and dropped whole; a record the sink refuses is counted and
// skipped. The log says so at most every 10 s.
func StartBackup(c Config, sink Sink, log *slog.Logger) (*Daemon, error) {
	ifi, err := net.InterfaceByName(c.Interface)
	if err != nil {
		return nil, err
	}
	var key []byte
	if c.KeyFile != "" {
		if key, err = LoadKey(c.KeyFile); err != nil {
			return nil, err
		}
	}
	conn, err := listenGroup(ifi, c.Group, c.Port)
	if err != nil {
		return nil, fmt.Errorf("sync backup: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Daemon{Config: c, log: log.With("component", "sync", "role", Backup), cancel: cancel, done: make(chan struct{}), conn: conn,
		key: key, seen: map[netip.Addr]uint64{}}
	go d.runBackup(ctx, sink)
	d.log.Info("sync backup started", "mcast_interface", c.Interface, "syncid", c.SyncID, "group", c.Group.String(), "port", c.Port,
		"signed", key != nil)
	return d, nil
}

// listenGroup opens a UDP socket that receives group:port on ifi only:
// bound to the group address and to the interface, a member of the group
// there, and of no group another socket joined (IP_MULTICAST_ALL off).
func listenGroup(ifi *net.Interface, group netip.Addr, port uint16) (*net.UDPConn, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return nil, fmt.Errorf("SO_REUSEADDR: %w", err)
	}
	if err := unix.BindToDevice(fd, ifi.Name); err != nil {
		return nil, fmt.Errorf("bind to %s: %w", ifi.Name, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(port), Addr: group.As4()}); err != nil {
		return nil, fmt.Errorf("bind %v:%d: %w", group, port, err)
	}
	mreq := &unix.IPMreqn{Multiaddr: group.As4(), Ifindex: int32(ifi.Index)}
	if err := unix.SetsockoptIPMreqn(fd, unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, mreq); err != nil {
		return nil, fmt.Errorf("join %v on %s: %w", group, ifi.Name, err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, 0); err != nil {
		return nil, fmt.Errorf("IP_MULTICAST_ALL: %w", err)
	}
	f := os.NewFile(uintptr(fd), "sync")
	ok = true
	pc, err := net.FilePacketConn(f)
	f.Close() // FilePacketConn dups the descriptor
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

// ErrReplayed: a signed message whose counter is not above the last one
// seen from its source.
var ErrReplayed = errors.New("message replayed (its counter is not above the last one from that source)")

// authentic checks a message's signature and that its counter rises
// (replays of a master's own messages are refused too).
func (d *Daemon) authentic(msg []byte, from netip.Addr) error {
	n, err := Verify(msg, d.key)
	if err != nil {
		return err
	}
	if n <= d.seen[from] {
		return ErrReplayed
	}
	d.seen[from] = n
	return nil
}

func (d *Daemon) runBackup(ctx context.Context, sink Sink) {
	defer close(d.done)
	buf := make([]byte, 65536)
	var lastLog time.Time
	for {
		n, from, err := d.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d.stats.errors.Add(1)
			continue
		}
		d.stats.messages.Add(1)
		d.stats.bytes.Add(uint64(n))
		if d.key != nil {
			if err := d.authentic(buf[:n], from.Addr().Unmap()); err != nil {
				d.stats.unauth.Add(1)
				if time.Since(lastLog) > 10*time.Second {
					lastLog = time.Now()
					d.log.Warn("sync message dropped", "from", from.String(), "err", err, "unauthenticated_total", d.stats.unauth.Load())
				}
				continue
			}
		}
		conns, sk, err := Decode(buf[:n], d.SyncID)
		if errors.Is(err, ErrSyncID) {
			continue // another pair's traffic on the group: not an error
		}
		if err != nil {
			d.stats.malformed.Add(1)
			if time.Since(lastLog) > 10*time.Second {
				lastLog = time.Now()
				d.log.Warn("sync message dropped", "err", err, "bytes", n, "malformed_total", d.stats.malformed.Load())
			}
			continue
		}
		d.stats.skipped.Add(uint64(sk.Total()))
		for _, c := range conns {
			if err := sink(c); err != nil {
				d.stats.skipped.Add(1)
				if time.Since(lastLog) > 10*time.Second {
					lastLog = time.Now()
					d.log.Warn("synced connection skipped", "client", c.Client.String(), "virtual", c.Virtual.String(),
						"real", c.Dest.String(), "err", err, "skipped_total", d.stats.skipped.Load())
				}
				continue
			}
			d.stats.conns.Add(1)
		}
	}
}
