// Command demoha is `make demo-ha`: an LVS active-backup pair as LVS users
// run it, with xipvs: keepalived (VRRP only) moves the VIP between two
// directors, and xipvs's connection sync (ipvsadm --start-daemon, IPVS's
// protocol) has copied the master's connections to the backup. Long TCP
// streams through the master (wlc) survive the master's abrupt loss. It
// removes everything it made when it ends, also on failure or Ctrl-C.
package main

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/xipvs/xipvs/internal/testutil"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding xipvsd and xipvsadm")
	n := flag.Int("n", 60, "long TCP streams to open through the master")
	flag.Parse()
	if err := run(*bin, *n); err != nil {
		fmt.Fprintln(os.Stderr, "demo-ha:", err)
		os.Exit(1)
	}
}

var step = testutil.DemoStep

var indent = testutil.DemoIndent

func run(bin string, streams int) (err error) {
	xipvsd, xipvsadm, err := testutil.DemoBinaries(bin)
	if err != nil {
		return err
	}
	vip := netip.MustParseAddr("10.92.0.100")
	vs := netip.AddrPortFrom(vip, 80)
	step("Lab: one LAN 10.92.0.0/24: client cl (.1), directors d1 (.2, VRRP master) and d2 (.3, backup), DR reals rs1 rs2 (.11 .12);\n" +
		"    keepalived on d1 and d2 with a vrrp_instance only (no virtual_server blocks) for VIP " + vip.String())
	h, err := testutil.NewHA(testutil.HAPlan{Prefix: fmt.Sprintf("xha%d", os.Getpid()%10000), Net: "10.92.0", Reals: 2, VIP: vip})
	if err != nil {
		return err
	}
	defer testutil.DemoCleanup(&err, h.Close)
	srv, err := testutil.ServeStreams(h.Reals, 80)
	if err != nil {
		return err
	}
	defer srv.Close()
	adm := func(i int, args ...string) error {
		fmt.Printf("    d%d# xipvsadm %s\n", i+1, strings.Join(args, " "))
		out, err := h.Adm(i, xipvsadm, args...)
		if out != "" {
			indent(out)
		}
		return err
	}
	step("xipvsd on both directors, the same rules, a sync master on d1 and a sync backup on d2 (as ipvsadm --start-daemon)")
	for i := range h.Directors {
		if err := h.StartDirector(i, xipvsd, "--metrics-addr", ""); err != nil {
			return err
		}
		for _, a := range [][]string{{"-A", "-t", vs.String(), "-s", "wlc"},
			{"-a", "-t", vs.String(), "-r", h.Reals[0].Addr.Addr().String(), "-g"},
			{"-a", "-t", vs.String(), "-r", h.Reals[1].Addr.Addr().String(), "-g"}} {
			if err := adm(i, a...); err != nil {
				return err
			}
		}
	}
	for i, role := range []string{"master", "backup"} {
		if err := adm(i, "--start-daemon", role, "--mcast-interface", "eth0", "--syncid", "7"); err != nil {
			return err
		}
		if err := adm(i, "-L", "--daemon"); err != nil {
			return err
		}
	}
	if err := h.WaitVIP(0, 15*time.Second); err != nil {
		return err
	}
	step("%d long TCP streams (384 KiB each, over about 12 s) from the client to %v, through d1 (it holds the VIP)", streams, vs)
	st, err := srv.StartStreams(h.Client, streams, vs, 1)
	if err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	out, _ := h.Adm(1, xipvsadm, "-Lnc")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	fmt.Printf("    d2# xipvsadm -Lnc   (the backup already has the master's connections: %d listed)\n", len(lines)-2)
	indent(strings.Join(lines[:min(len(lines), 7)], "\n") + "\n...")

	step("d1 dies: its link goes down, xipvsd and keepalived are killed")
	ev := st.Mark()
	if err := h.Directors[0].IP("link", "set", "eth0", "down"); err != nil {
		return err
	}
	h.Daemons[0].Kill()
	h.Daemons[0] = nil
	h.StopVRRP(0)
	if err := h.WaitVIP(1, 20*time.Second); err != nil {
		return err
	}
	fmt.Printf("    VRRP moved %v to d2 %v after the loss; d2's XDP forwards the synced connections\n", vip, time.Since(ev).Round(time.Millisecond))

	step("Waiting for the streams")
	broken, longest := st.WaitAndReport()
	fmt.Printf("    %d of %d streams completed with the right SHA-256 through d2; the longest a client waited: %v\n",
		streams-broken, streams, longest.Round(time.Millisecond))
	if err := adm(1, "-Ln", "--stats"); err != nil {
		return err
	}
	if broken > 0 {
		return fmt.Errorf("%d streams broke", broken)
	}
	return nil
}
