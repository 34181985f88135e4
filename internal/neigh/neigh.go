// Package neigh is the director's view of the network around it: the route
// and next hop to an address, the local addresses, and the MAC addresses
// of real servers, kept current from the kernel's neighbour table.
package neigh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrNotOnLink is returned by Resolver.Watch for an address reached
// through a gateway: direct routing needs the real server on a directly
// connected network.
var ErrNotOnLink = errors.New("not on a directly connected network")

// NeighborFunc is told the MAC of a watched address whenever it is
// learned or changes (nil when it became unreachable).
type NeighborFunc func(addr netip.Addr, ifindex int, mac net.HardwareAddr)

// Resolver keeps the MAC addresses of real servers current from the
// kernel's neighbour table: it asks the kernel to resolve an address
// (netlink NTF_USE, which sends the ARP request), listens to neighbour
// updates, and re-checks periodically. Users never prime ARP by hand.
type Resolver struct {
	log      *slog.Logger
	onChange NeighborFunc

	mu      sync.Mutex
	watched map[netip.Addr]*watch
}

type watch struct {
	ifindex int
	mac     net.HardwareAddr
}

// NewResolver returns a resolver that reports MAC changes to fn.
func NewResolver(log *slog.Logger, fn NeighborFunc) *Resolver {
	return &Resolver{log: log, onChange: fn, watched: map[netip.Addr]*watch{}}
}

// NextHop is how the director reaches an address, from its routing
// table.
type NextHop struct {
	Ifindex int
	// Gateway is the router in between; invalid when addr is on-link.
	Gateway netip.Addr
	// Src is the director's own address toward it (the route's
	// preferred source).
	Src netip.Addr
	// MTU is the route's MTU, or else the egress interface's.
	MTU int
}

// Via returns the address whose MAC frames toward the destination
// carry: the gateway, or the destination itself when on-link.
func (h NextHop) Via(dst netip.Addr) netip.Addr {
	if h.Gateway.IsValid() {
		return h.Gateway
	}
	return dst
}

// RouteTo looks addr up in the routing table (ip route get).
func RouteTo(addr netip.Addr) (NextHop, error) {
	routes, err := netlink.RouteGet(addr.AsSlice())
	if err != nil {
		return NextHop{}, fmt.Errorf("route to %v: %w", addr, err)
	}
	if len(routes) == 0 {
		return NextHop{}, fmt.Errorf("route to %v: none", addr)
	}
	r := routes[0]
	h := NextHop{Ifindex: r.LinkIndex, MTU: r.MTU}
	if gw, ok := netip.AddrFromSlice(r.Gw); ok && r.Gw != nil {
		h.Gateway = gw.Unmap()
	}
	if src, ok := netip.AddrFromSlice(r.Src); ok && r.Src != nil {
		h.Src = src.Unmap()
	}
	if h.MTU == 0 {
		l, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			return NextHop{}, fmt.Errorf("route to %v: link %d: %w", addr, r.LinkIndex, err)
		}
		h.MTU = l.Attrs().MTU
	}
	return h, nil
}

// Watch starts tracking addr on interface ifindex and asks the kernel to
// resolve it. The MAC arrives through the callback (possibly before
// Watch returns, from the current table).
func (r *Resolver) Watch(addr netip.Addr, ifindex int) {
	r.mu.Lock()
	w, ok := r.watched[addr]
	if !ok {
		w = &watch{ifindex: ifindex}
		r.watched[addr] = w
	}
	r.mu.Unlock()
	r.check(ifindex, addr)
}

// Unwatch stops tracking addr.
func (r *Resolver) Unwatch(addr netip.Addr) {
	r.mu.Lock()
	delete(r.watched, addr)
	r.mu.Unlock()
}

// MAC returns the last known MAC of addr.
func (r *Resolver) MAC(addr netip.Addr) net.HardwareAddr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w, ok := r.watched[addr]; ok {
		return w.mac
	}
	return nil
}

func usable(state int) bool {
	return state&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE|netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0
}

// check reads the neighbour table of ifindex once and, for each of
// addrs, takes a usable MAC or triggers resolution when the entry is
// missing, unusable or stale.
func (r *Resolver) check(ifindex int, addrs ...netip.Addr) {
	table := map[netip.Addr]netlink.Neigh{}
	for _, fam := range families(addrs) {
		neighs, err := netlink.NeighList(ifindex, fam)
		if err != nil {
			r.log.Warn("neighbour list", "ifindex", ifindex, "err", err)
			return
		}
		for _, n := range neighs {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				table[ip.Unmap()] = n
			}
		}
	}
	for _, a := range addrs {
		n, ok := table[a]
		if ok && usable(n.State) && len(n.HardwareAddr) == 6 {
			r.update(a, ifindex, n.HardwareAddr)
			if n.State&netlink.NUD_STALE == 0 {
				continue
			}
		}
		r.trigger(a, ifindex)
	}
}

// families lists the address families (ARP's AF_INET, NDP's AF_INET6)
// of addrs.
func families(addrs []netip.Addr) []int {
	var v4, v6 bool
	for _, a := range addrs {
		v4, v6 = v4 || a.Is4(), v6 || a.Is6()
	}
	var out []int
	if v4 {
		out = append(out, unix.AF_INET)
	}
	if v6 {
		out = append(out, unix.AF_INET6)
	}
	return out
}

// trigger asks the kernel to (re)resolve addr (ARP, or NDP for IPv6):
// NTF_USE on a neighbour entry behaves as if a packet were sent to it.
func (r *Resolver) trigger(addr netip.Addr, ifindex int) {
	fam := unix.AF_INET
	if addr.Is6() {
		fam = unix.AF_INET6
	}
	n := &netlink.Neigh{LinkIndex: ifindex, Family: fam, IP: addr.AsSlice(), Flags: netlink.NTF_USE}
	if err := netlink.NeighSet(n); err != nil {
		r.log.Warn("neighbour resolve", "addr", addr, "ifindex", ifindex, "err", err)
	}
}

func (r *Resolver) update(addr netip.Addr, ifindex int, mac net.HardwareAddr) {
	r.mu.Lock()
	w, ok := r.watched[addr]
	changed := ok && (w.mac.String() != mac.String() || w.ifindex != ifindex)
	if changed {
		w.mac = append(net.HardwareAddr(nil), mac...)
		w.ifindex = ifindex
	}
	r.mu.Unlock()
	if changed {
		r.log.Info("real server MAC", "addr", addr, "ifindex", ifindex, "mac", mac.String())
		r.onChange(addr, ifindex, mac)
	}
}

// Run follows neighbour updates and re-checks every watched address each
// interval until ctx ends.
func (r *Resolver) Run(ctx context.Context, interval time.Duration) {
	updates := make(chan netlink.NeighUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.NeighSubscribe(updates, done); err != nil {
		r.log.Warn("neighbour subscribe; polling only", "err", err)
		updates = nil
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-updates:
			if !ok {
				updates = nil
				continue
			}
			ip, ok := netip.AddrFromSlice(u.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			r.mu.Lock()
			w, watched := r.watched[ip]
			ifindex := 0
			if watched {
				ifindex = w.ifindex
			}
			r.mu.Unlock()
			if watched && u.LinkIndex == ifindex && usable(u.State) && len(u.HardwareAddr) == 6 {
				r.update(ip, ifindex, u.HardwareAddr)
			}
		case <-tick.C:
			r.mu.Lock()
			byIface := map[int][]netip.Addr{}
			for a, w := range r.watched {
				byIface[w.ifindex] = append(byIface[w.ifindex], a)
			}
			r.mu.Unlock()
			for idx, addrs := range byIface {
				r.check(idx, addrs...)
			}
		}
	}
}

// LocalAddress reports (with a nil error) whether addr is an address of
// one of this network namespace's interfaces: a FULLNAT local address
// must be the director's, or the reals' replies to it go nowhere.
func LocalAddress(addr netip.Addr) error {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Unmap() == addr {
			return nil
		}
	}
	bits := 32
	if addr.Is6() {
		bits = 128
	}
	return fmt.Errorf("not an address of this director (ip addr add %v/%d dev IFACE)", addr, bits)
}
