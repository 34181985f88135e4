// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* decap.bpf.c: the real-server side of LVS-TUN without an ipip or
 * ip6_tunnel module. Attached to the real server's interface by
 * `xipvsadm realserver up --mode tun`, it strips the outer header of
 * IPv4-in-IPv4 and IPv6-in-IPv6 packets whose inner destination is one
 * of the VIPs in decap_vips and passes the inner packet to the stack,
 * which delivers it to the VIP on lo. Every other packet passes
 * untouched. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"

#define MAX_DECAP_VIPS 1024

/* VIPs this real server serves, as 16 bytes: an IPv6 address, or an
 * IPv4 one mapped (::ffff:a.b.c.d); the value is unused. */
struct vip_key {
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_DECAP_VIPS);
	__type(key, struct vip_key);
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

/* strip removes hlen bytes after the Ethernet header, which keeps its
 * addresses and takes the inner header's EtherType. */
static __always_inline int strip(struct xdp_md *ctx, __u32 hlen, __be16 proto)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ethhdr copy;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	__builtin_memcpy(&copy, eth, sizeof(copy));
	copy.h_proto = proto;
	if (bpf_xdp_adjust_head(ctx, hlen)) {
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

static __always_inline int decap4(struct xdp_md *ctx, struct iphdr *outer)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct vip_key k = { .addr = { [10] = 0xff, [11] = 0xff } };
	struct iphdr *inner;

	if ((void *)(outer + 1) > data_end || outer->protocol != IPPROTO_IPIP)
		return XDP_PASS;
	/* Options on the outer header or a fragment: the stack's business. */
	if (outer->ihl != 5 || (outer->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return XDP_PASS;
	inner = (void *)(outer + 1);
	if ((void *)(inner + 1) > data_end || inner->version != 4)
		return XDP_PASS;
	__builtin_memcpy(&k.addr[12], &inner->daddr, 4);
	if (!bpf_map_lookup_elem(&decap_vips, &k)) {
		count(DECAP_NOT_VIP);
		return XDP_PASS;
	}
	return strip(ctx, IPIP_HLEN, bpf_htons(ETH_P_IP));
}

/* decap6 strips IPv6-in-IPv6 (next header 41 right after the outer
 * header; an outer extension header is the stack's business). */
static __always_inline int decap6(struct xdp_md *ctx, struct ipv6hdr *outer)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *inner;
	struct vip_key k;

	if ((void *)(outer + 1) > data_end || outer->nexthdr != IPPROTO_IPV6)
		return XDP_PASS;
	inner = (void *)(outer + 1);
	if ((void *)(inner + 1) > data_end || inner->version != 6)
		return XDP_PASS;
	__builtin_memcpy(k.addr, &inner->daddr, 16);
	if (!bpf_map_lookup_elem(&decap_vips, &k)) {
		count(DECAP_NOT_VIP);
		return XDP_PASS;
	}
	return strip(ctx, sizeof(*outer), bpf_htons(ETH_P_IPV6));
}

SEC("xdp")
int xipvs_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return decap4(ctx, (void *)(eth + 1));
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return decap6(ctx, (void *)(eth + 1));
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
