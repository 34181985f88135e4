// Command xipvs-bench is `make bench`: it measures xipvs against the
// ceiling of this machine (a bare XDP forwarder), nftables DNAT and
// HAProxy, in network namespaces it makes and removes, and writes a
// markdown table, a JSON file with every sample and an SVG chart.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/xipvs/xipvs/bench"
)

func main() {
	quick := flag.Bool("quick", false, "the smoke run: every scenario, a few seconds, 2 samples each")
	out := flag.String("out", "bench/results", "directory for bench-full|quick.{md,json,svg}")
	bin := flag.String("bin", "", "directory holding xipvsd and xipvsadm (default: build them)")
	repeats := flag.Int("repeats", 0, "samples per quantity (default 5; quick 2)")
	sample := flag.Duration("sample", 0, "length of one rate sample (default 1s; quick 100ms)")
	flows := flag.Int("flows", 0, "established flows (default 4096; quick 512)")
	generator := flag.String("generator", "", "packet rates by live-frames or closed-loop (default: live frames where the kernel allows them, else the closed loop)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: xipvs-bench [options]   (root)\n\n"+
			"Scenarios: 1 ceiling (MAC rewrite + XDP_TX), 2 xipvs established flows per mode,\n"+
			"3 nftables DNAT (numgen), 4 new flows/s (SYN stream; TCP connect/close vs nftables\n"+
			"and HAProxy), 5 first-packet latency, 6 BPF cost per packet (Program.Run).\n\nOptions:\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	o := bench.Full()
	if *quick {
		o = bench.Quick()
	}
	if *repeats > 0 {
		o.Repeats = *repeats
	}
	if *sample > 0 {
		o.Sample = *sample
	}
	if *flows > 0 {
		o.Flows = *flows
	}
	o.Generator = *generator
	if *bin != "" {
		abs, err := filepath.Abs(*bin)
		if err != nil {
			fmt.Fprintln(os.Stderr, "xipvs-bench:", err)
			os.Exit(2)
		}
		o.Bin = abs
	}
	o.Log = os.Stderr
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	r, runErr := bench.Run(ctx, o, "make bench"+map[bool]string{true: " (quick)", false: ""}[*quick]+cmdline())
	if r == nil {
		fmt.Fprintln(os.Stderr, "xipvs-bench:", runErr)
		os.Exit(1)
	}
	if runErr != nil {
		// What was measured before the failure is still written, marked.
		r.Skipped = append(r.Skipped, "the run stopped early: "+runErr.Error())
	}
	paths, err := r.Write(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "xipvs-bench:", err)
		os.Exit(1)
	}
	fmt.Println(r.Markdown())
	if runErr != nil {
		fmt.Fprintln(os.Stderr, "xipvs-bench:", runErr)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "wrote %s in %s\n", strings.Join(paths, ", "), time.Since(start).Round(time.Second))
}

func cmdline() string {
	if len(os.Args) < 2 {
		return ""
	}
	return ": xipvs-bench " + strings.Join(os.Args[1:], " ")
}
