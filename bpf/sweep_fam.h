/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* sweep_fam.h: the sweep's judgement of one entry, written once for both
 * families. sweep.bpf.c includes it twice, defining first:
 *   FAM_NAME(fn)      the function's name in the family: fn, fn##6
 *   FAM_KEY, FAM_VAL  the connection key and value
 *   FAM_EMB, FAM_EST  the embryonic LRU and the established table
 *   FAM_AGE(op)       aging.h's operation for the family (conn_op, conn6_op)
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
		__u8 one = 1;

		tmpl_masked((__be32 *)t.client, (const __be32 *)&k->saddr, sizeof(k->saddr), p->mask);
		bpf_map_update_elem(&sweep_owned, &t, &one, BPF_ANY);
	}
}

/* end deletes connection k (forward entry in the table est names; its
 * reply entry pk, in peer_est's, when peer is set), gives its FULLNAT
 * port back and drops its SYN-proxy adjustments. */
static __always_inline void FAM_NAME(end)(struct walk *w, FAM_KEY *k, int est, FAM_KEY *pk, int peer, int peer_est,
					  int fullnat, int sp)
{
	if (FAM_NAME(sweep_delete)(k, est) == 0)
		w->a.expired++;
	if (peer && FAM_NAME(sweep_delete)(pk, peer_est) == 0 && fullnat)
		FAM_NAME(release_port)(w, pk);
	if (sp) {
		bpf_map_delete_elem(&seqadjs, k);
		if (peer)
			bpf_map_delete_elem(&seqadjs, pk);
	}
}

/* judge (sweep_one, sweep_counted) judges one entry: a forward entry by the later of its and its
 * reply entry's last-seen times; a reply entry only when it is an orphan
 * (no forward entry points to it: its tuple was reused, or the forward
 * entry was evicted), after orphan_age. */
static __always_inline long FAM_NAME(judge)(FAM_KEY *k, FAM_VAL *v, struct walk *w, const int counted)
{
	FAM_KEY pk = {};
	FAM_VAL *peer = NULL;
	__u64 last = v->last_seen;
	int fullnat = v->flags & CONN_F_FULLNAT;
	int sp = FAM_SYNPROXY && (v->flags & CONN_F_SYNPROXY);
	int peer_est = 0;

	w->a.seen++;
	if (FAM_ADDR_SET(v->nsaddr)) {
		FAM_AGE(peer_key)(v, k->proto, &pk);
		peer = FAM_NAME(sweep_lookup)(&pk, &peer_est);
		if (peer) {
			FAM_KEY back = {};

			FAM_AGE(peer_key)(peer, k->proto, &back);
			if (!FAM_AGE(same_key)(&back, k) || ((peer->flags ^ v->flags) & CONN_F_REPLY) == 0)
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
		if (!counted)
			FAM_NAME(count_live)(w, k, v);
		else if (!(v->flags & CONN_F_COUNTED))
			FAM_AGE(count)(k, v); /* one Go wrote */
		else
			FAM_AGE(recount)(k, v);
		return 0;
	}
	if (peer && fullnat && w->a.released >= MAX_SWEEP_RELEASED) {
		w->a.kept++;
		if (!counted)
			FAM_NAME(count_live)(w, k, v);
		return 0;
	}
	if (counted)
		FAM_AGE(forget)(k, v);
	FAM_NAME(end)(w, k, w->est, &pk, peer != NULL, peer_est, fullnat, sp);
	return 0;
}

static long FAM_NAME(sweep_one)(struct bpf_map *map, FAM_KEY *k, FAM_VAL *v, struct walk *w)
{
	return FAM_NAME(judge)(k, v, w, 0);
}

/* sweep_counted is sweep_one for an established table aged by Go's
 * index (a full pass): its entries are counted by events, not here. Its
 * own callback, so that the verifier follows the counting only here. */
static long FAM_NAME(sweep_counted)(struct bpf_map *map, FAM_KEY *k, FAM_VAL *v, struct walk *w)
{
	return FAM_NAME(judge)(k, v, w, 1);
}

/* reap_one judges established connection k for Go's index, whose entry
 * carries stamp: 0 when it ended (as sweep_one ends it), is gone, or
 * the index entry is stale (an event since stamped it anew); else how
 * long until it is due. An entry Go wrote is counted here. */
static __always_inline __u64 FAM_NAME(reap_one)(struct walk *w, FAM_KEY *k, __u16 stamp)
{
	FAM_KEY pk = {};
	FAM_VAL *v = bpf_map_lookup_elem(&FAM_EST, k), *peer;
	__u64 last, to;

	if (!v || (v->flags & CONN_F_REPLY) || v->hits != stamp)
		return 0;
	w->a.seen++;
	if (!(v->flags & CONN_F_COUNTED))
		FAM_AGE(count)(k, v);
	else
		FAM_AGE(recount)(k, v);
	peer = FAM_AGE(est_peer)(k, v, &pk);
	last = v->last_seen;
	if (peer && peer->last_seen > last)
		last = peer->last_seen;
	to = timeout_of(&w->a, k->proto, v->state);
	if (idle(w->a.now, last) < to)
		return last + to - w->a.now;
	if (peer && (v->flags & CONN_F_FULLNAT) && w->a.released >= MAX_SWEEP_RELEASED) {
		w->a.kept++;
		return 1000000000ULL; /* its port has nowhere to go: in a second */
	}
	FAM_AGE(forget)(k, v);
	FAM_NAME(end)(w, k, 1, &pk, peer != NULL, 1, v->flags & CONN_F_FULLNAT, FAM_SYNPROXY && (v->flags & CONN_F_SYNPROXY));
	return 0;
}
