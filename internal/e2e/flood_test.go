package e2e

import (
	"bufio"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/xipvs/xipvs/internal/testutil"
)

// A full connection table under a SYN flood resets no established
// connection: a keep-alive connection, idle through a flood of spoofed
// SYNs many times the table's size, is reused after it (issue 17).
func TestFullTableKeepsEstablished(t *testing.T) {
	const table = 4096
	lab := newModeLab(t, "full", labPlan{outside: "10.86.0", inside: "10.87.0", realsGateway: "10.87.0.1",
		daemonArgs: []string{"--conn-table-size", "4096"}})
	lab.serveEcho(t, 8080)
	vs := lab.vip.String() + ":80"
	// rr: XDP schedules the flood's SYNs itself, at the generator's rate.
	lab.adm(t, "-A", "-t", vs, "-s", "rr")
	for _, rs := range lab.rs {
		lab.adm(t, "-a", "-t", vs, "-r", rs.Addr.Addr().String()+":8080", "-m")
	}

	var c net.Conn
	if err := lab.cl.Do(func() (err error) {
		c, err = net.DialTimeout("tcp4", vs, 5*time.Second)
		return
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ka := &keepAlive{c: c, rd: bufio.NewReader(c)}
	before := ka.get(t)

	atk, err := lab.Out.AddHost("atk", netip.MustParsePrefix("10.86.0.9/24"), testutil.HostOptions{XDPPeer: true})
	if err != nil {
		t.Fatal(err)
	}
	flood, err := testutil.NewSYNFlood(atk, lab.lb.MAC, netip.AddrPortFrom(lab.vip, 80), netip.MustParseAddr("198.18.0.0"))
	if err != nil {
		t.Fatal(err)
	}
	defer flood.Close()
	for i := 0; i < 8; i++ {
		if err := flood.Send(16 * table); err != nil {
			t.Fatal(err)
		}
	}
	sent, _ := flood.Sent()
	// How many new connections the flood made: the service's Conns.
	made := statsLine(t, lab.adm(t, "-Ln", "--stats", "--exact"), "TCP  "+vs)[0]
	t.Logf("flood: %d SYNs sent, %d connections scheduled, table %d", sent, made, table)
	if made < 4*table {
		t.Fatalf("the flood made only %d connections: not enough to overflow a table of %d", made, table)
	}
	after := ka.get(t)
	if after != before {
		t.Errorf("the keep-alive connection answered %q after the flood, %q before", after, before)
	}
}
