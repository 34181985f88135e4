package dataplane_test

import (
	"bytes"
	"testing"

	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

// TestSloppyTCP: a TCP packet that has no connection starts one only if
// it is a SYN, as IPVS's tcp_conn_schedule, unless sloppy TCP is on:
// then any packet but a RST does (IPVS's sloppy_tcp), so that a flow
// ECMP moves here from another director is picked up mid-stream. IPv4
// and IPv6 alike.
func TestSloppyTCP(t *testing.T) {
	d := openDirector(t)
	setup(t, d)
	setupIPv6(t, d)
	if _, err := d.SetPicks(1, []uint32{1}, 0); err != nil { // service 1 schedules real 1 in XDP
		t.Fatal(err)
	}
	ack4 := func(sport uint16) []byte {
		return testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: sport, DstPort: 80, ACK: true, Payload: []byte("mid-stream")}.Build()
	}
	rst4 := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: 43002, DstPort: 80, RST: true}.Build()
	ack6 := func(sport uint16) []byte {
		return frame6{srcMAC: clientMAC, dstMAC: ifMAC, src: client6, dst: vip6, sport: sport, dport: 80, ack: true, payload: []byte("mid-stream")}.build(t)
	}
	counter := func(i int) uint64 {
		c, err := d.Counters()
		if err != nil {
			t.Fatal(err)
		}
		return c[i]
	}
	expect := func(name string, frame []byte, want dataplane.Verdict) []byte {
		t.Helper()
		v, out, err := d.Run(frame, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if v != want {
			t.Errorf("%s: verdict %v, want %v", name, v, want)
		}
		return out
	}

	// Off (the default, as IPVS): passed to the kernel, counted, and no
	// connection made.
	before := counter(dataplane.StatPassNoConn)
	if out := expect("IPv4 ACK, sloppy off", ack4(43000), dataplane.XDPPass); !bytes.Equal(out, ack4(43000)) {
		t.Error("IPv4 ACK, sloppy off: frame changed")
	}
	expect("IPv6 ACK, sloppy off", ack6(43000), dataplane.XDPPass)
	expect("RST, sloppy off", rst4, dataplane.XDPPass)
	if got := counter(dataplane.StatPassNoConn) - before; got != 3 {
		t.Errorf("pass_no_conn counted %d, want 3", got)
	}
	if _, ok, err := d.LookupConn(tcpKey(43000)); err != nil || ok {
		t.Errorf("sloppy off: an ACK made a connection (%v)", err)
	}

	if err := d.SetDefence(dataplane.Defence{SloppyTCP: true}); err != nil {
		t.Fatal(err)
	}
	// On: the IPv4 ACK is scheduled in XDP and forwarded to real 1; the
	// connection exists for the next packet.
	out := expect("IPv4 ACK, sloppy on", ack4(43001), dataplane.XDPTx)
	if !bytes.Equal(out, withMACs(ack4(43001), realMAC, ifMAC)) {
		t.Error("IPv4 ACK, sloppy on: not forwarded to the real")
	}
	if c, ok, err := d.LookupConn(tcpKey(43001)); err != nil || !ok || c.RealID != 1 {
		t.Errorf("sloppy on: connection %+v (found %v, %v); want one to real 1", c, ok, err)
	}
	expect("IPv4 ACK, sloppy on, second packet", ack4(43001), dataplane.XDPTx)
	// IPv6: real 1 is IPv4, so XDP hands the flow to the slow path, which
	// is not bound here: dropped (retransmitted), not passed.
	expect("IPv6 ACK, sloppy on", ack6(43001), dataplane.XDPDrop)
	// A RST never starts a connection.
	before = counter(dataplane.StatPassNoConn)
	expect("RST, sloppy on", rst4, dataplane.XDPPass)
	if got := counter(dataplane.StatPassNoConn) - before; got != 1 {
		t.Errorf("RST: pass_no_conn counted %d, want 1", got)
	}
}
