/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* aging.h: established connections age by Go's deadline index, not by a
 * walk of the table every second: an idle table costs nothing, and what
 * aging costs follows the connections that come, change and end.
 *
 * - A connection promoted to est_conns is counted there and then, in
 *   est_live (ActiveConn or InActConn of its real) and in its template's
 *   controls (CONN_F_COUNTED), and an event (age_events) tells Go's index
 *   (dataplane/ageindex.go) its key and state: Go looks at it again when
 *   that state's timeout has passed.
 * - A packet only refreshes last_seen. A state change moves the count
 *   between ActiveConn and InActConn and sends an event again: a closing
 *   state's timeout is shorter. Each event stamps the entry (conn_val.hits,
 *   unused once established) and Go's index entry carries the stamp, so
 *   an index entry an event superseded is dropped, not judged twice.
 * - When Go's index says a connection may be due, the reaper
 *   (sweep.bpf.c xipvs_reap) judges it as the sweep would: ended (both
 *   entries, its FULLNAT port given back, uncounted) or not yet due (Go
 *   files it again at its deadline).
 * - A full sweep now and then (sweep_args.full) walks the established
 *   tables too, as a safety net: it counts what is not counted (entries Go
 *   wrote) and ends what is due.
 * The embryonic tables (LRU, bounded) are still swept every second. */
#ifndef XIPVS_AGING_H
#define XIPVS_AGING_H

#include "conn.h"
#include "tmplkey.h"

/* Never read: puts struct age_event in the object's BTF, for bpf2go. */
const volatile struct age_event age_event_btf;

enum age_count {
	AGE_INACTIVE = 0,
	AGE_ACTIVE = 1,
};

/* aging_cfg is aging_conf when aging by the index is on, else NULL. */
static __always_inline const struct aging_cfg *aging_cfg(void)
{
	__u32 zero = 0;
	const struct aging_cfg *a = bpf_map_lookup_elem(&aging_conf, &zero);

	return a && a->on ? a : NULL;
}

/* age_active is the count a connection in state belongs to. */
static __always_inline __u32 age_active(__u8 proto, __u8 state)
{
	return proto == IPPROTO_TCP && state == TCPS_ESTABLISHED ? AGE_ACTIVE : AGE_INACTIVE;
}

/* live_add adds n to real rid's count of kind (AGE_ACTIVE, AGE_INACTIVE). */
static __always_inline void live_add(__u32 rid, __u32 kind, __s64 n)
{
	struct live_count *l = bpf_map_lookup_elem(&est_live, &rid);

	if (!l)
		return;
	if (kind == AGE_ACTIVE)
		__sync_fetch_and_add(&l->active, n);
	else
		__sync_fetch_and_add(&l->inactive, n);
}

#define FAM_FN(op) conn_##op
#define FAM_KEY struct conn_key
#define FAM_VAL struct conn_val
#define FAM_EST est_conns
#define FAM_V6 0
#define FAM_ADDR_SET(a) ((a) != 0)
#include "aging_fam.h"
#include "fam_undef.h"

#define FAM_FN(op) conn6_##op
#define FAM_KEY struct conn_key6
#define FAM_VAL struct conn_val6
#define FAM_EST est_conns6
#define FAM_V6 1
#define FAM_ADDR_SET(a) (!addr6_zero(a))
#include "aging_fam.h"
#include "fam_undef.h"

#endif
