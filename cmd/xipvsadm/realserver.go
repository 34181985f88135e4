package main

import (
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/xipvs/xipvs/internal/realserver"
)

// realserverMain runs `xipvsadm realserver up|down`.
func realserverMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "up" && args[0] != "down") {
		fmt.Fprintln(stderr, "usage: xipvsadm realserver up --vip VIP[,VIP...] --mode dr|tun [--interface DEV] [--decap xdp|tunl0]")
		fmt.Fprintln(stderr, "       xipvsadm realserver down")
		return 2
	}
	fs := flag.NewFlagSet("realserver "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	vips := fs.String("vip", "", "VIPs this real server serves, comma separated")
	mode := fs.String("mode", "", "dr or tun")
	ifname := fs.String("interface", "", "tun: the interface tunnelled packets arrive on (default: the default route's)")
	decap := fs.String("decap", realserver.DecapXDP, "tun: xdp (xipvs's decap program) or tunl0 (the kernel's ipip device)")
	state := fs.String("state-file", "", "where up records what it changed (default: one file per network namespace under /run/xipvs)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var changes []string
	var err error
	if args[0] == "down" {
		if *vips != "" || *mode != "" || *ifname != "" {
			fmt.Fprintln(stderr, "realserver down takes no --vip, --mode or --interface: it undoes what up recorded")
			return 2
		}
		changes, err = realserver.Down(*state)
	} else {
		o := realserver.Options{Mode: *mode, Interface: *ifname, Decap: *decap, StateFile: *state}
		for _, v := range strings.Split(*vips, ",") {
			if v = strings.TrimSpace(v); v == "" {
				continue
			}
			a, perr := netip.ParseAddr(v)
			if perr != nil {
				fmt.Fprintf(stderr, "bad VIP %q\n", v)
				return 2
			}
			o.VIPs = append(o.VIPs, a)
		}
		changes, err = realserver.Up(o)
	}
	for _, c := range changes {
		fmt.Fprintln(stdout, c)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}
