// Command democluster is `make demo-cluster`: three xipvs directors
// announce a VIP over BGP to a router running BIRD 2, which spreads the
// clients' flows over them with ECMP (L4 hash); DR real servers share
// the directors' segment. It shows the router's routes, long TCP streams
// spread across the directors, one director drained (SIGTERM: routes
// withdrawn, forwarding on for the drain time), and every stream
// completing through the others because mh picks the same real on every
// director. It removes everything it made when it ends, also on failure
// or Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/xipvs/xipvs/internal/testutil"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding xipvsd and xipvsadm")
	n := flag.Int("n", 120, "long TCP streams to open through the directors")
	flag.Parse()
	if _, err := exec.LookPath("bird"); err != nil {
		fmt.Fprintln(os.Stderr, "demo-cluster: BIRD 2 is needed for the router: apt-get install bird2")
		os.Exit(1)
	}
	if err := run(*bin, *n); err != nil {
		fmt.Fprintln(os.Stderr, "demo-cluster:", err)
		os.Exit(1)
	}
}

var step = testutil.DemoStep

var indent = testutil.DemoIndent

// directorYAML is a director's configuration file: its BGP speaker and
// the service, the same on every director.
const directorYAML = `interfaces: [eth0]
bgp:
  asn: 65001
  router_id: %s
  peers:
    - {addr: 10.90.0.254, asn: 65000, hold_time: 3}
  drain: 3
services:
  - tcp: 10.90.0.100:80
    scheduler: mh           # the same real for a flow on every director
    sched_flags: [mh-port]
    reals:
      - {addr: 10.90.0.11, method: dr}
      - {addr: 10.90.0.12, method: dr}
      - {addr: 10.90.0.13, method: dr}
`

func run(bin string, streams int) (err error) {
	xipvsd, xipvsadm, err := testutil.DemoBinaries(bin)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	prefix := fmt.Sprintf("xclu%d", os.Getpid()%10000)
	vip := netip.MustParseAddr("10.90.0.100")
	vs := netip.AddrPortFrom(vip, 80)
	step("Lab: client cl (10.91.0.1) -- router gw (BIRD 2, AS 65000, ECMP with fib_multipath_hash_policy=1) -- fabric 10.90.0.0/24:\n" +
		"    directors d1 d2 d3 (.2 .3 .4, AS 65001, VIP on lo), DR real servers rs1 rs2 rs3 (.11 .12 .13)")
	c, err := testutil.NewCluster(testutil.ClusterPlan{Prefix: prefix, Fabric: "10.90.0", Clients: "10.91.0", Directors: 3, Reals: 3,
		VIPs: []netip.Addr{vip}, RouterASN: 65000, DirectorASN: 65001, HoldTime: 3 * time.Second})
	if err != nil {
		return err
	}
	defer testutil.DemoCleanup(&err, c.Close)
	srv, err := testutil.ServeStreams(c.Reals, 80)
	if err != nil {
		return err
	}
	defer srv.Close()

	step("xipvsd on each director, from a YAML file with a bgp: section (d1's shown), with --sloppy-tcp")
	for i, d := range c.Directors {
		conf := filepath.Join(c.Dir, fmt.Sprintf("d%d.yaml", i+1))
		body := fmt.Sprintf(directorYAML, d.Addr.Addr())
		if i == 0 {
			indent(body)
		}
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			return err
		}
		if err := c.StartDirector(i, xipvsd, "--config", conf, "--sloppy-tcp", "--metrics-addr", ""); err != nil {
			return err
		}
	}
	step("The router learns %v from every director and installs one route with three next hops", vip)
	if _, err := c.WaitNextHops(vip, 3, 30*time.Second); err != nil {
		return err
	}
	out, _ := c.Router.Exec("ip", "route", "show", vip.String()).CombinedOutput()
	fmt.Printf("    gw# ip route show %v\n", vip)
	indent(string(out))
	bout, _ := c.Birdc("show", "route", "for", vip.String()+"/32")
	fmt.Printf("    gw# birdc show route for %v/32\n", vip)
	indent(bout)
	adm := func(i int, args ...string) string {
		o, err := c.Adm(i, xipvsadm, args...)
		if err != nil {
			return err.Error()
		}
		return o
	}
	fmt.Println("    d1# xipvsadm -L --bgp")
	indent(adm(0, "-L", "--bgp"))
	if ctx.Err() != nil {
		return ctx.Err()
	}

	step("%d long TCP streams (384 KiB each, over about 12 s) from the client to %v", streams, vs)
	st, err := srv.StartStreams(c.Client, streams, vs, 1)
	if err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	for i := range c.Directors {
		fmt.Printf("    d%d# xipvsadm -Ln --stats\n", i+1)
		indent(adm(i, "-Ln", "--stats"))
	}

	step("Draining d2 (SIGTERM): it withdraws %v and goes on forwarding for 3 s while the router moves its flows", vip)
	ev := st.Mark()
	if err := c.Daemons[1].Signal(syscall.SIGTERM); err != nil {
		return err
	}
	if _, err := c.WaitNextHops(vip, 2, 10*time.Second); err != nil {
		return err
	}
	out, _ = c.Router.Exec("ip", "route", "show", vip.String()).CombinedOutput()
	fmt.Printf("    %v after SIGTERM: gw# ip route show %v\n", time.Since(ev).Round(time.Millisecond), vip)
	indent(string(out))
	fmt.Println("    d2's flows are picked up mid-stream by d1 and d3 (--sloppy-tcp), and mh sends each to the real it was on")

	step("Waiting for the streams")
	broken, longest := st.WaitAndReport()
	fmt.Printf("    %d of %d streams completed with the right SHA-256; the longest a client's packets waited across the drain: %v\n",
		streams-broken, streams, longest.Round(time.Millisecond))
	for _, i := range []int{0, 2} {
		fmt.Printf("    d%d# xipvsadm -Ln --stats\n", i+1)
		indent(adm(i, "-Ln", "--stats"))
	}
	if broken > 0 {
		return fmt.Errorf("%d streams broke", broken)
	}
	return nil
}
