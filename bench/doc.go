// Package bench is the benchmark harness of `make bench`: it measures, in
// one run on one machine, what xipvs costs against the best this machine
// can do (a bare XDP forwarder: MAC rewrite and XDP_TX) and against what
// a user would pick instead (nftables DNAT with numgen in the kernel,
// HAProxy in TCP mode in user space).
//
// Packet rates run on the wire: a generator namespace sends frames of
// thousands of flows into a one-armed director, which forwards them back
// toward the real servers' MACs, where XDP counts them per real. Where the
// kernel allows live frames (BPF_PROG_RUN with
// BPF_F_TEST_XDP_LIVE_FRAMES) they are generated open loop and dropped
// once counted; where it refuses them (6.18.44 build v1300 does) a closed
// loop runs instead (bench/loadgen's Loop): a few frames seeded through
// AF_XDP, each sent back by XDP as its slot's next flow as soon as the
// director has forwarded it, so the load runs at the slowest hop's speed.
// Every row names its generator; the ceiling rows (a director that only
// bounces frames) are the generator's own limit. Connection rates and
// latency run on the TCP lab: a client, the director, and two real
// servers with real TCP stacks. Floods come from the AF_XDP sender (or
// live frames) and hping3; the generators lab compares the flood sources
// this machine has (the AF_XDP sender, trafgen, hping3) from one vCPU.
//
// Every quantity is sampled Options.Repeats times; the report gives the
// median, min and max, ratios to the ceiling, nftables and HAProxy, the
// issue's targets (reported, never asserted), the checks made on the way
// (the per-real split against the scheduler), and a CPU profile of
// xipvsd's slow path. TestSmoke runs it all in Quick mode; BenchmarkModes
// and BenchmarkDirector report the BPF cost per packet as Go benchmarks.
package bench
