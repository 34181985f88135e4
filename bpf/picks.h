/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* picks.h: new flows scheduled in XDP from what Go's scheduler decided
 * ahead (dataplane/picks.go, internal/server/picks.go). A service's
 * pick_ctl says how: from a pick sequence (rr and wrr: one cycle; lc,
 * wlc, sed and nq: a lookahead), or from a table indexed by a hash of
 * the flow, computed as the kernel's scheduler computes it (sh, dh: 256
 * buckets by hash_32; mh: the Maglev table by hsiphash), whose every
 * bucket holds the real Go's scheduler gives any flow hashing there,
 * nothing where Go must decide (no available owner), or, with
 * mh-fallback, its unavailable owner marked PICK_UNAVAIL: the flow is
 * hashed again as the kernel does. */
#ifndef XIPVS_PICKS_H
#define XIPVS_PICKS_H

#include "maps.h"
#include "parse.h"
#include "tmplkey.h"

/* What the hashing schedulers read of a new flow: the source and
 * destination addresses folded to 32 bits in host order (an IPv6
 * address's four words xored, as ip_vs_sh_hashkey folds them) and the
 * source port in host order. */
struct pick_flow {
	__u32 src;
	__u32 dst;
	__u32 sport;
};

static __always_inline struct pick_flow pick_flow4(const struct pkt *p)
{
	struct pick_flow f = {
		.src = bpf_ntohl(p->ip->saddr),
		.dst = bpf_ntohl(p->ip->daddr),
		.sport = bpf_ntohs(p->sport),
	};

	return f;
}

static __always_inline __u32 fold6(const struct in6_addr *a)
{
	return bpf_ntohl(a->in6_u.u6_addr32[0] ^ a->in6_u.u6_addr32[1] ^ a->in6_u.u6_addr32[2] ^
			 a->in6_u.u6_addr32[3]);
}

static __always_inline struct pick_flow pick_flow6(const struct pkt *p)
{
	struct pick_flow f = {
		.src = fold6(&p->ip6->saddr),
		.dst = fold6(&p->ip6->daddr),
		.sport = bpf_ntohs(p->sport),
	};

	return f;
}

/* hash_32 is the kernel's: multiplicative hashing by GOLDEN_RATIO_32,
 * the top bits kept. */
static __always_inline __u32 hash_32(__u32 val, int bits)
{
	return (val * 0x61C88647u) >> (32 - bits);
}

#define ROTL64(x, b) (((x) << (b)) | ((x) >> (64 - (b))))

#define SIPROUND(v0, v1, v2, v3)                                              \
	do {                                                                  \
		v0 += v1;                                                     \
		v1 = ROTL64(v1, 13);                                          \
		v1 ^= v0;                                                     \
		v0 = ROTL64(v0, 32);                                          \
		v2 += v3;                                                     \
		v3 = ROTL64(v3, 16);                                          \
		v3 ^= v2;                                                     \
		v0 += v3;                                                     \
		v3 = ROTL64(v3, 21);                                          \
		v3 ^= v0;                                                     \
		v2 += v1;                                                     \
		v1 = ROTL64(v1, 17);                                          \
		v1 ^= v2;                                                     \
		v2 = ROTL64(v2, 32);                                          \
	} while (0)

/* hsiphash32 is the kernel's hsiphash of one 32-bit word on a 64-bit
 * machine (SipHash-1-3, a 128-bit key of two equal halves k, truncated
 * to 32 bits), as ip_vs_mh_hashkey calls it. */
static __always_inline __u32 hsiphash32(__u32 v, __u64 k)
{
	__u64 v0 = 0x736f6d6570736575ULL ^ k;
	__u64 v1 = 0x646f72616e646f6dULL ^ k;
	__u64 v2 = 0x6c7967656e657261ULL ^ k;
	__u64 v3 = 0x7465646279746573ULL ^ k;
	__u64 b = (4ULL << 56) | v;

	v3 ^= b;
	SIPROUND(v0, v1, v2, v3);
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND(v0, v1, v2, v3);
	SIPROUND(v0, v1, v2, v3);
	SIPROUND(v0, v1, v2, v3);
	return (__u32)((v0 ^ v1) ^ (v2 ^ v3));
}

/* pick_bucket is the bucket of flow f in a table of kind kind, as the
 * kernel's scheduler finds it; -1 for a kind that is not a table. */
static __always_inline __s64 pick_bucket(__u32 kind, const struct pick_flow *f)
{
	switch (kind) {
	case PICK_SH:
		return hash_32(f->src, SH_TAB_BITS);
	case PICK_SH_PORT:
		return hash_32(f->sport + f->src, SH_TAB_BITS);
	case PICK_DH:
		return hash_32(f->dst, SH_TAB_BITS);
	case PICK_MH:
		return hsiphash32(f->src, MH_KEY1) % MH_TAB_SIZE;
	case PICK_MH_PORT:
		return hsiphash32(f->sport + f->src, MH_KEY1) % MH_TAB_SIZE;
	}
	return -1;
}

/* mh_fallback is ip_vs_mh_get_fallback's search once the owner of flow
 * f's bucket ihash is unavailable: for roffset = ihash, ihash + 1, ...
 * the flow is hashed again with roffset added, and the first available
 * owner wins, an empty bucket ends it. 0: none within MH_PROBES (or an
 * empty bucket): Go decides. */
static __always_inline __u32 mh_fallback(struct hash_pick_key k, __u32 kind, const struct pick_flow *f, __u32 ihash)
{
	__u32 v = f->src + (kind == PICK_MH_PORT ? f->sport : 0);

	for (__u32 off = 0; off < MH_PROBES; off++) {
		__u32 *x;

		k.bucket = hsiphash32(v + (ihash + off) % MH_TAB_SIZE, MH_KEY1) % MH_TAB_SIZE;
		x = bpf_map_lookup_elem(&hash_picks, &k);
		if (!x || !*x)
			return 0;
		if (!(*x & PICK_UNAVAIL))
			return *x;
	}
	return 0;
}

/* pick_hashed takes the real of flow f's bucket in service sid's table
 * (slot slot); NULL where Go decides. */
static __always_inline struct real *pick_hashed(__u32 sid, __u32 slot, __u32 kind, struct pick_flow f, __u32 *rid)
{
	struct hash_pick_key k = { .sid_slot = sid << 1 | (slot & 1) };
	__s64 b = pick_bucket(kind, &f);
	__u32 *v;

	if (b < 0)
		return NULL;
	k.bucket = b;
	v = bpf_map_lookup_elem(&hash_picks, &k);
	if (!v || !*v)
		return NULL;
	*rid = *v;
	if (*rid & PICK_UNAVAIL) {
		*rid = mh_fallback(k, kind, &f, b);
		if (!*rid)
			return NULL;
	}
	return bpf_map_lookup_elem(&reals, rid);
}

/* room_take takes one connection's room from real rid under its upper
 * threshold (real_room): 0, or -1 when it has none left (IPVS would find
 * it overloaded: Go decides, from counts that hold every connection XDP
 * bound). What another CPU takes meanwhile is given back below zero. */
static __always_inline int room_take(__u32 rid)
{
	__s64 *room = bpf_map_lookup_elem(&real_room, &rid);

	if (!room)
		return -1;
	if (__sync_fetch_and_add(room, -1) > 0)
		return 0;
	__sync_fetch_and_add(room, 1);
	return -1;
}

/* room_add adds n to real rid's room: -1 for a connection bound to it
 * whatever its room (one that follows a template: IPVS binds it to an
 * overloaded real too), 1 for room taken by a pick that was not used. */
static __always_inline void room_add(__u32 rid, __s64 n)
{
	__s64 *room = bpf_map_lookup_elem(&real_room, &rid);

	if (room)
		__sync_fetch_and_add(room, n);
}

/* pick_any gives a new flow f of service sid the real Go's scheduler
 * decided for it (struct pick_seq, or the service's hash table); NULL
 * when the service has no picks or they do not cover this flow (Go
 * decides then). */
static __always_inline struct real *pick_any(__u32 sid, struct pick_flow f, __u32 *rid)
{
	struct pick_ctl *ctl = bpf_map_lookup_elem(&pick_ctls, &sid);
	struct pick_seq *seq;
	__u32 key, idx, len, loop;
	__u64 n;

	if (!ctl)
		return NULL;
	if (ctl->kind != PICK_SEQUENCE)
		return pick_hashed(sid, ctl->slot, ctl->kind, f, rid);
	key = sid << 1 | (ctl->slot & 1);
	seq = bpf_map_lookup_elem(&pick_seqs, &key);
	if (!seq)
		return NULL;
	len = seq->len;
	loop = seq->loop;
	if (len == 0 || len > PICK_SEQ_LEN)
		return NULL;
	n = __sync_fetch_and_add(&seq->cursor, 1);
	if (n < len)
		idx = n;
	else if (loop < len)
		idx = loop + (n - loop) % (len - loop);
	else
		return NULL;
	/* idx < len <= PICK_SEQ_LEN, a power of two: the mask changes
	 * nothing but lets the verifier see the bound. */
	idx &= PICK_SEQ_LEN - 1;
	*rid = seq->reals[idx];
	return bpf_map_lookup_elem(&reals, rid);
}

/* pick_real is pick_any's real while it has room under its threshold
 * (a service with SVC_F_ROOM); NULL: Go decides. */
static __always_inline struct real *pick_real(__u32 sid, __u32 sflags, struct pick_flow f, __u32 *rid)
{
	struct real *r = pick_any(sid, f, rid);

	/* A real at its threshold: skipped by IPVS's schedulers, so Go's. */
	if (r && (sflags & SVC_F_ROOM) && room_take(*rid) < 0)
		return NULL;
	return r;
}

/* A new flow's template key and value under construction, per CPU: in
 * a map value rather than on the director's stack. */
struct tmpl_scratch {
	struct sweep_tmpl key;
	struct tmpl_val val;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tmpl_scratch);
} tmpl_scratch SEC(".maps");

/* tmpl_of is the per-CPU scratch template of a new flow of persistent
 * service sid (flags: its svc_val flags, the netmask in the top byte)
 * from client saddr (4 or 16 bytes, alen) to virtual port dport, keyed
 * as the sweep keys the templates it finds owned (sweep.bpf.c). */
static __always_inline struct tmpl_scratch *tmpl_of(__u32 sid, __u32 flags, const __be32 *saddr, const int alen,
						     __be16 dport)
{
	__u32 zero = 0, bits = flags >> SVC_MASK_SHIFT;
	struct tmpl_scratch *t = bpf_map_lookup_elem(&tmpl_scratch, &zero);
	__be32 *client;

	if (!t)
		return NULL;
	__builtin_memset(t, 0, sizeof(*t));
	client = (__be32 *)t->key.client;
	t->key.svc_id = sid;
	t->key.vport = (flags & SVC_F_TMPL_PORT0) ? 0 : dport;
	t->key.v6 = alen == 16;
	tmpl_client(client, saddr, alen, bits);
	return t;
}

/* pick_persistent gives a new flow of a persistent service (template t
 * built by tmpl_of) the real its client's template names, renewing it;
 * a client without one takes the service's next pick (pick_real), and
 * the template is made (IPVS's ip_vs_sched_persist). NULL: Go decides.
 * Go ends a template whose real may no longer take its clients (gone,
 * failing, quiesced under --expire-quiescent-template, the sorry server
 * once a real is back), so one found here is good. */
static __always_inline struct real *pick_persistent(__u32 sid, __u32 sflags, struct tmpl_scratch *t, struct pick_flow f,
						     __u32 *rid)
{
	__u64 now = bpf_ktime_get_coarse_ns();
	struct tmpl_val *v = bpf_map_lookup_elem(&tmpls, &t->key);
	struct real *r;

	if (v) {
		*rid = v->real_id;
		if (v->last_used != now)
			v->last_used = now;
		if (sflags & SVC_F_ROOM)
			room_add(*rid, -1);
		return bpf_map_lookup_elem(&reals, rid);
	}
	r = pick_real(sid, sflags, f, rid);
	if (!r)
		return NULL;
	t->val.real_id = *rid;
	t->val.last_used = now;
	if (bpf_map_update_elem(&tmpls, &t->key, &t->val, BPF_NOEXIST) == 0)
		return r;
	/* Another CPU made it meanwhile (its real, then), or the table is
	 * full (Go decides); the pick's room is not used. */
	if (sflags & SVC_F_ROOM)
		room_add(*rid, 1);
	v = bpf_map_lookup_elem(&tmpls, &t->key);
	if (!v)
		return NULL;
	*rid = v->real_id;
	if (sflags & SVC_F_ROOM)
		room_add(*rid, -1);
	return bpf_map_lookup_elem(&reals, rid);
}

/* pick_local gives a new flow of an lblc or lblcr service (entry t built
 * by tmpl_of from its destination address) the real that address's entry
 * names, while that real may keep it (ip_vs_lblc_schedule's hit, or
 * ip_vs_lblcr_schedule's for a set of one; the entry's last use renewed).
 * NULL: Go decides (no entry, or its real may not keep it: wlc's pick and
 * the new entry are Go's). */
static __always_inline struct real *pick_local(struct tmpl_scratch *t, __u32 sflags, __u32 *rid)
{
	struct tmpl_val *v = bpf_map_lookup_elem(&tmpls, &t->key);
	struct real *r;
	__u64 now;

	if (!v)
		return NULL;
	*rid = v->real_id;
	r = bpf_map_lookup_elem(&reals, rid);
	if (!r || !(r->flags & REAL_F_LOCAL_OK))
		return NULL;
	if (sflags & SVC_F_ROOM) {
		/* lblc binds a hit to an overloaded real, lblcr looks for
		 * another (Go's). */
		if (!(sflags & SVC_F_LOCAL_SET))
			room_add(*rid, -1);
		else if (room_take(*rid) < 0)
			return NULL;
	}
	now = bpf_ktime_get_coarse_ns();
	if (v->last_used != now)
		v->last_used = now;
	return r;
}

/* A destination address's lblc entry is keyed as a port-zero template of
 * its service under a full mask. */
#define LOCAL_KEY_FLAGS ((0xffU << SVC_MASK_SHIFT) | SVC_F_TMPL_PORT0)

/* pick_new is the real of a new flow of service sid (its svc_val flags)
 * from saddr to daddr (alen 4 or 16 bytes) and virtual port dport: its
 * destination's lblc entry, its client's template, or the service's next
 * pick. NULL: Go decides. */
static __always_inline struct real *pick_new(__u32 sid, __u32 sflags, const __be32 *saddr, const __be32 *daddr,
					     const int alen, __be16 dport, struct pick_flow f, __u32 *rid)
{
	struct tmpl_scratch *t;

	if (sflags & SVC_F_LOCAL) {
		t = tmpl_of(sid, LOCAL_KEY_FLAGS, daddr, alen, 0);
		return t ? pick_local(t, sflags, rid) : NULL;
	}
	if (sflags & SVC_F_PERSIST) {
		t = tmpl_of(sid, sflags, saddr, alen, dport);
		return t ? pick_persistent(sid, sflags, t, f, rid) : NULL;
	}
	return pick_real(sid, sflags, f, rid);
}

/* fnat_claim takes the local address and port of a new FULLNAT
 * connection over proto of a service whose flags name its ring: the first
 * filled slot from the ring's cursor, taken with an atomic exchange so
 * that no two CPUs get one port (Go fills only empty slots, so a port
 * taken here is nobody else's). -1: none found (Go allocates one; the
 * cursor stays where Go will fill). */
static __always_inline int fnat_claim(__u32 sflags, __u8 proto, struct fnat_port *fp)
{
	__u32 ring = (sflags >> SVC_RING_SHIFT) & SVC_RING_MASK;
	__u32 r, *cur, c;

	if (!ring)
		return -1;
	r = ring * 2 + (proto == IPPROTO_UDP);
	cur = bpf_map_lookup_elem(&fnat_cursor, &r);
	if (!cur)
		return -1;
	c = *cur;
	for (__u32 i = 0; i < FNAT_PROBES; i++) {
		__u32 k = r * FNAT_SLOTS + ((c + i) & (FNAT_SLOTS - 1));
		__u64 *s = bpf_map_lookup_elem(&fnat_slots, &k);
		__u64 v;

		if (!s || !*s)
			continue;
		v = __sync_lock_test_and_set(s, 0);
		if (!v)
			continue;
		*cur = c + i + 1;
		fp->lid = v >> 32;
		fp->lport = bpf_htons((__u16)(v >> 16));
		fp->slot = k;
		fp->v = v;
		return 0;
	}
	return -1;
}

/* fnat_unclaim gives a port fnat_claim took back to its slot, if Go has
 * not filled the slot meanwhile (then the port is held by nothing, and
 * Go's reclaim walk frees it). */
static __always_inline void fnat_unclaim(struct fnat_port *fp)
{
	__u64 *s = bpf_map_lookup_elem(&fnat_slots, &fp->slot);

	if (s && fp->v)
		__sync_val_compare_and_swap(s, 0, fp->v);
	fp->v = 0;
}

/* fnat_laddr is the local address of the port fp holds (NULL: none, or
 * not of the real's family: v6). */
static __always_inline const struct laddr *fnat_laddr(const struct fnat_port *fp, __u8 v6)
{
	const struct laddr *la;

	if (!fp->v)
		return NULL;
	la = bpf_map_lookup_elem(&laddrs, &fp->lid);
	return la && la->v6 == v6 ? la : NULL;
}

/* fnat_ahead takes the local port of a new flow of a service with a ring
 * (sflags) before its real is picked, so that a ring run dry sends the
 * flow to Go without taking a pick Go would not count. It returns this
 * CPU's scratch fnat_port, holding a port if the ring had one (none for
 * a ring-less service); NULL: Go's. */
static __always_inline struct fnat_port *fnat_ahead(__u32 sflags, __u8 proto)
{
	__u32 zero = 0;
	struct fnat_port *fp = bpf_map_lookup_elem(&fnat_scratch, &zero);

	if (!fp)
		return NULL;
	fp->v = 0;
	if (!((sflags >> SVC_RING_SHIFT) & SVC_RING_MASK))
		return fp;
	return fnat_claim(sflags, proto, fp) < 0 ? NULL : fp;
}

/* count_pick counts a connection XDP scheduled to real rid. */
static __always_inline void count_pick(__u32 rid)
{
	__u64 *n = bpf_map_lookup_elem(&real_conns, &rid);

	if (n)
		*n += 1;
}

#endif
