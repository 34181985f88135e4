/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* newflow.h: a new flow of a service. The redirect to the Go slow path
 * (to_slow_path), and the flows scheduled here from what Go computed
 * ahead (picks.h): the connection's entries written as the slow path
 * writes them (conn_create), then its first packet forwarded. IPv4, then
 * IPv6. */
#ifndef XIPVS_NEWFLOW_H
#define XIPVS_NEWFLOW_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "forward.h"
#include "maps.h"
#include "picks.h"

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

/* The new flow's connection, scheduling and service lookup, once for
 * both families (newflow_fam.h): conn_create, new_flow, service and their
 * IPv6 twins conn_create6, new_flow6, service6. */
#define FAM_NAME(fn) fn
#define FAM_KEY struct conn_key
#define FAM_VAL struct conn_val
#define FAM_EMB conns
#define FAM_EST est_conns
#define FAM_SVC_KEY struct svc_key
#define FAM_SERVICES services
#define FAM_V6 0
#define FAM_REAL_OK(r) ((r)->addr != 0)
#define FAM_REAL_ADDR(r) (&(r)->addr)
#define FAM_SADDR(p) (&(p)->ip->saddr)
#define FAM_DADDR(p) (&(p)->ip->daddr)
#define FAM_PICK_FLOW(p) pick_flow4(p)
#define FAM_FORWARD(ctx, p, ck, c, stat) forward(ctx, p, ck, c, stat)
#include "newflow_fam.h"
#include "fam_undef.h"

#define FAM_NAME(fn) fn##6
#define FAM_KEY struct conn_key6
#define FAM_VAL struct conn_val6
#define FAM_EMB conns6
#define FAM_EST est_conns6
#define FAM_SVC_KEY struct svc_key6
#define FAM_SERVICES services6
#define FAM_V6 1
#define FAM_REAL_OK(r) ((r)->flags & REAL_F_IPV6)
#define FAM_REAL_ADDR(r) ((r)->addr6)
#define FAM_SADDR(p) ((p)->ip6->saddr.in6_u.u6_addr32)
#define FAM_DADDR(p) ((p)->ip6->daddr.in6_u.u6_addr32)
#define FAM_PICK_FLOW(p) pick_flow6(p)
#define FAM_FORWARD(ctx, p, ck, c, stat) forward6(ctx, p, c, stat)
#include "newflow_fam.h"
#include "fam_undef.h"

#endif
