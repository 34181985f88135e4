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

// floodRate is the e2e flood's rate: ten times what the hping3
// reached, half of what the AF_XDP sender reaches from one vCPU here
// (1.0-1.6M SYN/s), and what this lab sustains with room to spare, so
// that the assertions test the defence, not the VM's spare cycles. At
// the sender's full rate the director's receive ring on the link the
// attacker shares with the client (a veth's 256 frames) refuses 20-50%
// of the flood and, with it, some of the client's SYNs: the NAT trial
// then served 190-199 of 200. make bench reports the full rate.
const floodRate = 500_000

// floodTrial runs a FloodTrial against lab's VIP:port from the lab's
// attacker (linked straight to the director), which is also the
// legitimate client: both share the link and the director's rx queue,
// as a flood and the clients do on an upstream link. It logs what it
// measured.
func floodTrial(t *testing.T, lab *drLab, port uint16) testutil.FloodResult {
	t.Helper()
	ifc, err := lab.lb.Interface("atk0")
	if err != nil {
		t.Fatal(err)
	}
	ft := testutil.FloodTrial{Client: lab.Attacker, Target: netip.AddrPortFrom(lab.vip, port), Attacker: lab.Attacker, NextHop: ifc.HardwareAddr,
		SpoofBase: netip.MustParseAddr("198.18.0.0"), Conns: 200, Parallel: 10, Timeout: 2 * time.Second, Stream: true, Rate: floodRate,
		Probe: func() error { _, err := lab.Adm(xipvsadmBin, "-Ln"); return err }}
	res, err := ft.Run()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("under flood: %s", res)
	return res
}

// Under a random-source SYN flood (floodRate), the SYN proxy keeps a NAT
// and a FULLNAT service's legitimate clients served (issue 17): >= 99% of
// 200 connections within 2 s each (curl -m 2), and xipvsadm answering.
// The rates (p99 connect, the download's share, -Ln's time) are logged
// here and reported by make bench's flood scenario; they do not gate the
// test.
func TestSYNFloodNATSynProxy(t *testing.T) {
	lab := newModeLab(t, "fln", labPlan{outside: "10.94.0", inside: "10.95.0", realsGateway: "10.95.0.1", attacker: "10.96.0"})
	for _, rs := range lab.rs {
		srv, err := testutil.ServeFloodTarget(rs, 8080)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
	}
	nat, fnat := lab.vip.String()+":80", lab.vip.String()+":81"
	lab.adm(t, "-A", "-t", nat, "-s", "wlc", "-j", "enable")
	lab.adm(t, "-A", "-t", fnat, "-s", "rr", "-j", "enable")
	lip := "10.95.0.250"
	if err := lab.lb.IP("addr", "add", lip+"/32", "dev", "eth1"); err != nil {
		t.Fatal(err)
	}
	lab.adm(t, "--add-laddr", "-z", lip, "-t", fnat)
	for _, rs := range lab.rs {
		lab.adm(t, "-a", "-t", nat, "-r", rs.Addr.Addr().String()+":8080", "-m")
		lab.adm(t, "-a", "-t", fnat, "-r", rs.Addr.Addr().String()+":8080", "-b")
	}
	for _, port := range []uint16{80, 81} {
		before := lab.counters(t)
		res := floodTrial(t, lab.drLab, port)
		c := lab.counters(t)
		t.Logf("port %d counters: sp_synack +%d, sp_drop +%d, proxy established +%d, failed +%d", port,
			c["xdp_sp_synack"]-before["xdp_sp_synack"], c["xdp_sp_drop"]-before["xdp_sp_drop"],
			c["slow_proxy_established"]-before["slow_proxy_established"], c["slow_proxy_failed"]-before["slow_proxy_failed"])
		if res.Served*100 < res.Tried*99 {
			t.Errorf("port %d: legitimate clients: %d of %d served; want >= 99%%", port, res.Served, res.Tried)
		}
		if res.StreamDuring == 0 {
			t.Errorf("port %d: the established download stopped under the flood", port)
		}
		if res.ProbeErr != nil || res.ProbeMax > time.Second {
			t.Errorf("port %d: xipvsadm -Ln under flood: %v, slowest %v", port, res.ProbeErr, res.ProbeMax)
		}
		synack, dropped := c["xdp_sp_synack"]-before["xdp_sp_synack"], c["xdp_sp_drop"]-before["xdp_sp_drop"]
		if synack < res.FloodSent/10 {
			t.Errorf("port %d: the proxy answered %d SYNs of %d sent", port, synack, res.FloodSent)
		}
		// The flood's SYNs carry no option and arrive as socket
		// buffers (no room at the frame's tail): each is answered
		// all the same, none dropped for want of room.
		if dropped*20 > synack {
			t.Errorf("port %d: the proxy dropped %d SYNs and answered %d", port, dropped, synack)
		}
	}
}

// A DR service under the same flood, with admission control: sources
// that completed a handshake before the flood pass, new sources are
// paced: >= 95% of 200 legitimate connections served, each with at most
// one SYN retransmit (the 2 s timeout allows no second).
func TestSYNFloodDRAdmission(t *testing.T) {
	lab := newDRLabAttacked(t, "fld", "10.97.0", "--admit-rate", "1000")
	for _, rs := range lab.rs {
		srv, err := testutil.ServeFloodTarget(rs, 80)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
	}
	vs := lab.vip.String() + ":80"
	lab.adm(t, "-A", "-t", vs, "-s", "rr")
	for _, rs := range lab.rs {
		lab.adm(t, "-a", "-t", vs, "-r", rs.Addr.Addr().String(), "-g")
	}
	// DR: the reals answer the client directly, not through the
	// director: by a second leg of the client's on the outside LAN.
	if err := lab.Out.Attach(lab.Attacker, "atkl", "eth1", netip.MustParsePrefix("10.77.0.9/24"), testutil.HostOptions{TxChecksumOff: true}); err != nil {
		t.Fatal(err)
	}
	// Toward the VIP it still goes by the director's link.
	if err := lab.Attacker.IP("route", "add", lab.vip.String()+"/32", "via", "10.97.0.1", "src", "10.97.0.2"); err != nil {
		t.Fatal(err)
	}
	for _, kv := range [][2]string{{"net.ipv4.conf.all.rp_filter", "0"}, {"net.ipv4.conf.eth1.rp_filter", "0"}} {
		if err := lab.Attacker.Sysctl(kv[0], kv[1]); err != nil {
			t.Fatal(err)
		}
	}
	for _, rs := range lab.rs {
		if err := rs.IP("route", "add", "10.97.0.0/24", "via", "10.77.0.9"); err != nil {
			t.Fatal(err)
		}
	}
	// The client is a known source: it completed handshakes before.
	hc := lab.Attacker.HTTPClient(5 * time.Second)
	for i := 0; i < 3; i++ {
		resp, err := hc.Get("http://" + vs + "/")
		if err != nil {
			t.Fatalf("%v\ncounters %v\n%s", err, lab.counters(t), lab.adm(t, "-Lnc"))
		}
		resp.Body.Close()
	}
	res := floodTrial(t, lab, 80)
	c := lab.counters(t)
	t.Logf("counters: shed %d, new_syn %d", c["xdp_shed"], c["xdp_new_syn"])
	if res.Served*100 < res.Tried*95 {
		t.Errorf("legitimate clients: %d of %d served; want >= 95%%", res.Served, res.Tried)
	}
	if res.StreamDuring == 0 {
		t.Error("the established download stopped under the flood")
	}
	if c["xdp_shed"] == 0 {
		t.Errorf("admission control shed nothing of %d SYNs", res.FloodSent)
	}
}
