package dataplane_test

import (
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

func established(t *testing.T, d *dataplane.Harness, k dataplane.ConnKey) bool {
	t.Helper()
	est, err := d.Established(k)
	if err != nil {
		t.Fatal(err)
	}
	return est
}

// TestPromotionNAT follows a NAT connection from the embryonic table to
// the established one: both entries move at the client's ACK, and the
// established entries go on carrying state.
func TestPromotionNAT(t *testing.T) {
	d := openDirector(t)
	setupModes(t, d)
	k := tcpKey(52000)
	dec := dataplane.Decision{RealID: natID, ServiceID: 1, Out: dataplane.ConnKey{Src: client, Dst: rip, SrcPort: 52000, DstPort: 8080}}
	flow(t, d, k, dec, 0)
	c, _, _ := d.LookupConn(k)
	rk := c.Peer(conntrack.ProtoTCP)

	syn := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 52000, DstPort: 80, SYN: true}
	if v, _ := run(t, d, syn.Build()); v != dataplane.XDPTx {
		t.Fatalf("SYN: %v", v)
	}
	if established(t, d, k) || established(t, d, rk) {
		t.Fatal("promoted at the SYN")
	}
	synack := testutil.Frame{SrcMAC: realMAC, DstMAC: ifMAC, Src: rip, Dst: client, SrcPort: 8080, DstPort: 52000, SYN: true, ACK: true}
	run(t, d, synack.Build())
	if established(t, d, k) {
		t.Fatal("promoted at the SYN-ACK")
	}
	ack := syn
	ack.SYN, ack.ACK = false, true
	if v, _ := run(t, d, ack.Build()); v != dataplane.XDPTx {
		t.Fatalf("ACK: %v", v)
	}
	if !established(t, d, k) || !established(t, d, rk) {
		t.Fatalf("after the client's ACK: forward entry established %v, reply entry %v; want both", established(t, d, k), established(t, d, rk))
	}
	// The reply entry in est_conns un-NATs, and moves the forward
	// entry's state there.
	fin := synack
	fin.SYN, fin.FIN = false, true
	v, out := run(t, d, fin.Build())
	want := fin
	want.DstMAC, want.SrcMAC, want.Src, want.SrcPort = clientMAC, ifMAC, vip, 80
	expectFrame(t, "FIN from an established entry", v, dataplane.XDPTx, out, want.Build())
	if c, _, _ := d.LookupConn(k); c.State != conntrack.StateFinWait {
		t.Errorf("after server FIN: %v, want FIN_WAIT", c.State)
	}

	// A SYN reusing the closing tuple drops both established entries
	// and goes to the scheduler (here: no AF_XDP socket, dropped).
	c, _, _ = d.LookupConn(k)
	c.State = conntrack.StateTimeWait
	if err := d.SetConn(k, c); err != nil {
		t.Fatal(err)
	}
	if v, _ := run(t, d, syn.Build()); v != dataplane.XDPDrop {
		t.Fatalf("reused SYN: %v, want the slow path (dropped without a socket)", v)
	}
	if established(t, d, k) || established(t, d, rk) {
		t.Error("a reused tuple's established entries are still there")
	}
}

// TestPromotionUDP: a UDP flow is promoted at its second packet in XDP
// (the slow path forwarded its first).
func TestPromotionUDP(t *testing.T) {
	d := openDirector(t)
	setup(t, d)
	k := dataplane.ConnKey{Src: client, Dst: vip, SrcPort: 5000, DstPort: 53, Proto: conntrack.ProtoUDP}
	if err := d.SetConn(k, dataplane.Conn{RealID: 1, ServiceID: 1, LastSeen: dataplane.Now()}); err != nil {
		t.Fatal(err)
	}
	udp := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 5000, DstPort: 53, Proto: layers.IPProtocolUDP, Payload: []byte("q")}
	for i, want := range []bool{false, true, true} {
		if v, _ := run(t, d, udp.Build()); v != dataplane.XDPTx {
			t.Fatalf("packet %d: %v", i+2, v)
		}
		if got := established(t, d, k); got != want {
			t.Errorf("after packet %d: established %v, want %v", i+2, got, want)
		}
	}
}

// TestEstablishedNeverEvicted fills the established table, overflows it
// by one connection (counted, still forwarded from the embryonic table),
// then floods the embryonic table with many times its size of new
// entries: every established connection is still forwarded.
func TestEstablishedNeverEvicted(t *testing.T) {
	testutil.RequirePrivileged(t)
	const size = 256
	d, err := dataplane.OpenHarness(size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if err := d.SetInterface(loIfindex, ifMAC, 0); err != nil {
		t.Fatal(err)
	}
	setup(t, d)
	ack := func(port uint16) []byte {
		return testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: port, DstPort: 80, ACK: true}.Build()
	}
	// The handshake's last packet: ESTABLISHED in IPVS's INPUT table.
	open := func(port uint16) dataplane.Verdict {
		if err := d.SetConn(tcpKey(port), dataplane.Conn{RealID: 1, ServiceID: 1, State: conntrack.StateSynRecv, LastSeen: dataplane.Now(),
			Flags: dataplane.ConnSynSeen}); err != nil {
			t.Fatal(err)
		}
		v, _, err := d.Run(ack(port), 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	var est []uint16
	for p := uint16(1000); len(est) < size && p < 1000+2*size; p++ {
		if v := open(p); v != dataplane.XDPTx {
			t.Fatalf("port %d: %v", p, v)
		}
		if established(t, d, tcpKey(p)) {
			est = append(est, p)
		}
	}
	if len(est) < size*9/10 {
		t.Fatalf("only %d of %d connections promoted", len(est), size)
	}
	before, _ := d.Counters()
	over := uint16(5000)
	if v := open(over); v != dataplane.XDPTx {
		t.Fatalf("overflowing connection: %v, want forwarded from the embryonic table", v)
	}
	after, _ := d.Counters()
	if established(t, d, tcpKey(over)) || after[dataplane.StatEstFull] != before[dataplane.StatEstFull]+1 {
		t.Errorf("a full established table: promoted %v, est_full %d -> %d (want not promoted, counted once)",
			established(t, d, tcpKey(over)), before[dataplane.StatEstFull], after[dataplane.StatEstFull])
	}

	// The flood: 16 times the table of embryonic entries.
	var keys []dataplane.ConnKey
	var conns []dataplane.Conn
	for i := 0; i < 16*size; i++ {
		keys = append(keys, dataplane.ConnKey{Src: netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)}), Dst: vip, SrcPort: uint16(1024 + i), DstPort: 80, Proto: conntrack.ProtoTCP})
		conns = append(conns, dataplane.Conn{RealID: 1, ServiceID: 1, State: conntrack.StateSynRecv, LastSeen: dataplane.Now()})
	}
	if err := d.SetConnBatch(keys, conns); err != nil {
		t.Fatal(err)
	}
	for _, p := range est {
		v, out, err := d.Run(ack(p), 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if v != dataplane.XDPTx || len(out) < 6 || string(out[:6]) != string(realMAC) {
			t.Fatalf("established connection %d after the flood: %v, want forwarded to the real", p, v)
		}
	}
}
