/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* sweep_fam.h: the sweep's judgement of one entry, written once for both
 * families. sweep.bpf.c includes it twice, defining first:
 *   FAM_NAME(fn)      the function's name in the family: fn, fn##6
 *   FAM_KEY, FAM_VAL  the connection key and value
 *   FAM_EMB, FAM_EST  the embryonic LRU and the established table
 *   FAM_TIMERS        the established table's timers (aging.h)
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

		tmpl_client((__be32 *)t.client, (const __be32 *)&k->saddr, sizeof(k->saddr), p->mask_bits);
		bpf_map_update_elem(&sweep_owned, &t, &one, BPF_ANY);
	}
}

/* keep_timed is a full pass's care of a live established entry aged by
 * timers: one without a timer (written by Go) gets it; one with it is
 * set due again at its deadline (a timer that fired while aging by
 * timers was off did not sleep again). */
static __always_inline void FAM_NAME(keep_timed)(struct walk *w, FAM_KEY *k, FAM_VAL *v, __u64 last)
{
	struct conn_timer *t = bpf_map_lookup_elem(&FAM_TIMERS, k);

	if (!t) {
		FAM_AGE(arm)(k, v, w->ag, w->a.now);
		return;
	}
	v->flags |= CONN_F_TIMED;
	bpf_timer_start(&t->timer, age_left(w->a.now, last, timeout_of(&w->a, k->proto, v->state)), 0);
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
	/* An established entry aged by its timer is counted by it. */
	int timed = w->est && w->timed;

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
		if (timed)
			FAM_NAME(keep_timed)(w, k, v, last);
		else
			FAM_NAME(count_live)(w, k, v);
		return 0;
	}
	if (peer && fullnat && w->a.released >= MAX_SWEEP_RELEASED) {
		w->a.kept++;
		if (!timed)
			FAM_NAME(count_live)(w, k, v);
		return 0;
	}
	if (timed)
		FAM_AGE(forget)(k);
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
