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

#endif
