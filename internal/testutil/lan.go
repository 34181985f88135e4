package testutil

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/xipvs/xipvs/internal/testutil/pass"
)

// Host is one namespace on a LAN, with eth0 on the LAN's bridge.
type Host struct {
	Netns
	Addr netip.Prefix // address of eth0
	MAC  net.HardwareAddr
}

// LAN is one L2 segment: a bridge in its own namespace and hosts, each
// linked to it by a veth pair (host eth0 <-> bridge port).
type LAN struct {
	Prefix string
	Switch Netns
	Hosts  map[string]*Host
	names  []string // namespaces made, in creation order
}

// NewLAN makes the switch namespace PREFIX-sw with bridge br0.
func NewLAN(prefix string) (*LAN, error) {
	l := &LAN{Prefix: prefix, Hosts: map[string]*Host{}}
	sw, err := AddNetns(prefix + "-sw")
	if err != nil {
		return nil, err
	}
	l.names = append(l.names, sw.Name)
	l.Switch = sw
	if err := sw.IP("link", "add", "br0", "type", "bridge"); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	if err := sw.IP("link", "set", "br0", "up"); err != nil {
		return nil, errors.Join(err, l.Close())
	}
	return l, nil
}

// HostOptions tunes AddHost.
type HostOptions struct {
	// XDPPeer attaches an XDP_PASS program to the bridge port of this
	// host: needed where the host transmits with XDP_TX or AF_XDP.
	XDPPeer bool
	// TxChecksumOff turns TX checksum offload off on eth0, for hosts
	// whose traffic XDP forwards.
	TxChecksumOff bool
}

// AddHost makes namespace PREFIX-name with eth0 at addr on the LAN.
func (l *LAN) AddHost(name string, addr netip.Prefix, o HostOptions) (*Host, error) {
	ns, err := AddNetns(l.Prefix + "-" + name)
	if err != nil {
		return nil, err
	}
	l.names = append(l.names, ns.Name)
	port := "p-" + name
	steps := [][]string{
		// Single-queue ends: a veth runs native XDP only on the rx
		// queues it really has, and a multi-queue peer may pick another.
		{"link", "add", port, "numtxqueues", "1", "numrxqueues", "1", "type", "veth",
			"peer", "name", "eth0", "netns", ns.Name, "numtxqueues", "1", "numrxqueues", "1"},
		{"link", "set", port, "master", "br0"},
		{"link", "set", port, "up"},
	}
	for _, s := range steps {
		if err := l.Switch.IP(s...); err != nil {
			return nil, err
		}
	}
	if err := ns.IP("addr", "add", addr.String(), "dev", "eth0"); err != nil {
		return nil, err
	}
	if err := ns.IP("link", "set", "eth0", "up"); err != nil {
		return nil, err
	}
	h := &Host{Netns: ns, Addr: addr}
	if err := ns.Do(func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		h.MAC = ifc.HardwareAddr
		return nil
	}); err != nil {
		return nil, err
	}
	if o.XDPPeer {
		if err := l.Switch.Do(func() error {
			ifc, err := net.InterfaceByName(port)
			if err != nil {
				return err
			}
			return pass.Attach(ifc.Index)
		}); err != nil {
			return nil, err
		}
	}
	if o.TxChecksumOff {
		if err := ns.SetTxChecksum("eth0", false); err != nil {
			return nil, err
		}
	}
	l.Hosts[name] = h
	return h, nil
}

// Attach links an existing host of another LAN to this one as interface
// dev at addr (a director's second interface, a router's other leg).
func (l *LAN) Attach(h *Host, name, dev string, addr netip.Prefix, o HostOptions) error {
	port := "p-" + name
	steps := [][]string{
		{"link", "add", port, "numtxqueues", "1", "numrxqueues", "1", "type", "veth",
			"peer", "name", dev, "netns", h.Name, "numtxqueues", "1", "numrxqueues", "1"},
		{"link", "set", port, "master", "br0"},
		{"link", "set", port, "up"},
	}
	for _, s := range steps {
		if err := l.Switch.IP(s...); err != nil {
			return err
		}
	}
	if err := h.IP("addr", "add", addr.String(), "dev", dev); err != nil {
		return err
	}
	if err := h.IP("link", "set", dev, "up"); err != nil {
		return err
	}
	if o.XDPPeer {
		if err := l.Switch.Do(func() error {
			ifc, err := net.InterfaceByName(port)
			if err != nil {
				return err
			}
			return pass.Attach(ifc.Index)
		}); err != nil {
			return err
		}
	}
	if o.TxChecksumOff {
		return h.SetTxChecksum(dev, false)
	}
	return nil
}

// MakeRealServer prepares h as an LVS-DR real server, as the seeds'
// real-server.sh does: each VIP on lo as /32, arp_ignore=1 and
// arp_announce=2 on all and lo.
func (h *Host) MakeRealServer(vips ...netip.Addr) error {
	for _, s := range [][2]string{
		{"net.ipv4.conf.all.arp_ignore", "1"}, {"net.ipv4.conf.all.arp_announce", "2"},
		{"net.ipv4.conf.lo.arp_ignore", "1"}, {"net.ipv4.conf.lo.arp_announce", "2"},
	} {
		if err := h.Sysctl(s[0], s[1]); err != nil {
			return err
		}
	}
	for _, v := range vips {
		if err := h.IP("addr", "add", v.String()+"/32", "dev", "lo"); err != nil {
			return fmt.Errorf("vip on lo: %w", err)
		}
	}
	return nil
}

// Close deletes every namespace of the LAN, and so every link in them.
func (l *LAN) Close() error {
	var err error
	for i := len(l.names) - 1; i >= 0; i-- {
		err = errors.Join(err, DelNetns(l.names[i]))
	}
	l.names = nil
	return err
}
