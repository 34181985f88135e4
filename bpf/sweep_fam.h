/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* sweep_fam.h: the sweep's judgement of one entry, written once for both
 * families. sweep.bpf.c includes it twice, defining first:
 *   FAM_NAME(fn)      the function's name in the family: fn, fn##6
 *   FAM_KEY, FAM_VAL  the connection key and value
 *   FAM_EMB, FAM_EST  the embryonic LRU and the established table
 *   FAM_V6            0 or 1
 *   FAM_ADDR_SET(a)   whether address a (a value's nsaddr) is set
 *   FAM_SYNPROXY      whether the family's connections can be SYN-proxied
 *                     (IPv4's: their seqadjs entries go with them)
 * No include guard, on purpose. */

/* lookup finds an entry in either table; *est says which. */
static __always_inline FAM_VAL *FAM_NAME(sweep_lookup)(FAM_KEY *k, int *est)
{
	FAM_VAL *v = bpf_map_lookup_elem(&FAM_EST, k);

	*est = v != NULL;
	if (v)
		return v;
	return bpf_map_lookup_elem(&FAM_EMB, k);
}

/* delete deletes k from the table est names. */
static __always_inline long FAM_NAME(sweep_delete)(FAM_KEY *k, int est)
{
	return est ? bpf_map_delete_elem(&FAM_EST, k) : bpf_map_delete_elem(&FAM_EMB, k);
}

/* peer_key is the key of the other entry of a NAT or FULLNAT pair (pk
 * zeroed by the caller). */
static __always_inline void FAM_NAME(peer_key)(const FAM_VAL *v, __u8 proto, FAM_KEY *pk)
{
	__builtin_memcpy(&pk->saddr, &v->ndaddr, sizeof(pk->saddr));
	__builtin_memcpy(&pk->daddr, &v->nsaddr, sizeof(pk->daddr));
	pk->sport = v->ndport;
	pk->dport = v->nsport;
	pk->proto = proto; /* pad: the callers' keys start zeroed */
}

/* same_key compares two keys: addresses and ports (whole words), then
 * the protocol. */
static __always_inline int FAM_NAME(same_key)(const FAM_KEY *a, const FAM_KEY *b)
{
	const __u32 *x = (const void *)a, *y = (const void *)b;
	__u32 d = 0;

#pragma unroll
	for (int i = 0; i < (2 * sizeof(a->saddr) + 4) / 4; i++)
		d |= x[i] ^ y[i];
	return d == 0 && a->proto == b->proto;
}

/* release_port records the local port of FULLNAT reply entry rk,
 * deleted by the caller. */
static __always_inline int FAM_NAME(release_port)(struct walk *w, const FAM_KEY *rk)
{
	return release_at(w, &rk->daddr, rk->dport, rk->proto, FAM_V6);
}

/* count_live counts a live connection and, for a persistent service's,
 * notes its template as owned: the client is the source under the
 * service's prefix length. */
static __always_inline void FAM_NAME(count_live)(struct walk *w, const FAM_KEY *k, const FAM_VAL *v)
{
	__u32 sid = v->svc_id;
	struct sweep_persist *p = live_persist(w, k->proto, (const struct conn_val *)v);

	if (p) {
		struct sweep_tmpl t = { .svc_id = sid, .vport = p->port_zero ? 0 : k->dport, .v6 = FAM_V6 };
		const __be32 *src = (const void *)&k->saddr;
		__be32 *client = (void *)t.client;
		__u8 one = 1;

#pragma unroll
		for (int i = 0; i < sizeof(k->saddr) / 4; i++) {
			int bits = (int)p->mask_bits - 32 * i;

			if (bits >= 32)
				client[i] = src[i];
			else if (bits > 0)
				client[i] = src[i] & bpf_htonl(~0U << (32 - bits));
		}
		bpf_map_update_elem(&sweep_owned, &t, &one, BPF_ANY);
	}
}

/* sweep_one judges one entry: a forward entry by the later of its and its
 * reply entry's last-seen times; a reply entry only when it is an orphan
 * (no forward entry points to it: its tuple was reused, or the forward
 * entry was evicted), after orphan_age. */
static long FAM_NAME(sweep_one)(struct bpf_map *map, FAM_KEY *k, FAM_VAL *v, struct walk *w)
{
	FAM_KEY pk = {};
	FAM_VAL *peer = NULL;
	__u64 last = v->last_seen;
	int fullnat = v->flags & CONN_F_FULLNAT;
	int sp = FAM_SYNPROXY && (v->flags & CONN_F_SYNPROXY);
	int peer_est = 0;

	w->a.seen++;
	if (FAM_ADDR_SET(v->nsaddr)) {
		FAM_NAME(peer_key)(v, k->proto, &pk);
		peer = FAM_NAME(sweep_lookup)(&pk, &peer_est);
		if (peer) {
			FAM_KEY back = {};

			FAM_NAME(peer_key)(peer, k->proto, &back);
			if (!FAM_NAME(same_key)(&back, k) || ((peer->flags ^ v->flags) & CONN_F_REPLY) == 0)
				peer = NULL;
		}
	}
	if (v->flags & CONN_F_REPLY) {
		/* With a forward entry it is judged with it. */
		if (peer || idle(w->a.now, last) < w->a.orphan_age)
			return 0;
		if (fullnat && w->a.released >= MAX_SWEEP_RELEASED) {
			w->a.kept++;
			return 0;
		}
		if (FAM_NAME(sweep_delete)(k, w->est) == 0 && fullnat)
			FAM_NAME(release_port)(w, k);
		if (sp)
			bpf_map_delete_elem(&seqadjs, k);
		return 0;
	}
	if (peer && peer->last_seen > last)
		last = peer->last_seen;
	if (idle(w->a.now, last) < timeout_of(&w->a, k->proto, v->state) &&
	    !(w->a.drop_stale && real_gone(v->real_id))) {
		FAM_NAME(count_live)(w, k, v);
		return 0;
	}
	if (peer && fullnat && w->a.released >= MAX_SWEEP_RELEASED) {
		w->a.kept++;
		FAM_NAME(count_live)(w, k, v);
		return 0;
	}
	if (FAM_NAME(sweep_delete)(k, w->est) == 0)
		w->a.expired++;
	if (peer && FAM_NAME(sweep_delete)(&pk, peer_est) == 0 && fullnat)
		FAM_NAME(release_port)(w, &pk);
	if (sp) {
		bpf_map_delete_elem(&seqadjs, k);
		if (peer)
			bpf_map_delete_elem(&seqadjs, &pk);
	}
	return 0;
}
