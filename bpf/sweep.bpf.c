// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* sweep.bpf.c: ages the connection table in the kernel. Go runs it once
 * per sweep interval with BPF_PROG_RUN (a BPF_PROG_TYPE_SYSCALL program,
 * its maps replaced by the director's at load): one pass over the table
 * with bpf_for_each_map_elem deletes every connection idle past its
 * state's timeout (a NAT or FULLNAT connection only when both of its
 * entries are), counts the live ones per real (ActiveConn, InActConn),
 * lists the FULLNAT local ports it freed and the persistence templates
 * that still control a connection. Go then does what only it can: port
 * pools, template expiry, overload flags.
 *
 * With aging by Go's deadline index (aging.h) the pass walks only the
 * embryonic tables: the established ones are counted by events and ended
 * by the reaper below, when Go's index finds them due. A full pass
 * (sweep_args.full, at start and now and then) walks them too, as a
 * safety net: it counts an entry not counted (one Go wrote), ends one due
 * or whose real is gone, and leaves the rest to their counts. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "structs.h"
#include "maps.h"
#include "parse.h"
#include "aging.h"

/* Live connections per real id, stamped with the sweep's gen. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_REALS);
	__type(key, __u32);
	__type(value, struct sweep_count);
} sweep_counts SEC(".maps");

/* FULLNAT ports freed by the sweep, sweep_args.released of them. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SWEEP_RELEASED);
	__type(key, __u32);
	__type(value, struct sweep_port);
} sweep_released SEC(".maps");

/* Templates with a live connection; Go reads and empties it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_CONNS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sweep_tmpl);
	__type(value, __u8);
} sweep_owned SEC(".maps");

struct bpf_map;

/* What the callback needs, on the stack (the helper takes no ctx). */
struct walk {
	struct sweep_args a;
	int est;   /* walking est_conns (else conns) */
	int indexed; /* aging by Go's index (aging.h): est_conns is counted by events */
};

static __always_inline __u64 timeout_of(const struct sweep_args *a, __u8 proto, __u8 state)
{
	if (proto == IPPROTO_UDP)
		return a->udp_timeout;
	if (state >= TCPS_LAST)
		state = TCPS_CLOSE;
	/* The mask keeps the bound in the verifier's sight (a no-op). */
	return a->tcp_timeout[state & 15];
}

/* idle is how long an entry last seen at last has been idle at now; an
 * entry refreshed by XDP after the sweep took its time has not been. */
static __always_inline __u64 idle(__u64 now, __u64 last)
{
	return last > now ? 0 : now - last;
}

/* release_at records a freed FULLNAT local port (addr, port, proto; addr
 * of 16 bytes when v6, else 4). Returns -1 when the list is full. */
static __always_inline int release_at(struct walk *w, const void *addr, __be16 port, __u8 proto, __u8 v6)
{
	__u32 i = w->a.released;
	struct sweep_port *sp;

	if (i >= MAX_SWEEP_RELEASED)
		return -1;
	sp = bpf_map_lookup_elem(&sweep_released, &i);
	if (!sp)
		return -1;
	__builtin_memset(sp->addr, 0, sizeof(sp->addr));
	if (v6)
		__builtin_memcpy(sp->addr, addr, 16);
	else
		__builtin_memcpy(sp->addr, addr, 4);
	sp->port = port;
	sp->proto = proto;
	sp->v6 = v6;
	w->a.released = i + 1;
	return 0;
}

/* count_one counts a live connection of real rid toward its ActiveConn
 * (ESTABLISHED TCP) or InActConn. */
static __always_inline void count_one(struct walk *w, __u32 rid, int active)
{
	struct sweep_count *c = bpf_map_lookup_elem(&sweep_counts, &rid);

	if (!c)
		return;
	if (c->gen != w->a.gen) {
		c->gen = w->a.gen;
		c->active = 0;
		c->inactive = 0;
	}
	if (active)
		c->active++;
	else
		c->inactive++;
}

/* real_gone reports whether real rid is no longer configured (its
 * entry in reals cleared). */
static __always_inline int real_gone(__u32 rid)
{
	struct real *r = bpf_map_lookup_elem(&reals, &rid);

	return !r || (r->addr == 0 && !(r->flags & REAL_F_IPV6));
}

/* live_persist counts a live connection (count_one) and returns its
 * persistent service, NULL when it belongs to none. */
static __always_inline struct sweep_persist *live_persist(struct walk *w, __u8 proto, const struct conn_val *v)
{
	__u32 sid = v->svc_id;

	count_one(w, v->real_id, proto == IPPROTO_TCP && v->state == TCPS_ESTABLISHED);
	if (!(v->flags & CONN_F_PERSIST))
		return NULL;
	return bpf_map_lookup_elem(&sweep_persistent, &sid);
}

/* The judgement of one entry, once for both families (sweep_fam.h):
 * sweep_one for conns and est_conns, sweep_one6 for their IPv6 twins. */
#define FAM_NAME(fn) fn
#define FAM_AGE(op) conn_##op
#define FAM_KEY struct conn_key
#define FAM_VAL struct conn_val
#define FAM_EMB conns
#define FAM_EST est_conns
#define FAM_V6 0
#define FAM_ADDR_SET(a) ((a) != 0)
#define FAM_SYNPROXY 1
#include "sweep_fam.h"
#include "fam_undef.h"

#define FAM_NAME(fn) fn##6
#define FAM_AGE(op) conn6_##op
#define FAM_KEY struct conn_key6
#define FAM_VAL struct conn_val6
#define FAM_EMB conns6
#define FAM_EST est_conns6
#define FAM_V6 1
#define FAM_ADDR_SET(a) (!addr6_zero(a))
#define FAM_SYNPROXY 0 /* no SYN proxy for IPv6 */
#include "sweep_fam.h"
#include "fam_undef.h"

SEC("syscall")
int xipvs_sweep(struct sweep_args *args)
{
	struct walk w = {};

	__builtin_memcpy(&w.a, args, sizeof(w.a));
	w.a.released = 0;
	w.a.seen = 0;
	w.a.expired = 0;
	w.a.kept = 0;
	w.indexed = aging_cfg() != NULL;
	bpf_for_each_map_elem(&conns, sweep_one, &w, 0);
	w.est = 1;
	if (!w.indexed)
		bpf_for_each_map_elem(&est_conns, sweep_one, &w, 0);
	else if (args->full)
		bpf_for_each_map_elem(&est_conns, sweep_counted, &w, 0);
	if (args->ipv6) {
		w.est = 0;
		bpf_for_each_map_elem(&conns6, sweep_one6, &w, 0);
		w.est = 1;
		if (!w.indexed)
			bpf_for_each_map_elem(&est_conns6, sweep_one6, &w, 0);
		else if (args->full)
			bpf_for_each_map_elem(&est_conns6, sweep_counted6, &w, 0);
	}
	args->released = w.a.released;
	args->seen = w.a.seen;
	args->expired = w.a.expired;
	args->kept = w.a.kept;
	return 0;
}

/* The connections Go's index asks the reaper about (struct reap_slot):
 * written and read by Go in place. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, REAP_MAX);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct reap_slot);
} reap_slots SEC(".maps");

static long reap_slot_cb(__u32 i, struct walk *w)
{
	struct reap_slot *s = bpf_map_lookup_elem(&reap_slots, &i);

	if (!s)
		return 1;
	if (s->v6)
		s->left = reap_one6(w, (struct conn_key6 *)s->key, s->stamp);
	else
		s->left = reap_one(w, (struct conn_key *)s->key, s->stamp);
	return 0;
}

/* xipvs_reap judges reap_slots 0..n-1 (aging.h): each connection's
 * slot says how long until it is due, 0 when it ended or is not Go's to
 * file again. */
SEC("syscall")
int xipvs_reap(struct reap_args *args)
{
	const struct aging_cfg *a = aging_cfg();
	struct walk w = {};
	__u32 n = args->n;

	if (!a)
		return -1;
	__builtin_memcpy(w.a.tcp_timeout, a->tcp_timeout, sizeof(w.a.tcp_timeout));
	w.a.udp_timeout = a->udp_timeout;
	w.a.now = args->now;
	w.est = 1;
	w.indexed = 1;
	if (n > REAP_MAX)
		n = REAP_MAX;
	bpf_loop(n, reap_slot_cb, &w, 0);
	args->released = w.a.released;
	args->expired = w.a.expired;
	args->kept = w.a.kept;
	return 0;
}

char _license[] SEC("license") = "Dual BSD/GPL";
