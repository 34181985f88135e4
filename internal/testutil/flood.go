package testutil

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/xipvs/xipvs/dataplane/loadgen"
)

// SYNFlood is a spoofed-source SYN generator on one host's eth0: the
// live-frames generator (dataplane/loadgen), every frame from a source
// address and port never used before. The peer of the host's eth0 needs
// an XDP program to receive what it sends (HostOptions.XDPPeer, or the
// director's own on Lab.AddAttacker's link).
type SYNFlood struct {
	h       *Host
	lg      *loadgen.Programs
	ifindex int
	frame   []byte
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
	f.frame = Frame{SrcMAC: h.MAC, DstMAC: dstMAC, Src: srcBase, Dst: dst.Addr(), SrcPort: 1024, DstPort: dst.Port(), SYN: true}.Build()
	if err := h.Do(func() error {
		ifc, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		f.ifindex = ifc.Index
		return nil
	}); err != nil {
		f.lg.Close()
		return nil, err
	}
	if err := f.lg.SetFlows(loadgen.Flows{Template: f.frame, AddrBase: srcBase, PortBase: 1024, Ports: 50000}); err != nil {
		f.lg.Close()
		return nil, err
	}
	return f, nil
}

// Send sends n more SYNs as fast as the generator goes.
func (f *SYNFlood) Send(n uint32) error {
	return f.h.Do(func() error { return f.lg.Send(f.ifindex, f.frame, n, 0) })
}

// Sent is how many SYNs the flood has sent.
func (f *SYNFlood) Sent() (uint64, error) {
	n, err := f.lg.Seq()
	if err != nil {
		return 0, fmt.Errorf("flood: %w", err)
	}
	return n, nil
}

// Close unloads the generator.
func (f *SYNFlood) Close() error { return f.lg.Close() }
