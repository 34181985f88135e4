/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* aging.h: established connections age by their own timers, as IPVS's
 * do (ip_vs_conn's timer): an idle table costs nothing, and what aging
 * costs follows the connections that expire.
 *
 * - A connection promoted to est_conns gets a bpf_timer in est_timers,
 *   under its forward key, due at its state's timeout (conn_arm). The
 *   connection is counted then, in est_live (ActiveConn or InActConn of
 *   its real) and in its template's controls.
 * - A packet only refreshes last_seen: the timer is not touched. When it
 *   fires, it looks at the connection (and its reply entry's last_seen):
 *   not idle long enough, it sleeps again until the new deadline; else
 *   it deletes both entries, gives a FULLNAT port back (aged_ports) and
 *   uncounts the connection (conn_expire).
 * - A state change re-arms the timer at the new state's timeout, and
 *   moves the count between ActiveConn and InActConn (conn_retime).
 * - An entry Go wrote (sync backup, tests) has none until a packet or a
 *   full sweep arms it (CONN_F_TIMED says which have one).
 * The embryonic tables (LRU, bounded) are still swept every second.
 * Included by the director and the sweep (which arms at a full pass). */
#ifndef XIPVS_AGING_H
#define XIPVS_AGING_H

#include "conn.h"
#include "tmplkey.h"

#define CLOCK_MONOTONIC 1
#define AGE_NSEC_PER_SEC 1000000000ULL

enum age_count {
	AGE_INACTIVE = 0,
	AGE_ACTIVE = 1,
	AGE_UNCOUNTED = 2,
};

static __always_inline const struct aging_cfg *aging_cfg(void)
{
	__u32 zero = 0;
	const struct aging_cfg *a = bpf_map_lookup_elem(&aging_conf, &zero);

	return a && a->on ? a : NULL;
}

/* age_timeout is IPVS's timeout of a connection in state (ns). */
static __always_inline __u64 age_timeout(const struct aging_cfg *a, __u8 proto, __u8 state)
{
	if (proto == IPPROTO_UDP)
		return a->udp_timeout;
	if (state >= TCPS_LAST)
		state = TCPS_CLOSE;
	return a->tcp_timeout[state & 15];
}

/* age_active is the count a connection in state goes to. */
static __always_inline __u32 age_active(__u8 proto, __u8 state)
{
	return proto == IPPROTO_TCP && state == TCPS_ESTABLISHED ? AGE_ACTIVE : AGE_INACTIVE;
}

/* age_left is how long until a connection last seen at last, with
 * timeout to, has been idle that long (at least 1 ns: due now). */
static __always_inline __u64 age_left(__u64 now, __u64 last, __u64 to)
{
	return last + to > now ? last + to - now : 1;
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

/* tmpl_control adds n to template t's controls, when it exists. */
static __always_inline void tmpl_control(const struct sweep_tmpl *t, __s32 n)
{
	struct tmpl_val *v = bpf_map_lookup_elem(&tmpls, t);

	if (v)
		__sync_fetch_and_add(&v->controls, n);
}

/* The timer being made (conn_arm), per CPU: off the director's stack.
 * struct conn_timer with room for the bpf_timer, which a per-CPU map
 * may not hold. */
struct conn_timer_new {
	__u64 timer_room[2];
	__u64 active;
	__u32 real_id;
	__u32 persist;
	struct sweep_tmpl tmpl;
};
_Static_assert(sizeof(struct conn_timer_new) == sizeof(struct conn_timer), "conn_timer_new");
_Static_assert(offsetof(struct conn_timer_new, tmpl) == offsetof(struct conn_timer, tmpl), "conn_timer_new");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct conn_timer_new);
} timer_scratch SEC(".maps");

#define FAM_FN(op) conn_##op
#define FAM_KEY struct conn_key
#define FAM_VAL struct conn_val
#define FAM_EST est_conns
#define FAM_TIMERS est_timers
#define FAM_V6 0
#define FAM_ADDR_SET(a) ((a) != 0)
#define FAM_SYNPROXY 1
#include "aging_fam.h"
#include "fam_undef.h"

#define FAM_FN(op) conn6_##op
#define FAM_KEY struct conn_key6
#define FAM_VAL struct conn_val6
#define FAM_EST est_conns6
#define FAM_TIMERS est_timers6
#define FAM_V6 1
#define FAM_ADDR_SET(a) (!addr6_zero(a))
#define FAM_SYNPROXY 0
#include "aging_fam.h"
#include "fam_undef.h"

#endif
