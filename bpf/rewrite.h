/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* rewrite.h: packet transforms per forwarding method. DR: the IP packet is
 * untouched; only the Ethernet addresses change. */
#ifndef XIPVS_REWRITE_H
#define XIPVS_REWRITE_H

#include <linux/if_ether.h>
#include "structs.h"

static __always_inline void rewrite_dr(struct ethhdr *eth, const struct real *r)
{
	__builtin_memcpy(eth->h_dest, r->mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, r->src_mac, ETH_ALEN);
}

#endif
