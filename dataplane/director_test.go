package dataplane_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket/layers"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

var (
	vip       = netip.MustParseAddr("192.0.2.10")
	client    = netip.MustParseAddr("198.51.100.7")
	rip       = netip.MustParseAddr("10.1.0.11")
	ifMAC     = net.HardwareAddr{0x02, 0xd1, 0, 0, 0, 0x01}
	realMAC   = net.HardwareAddr{0x02, 0xee, 0, 0, 0, 0x11}
	clientMAC = net.HardwareAddr{0x02, 0xcc, 0, 0, 0, 0x07}
)

// Without a context, BPF_PROG_RUN presents a frame as received on the
// loopback device (ifindex 1), queue 0.
const loIfindex = 1

func openDirector(t testing.TB) *dataplane.Harness {
	t.Helper()
	testutil.RequirePrivileged(t)
	d, err := dataplane.OpenHarness(1024)
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			t.Fatalf("verifier: %+v", ve)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if err := d.SetInterface(loIfindex, ifMAC, 0); err != nil {
		t.Fatal(err)
	}
	return d
}

func tcpKey(sport uint16) dataplane.ConnKey {
	return dataplane.ConnKey{Src: client, Dst: vip, SrcPort: sport, DstPort: 80, Proto: conntrack.ProtoTCP}
}

// setup installs a TCP and a UDP service on the VIP with one real
// server (id 1, MAC resolved) and one real whose MAC is unknown (id 2).
func setup(t *testing.T, d *dataplane.Harness) {
	t.Helper()
	for _, k := range []dataplane.ServiceKey{{VIP: vip, Port: 80, Proto: 6}, {VIP: vip, Port: 53, Proto: 17}} {
		if err := d.SetService(k, 1, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.SetReal(1, dataplane.Real{Addr: rip, Ifindex: loIfindex, MAC: realMAC, Fwd: dataplane.FwdRoute}); err != nil {
		t.Fatal(err)
	}
	if err := d.SetReal(2, dataplane.Real{Addr: netip.MustParseAddr("10.1.0.12"), Ifindex: loIfindex, Fwd: dataplane.FwdRoute}); err != nil {
		t.Fatal(err)
	}
}

func withMACs(frame []byte, dst, src net.HardwareAddr) []byte {
	out := append([]byte(nil), frame...)
	copy(out[0:6], dst)
	copy(out[6:12], src)
	return out
}

func TestDirectorFixtures(t *testing.T) {
	d := openDirector(t)
	setup(t, d)
	conns := map[dataplane.ConnKey]dataplane.Conn{
		tcpKey(40000): {RealID: 1, ServiceID: 1, State: conntrack.StateEstablished},
		tcpKey(40001): {RealID: 2, ServiceID: 1, State: conntrack.StateEstablished},
		{Src: client, Dst: vip, SrcPort: 5000, DstPort: 53, Proto: 17}: {RealID: 1, ServiceID: 1},
		tcpKey(40002): {RealID: 7, ServiceID: 1, State: conntrack.StateEstablished}, // real 7 never set
	}
	for k, c := range conns {
		c.LastSeen = dataplane.Now()
		if err := d.SetConn(k, c); err != nil {
			t.Fatal(err)
		}
	}
	tcpHit := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 40000, DstPort: 80, ACK: true, Payload: []byte("GET / HTTP/1.0\r\n\r\n")}.Build()
	udpHit := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 5000, DstPort: 53, Proto: layers.IPProtocolUDP, Payload: []byte("q")}.Build()
	newSyn := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 41000, DstPort: 80, SYN: true}.Build()
	otherPort := testutil.Frame{Src: client, Dst: vip, SrcPort: 41000, DstPort: 22, SYN: true}.Build()
	otherHost := testutil.Frame{Src: client, Dst: netip.MustParseAddr("192.0.2.99"), SrcPort: 41000, DstPort: 80, SYN: true}.Build()
	noMAC := testutil.Frame{Src: client, Dst: vip, SrcPort: 40001, DstPort: 80, ACK: true}.Build()
	goneReal := testutil.Frame{Src: client, Dst: vip, SrcPort: 40002, DstPort: 80, ACK: true}.Build()
	frag := testutil.Frame{Src: client, Dst: vip, SrcPort: 40000, DstPort: 80, ACK: true, MoreFragments: true}.Build()
	arp := append(append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, clientMAC...), 0x08, 0x06,
		0, 1, 8, 0, 6, 4, 0, 1, 2, 0xcc, 0, 0, 0, 7, 198, 51, 100, 7, 0, 0, 0, 0, 0, 0, 192, 0, 2, 10)
	icmp := append([]byte(nil), tcpHit[:14+20]...)
	icmp[14+9] = 1                 // protocol ICMP; the rest does not matter to the director
	icmp[14+2], icmp[14+3] = 0, 20 // total length: the header alone
	badIHL := append([]byte(nil), tcpHit...)
	badIHL[14] = 0x44 // IHL 4 < 5
	bigIHL := append([]byte(nil), tcpHit[:14+24]...)
	bigIHL[14] = 0x4f // IHL 15: 60 bytes of header, the frame is shorter
	shortTCP := tcpHit[:14+20+10]
	// Lengths that disagree with the frame (issue 17): passed, never
	// forwarded, even for a connection the director knows.
	setLen := func(f []byte, off int, v uint16) []byte {
		out := append([]byte(nil), f...)
		out[off], out[off+1] = byte(v>>8), byte(v)
		return out
	}
	ipLong := setLen(tcpHit, 14+2, uint16(len(tcpHit)-14+1))
	ipShort := setLen(tcpHit, 14+2, 19)
	tcpDoffPast := append([]byte(nil), tcpHit[:14+20+20]...)
	tcpDoffPast = setLen(tcpDoffPast, 14+2, 40)
	tcpDoffPast[14+20+12] = 0x60 // data offset 24 bytes in a 20-byte payload
	udpLong := setLen(udpHit, 14+20+4, uint16(len(udpHit)-14-20+1))
	udpShort := setLen(udpHit, 14+20+4, 7)
	// The frame of issue 17, total length 11, to a DR service.
	ipLen11, _ := hex.DecodeString("02d10000000102cc0000000708004500000b1234400040063c57c6336407c000020a9c4a0050000003e8000007d05012ffff1b3b0000")

	tests := []struct {
		name    string
		in      []byte
		verdict dataplane.Verdict
		out     []byte // nil: unchanged
	}{
		{"tcp conn hit: DR rewrites MACs, XDP_TX", tcpHit, dataplane.XDPTx, withMACs(tcpHit, realMAC, ifMAC)},
		{"udp conn hit", udpHit, dataplane.XDPTx, withMACs(udpHit, realMAC, ifMAC)},
		{"new flow, no AF_XDP socket: dropped, not passed", newSyn, dataplane.XDPDrop, nil},
		{"VIP, port without service: passed", otherPort, dataplane.XDPPass, nil},
		{"other host: passed", otherHost, dataplane.XDPPass, nil},
		{"ARP: passed", arp, dataplane.XDPPass, nil},
		{"ICMP to VIP: passed", icmp, dataplane.XDPPass, nil},
		{"real MAC unresolved: dropped", noMAC, dataplane.XDPDrop, nil},
		{"conn names a real that is gone: dropped", goneReal, dataplane.XDPDrop, nil},
		{"first fragment of a connection: forwarded (frag_test.go)", frag, dataplane.XDPTx, withMACs(frag, realMAC, ifMAC)},
		{"ethernet only: passed", tcpHit[:14], dataplane.XDPPass, nil},
		{"truncated IPv4 header: passed", tcpHit[:14+12], dataplane.XDPPass, nil},
		{"IHL below 5: passed", badIHL, dataplane.XDPPass, nil},
		{"IHL beyond frame: passed", bigIHL, dataplane.XDPPass, nil},
		{"truncated TCP header: passed", shortTCP, dataplane.XDPPass, nil},
		{"IP total length past the frame: passed", ipLong, dataplane.XDPPass, nil},
		{"IP total length below the header: passed", ipShort, dataplane.XDPPass, nil},
		{"TCP data offset past the payload: passed", tcpDoffPast, dataplane.XDPPass, nil},
		{"UDP length past the payload: passed", udpLong, dataplane.XDPPass, nil},
		{"UDP length below its header: passed", udpShort, dataplane.XDPPass, nil},
		{"issue 17's frame with total length 11: passed", ipLen11, dataplane.XDPPass, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			verdict, out, err := d.Run(tc.in, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.out
			if want == nil {
				want = tc.in
			}
			if verdict != tc.verdict || !bytes.Equal(out, want) {
				t.Errorf("verdict %v, want %v\ninput: %s\nwant:  %s\ngot:   %s",
					verdict, tc.verdict, hex.EncodeToString(tc.in), hex.EncodeToString(want), hex.EncodeToString(out))
			}
			if tc.verdict == dataplane.XDPTx && !testutil.ChecksumsValid(out) {
				t.Errorf("output checksums invalid: %s", hex.EncodeToString(out))
			}
		})
	}
	c, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c[dataplane.StatDropNoXSK] != 1 || c[dataplane.StatDropNoMAC] != 1 || c[dataplane.StatFwd] != 3 ||
		c[dataplane.StatPassFragment] != 0 || c[dataplane.StatPassMalformed] != 11 || c[dataplane.StatPass] != 4 {
		t.Errorf("counters %v", c)
	}
}

// TestDirectorTCPStates walks a connection through IPVS's input-only
// state table as the fast path sees client packets.
func TestDirectorTCPStates(t *testing.T) {
	d := openDirector(t)
	setup(t, d)
	k := tcpKey(42000)
	if err := d.SetConn(k, dataplane.Conn{RealID: 1, ServiceID: 1, LastSeen: dataplane.Now()}); err != nil {
		t.Fatal(err)
	}
	f := testutil.Frame{Src: client, Dst: vip, SrcPort: 42000, DstPort: 80}
	steps := []struct {
		name       string
		syn, ack   bool
		fin, rst   bool
		wantState  conntrack.State
		wantAction dataplane.Verdict
	}{
		{"SYN", true, false, false, false, conntrack.StateSynRecv, dataplane.XDPTx},
		{"ACK", false, true, false, false, conntrack.StateEstablished, dataplane.XDPTx},
		{"data ACK", false, true, false, false, conntrack.StateEstablished, dataplane.XDPTx},
		{"FIN", false, true, true, false, conntrack.StateFinWait, dataplane.XDPTx},
		{"last ACK", false, true, false, false, conntrack.StateFinWait, dataplane.XDPTx},
		{"RST", false, false, false, true, conntrack.StateClose, dataplane.XDPTx},
		// A new SYN on a closed tuple is a new connection: slow path
		// (dropped here, no socket), and the closed connection leaves the
		// established table (the slow path writes the new one).
		{"SYN reuses closed tuple", true, false, false, false, conntrack.StateNone, dataplane.XDPDrop},
	}
	for _, s := range steps {
		f.SYN, f.ACK, f.FIN, f.RST = s.syn, s.ack, s.fin, s.rst
		v, _, err := d.Run(f.Build(), 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		c, ok, err := d.LookupConn(k)
		if err != nil || ok != (s.wantState != conntrack.StateNone) {
			t.Fatalf("%s: conn lookup: %v %v", s.name, ok, err)
		}
		if v != s.wantAction || c.State != s.wantState {
			t.Errorf("%s: verdict %v state %v, want %v %v", s.name, v, c.State, s.wantAction, s.wantState)
		}
	}
}

// TestDirectorLastSeen checks that the fast path refreshes last_seen
// only when it is older than the granularity (1 s), not on every packet.
func TestDirectorLastSeen(t *testing.T) {
	d := openDirector(t)
	setup(t, d)
	k := tcpKey(43000)
	// A stamp 5 s old needs a clock past 5 s: a machine may have booted
	// just now.
	for dataplane.Now() < 6e9 {
		time.Sleep(100 * time.Millisecond)
	}
	old := dataplane.Now() - 5e9
	if err := d.SetConn(k, dataplane.Conn{RealID: 1, ServiceID: 1, State: conntrack.StateEstablished, LastSeen: old}); err != nil {
		t.Fatal(err)
	}
	frame := testutil.Frame{Src: client, Dst: vip, SrcPort: 43000, DstPort: 80, ACK: true}.Build()
	if _, _, err := d.Run(frame, 0, 0); err != nil {
		t.Fatal(err)
	}
	c, _, _ := d.LookupConn(k)
	if c.LastSeen <= old {
		t.Fatalf("stale last_seen not refreshed: %v", c.LastSeen)
	}
	fresh := c.LastSeen
	if _, _, err := d.Run(frame, 0, 0); err != nil {
		t.Fatal(err)
	}
	c, _, _ = d.LookupConn(k)
	if c.LastSeen != fresh {
		t.Fatalf("last_seen rewritten within the granularity: %v -> %v", fresh, c.LastSeen)
	}
}

func TestWalkConnsBatches(t *testing.T) {
	d := openDirector(t)
	const n = 700
	for i := 0; i < n; i++ {
		if err := d.SetConn(tcpKey(uint16(10000+i)), dataplane.Conn{RealID: 1}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[uint16]bool{}
	if err := d.WalkConns(func(k dataplane.ConnKey, c dataplane.Conn) bool {
		seen[k.SrcPort] = true
		if k.Src != client || k.Dst != vip || k.DstPort != 80 || c.RealID != 1 {
			t.Errorf("walk decoded %+v %+v", k, c)
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if len(seen) != n {
		t.Fatalf("walk saw %d connections, want %d", len(seen), n)
	}
}

// A service key with port 0 (a persistent port-zero service, or a port
// group bound to every port) catches ports without their own key; a key
// of its own still wins.
func TestDirectorAllPortsKey(t *testing.T) {
	d := openDirector(t)
	other := netip.MustParseAddr("192.0.2.20")
	if err := d.SetService(dataplane.ServiceKey{VIP: other, Port: 0, Proto: 6}, 2, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.SetReal(1, dataplane.Real{Addr: rip, Ifindex: loIfindex, MAC: realMAC, Fwd: dataplane.FwdRoute}); err != nil {
		t.Fatal(err)
	}
	k := dataplane.ConnKey{Src: client, Dst: other, SrcPort: 40000, DstPort: 8443, Proto: conntrack.ProtoTCP}
	if err := d.SetConn(k, dataplane.Conn{RealID: 1, ServiceID: 2, State: conntrack.StateEstablished, LastSeen: dataplane.Now()}); err != nil {
		t.Fatal(err)
	}
	hit := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: other, SrcPort: 40000, DstPort: 8443, ACK: true}.Build()
	if v, out, err := d.Run(hit, 0, 0); err != nil || v != dataplane.XDPTx || !bytes.Equal(out, withMACs(hit, realMAC, ifMAC)) {
		t.Fatalf("port 8443 under a port-0 key: verdict %v err %v", v, err)
	}
	syn := testutil.Frame{Src: client, Dst: other, SrcPort: 40001, DstPort: 22, SYN: true}.Build()
	if v, _, _ := d.Run(syn, 0, 0); v != dataplane.XDPDrop {
		t.Fatalf("new flow on a port-0 service: verdict %v, want slow path (drop without socket)", v)
	}
	udp := testutil.Frame{Src: client, Dst: other, SrcPort: 40001, DstPort: 22, Proto: layers.IPProtocolUDP}.Build()
	if v, _, _ := d.Run(udp, 0, 0); v != dataplane.XDPPass {
		t.Fatalf("UDP to a TCP port-0 service: verdict %v, want pass", v)
	}
}
