// Package bench measures xipvs. For now it holds the BPF cost-per-packet
// benchmarks (BPF_PROG_RUN with Repeat); the veth harness against the
// ceiling, nftables and HAProxy is tracked as its own issue.
//
//	go test -run '^$' -bench . ./bench/   (root)
package bench
