package testutil

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/xipvs/xipvs/bench/loadgen"
)

// SYNFlood is a spoofed-source SYN generator on one host's eth0
// (bench/loadgen's Sender: live frames where the kernel allows them,
// else an AF_XDP socket), every frame from a source address and port
// never used before. With live frames the peer of the host's eth0 needs
// an XDP program to receive what it sends (HostOptions.XDPPeer, or the
// director's own on Lab.AddAttacker's link).
type SYNFlood struct {
	h  *Host
	lg *loadgen.Programs
	s  *loadgen.Sender
}

// NewSYNFlood prepares a flood from h to dst (through the next hop
// dstMAC), sources counting up from srcBase (50,000 ports per address),
// which must lie in 198.18.0.0/15 (RFC 2544's benchmarking range).
func NewSYNFlood(h *Host, dstMAC net.HardwareAddr, dst netip.AddrPort, srcBase netip.Addr) (*SYNFlood, error) {
	return NewSYNFloodOn(h, "eth0", dstMAC, dst, srcBase)
}

// NewSYNFloodOn is NewSYNFlood out of h's interface iface.
func NewSYNFloodOn(h *Host, iface string, dstMAC net.HardwareAddr, dst netip.AddrPort, srcBase netip.Addr) (*SYNFlood, error) {
	if !netip.MustParsePrefix("198.18.0.0/15").Contains(srcBase) {
		return nil, fmt.Errorf("flood sources from %v: want 198.18.0.0/15", srcBase)
	}
	f := &SYNFlood{h: h}
	var err error
	if f.lg, err = loadgen.Open(loadgen.Options{}); err != nil {
		return nil, err
	}
	frame := Frame{SrcMAC: h.MAC, DstMAC: dstMAC, Src: srcBase, Dst: dst.Addr(), SrcPort: 1024, DstPort: dst.Port(), SYN: true}.Build()
	if err := h.Do(func() error {
		ifc, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		f.s, err = f.lg.NewSender(ifc.Index, 1, "")
		return err
	}); err != nil {
		f.lg.Close()
		return nil, err
	}
	if err := f.s.SetFlows(loadgen.Flows{Template: frame, AddrBase: srcBase, PortBase: 1024, Ports: 50000}); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Method is how the flood's frames are sent (live frames or AF_XDP).
func (f *SYNFlood) Method() loadgen.Method { return f.s.Method() }

// Send sends n more SYNs as fast as the generator goes.
func (f *SYNFlood) Send(n uint32) error {
	return f.h.Do(func() error { return f.s.Send(n) })
}

// Sent is how many SYNs the flood has sent.
func (f *SYNFlood) Sent() (uint64, error) {
	n, err := f.s.Sent()
	if err != nil {
		return 0, fmt.Errorf("flood: %w", err)
	}
	return n, nil
}

// Close closes the sender and unloads the generator.
func (f *SYNFlood) Close() error { return errors.Join(f.s.Close(), f.lg.Close()) }
