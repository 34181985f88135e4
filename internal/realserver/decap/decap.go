// Package decap is the real-server side of TUN: a small XDP program
// (bpf/decap.bpf.c) that strips the outer header of IPv4-in-IPv4 and
// IPv6-in-IPv6 packets to the VIPs and passes the inner packet to the
// stack, so that a real server needs no ipip or ip6_tunnel module.
package decap

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// decapProgName is the decap program's name as the kernel reports it.
const decapProgName = "xipvs_decap"

// ErrForeignXDP is returned when an interface already runs an XDP
// program that is not xipvs's decap program.
var ErrForeignXDP = errors.New("another XDP program is attached")

// Attach makes ifname strip the outer header of IP-in-IP packets
// (IPv4 in IPv4, IPv6 in IPv6) to any of vips (the real-server side of TUN). When the decap program
// is already attached there, vips are added to its VIP set; otherwise
// it is loaded and attached through netlink, natively when the driver
// supports it, else in generic mode. The attachment outlives the
// process. It reports whether this call attached the program.
func Attach(ifname string, vips []netip.Addr) (bool, error) {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return false, fmt.Errorf("interface %s: %w", ifname, err)
	}
	m, err := decapMap(l)
	if err != nil {
		return false, err
	}
	if m == nil {
		var objs decapObjects
		if err := loadDecapObjects(&objs, nil); err != nil {
			return false, fmt.Errorf("load decap program: %w", err)
		}
		defer objs.Close()
		if err := putVIPs(objs.DecapVips, vips); err != nil {
			return false, err
		}
		fd := objs.XipvsDecap.FD()
		if err := netlink.LinkSetXdpFdWithFlags(l, fd, unix.XDP_FLAGS_DRV_MODE); err != nil {
			if err2 := netlink.LinkSetXdpFdWithFlags(l, fd, unix.XDP_FLAGS_SKB_MODE); err2 != nil {
				return false, fmt.Errorf("attach decap program to %s: %w (generic mode: %v)", ifname, err, err2)
			}
		}
		return true, nil
	}
	defer m.Close()
	return false, putVIPs(m, vips)
}

func putVIPs(m *ebpf.Map, vips []netip.Addr) error {
	for _, v := range vips {
		var err error
		switch {
		case m.KeySize() == 4 && v.Is4():
			// A decap program attached by a release before IPv6.
			err = m.Put(v.As4(), uint8(1))
		case m.KeySize() == 4:
			return fmt.Errorf("VIP %v: the decap program attached predates IPv6; run realserver down, then up", v)
		default:
			err = m.Put(decapVipKey{Addr: v.As16()}, uint8(1))
		}
		if err != nil {
			return fmt.Errorf("decap VIP %v: %w", v, err)
		}
	}
	return nil
}

// decapMap returns the VIP map of the decap program attached to l, nil
// when no XDP program is attached, or ErrForeignXDP.
func decapMap(l netlink.Link) (*ebpf.Map, error) {
	x := l.Attrs().Xdp
	if x == nil || !x.Attached || x.ProgId == 0 {
		return nil, nil
	}
	prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(x.ProgId))
	if err != nil {
		return nil, fmt.Errorf("XDP program %d on %s: %w", x.ProgId, l.Attrs().Name, err)
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil {
		return nil, fmt.Errorf("XDP program %d on %s: %w", x.ProgId, l.Attrs().Name, err)
	}
	if info.Name != decapProgName {
		return nil, fmt.Errorf("%s: %w (%q, id %d)", l.Attrs().Name, ErrForeignXDP, info.Name, x.ProgId)
	}
	ids, _ := info.MapIDs()
	for _, id := range ids {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			continue
		}
		if mi, err := m.Info(); err == nil && mi.Name == "decap_vips" {
			return m, nil
		}
		m.Close()
	}
	return nil, fmt.Errorf("%s: the decap program's VIP map is missing", l.Attrs().Name)
}

// Detach removes the decap program from ifname; it reports false
// when it was not attached. Another program is left alone (an error).
func Detach(ifname string) (bool, error) {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return false, fmt.Errorf("interface %s: %w", ifname, err)
	}
	m, err := decapMap(l)
	if err != nil || m == nil {
		return false, err
	}
	m.Close()
	if err := netlink.LinkSetXdpFd(l, -1); err != nil {
		return false, fmt.Errorf("detach decap program from %s: %w", ifname, err)
	}
	return true, nil
}

// Counters returns what the decap program on ifname did: packets
// decapsulated, IP-in-IP packets to other addresses, failures.
func Counters(ifname string) (ok, notVIP, failed uint64, err error) {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return 0, 0, 0, err
	}
	x := l.Attrs().Xdp
	if x == nil || !x.Attached {
		return 0, 0, 0, fmt.Errorf("%s: no decap program", ifname)
	}
	prog, err := ebpf.NewProgramFromID(ebpf.ProgramID(x.ProgId))
	if err != nil {
		return 0, 0, 0, err
	}
	defer prog.Close()
	info, err := prog.Info()
	if err != nil {
		return 0, 0, 0, err
	}
	ids, _ := info.MapIDs()
	for _, id := range ids {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			continue
		}
		mi, err := m.Info()
		if err != nil || mi.Name != "decap_stats" {
			m.Close()
			continue
		}
		var out [3]uint64
		for i := range out {
			var per []uint64
			if err := m.Lookup(uint32(i), &per); err == nil {
				for _, v := range per {
					out[i] += v
				}
			}
		}
		m.Close()
		return out[0], out[1], out[2], nil
	}
	return 0, 0, 0, fmt.Errorf("%s: decap counters not found", ifname)
}
