package slowpath_test

import (
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket/layers"

	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/dataplane/slowpath"
	"github.com/xipvs/xipvs/internal/testutil"
)

// The Go transform against the XDP program: for a connection entry just
// written, the frame the slow path sends must be the frame the program
// would send, byte for byte, with the same verdict, counter and state.

var (
	dtVIP    = netip.MustParseAddr("192.0.2.10")
	dtRIP    = netip.MustParseAddr("10.1.0.11")
	dtLIP    = netip.MustParseAddr("10.1.0.250")
	dtTunSrc = netip.MustParseAddr("10.1.0.2")
	dtIfMAC  = net.HardwareAddr{0x02, 0xd1, 0, 0, 0, 0x01}
	dtRMAC   = net.HardwareAddr{0x02, 0xee, 0, 0, 0, 0x11}
	dtCMAC   = net.HardwareAddr{0x02, 0xcc, 0, 0, 0, 0x07}
)

// Real ids by mode.
const (
	dtDR = iota + 1
	dtTUN
	dtTUNSmall // MTU 300: frag-needed or too big
	dtNAT
	dtFULLNAT
	dtNoMAC
	dtModes = dtNoMAC
)

type diffLab struct {
	h *dataplane.Harness
}

func newDiffLab(t testing.TB) *diffLab {
	t.Helper()
	testutil.RequirePrivileged(t)
	h, err := dataplane.OpenHarness(1 << 14)
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			t.Fatalf("%+v", ve)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	if err := h.SetInterface(1, dtIfMAC, 0); err != nil {
		t.Fatal(err)
	}
	for _, k := range []dataplane.ServiceKey{{VIP: dtVIP, Port: 80, Proto: 6}, {VIP: dtVIP, Port: 53, Proto: 17}} {
		if err := h.SetService(k, 1, 0); err != nil {
			t.Fatal(err)
		}
	}
	reals := map[uint32]dataplane.Real{
		dtDR:       {Addr: dtRIP, Ifindex: 1, MAC: dtRMAC, Fwd: dataplane.FwdRoute},
		dtTUN:      {Addr: netip.MustParseAddr("172.16.5.5"), Ifindex: 1, MAC: dtRMAC, Fwd: dataplane.FwdTunnel, MTU: 1500, TunnelSrc: dtTunSrc},
		dtTUNSmall: {Addr: netip.MustParseAddr("172.16.5.6"), Ifindex: 1, MAC: dtRMAC, Fwd: dataplane.FwdTunnel, MTU: 300, TunnelSrc: dtTunSrc},
		dtNAT:      {Addr: dtRIP, Ifindex: 1, MAC: dtRMAC, Fwd: dataplane.FwdMasq, MTU: 1500},
		dtFULLNAT:  {Addr: netip.MustParseAddr("10.1.0.12"), Ifindex: 1, MAC: dtRMAC, Fwd: dataplane.FwdFullNAT, MTU: 1500},
		dtNoMAC:    {Addr: netip.MustParseAddr("10.1.0.13"), Ifindex: 1, Fwd: dataplane.FwdRoute},
	}
	for id, r := range reals {
		if err := h.SetReal(id, r); err != nil {
			t.Fatal(err)
		}
	}
	return &diffLab{h: h}
}

func (l *diffLab) compare(t testing.TB, frame []byte, id uint32, later ...[]byte) {
	t.Helper()
	natOut := func(k dataplane.ConnKey) dataplane.ConnKey {
		return dataplane.ConnKey{Src: k.Src, Dst: dtRIP, SrcPort: k.SrcPort, DstPort: 8080}
	}
	fullnatOut := func(k dataplane.ConnKey) dataplane.ConnKey {
		return dataplane.ConnKey{Src: dtLIP, Dst: netip.MustParseAddr("10.1.0.12"), SrcPort: 30000 + k.SrcPort%20000, DstPort: 8080}
	}
	if err := slowpath.DiffTransform(l.h, frame, id, dtVIP, natOut, fullnatOut, later...); err != nil {
		t.Error(err)
	}
}

// randomFrame builds a frame of a new flow to the VIP: TCP with random
// flags and options (MSS at either alignment), or UDP (with or without a
// checksum), random sizes, TOS, TTL, DF.
func randomFrame(r *rand.Rand) []byte {
	f := testutil.Frame{SrcMAC: dtCMAC, DstMAC: dtIfMAC,
		Src: netip.AddrFrom4([4]byte{198, 51, byte(r.IntN(256)), byte(1 + r.IntN(254))}), Dst: dtVIP,
		SrcPort: uint16(1024 + r.IntN(60000)), TOS: uint8(r.IntN(256)), TTL: uint8(1 + r.IntN(255)),
		ID: uint16(r.IntN(65536)), NoDF: r.IntN(4) == 0, Payload: make([]byte, []int{0, 1, 7, 100, 250, 290, 1000, 1400}[r.IntN(8)])}
	for i := range f.Payload {
		f.Payload[i] = byte(r.IntN(256))
	}
	if r.IntN(4) == 0 {
		f.Proto, f.DstPort, f.NoUDPChecksum = layers.IPProtocolUDP, 53, r.IntN(3) == 0
		return f.Build()
	}
	f.DstPort = 80
	switch r.IntN(6) {
	case 0, 1, 2:
		f.SYN = true
	case 3:
		f.ACK = true
	case 4:
		f.FIN, f.ACK = true, true
	case 5:
		f.RST = true
	}
	mss := []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{byte(r.IntN(256)), byte(r.IntN(256))}}}
	nop := layers.TCPOption{OptionType: layers.TCPOptionKindNop}
	switch r.IntN(5) {
	case 0:
		f.TCPOptions = mss
	case 3: // after five NOPs (the walk's limit is twelve options)
		f.TCPOptions = append([]layers.TCPOption{nop, nop, nop, nop, nop}, mss...)
	case 1: // odd offset
		f.TCPOptions = append([]layers.TCPOption{{OptionType: layers.TCPOptionKindNop}}, mss...)
		f.TCPOptions = append(f.TCPOptions, layers.TCPOption{OptionType: layers.TCPOptionKindNop}, layers.TCPOption{OptionType: layers.TCPOptionKindNop}, layers.TCPOption{OptionType: layers.TCPOptionKindNop})
	case 2:
		f.MSS, f.Timestamps = uint16(500+r.IntN(9000)), true
	}
	return f.Build()
}

func TestTransformMatchesXDP(t *testing.T) {
	l := newDiffLab(t)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 3000; i++ {
		l.compare(t, randomFrame(r), uint32(1+r.IntN(dtModes)))
		if t.Failed() {
			return
		}
	}
}

// TestTransformMatchesXDPFragments: the first fragment of a new flow and
// its later fragments (the slow path's, behind it) come out of the Go
// parser and transform as out of the program, in every mode; the Go
// side finds the later fragments' ports where XDP noted them.
func TestTransformMatchesXDPFragments(t *testing.T) {
	l := newDiffLab(t)
	r := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 600; i++ {
		frame := randomFrame(r)
		ip := frame[14:]
		total := int(ip[2])<<8 | int(ip[3])
		l4 := 8
		if ip[9] == 6 {
			l4 = int(ip[20+12]>>4) * 4
		}
		if total-20 < l4+16 {
			continue // too short to cut after its transport header
		}
		ip[6] &^= 0x40 // DF clear: a router may cut it
		cut := (l4 + 7) / 8 * 8
		cut += 8 * r.IntN((total-20-cut)/8)
		frags := testutil.Fragment4(t, frame, cut)
		l.compare(t, frags[0], uint32(1+r.IntN(dtModes)), frags[1:]...)
		if t.Failed() {
			return
		}
	}
}

// FuzzTransform mutates frames and compares the Go parser and transform
// with the program (go test -fuzz FuzzTransform ./dataplane/slowpath, as root).
func FuzzTransform(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 24; i++ {
		f.Add(randomFrame(r), uint8(i))
	}
	l := newDiffLab(f)
	f.Fuzz(func(t *testing.T, frame []byte, mode uint8) {
		if len(frame) < 14 || len(frame) > 1600 {
			return // BPF_PROG_RUN takes an Ethernet header at least
		}
		l.compare(t, frame, uint32(1+int(mode)%dtModes))
	})
}
