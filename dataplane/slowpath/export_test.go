package slowpath

// Test hooks, compiled into this package's tests only.

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/dataplane/bpfobj"
)

// DiffTransform writes the entries of frame's flow for real id as the
// slow path does (NAT and FULLNAT tuples from nat and lip), runs the
// program and the Go transform on the frame and describes any
// difference; a frame that is not a new flow of vip's services must not
// be forwarded by the program, and one the Go parser refuses must pass
// unchanged. Later fragments of frame's datagram, if any, follow it.
func DiffTransform(h *dataplane.Harness, frame []byte, id uint32, vip netip.Addr, natOut, fullnatOut func(dataplane.ConnKey) dataplane.ConnKey, later ...[]byte) error {
	p, res := parsePacket(frame)
	verdict, xdpOut, err := h.Run(frame, 1, 0)
	if err != nil {
		return err
	}
	if res != parsedOK || p.dst != vip.As4() || (p.dstPort != 80 && p.dstPort != 53) || (p.dstPort == 80) != (p.proto == unix.IPPROTO_TCP) {
		if verdict == dataplane.XDPTx || verdict == dataplane.XDPRedirect {
			return fmt.Errorf("a frame that is no new flow (parse %d) is forwarded by XDP: %s", res, hex.EncodeToString(frame))
		}
		if res != parsedOK && (verdict != dataplane.XDPPass || !bytes.Equal(xdpOut, frame)) {
			return fmt.Errorf("a frame the Go parser refuses (%d) is not passed unchanged: %v %s", res, verdict, hex.EncodeToString(frame))
		}
		return nil
	}
	f := dataplane.NewFlow{Key: dataplane.ConnKey{Src: netip.AddrFrom4(p.src), Dst: netip.AddrFrom4(p.dst), SrcPort: p.srcPort, DstPort: p.dstPort, Proto: p.proto},
		TCPFlags: p.flags, Ifindex: 1, SrcMAC: [6]byte(frame[6:12])}
	dec := dataplane.Decision{RealID: id, ServiceID: 1}
	switch h.RealView(id).Fwd {
	case dataplane.FwdMasq:
		dec.Out = natOut(f.Key)
	case dataplane.FwdFullNAT:
		dec.Out, dec.FullNAT = fullnatOut(f.Key), true
	}
	ents, n := dataplane.RawEntries(&f, &dec, uint64(dataplane.Now()), h.IfaceMAC(1))
	for _, e := range ents[:n] {
		if _, err := h.WriteConns([]bpfobj.DirectorConnKey{e.K}, []bpfobj.DirectorConnVal{e.V}); err != nil {
			return err
		}
	}
	defer func() {
		for _, e := range ents[:n] {
			h.DeleteRaw(&e.K)
		}
	}()
	before, err := h.Counters()
	if err != nil {
		return err
	}
	if verdict, xdpOut, err = h.Run(frame, 1, 0); err != nil {
		return err
	}
	after, err := h.Counters()
	if err != nil {
		return err
	}
	xdpStat := -1
	for i := range after {
		if after[i] != before[i] && !dataplane.StatIsEvent(i) {
			xdpStat = i
		}
	}
	fk := ents[n-1].K
	xdpConn, found, err := h.LookupRaw(&fk)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("the connection's entry is gone after the program ran")
	}
	goConn := ents[n-1].V
	out := make([]byte, len(frame)+64)
	gn, egress, stat := forwardFirst(out, frame, &p, &goConn, h.RealView(id))
	goOut := out[:gn]
	wantVerdict := dataplane.XDPDrop
	if gn > 0 && (egress == 1 || egress == -1) {
		wantVerdict = dataplane.XDPTx
	}
	if verdict != wantVerdict || (verdict == dataplane.XDPTx && !bytes.Equal(goOut, xdpOut)) || goConn.State != xdpConn.State || xdpStat != stat {
		return fmt.Errorf("real %d: XDP %v (counter %d) state %d, Go %v (counter %d) state %d\ninput: %s\nXDP:   %s\nGo:    %s", id,
			verdict, xdpStat, xdpConn.State, wantVerdict, stat, goConn.State,
			hex.EncodeToString(frame), hex.EncodeToString(xdpOut), hex.EncodeToString(goOut))
	}
	for _, lf := range later {
		if err := diffLater(h, lf, id, &fk, &p); err != nil {
			return err
		}
	}
	return nil
}

// diffLater compares XDP and the slow path on a later fragment of the
// datagram whose first fragment (parsed as first) made the connection
// under fk: the ports Go finds where XDP noted them, then the transform.
func diffLater(h *dataplane.Harness, frame []byte, id uint32, fk *bpfobj.DirectorConnKey, first *packet) error {
	p, res := parsePacket(frame)
	if res != parsedLater {
		return fmt.Errorf("a later fragment parsed as %d: %s", res, hex.EncodeToString(frame))
	}
	sport, dport, ok := (&SlowPath{d: h.Dataplane}).fragPorts4(&p)
	if !ok || dataplane.NetPort(sport) != first.srcPort || dataplane.NetPort(dport) != first.dstPort {
		return fmt.Errorf("the later fragment's ports: %d %d %v, want %d %d", dataplane.NetPort(sport), dataplane.NetPort(dport), ok, first.srcPort, first.dstPort)
	}
	p.srcPort, p.dstPort = dataplane.NetPort(sport), dataplane.NetPort(dport)
	goConn, found, err := h.LookupRaw(fk)
	if err != nil || !found {
		return fmt.Errorf("the connection is gone: %v", err)
	}
	verdict, xdpOut, err := h.Run(frame, 1, 0)
	if err != nil {
		return err
	}
	out := make([]byte, len(frame)+64)
	gn, egress, _ := forwardFirst(out, frame, &p, &goConn, h.RealView(id))
	wantVerdict := dataplane.XDPDrop
	if gn > 0 && (egress == 1 || egress == -1) {
		wantVerdict = dataplane.XDPTx
	}
	if verdict != wantVerdict || (verdict == dataplane.XDPTx && !bytes.Equal(out[:gn], xdpOut)) {
		return fmt.Errorf("later fragment, real %d: XDP %v, Go %v\ninput: %s\nXDP:   %s\nGo:    %s", id, verdict, wantVerdict,
			hex.EncodeToString(frame), hex.EncodeToString(xdpOut), hex.EncodeToString(out[:gn]))
	}
	return nil
}

// PortUnreachable6 is the IPv6 slow path's answer to a new flow no real
// server can take.
func PortUnreachable6(frame []byte) ([]byte, bool) {
	out := make([]byte, len(frame)+ip6HLen+8)
	n, ok := icmp6PortUnreachable(out, copy(out, frame))
	return out[:n], ok
}

// PortUnreachable is the slow path's answer to a new flow no real
// server can take.
func PortUnreachable(frame []byte) ([]byte, bool) {
	out := make([]byte, len(frame)+icmpFrameLen)
	n, ok := icmpPortUnreachable(out, copy(out, frame))
	return out[:n], ok
}
