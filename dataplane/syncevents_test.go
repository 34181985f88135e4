package dataplane_test

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/xipvs/xipvs/conntrack"
	"github.com/xipvs/xipvs/dataplane"
	"github.com/xipvs/xipvs/internal/testutil"
)

// TestXDPSyncEvents: while sync events are on, XDP writes one when a
// TCP connection enters a state IPVS syncs (the handshake's ACK:
// ESTABLISHED; the client's FIN: FIN_WAIT) and not for SYN_RECV or a
// packet that changes nothing; again once the refresh period has passed;
// for UDP at its first packet; none while off. IPv4 and IPv6.
func TestXDPSyncEvents(t *testing.T) {
	d := openDirector(t)
	setup(t, d)
	rip6 := netip.MustParseAddr("2001:db8:1::11")
	if err := d.SetReal(3, dataplane.Real{Addr: rip6, Ifindex: loIfindex, MAC: realMAC, Fwd: dataplane.FwdRoute}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []dataplane.ServiceKey{{VIP: vip6, Port: 80, Proto: 6}, {VIP: vip6, Port: 53, Proto: 17}} {
		if err := d.SetService(k, 2, 0); err != nil {
			t.Fatal(err)
		}
	}
	ev, err := d.OpenSyncEvents()
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	next := func() (dataplane.SyncEvent, bool) {
		ev.SetDeadline(time.Now().Add(50 * time.Millisecond))
		e, err := ev.Read()
		if errors.Is(err, dataplane.ErrNoEvent) {
			return e, false
		}
		if err != nil {
			t.Fatal(err)
		}
		return e, true
	}
	for _, fam := range []struct {
		name        string
		client, vip netip.Addr
		real        uint32
	}{
		{"IPv4", client, vip, 1},
		{"IPv6", netip.MustParseAddr("2001:db8:77::7"), vip6, 3},
	} {
		t.Run(fam.name, func(t *testing.T) {
			if err := d.SetSync(true, 2*time.Second); err != nil {
				t.Fatal(err)
			}
			k := dataplane.ConnKey{Src: fam.client, Dst: fam.vip, SrcPort: 40100, DstPort: 80, Proto: conntrack.ProtoTCP}
			if err := d.SetConn(k, dataplane.Conn{RealID: fam.real, ServiceID: 1, State: conntrack.StateSynRecv, LastSeen: dataplane.Now(),
				Flags: dataplane.ConnSynSeen}); err != nil {
				t.Fatal(err)
			}
			send := func(f testutil.Frame) {
				t.Helper()
				f.SrcMAC, f.DstMAC, f.Src, f.Dst = clientMAC, ifMAC, fam.client, fam.vip
				if v, _ := run(t, d, f.Build()); v != dataplane.XDPTx {
					t.Fatalf("%+v: %v", f, v)
				}
			}
			expect := func(what string, state conntrack.State) {
				t.Helper()
				e, ok := next()
				if !ok {
					t.Fatalf("%s: no event", what)
				}
				if e.Key != k || e.State != state || e.RealID != fam.real {
					t.Fatalf("%s: event %+v, want %v in %v", what, e, k, state)
				}
			}
			none := func(what string) {
				t.Helper()
				if e, ok := next(); ok {
					t.Fatalf("%s: event %+v", what, e)
				}
			}
			send(testutil.Frame{SrcPort: 40100, DstPort: 80, SYN: true})
			none("a SYN_RECV connection")
			send(testutil.Frame{SrcPort: 40100, DstPort: 80, ACK: true})
			expect("the handshake's ACK", conntrack.StateEstablished)
			send(testutil.Frame{SrcPort: 40100, DstPort: 80, ACK: true, Payload: []byte("x")})
			none("data in the same state")
			time.Sleep(2100 * time.Millisecond)
			send(testutil.Frame{SrcPort: 40100, DstPort: 80, ACK: true, Payload: []byte("y")})
			expect("past the refresh period", conntrack.StateEstablished)
			send(testutil.Frame{SrcPort: 40100, DstPort: 80, ACK: true, FIN: true})
			expect("the client's FIN", conntrack.StateFinWait)

			uk := dataplane.ConnKey{Src: fam.client, Dst: fam.vip, SrcPort: 5001, DstPort: 53, Proto: conntrack.ProtoUDP}
			if err := d.SetConn(uk, dataplane.Conn{RealID: fam.real, ServiceID: 1, LastSeen: dataplane.Now()}); err != nil {
				t.Fatal(err)
			}
			send(testutil.Frame{SrcPort: 5001, DstPort: 53, Proto: layers.IPProtocolUDP, Payload: []byte("q")})
			k = uk
			expect("UDP's first packet", conntrack.StateNone)

			if err := d.SetSync(false, 2*time.Second); err != nil {
				t.Fatal(err)
			}
			uk.SrcPort = 5002
			if err := d.SetConn(uk, dataplane.Conn{RealID: fam.real, ServiceID: 1, LastSeen: dataplane.Now()}); err != nil {
				t.Fatal(err)
			}
			send(testutil.Frame{SrcPort: 5002, DstPort: 53, Proto: layers.IPProtocolUDP, Payload: []byte("r")})
			none("off")
		})
	}
}
