/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* stats.h: counter helpers over the per-CPU stats map (no atomics). */
#ifndef XIPVS_STATS_H
#define XIPVS_STATS_H

#include "maps.h"

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		*v += 1;
}

/* real_account adds one packet of len bytes to real rid's counters,
 * toward the real (out == 0) or back from it. */
static __always_inline void real_account(__u32 rid, __u64 len, int out)
{
	struct real_stats *s = bpf_map_lookup_elem(&real_traffic, &rid);

	if (!s)
		return;
	if (out) {
		s->outpkts += 1;
		s->outbytes += len;
	} else {
		s->inpkts += 1;
		s->inbytes += len;
	}
}

#endif
