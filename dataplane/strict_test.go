package dataplane_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

// ipSum recomputes the checksum of frame f's IPv4 header in place.
func ipSum(f []byte) []byte {
	testutil.SetIPv4Csum(f[14 : 14+int(f[14]&0xf)*4])
	return f
}

// insert6 puts extension headers between an IPv6 frame's fixed header
// and its upper-layer header: hdrs are (next header, 8 bytes) chains the
// caller lays out; the fixed header's next header and payload length
// follow.
func insert6(f []byte, first uint8, hdrs []byte) []byte {
	out := append(append(append([]byte(nil), f[:54]...), hdrs...), f[54:]...)
	out[14+6] = first
	binary.BigEndian.PutUint16(out[14+4:], binary.BigEndian.Uint16(f[14+4:])+uint16(len(hdrs)))
	return out
}

// TestDirectorRefusesWhatIPRcvRefuses (issue 29): frames to a VIP that
// the kernel's ip_rcv (or icmp_rcv, ipv6's extension-header parsing)
// refuses are never forwarded, never make a connection or take a port,
// and are passed untouched to the kernel, which refuses them as it would
// without IPVS: a bad IPv4 header checksum (a hit and a new flow, DR and
// FULLNAT), malformed IPv4 options, a source route, hop-by-hop options
// that are not first, an ICMP error with a bad checksum (its connection
// untouched). Well-formed options (NOPs and an end, a record route)
// forward as before.
func TestDirectorRefusesWhatIPRcvRefuses(t *testing.T) {
	d := openDirector(t)
	setup(t, d)
	if err := d.SetService(dataplane.ServiceKey{VIP: vip, Port: 81, Proto: 6}, 2, 0); err != nil {
		t.Fatal(err)
	}
	hit := tcpKey(40000)
	if err := d.SetConn(hit, dataplane.Conn{RealID: 1, ServiceID: 1, State: conntrack.StateEstablished, LastSeen: dataplane.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.SetPicks(1, []uint32{1}, 0); err != nil {
		t.Fatal(err)
	}
	frame := func(sport uint16, opts ...layers.IPv4Option) []byte {
		return testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client, Dst: vip, SrcPort: sport, DstPort: 80, ACK: sport == 40000,
			SYN: sport != 40000, IPOptions: opts}.Build()
	}
	badSum := func(f []byte) []byte { f[14+10] ^= 0x5a; return f }
	nop := layers.IPv4Option{OptionType: 1}
	end := layers.IPv4Option{OptionType: 0}
	rr := layers.IPv4Option{OptionType: 7, OptionLength: 7, OptionData: []byte{4, 0, 0, 0, 0}}
	lsrr := layers.IPv4Option{OptionType: 131, OptionLength: 7, OptionData: []byte{4, 10, 1, 0, 11}}
	// An option whose length runs past the header: laid out by hand.
	overrun := ipSum(frame(40000, nop, nop, nop, end))
	overrun[14+20], overrun[14+21] = 7, 40 // RR of 40 bytes in 4
	ipSum(overrun)
	rrLow := frame(40000, layers.IPv4Option{OptionType: 7, OptionLength: 7, OptionData: []byte{2, 0, 0, 0, 0}}, nop)

	tcp6 := testutil.Frame{SrcMAC: clientMAC, DstMAC: ifMAC, Src: client6, Dst: vip6, SrcPort: 40000, DstPort: 80, SYN: true}.Build()
	// Destination options, then hop-by-hop options: misplaced.
	hbhLate := insert6(tcp6, 60, []byte{0, 0, 1, 4, 0, 0, 0, 0, 6, 0, 1, 4, 0, 0, 0, 0})
	if err := d.SetService(dataplane.ServiceKey{VIP: vip6, Port: 80, Proto: 6}, 1, 0); err != nil {
		t.Fatal(err)
	}

	// An ICMP error about the hit connection (a real's reply quoted,
	// seen as sent from the VIP), with a bad checksum.
	quoted := testutil.Frame{Src: vip, Dst: client, SrcPort: 80, DstPort: 40000, ACK: true}.Build()
	icmpErr := testutil.ICMPError(clientMAC, ifMAC, netip.MustParseAddr("203.0.113.1"), vip, 3, 4, 1400, testutil.Quote(quoted))
	icmpBad := append([]byte(nil), icmpErr...)
	icmpBad[14+20+2] ^= 0x5a

	for _, c := range []struct {
		name  string
		frame []byte
		want  dataplane.Verdict
	}{
		{"bad header checksum, a hit", badSum(frame(40000)), dataplane.XDPPass},
		{"bad header checksum, a new flow (XDP-scheduled)", badSum(frame(41000)), dataplane.XDPPass},
		{"an option running past the header", overrun, dataplane.XDPPass},
		{"a record route pointing into its own header", rrLow, dataplane.XDPPass},
		{"a loose source route", frame(40000, lsrr, end), dataplane.XDPPass},
		{"hop-by-hop options after destination options", hbhLate, dataplane.XDPPass},
		{"an ICMP error with a bad checksum", icmpBad, dataplane.XDPPass},
		{"NOPs and an end", frame(40000, nop, nop, nop, end), dataplane.XDPTx},
		{"a record route", frame(40000, rr, end), dataplane.XDPTx},
		{"a good ICMP error", icmpErr, dataplane.XDPTx},
	} {
		v, out, err := d.Run(c.frame, loIfindex, 0)
		if err != nil {
			t.Fatal(err)
		}
		if v != c.want {
			t.Errorf("%s: verdict %v, want %v\n%s", c.name, v, c.want, hex.Dump(c.frame))
		}
		if c.want == dataplane.XDPPass && !bytes.Equal(out[:len(c.frame)], c.frame) {
			t.Errorf("%s: passed changed", c.name)
		}
	}
	// The bad-checksum SYN made no connection.
	if _, ok, _ := d.LookupConn(tcpKey(41000)); ok {
		t.Error("a SYN with a bad header checksum made a connection")
	}
}
