package slowpath_test

import (
	"net/netip"
	"testing"

	"github.com/xipvs/xipvs/dataplane/slowpath"
	"github.com/xipvs/xipvs/internal/testutil"
)

// The slow path's answer to a new flow no real can take (ip_vs_leave).

// The transform test's director, VIP and client MAC (transform_test.go),
// with a client, and IPv6 addresses.
var (
	puClient  = netip.MustParseAddr("198.51.100.7")
	puVIP6    = netip.MustParseAddr("2001:db8::10")
	puClient6 = netip.MustParseAddr("2001:db8:1::7")
)

// TestPortUnreachable: the answer is an ICMP port unreachable from the VIP
// quoting the IP header and 8 bytes, as the kernel's icmp_send makes it
// (built here with gopacket).
func TestPortUnreachable(t *testing.T) {
	for _, in := range [][]byte{
		testutil.Frame{SrcMAC: dtCMAC, DstMAC: dtIfMAC, Src: puClient, Dst: dtVIP, SrcPort: 40000, DstPort: 80, SYN: true, MSS: 1460}.Build(),
		testutil.Frame{SrcMAC: dtCMAC, DstMAC: dtIfMAC, Src: puClient, Dst: dtVIP, SrcPort: 5300, DstPort: 53, Proto: 17, Payload: []byte("query")}.Build(),
	} {
		out, ok := slowpath.PortUnreachable(in)
		want := testutil.ICMPError(dtIfMAC, dtCMAC, dtVIP, puClient, 3, 3, 0, testutil.Quote(in))
		if string(out) != string(want) || !testutil.ChecksumsValid(out) {
			t.Errorf("port unreachable:\nwant: %x\ngot:  %x", want, out)
		}
		if !ok {
			t.Error("not answered")
		}
	}
}

// TestPortUnreachable6: for IPv6, port unreachable from the VIP quoting
// the packet; a big one is cut to what fits IPv6's minimum MTU.
func TestPortUnreachable6(t *testing.T) {
	for _, size := range []int{10, 1400} {
		syn := testutil.Frame{SrcMAC: dtCMAC, DstMAC: dtIfMAC, Src: puClient6, Dst: puVIP6, SrcPort: 53000, DstPort: 80, SYN: true,
			Payload: make([]byte, size)}.Build()
		got, ok := slowpath.PortUnreachable6(syn)
		q := syn[14:]
		if len(q) > 1280-48 {
			q = q[:1280-48]
		}
		want := testutil.ICMPv6Error(dtIfMAC, dtCMAC, puVIP6, puClient6, 1, 4, 0, q)
		if string(got) != string(want) {
			t.Errorf("port unreachable (%d bytes of payload):\nwant: %x\ngot:  %x", size, want, got)
		}
		if !ok {
			t.Errorf("port unreachable refused a %d-byte payload", size)
		}
	}
}
