// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* pass.bpf.c: XDP_PASS for the receiving peer of a veth that xipvs
 * transmits into (a native XDP program must be attached there for XDP_TX
 * and redirects into the veth to be delivered). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xipvs_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
