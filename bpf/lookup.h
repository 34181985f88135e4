/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* lookup.h: the prefilter's word for an address, and where a frame
 * leaves. */
#ifndef XIPVS_LOOKUP_H
#define XIPVS_LOOKUP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "maps.h"

/* egress sends the (rewritten) frame out ifindex: XDP_TX when that is
 * where it came in, else a devmap redirect. */
static __always_inline int egress(struct xdp_md *ctx, __u32 ifindex)
{
	if (ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect_map(&tx_ports, ifindex, XDP_DROP);
}

/* addr_flags is the prefilter's word for addr: which of VIP and NAT
 * source some address hashing there is. */
static __always_inline __u8 addr_flags(__be32 addr)
{
	__u32 i = addr_slot(addr);
	__u8 *f = bpf_map_lookup_elem(&addr_filter, &i);

	return f ? *f : 0;
}

static __always_inline __u8 addr6_flags(const void *a)
{
	__u32 i = addr6_slot(a);
	__u8 *f = bpf_map_lookup_elem(&addr_filter, &i);

	return f ? *f : 0;
}

#endif
