package dataplane_test

import (
	"net"
	"net/netip"
	"testing"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

var (
	router    = netip.MustParseAddr("203.0.113.1")
	routerMAC = net.HardwareAddr{0x02, 0x77, 0, 0, 0, 0x01}
)

const (
	icmpUnreach = 3
	fragNeeded  = 4
	portUnreach = 3
	timeExceed  = 11
)

// TestICMPErrors: ICMP errors quoting a tracked connection follow it as
// IPVS's ip_vs_in_icmp and ip_vs_out_icmp do, in every forwarding method;
// the expected frames are built from first principles with gopacket.
func TestICMPErrors(t *testing.T) {
	d := openDirector(t)
	setupModes(t, d)
	if err := d.SetReal(1, dataplane.Real{Addr: netip.MustParseAddr("10.1.0.21"), Ifindex: loIfindex, MAC: realMAC, Fwd: dataplane.FwdRoute}); err != nil {
		t.Fatal(err)
	}
	flow(t, d, tcpKey(44000), dataplane.Decision{RealID: 1, ServiceID: 1}, conntrack.StateEstablished)
	flow(t, d, tcpKey(44001), dataplane.Decision{RealID: tunID, ServiceID: 1}, conntrack.StateEstablished)
	flow(t, d, tcpKey(44002), dataplane.Decision{RealID: natID, ServiceID: 1,
		Out: dataplane.ConnKey{Src: client, Dst: rip, SrcPort: 44002, DstPort: 8080}}, conntrack.StateEstablished)
	flow(t, d, tcpKey(44003), dataplane.Decision{RealID: fullnatID, ServiceID: 1, FullNAT: true,
		Out: dataplane.ConnKey{Src: lip, Dst: rip, SrcPort: 30003, DstPort: 8080}}, conntrack.StateEstablished)
	uk := dataplane.ConnKey{Src: client, Dst: vip, SrcPort: 5300, DstPort: 53, Proto: conntrack.ProtoUDP}
	flow(t, d, uk, dataplane.Decision{RealID: natID, ServiceID: 1, Out: dataplane.ConnKey{Src: client, Dst: rip, SrcPort: 5300, DstPort: 5353}}, 0)

	// What a real sent toward the client (from the VIP) and a router on
	// the client's path quotes back to the VIP.
	fromVIP := func(cport uint16) []byte {
		return testutil.Quote(testutil.Frame{Src: vip, Dst: client, SrcPort: 80, DstPort: cport, ACK: true, Payload: make([]byte, 1400)}.Build())
	}
	toVIP := func(q []byte, mtu uint16) []byte {
		return testutil.ICMPError(routerMAC, ifMAC, router, vip, icmpUnreach, fragNeeded, mtu, q)
	}

	t.Run("DR: on to the real as it is", func(t *testing.T) {
		in := toVIP(fromVIP(44000), 1400)
		v, out := run(t, d, in)
		expectFrame(t, "DR", v, dataplane.XDPTx, out, withMACs(in, realMAC, ifMAC))
	})
	t.Run("TUN: on to the real in IP-in-IP", func(t *testing.T) {
		in := toVIP(fromVIP(44001), 1400)
		v, out := run(t, d, in)
		want := testutil.IPIP(in, gwMAC, ifMAC, tunSrc, netip.MustParseAddr("172.16.5.5"), 0xc0, 64, 0, false)
		expectFrame(t, "TUN", v, dataplane.XDPTx, out, want)
	})
	t.Run("NAT: the real sees its own packet quoted", func(t *testing.T) {
		q := fromVIP(44002)
		v, out := run(t, d, toVIP(q, 1400))
		want := testutil.ICMPError(ifMAC, realMAC, router, rip, icmpUnreach, fragNeeded, 1400,
			testutil.Requote(q, rip, client, 8080, 44002))
		expectFrame(t, "NAT", v, dataplane.XDPTx, out, want)
	})
	t.Run("FULLNAT: from the local address, quoting the real's packet to it", func(t *testing.T) {
		q := fromVIP(44003)
		v, out := run(t, d, toVIP(q, 1280))
		want := testutil.ICMPError(ifMAC, realMAC, lip, rip, icmpUnreach, fragNeeded, 1280,
			testutil.Requote(q, rip, lip, 8080, 30003))
		expectFrame(t, "FULLNAT", v, dataplane.XDPTx, out, want)
	})
	t.Run("NAT inside: the real's port unreachable reaches the client from the VIP", func(t *testing.T) {
		q := testutil.Quote(testutil.Frame{Src: client, Dst: rip, SrcPort: 44002, DstPort: 8080, ACK: true}.Build())
		in := testutil.ICMPError(realMAC, ifMAC, rip, client, icmpUnreach, portUnreach, 0, q)
		v, out := run(t, d, in)
		want := testutil.ICMPError(ifMAC, clientMAC, vip, client, icmpUnreach, portUnreach, 0,
			testutil.Requote(q, client, vip, 44002, 80))
		expectFrame(t, "NAT inside", v, dataplane.XDPTx, out, want)
	})
	t.Run("FULLNAT inside: a router's time exceeded to the local address", func(t *testing.T) {
		q := testutil.Quote(testutil.Frame{Src: lip, Dst: rip, SrcPort: 30003, DstPort: 8080, ACK: true}.Build())
		in := testutil.ICMPError(routerMAC, ifMAC, netip.MustParseAddr("10.1.0.254"), lip, timeExceed, 0, 0, q)
		v, out := run(t, d, in)
		want := testutil.ICMPError(ifMAC, clientMAC, vip, client, timeExceed, 0, 0,
			testutil.Requote(q, client, vip, 44003, 80))
		expectFrame(t, "FULLNAT inside", v, dataplane.XDPTx, out, want)
	})
	t.Run("NAT UDP", func(t *testing.T) {
		q := testutil.Quote(testutil.Frame{Src: client, Dst: rip, SrcPort: 5300, DstPort: 5353, Proto: 17, Payload: []byte("query")}.Build())
		in := testutil.ICMPError(realMAC, ifMAC, rip, client, icmpUnreach, portUnreach, 0, q)
		v, out := run(t, d, in)
		want := testutil.ICMPError(ifMAC, clientMAC, vip, client, icmpUnreach, portUnreach, 0,
			testutil.Requote(q, client, vip, 5300, 53))
		expectFrame(t, "NAT UDP inside", v, dataplane.XDPTx, out, want)
	})

	// Passed to the kernel unchanged: no connection, not an error, a
	// truncated quote, a quote that is a later fragment.
	noConn := toVIP(fromVIP(45000), 1400)
	echo := testutil.ICMPError(routerMAC, ifMAC, router, vip, 8, 0, 0, []byte("ping"))
	short := toVIP(fromVIP(44000)[:22], 1400)
	fragQ := fromVIP(44000)
	fragQ[6], fragQ[7] = 0x00, 0x10 // fragment offset 16
	frag := toVIP(fragQ, 1400)
	for name, in := range map[string][]byte{"no connection": noConn, "echo request": echo, "truncated quote": short, "quote is a later fragment": frag} {
		v, out := run(t, d, in)
		expectFrame(t, name, v, dataplane.XDPPass, out, in)
	}
	c, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c[dataplane.StatICMPForward] != 7 {
		t.Errorf("icmp_forward %d, want 7", c[dataplane.StatICMPForward])
	}
}
