// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* director.bpf.c: the xipvs director. For each IPv4 TCP/UDP packet to a
 * virtual service: a connection hit is forwarded here (DR: new Ethernet
 * addresses, XDP_TX or a devmap redirect); a miss goes to the Go slow path
 * over AF_XDP, or is dropped while no socket is bound (never passed: the
 * director's stack would answer a SYN with a RST). Everything else passes
 * to the kernel untouched. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "structs.h"
#include "maps.h"
#include "parse.h"
#include "rewrite.h"
#include "conn.h"
#include "stats.h"

/* forward sends a packet of a known connection toward its real server.
 * Returns an XDP action. */
static __always_inline int forward(struct xdp_md *ctx, struct pkt *p, const struct conn_val *c,
				   __u32 *stat)
{
	__u32 rid = c->real_id;
	struct real *r = bpf_map_lookup_elem(&reals, &rid);

	if (!r || r->addr == 0) {
		*stat = STAT_DROP_NO_REAL;
		return XDP_DROP;
	}
	if (!(r->flags & REAL_F_MAC_VALID)) {
		*stat = STAT_DROP_NO_MAC;
		return XDP_DROP;
	}
	rewrite_dr(p->eth, r);
	*stat = STAT_FWD;
	if (r->ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect_map(&tx_ports, r->ifindex, XDP_DROP);
}

/* to_slow_path hands a new flow's packet to the AF_XDP socket of this rx
 * queue; with no socket bound the packet is dropped. */
static __always_inline int to_slow_path(struct xdp_md *ctx, __u32 *stat)
{
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 q = ctx->rx_queue_index;
	struct iface *in = bpf_map_lookup_elem(&ifaces, &ifindex);
	int act;

	if (!in || q >= MAX_QUEUES || in->slot >= MAX_IFACES) {
		*stat = STAT_DROP_NO_XSK;
		return XDP_DROP;
	}
	act = bpf_redirect_map(&xsks, in->slot * MAX_QUEUES + q, XDP_DROP);
	*stat = act == XDP_REDIRECT ? STAT_SLOW_PATH : STAT_DROP_NO_XSK;
	return act;
}

static __always_inline int process(struct xdp_md *ctx, __u32 *stat)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	void *cursor = data;
	struct pkt p = {};
	struct svc_key sk = {};
	struct conn_key ck = {};
	struct conn_val *c;

	*stat = STAT_PASS;
	if (parse_eth(&cursor, data_end, &p) != ETH_P_IP_BE)
		return XDP_PASS;
	if (parse_ipv4(&cursor, data_end, &p) < 0) {
		*stat = STAT_PASS_MALFORMED;
		return XDP_PASS;
	}
	if (p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP)
		return XDP_PASS;
	if (p.frag) {
		/* Only the first fragment carries ports; IPVS reassembles first.
		 * Fragments are left to the kernel (counted). */
		*stat = STAT_PASS_FRAGMENT;
		return XDP_PASS;
	}
	if (parse_l4(cursor, data_end, &p) < 0) {
		*stat = STAT_PASS_MALFORMED;
		return XDP_PASS;
	}

	sk.vip = p.ip->daddr;
	sk.port = p.dport;
	sk.proto = p.proto;
	if (!bpf_map_lookup_elem(&services, &sk)) {
		/* Port 0 stands for every port of the VIP: a persistent
		 * port-zero service or an all-ports port group. */
		sk.port = 0;
		if (!bpf_map_lookup_elem(&services, &sk))
			return XDP_PASS;
	}

	ck.saddr = p.ip->saddr;
	ck.daddr = p.ip->daddr;
	ck.sport = p.sport;
	ck.dport = p.dport;
	ck.proto = p.proto;
	c = bpf_map_lookup_elem(&conns, &ck);
	if (!c || conn_reused(c, &p))
		return to_slow_path(ctx, stat);

	conn_update(c, &p);
	return forward(ctx, &p, c, stat);
}

SEC("xdp")
int xipvs_director(struct xdp_md *ctx)
{
	__u32 stat = STAT_PASS;
	int act = process(ctx, &stat);

	/* One counter per packet; Go derives the total as their sum. */
	stat_inc(stat);
	return act;
}

char _license[] SEC("license") = "Dual BSD/GPL";
