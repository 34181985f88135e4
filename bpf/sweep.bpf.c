// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* sweep.bpf.c: ages the connection table in the kernel. Go runs it once
 * per sweep interval with BPF_PROG_RUN (a BPF_PROG_TYPE_SYSCALL program,
 * its maps replaced by the director's at load): one pass over the table
 * with bpf_for_each_map_elem deletes every connection idle past its
 * state's timeout (a NAT or FULLNAT connection only when both of its
 * entries are), counts the live ones per real (ActiveConn, InActConn),
 * lists the FULLNAT local ports it freed and the persistence templates
 * that still control a connection. Go then does what only it can: port
 * pools, template expiry, overload flags. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "structs.h"
#include "maps.h"

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

/* Persistent services by id, written by Go before each sweep. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct sweep_persist);
} sweep_persistent SEC(".maps");

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
	int est; /* walking est_conns (else conns) */
};

/* lookup2 finds an entry in either table; *est says which. */
static __always_inline struct conn_val *lookup2(struct conn_key *k, int *est)
{
	struct conn_val *v = bpf_map_lookup_elem(&est_conns, k);

	*est = v != NULL;
	if (v)
		return v;
	return bpf_map_lookup_elem(&conns, k);
}

/* delete2 deletes k from the table est names. */
static __always_inline long delete2(struct conn_key *k, int est)
{
	return est ? bpf_map_delete_elem(&est_conns, k) : bpf_map_delete_elem(&conns, k);
}

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

/* peer_key is the key of the other entry of a NAT or FULLNAT pair. */
static __always_inline void peer_key(const struct conn_val *v, __u8 proto, struct conn_key *pk)
{
	pk->saddr = v->ndaddr;
	pk->daddr = v->nsaddr;
	pk->sport = v->ndport;
	pk->dport = v->nsport;
	pk->proto = proto;
	pk->pad[0] = pk->pad[1] = pk->pad[2] = 0;
}

static __always_inline int same_key(const struct conn_key *a, const struct conn_key *b)
{
	return a->saddr == b->saddr && a->daddr == b->daddr && a->sport == b->sport &&
	       a->dport == b->dport && a->proto == b->proto;
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

/* release_port records the local port of FULLNAT reply entry rk,
 * deleted by the caller. */
static __always_inline int release_port(struct walk *w, const struct conn_key *rk)
{
	return release_at(w, &rk->daddr, rk->dport, rk->proto, 0);
}

/* release_port6 is release_port for an IPv6 reply entry. */
static __always_inline int release_port6(struct walk *w, const struct conn_key6 *rk)
{
	return release_at(w, rk->daddr, rk->dport, rk->proto, 1);
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

static __always_inline void count_live(struct walk *w, const struct conn_key *k, const struct conn_val *v)
{
	__u32 sid = v->svc_id;
	struct sweep_persist *p = live_persist(w, k->proto, v);

	if (p) {
		struct sweep_tmpl t = { .svc_id = sid, .vport = p->port_zero ? 0 : k->dport };
		__u8 one = 1;

		__be32 *client = (void *)t.client;

		if (p->mask_bits >= 32)
			*client = k->saddr;
		else if (p->mask_bits > 0)
			*client = k->saddr & bpf_htonl(~0U << (32 - p->mask_bits));
		bpf_map_update_elem(&sweep_owned, &t, &one, BPF_ANY);
	}
}

/* sweep_one judges one entry: a forward entry by the later of its and its
 * reply entry's last-seen times; a reply entry only when it is an orphan
 * (no forward entry points to it: its tuple was reused, or the forward
 * entry was evicted), after orphan_age. */
static long sweep_one(struct bpf_map *map, struct conn_key *k, struct conn_val *v, struct walk *w)
{
	struct conn_key pk = {};
	struct conn_val *peer = NULL;
	__u64 last = v->last_seen;
	int fullnat = v->flags & CONN_F_FULLNAT;
	int sp = v->flags & CONN_F_SYNPROXY;
	int peer_est = 0;

	w->a.seen++;
	if (v->nsaddr) {
		peer_key(v, k->proto, &pk);
		peer = lookup2(&pk, &peer_est);
		if (peer) {
			struct conn_key back = {};

			peer_key(peer, k->proto, &back);
			if (!same_key(&back, k) || ((peer->flags ^ v->flags) & CONN_F_REPLY) == 0)
				peer = NULL;
		}
	}
	if (v->flags & CONN_F_REPLY) {
		if (peer)
			return 0; /* judged with its forward entry */
		if (idle(w->a.now, last) < w->a.orphan_age)
			return 0;
		if (fullnat && w->a.released >= MAX_SWEEP_RELEASED) {
			w->a.kept++;
			return 0;
		}
		if (delete2(k, w->est) == 0 && fullnat)
			release_port(w, k);
		if (sp)
			bpf_map_delete_elem(&seqadjs, k);
		return 0;
	}
	if (peer && peer->last_seen > last)
		last = peer->last_seen;
	if (idle(w->a.now, last) < timeout_of(&w->a, k->proto, v->state)) {
		count_live(w, k, v);
		return 0;
	}
	if (peer && fullnat && w->a.released >= MAX_SWEEP_RELEASED) {
		w->a.kept++;
		count_live(w, k, v);
		return 0;
	}
	if (delete2(k, w->est) == 0)
		w->a.expired++;
	if (peer && delete2(&pk, peer_est) == 0 && fullnat)
		release_port(w, &pk);
	if (sp) {
		bpf_map_delete_elem(&seqadjs, k);
		if (peer)
			bpf_map_delete_elem(&seqadjs, &pk);
	}
	return 0;
}

static __always_inline int nat6(const struct conn_val6 *v)
{
	const __u32 *a = (const void *)v->nsaddr;

	return (a[0] | a[1] | a[2] | a[3]) != 0;
}

static __always_inline void peer_key6(const struct conn_val6 *v, __u8 proto, struct conn_key6 *pk)
{
	__builtin_memcpy(pk->saddr, v->ndaddr, 16);
	__builtin_memcpy(pk->daddr, v->nsaddr, 16);
	pk->sport = v->ndport;
	pk->dport = v->nsport;
	pk->proto = proto;
}

static __always_inline int same_key6(const struct conn_key6 *a, const struct conn_key6 *b)
{
	const __u32 *x = (const void *)a, *y = (const void *)b;
	__u32 d = 0;

	/* saddr, daddr, ports: the first 36 bytes; then proto. */
#pragma unroll
	for (int i = 0; i < 9; i++)
		d |= x[i] ^ y[i];
	return d == 0 && a->proto == b->proto;
}

static __always_inline struct conn_val6 *lookup6(struct conn_key6 *k, int *est)
{
	struct conn_val6 *v = bpf_map_lookup_elem(&est_conns6, k);

	*est = v != NULL;
	if (v)
		return v;
	return bpf_map_lookup_elem(&conns6, k);
}

static __always_inline long delete6(struct conn_key6 *k, int est)
{
	return est ? bpf_map_delete_elem(&est_conns6, k) : bpf_map_delete_elem(&conns6, k);
}

/* count_live6 is count_live for an IPv6 connection: the template's
 * client is the source under a prefix length of up to 128 bits. */
static __always_inline void count_live6(struct walk *w, const struct conn_key6 *k, const struct conn_val6 *v)
{
	__u32 sid = v->svc_id;
	struct sweep_persist *p = live_persist(w, k->proto, (const struct conn_val *)v);

	if (p) {
		struct sweep_tmpl t = { .svc_id = sid, .vport = p->port_zero ? 0 : k->dport, .v6 = 1 };
		const __be32 *src = (const void *)k->saddr;
		__be32 *client = (void *)t.client;
		__u8 one = 1;

#pragma unroll
		for (int i = 0; i < 4; i++) {
			int bits = (int)p->mask_bits - 32 * i;

			if (bits >= 32)
				client[i] = src[i];
			else if (bits > 0)
				client[i] = src[i] & bpf_htonl(~0U << (32 - bits));
		}
		bpf_map_update_elem(&sweep_owned, &t, &one, BPF_ANY);
	}
}

/* sweep_one6 is sweep_one for the IPv6 tables (no SYN proxy there). */
static long sweep_one6(struct bpf_map *map, struct conn_key6 *k, struct conn_val6 *v, struct walk *w)
{
	struct conn_key6 pk = {};
	struct conn_val6 *peer = NULL;
	__u64 last = v->last_seen;
	int fullnat = v->flags & CONN_F_FULLNAT;
	int peer_est = 0;

	w->a.seen++;
	if (nat6(v)) {
		peer_key6(v, k->proto, &pk);
		peer = lookup6(&pk, &peer_est);
		if (peer) {
			struct conn_key6 back = {};

			peer_key6(peer, k->proto, &back);
			if (!same_key6(&back, k) ||
			    ((peer->flags ^ v->flags) & CONN_F_REPLY) == 0)
				peer = NULL;
		}
	}
	if (v->flags & CONN_F_REPLY) {
		if (peer || idle(w->a.now, last) < w->a.orphan_age)
			return 0;
		if (fullnat && w->a.released >= MAX_SWEEP_RELEASED) {
			w->a.kept++;
			return 0;
		}
		if (delete6(k, w->est) == 0 && fullnat)
			release_port6(w, k);
		return 0;
	}
	if (peer && peer->last_seen > last)
		last = peer->last_seen;
	if (idle(w->a.now, last) < timeout_of(&w->a, k->proto, v->state)) {
		count_live6(w, k, v);
		return 0;
	}
	if (peer && fullnat && w->a.released >= MAX_SWEEP_RELEASED) {
		w->a.kept++;
		count_live6(w, k, v);
		return 0;
	}
	if (delete6(k, w->est) == 0)
		w->a.expired++;
	if (peer && delete6(&pk, peer_est) == 0 && fullnat)
		release_port6(w, &pk);
	return 0;
}

SEC("syscall")
int xipvs_sweep(struct sweep_args *args)
{
	struct walk w = {};

	__builtin_memcpy(&w.a, args, sizeof(w.a));
	w.a.released = 0;
	w.a.seen = 0;
	w.a.expired = 0;
	w.a.kept = 0;
	bpf_for_each_map_elem(&conns, sweep_one, &w, 0);
	w.est = 1;
	bpf_for_each_map_elem(&est_conns, sweep_one, &w, 0);
	if (args->ipv6) {
		w.est = 0;
		bpf_for_each_map_elem(&conns6, sweep_one6, &w, 0);
		w.est = 1;
		bpf_for_each_map_elem(&est_conns6, sweep_one6, &w, 0);
	}
	args->released = w.a.released;
	args->seen = w.a.seen;
	args->expired = w.a.expired;
	args->kept = w.a.kept;
	return 0;
}

char _license[] SEC("license") = "Dual BSD/GPL";
