// Command demo is `make demo`: it builds an LVS-DR lab in network
// namespaces (client, director, two real servers on one L2 segment),
// starts xipvsd on the director, configures it with xipvsadm exactly as
// an LVS admin would, sends HTTP requests to the VIP from the client and
// prints which real server answered each. It removes everything it made
// when it ends, also on failure or Ctrl-C.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/xipvs/xipvs/internal/testutil"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding xipvsd and xipvsadm")
	requests := flag.Int("n", 10, "HTTP requests to send")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: run as root (it makes network namespaces and attaches XDP)")
		os.Exit(1)
	}
	if err := run(*bin, *requests); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }

func run(bin string, requests int) (err error) {
	xipvsd, err := filepath.Abs(filepath.Join(bin, "xipvsd"))
	if err != nil {
		return err
	}
	xipvsadm := filepath.Join(filepath.Dir(xipvsd), "xipvsadm")
	for _, b := range []string{xipvsd, xipvsadm} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%s missing: run `make build` first", b)
		}
	}
	prefix := fmt.Sprintf("xdemo%d", os.Getpid()%10000)
	vip := netip.MustParseAddr("10.99.0.100")

	step("Lab: namespaces %s-{cl,lb,rs1,rs2} on one bridge (%s-sw), 10.99.0.0/24, VIP %s", prefix, prefix, vip)
	lan, err := testutil.NewLAN(prefix)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var daemon *testutil.Daemon
	defer func() {
		step("Cleaning up")
		if daemon != nil {
			daemon.Stop()
		}
		err = errors.Join(err, lan.Close())
		if err == nil {
			fmt.Println("removed every namespace, link and process the demo made")
		}
	}()
	cl, err := lan.AddHost("cl", netip.MustParsePrefix("10.99.0.1/24"), testutil.HostOptions{TxChecksumOff: true})
	if err != nil {
		return err
	}
	lb, err := lan.AddHost("lb", netip.MustParsePrefix("10.99.0.2/24"), testutil.HostOptions{XDPPeer: true})
	if err != nil {
		return err
	}
	var servers []*http.Server
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	for i, rip := range []string{"10.99.0.11", "10.99.0.12"} {
		name := fmt.Sprintf("rs%d", i+1)
		rs, err := lan.AddHost(name, netip.MustParsePrefix(rip+"/24"), testutil.HostOptions{TxChecksumOff: true})
		if err != nil {
			return err
		}
		fmt.Printf("    %s %s: VIP on lo/32, arp_ignore=1, arp_announce=2 (the seeds' real-server.sh)\n", name, rip)
		if err := rs.MakeRealServer(vip); err != nil {
			return err
		}
		var ln net.Listener
		if err := rs.Do(func() (err error) { ln, err = net.Listen("tcp", ":80"); return }); err != nil {
			return err
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s (%s), you are %s\n", name, rip, r.RemoteAddr)
		})}
		servers = append(servers, srv)
		go srv.Serve(ln)
	}
	fmt.Printf("    director: ip addr add %s/32 dev eth0 (answers ARP for the VIP)\n", vip)
	if err := lb.IP("addr", "add", vip.String()+"/32", "dev", "eth0"); err != nil {
		return err
	}

	socket := filepath.Join(os.TempDir(), prefix+".sock")
	step("Director: xipvsd -i eth0 --socket %s", socket)
	daemon, err = testutil.StartDaemon(lb.Netns, xipvsd, socket, "-i", "eth0")
	if err != nil {
		return err
	}
	adm := func(args ...string) error {
		fmt.Printf("    # xipvsadm %s\n", strings.Join(args, " "))
		cmd := exec.Command(xipvsadm, args...)
		cmd.Env = append(os.Environ(), "XIPVS_SOCKET="+socket)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		return cmd.Run()
	}
	step("Configure a DR service exactly as with ipvsadm")
	for _, a := range [][]string{
		{"-A", "-t", vip.String() + ":80", "-s", "rr"},
		{"-a", "-t", vip.String() + ":80", "-r", "10.99.0.11:80", "-g"},
		{"-a", "-t", vip.String() + ":80", "-r", "10.99.0.12:80", "-g"},
	} {
		if err := adm(a...); err != nil {
			return err
		}
	}

	step("Client 10.99.0.1: %d HTTP requests to http://%s/ (a new TCP connection each)", requests, vip)
	hc := cl.HTTPClient(10 * time.Second)
	for i := 1; i <= requests; i++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		resp, err := hc.Get("http://" + vip.String() + "/")
		if err != nil {
			return fmt.Errorf("request %d: %w", i, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		fmt.Printf("    request %2d: %s", i, body)
	}

	step("xipvsadm -Ln (connections stay listed until they age out)")
	time.Sleep(1200 * time.Millisecond) // one sweep of the connection table
	if err := adm("-Ln"); err != nil {
		return err
	}
	return nil
}
