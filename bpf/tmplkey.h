/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* tmplkey.h: a persistence template's client, the client's address
 * under the service's netmask (-M), as IPVS keys its templates. Said once
 * for the picks that make templates, the sweep that finds them owned and
 * the timers that count their connections. */
#ifndef XIPVS_TMPLKEY_H
#define XIPVS_TMPLKEY_H

#include <linux/types.h>
#include <bpf/bpf_endian.h>

/* tmpl_client writes saddr (alen bytes: 4 or 16) under a prefix of bits
 * to client, which the caller zeroed. */
static __always_inline void tmpl_client(__be32 *client, const __be32 *saddr, const int alen, __u32 bits)
{
#pragma unroll
	for (int i = 0; i < alen / 4; i++) {
		int b = (int)bits - 32 * i;

		if (b >= 32)
			client[i] = saddr[i];
		else if (b > 0)
			client[i] = saddr[i] & bpf_htonl(~0U << (32 - b));
	}
}

/* tmpl_masked writes saddr (alen bytes) under mask (as many words) to
 * client. */
static __always_inline void tmpl_masked(__be32 *client, const __be32 *saddr, const int alen, const __be32 *mask)
{
#pragma unroll
	for (int i = 0; i < alen / 4; i++)
		client[i] = saddr[i] & mask[i];
}

#endif
