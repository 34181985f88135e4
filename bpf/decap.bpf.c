// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* decap.bpf.c: the real-server side of LVS-TUN without an ipip module.
 * Attached to the real server's interface by `xipvsadm realserver up
 * --mode tun`, it strips the outer IPv4 header of IP-in-IP packets whose
 * inner destination is one of the VIPs in decap_vips and passes the
 * inner packet to the stack, which delivers it to the VIP on lo. Every
 * other packet passes untouched. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"

#define MAX_DECAP_VIPS 1024

/* VIPs this real server serves (network order); the value is unused. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_DECAP_VIPS);
	__type(key, __be32);
	__type(value, __u8);
} decap_vips SEC(".maps");

enum {
	DECAP_OK = 0,  /* outer header stripped */
	DECAP_NOT_VIP, /* IP-in-IP to a VIP we do not serve: passed */
	DECAP_FAILED,  /* could not shrink the frame: passed as it was */
	DECAP_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DECAP_MAX);
	__type(key, __u32);
	__type(value, __u64);
} decap_stats SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&decap_stats, &idx);

	if (v)
		*v += 1;
}

SEC("xdp")
int xipvs_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *outer, *inner;
	struct ethhdr copy;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	outer = (void *)(eth + 1);
	if ((void *)(outer + 1) > data_end || outer->protocol != IPPROTO_IPIP)
		return XDP_PASS;
	/* Options on the outer header or a fragment: the stack's business. */
	if (outer->ihl != 5 || (outer->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return XDP_PASS;
	inner = (void *)(outer + 1);
	if ((void *)(inner + 1) > data_end || inner->version != 4)
		return XDP_PASS;
	if (!bpf_map_lookup_elem(&decap_vips, &inner->daddr)) {
		count(DECAP_NOT_VIP);
		return XDP_PASS;
	}
	__builtin_memcpy(&copy, eth, sizeof(copy));
	if (bpf_xdp_adjust_head(ctx, IPIP_HLEN)) {
		count(DECAP_FAILED);
		return XDP_PASS;
	}
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	__builtin_memcpy(eth, &copy, sizeof(copy));
	count(DECAP_OK);
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
