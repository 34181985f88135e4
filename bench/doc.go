// Package bench is the benchmark harness of `make bench`: it measures, in
// one run on one machine, what xipvs costs against the best this machine
// can do (a bare XDP forwarder: MAC rewrite and XDP_TX) and against what
// a user would pick instead (nftables DNAT with numgen in the kernel,
// HAProxy in TCP mode in user space).
//
// Packet rates run on the wire: a generator namespace sends live frames
// (BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES, dataplane.Loadgen) of
// thousands of flows into a one-armed director, which forwards them back
// toward the real servers' MACs; an XDP sink counts them per real and
// drops them. Connection rates and latency run on the TCP lab: a client,
// the director, and two real servers with real TCP stacks.
//
// Every quantity is sampled Options.Repeats times; the report gives the
// median, min and max, ratios to the ceiling, nftables and HAProxy, the
// issue's targets (reported, never asserted), the checks made on the way
// (the per-real split against the scheduler), and a CPU profile of
// xipvsd's slow path. TestSmoke runs it all in Quick mode; BenchmarkModes
// and BenchmarkDirector report the BPF cost per packet as Go benchmarks.
package bench
