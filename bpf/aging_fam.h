/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* aging_fam.h: aging.h's timers, written once for both families. aging.h
 * includes it twice, defining first:
 *   FAM_FN(op)        the operation's name in the family: conn_op, conn6_op
 *   FAM_KEY, FAM_VAL  the connection key and value
 *   FAM_EST           the established table
 *   FAM_TIMERS        its timers (est_timers, est_timers6)
 *   FAM_V6            0 or 1
 *   FAM_ADDR_SET(a)   whether address a (a value's nsaddr) is set
 *   FAM_SYNPROXY      whether the family's connections can be SYN-proxied
 * No include guard, on purpose. */

/* same_key compares two keys: addresses and ports (whole words), then
 * the protocol. */
static __always_inline int FAM_FN(same_key)(const FAM_KEY *a, const FAM_KEY *b)
{
	const __u32 *x = (const void *)a, *y = (const void *)b;
	__u32 d = 0;

#pragma unroll
	for (int i = 0; i < (2 * sizeof(a->saddr) + 4) / 4; i++)
		d |= x[i] ^ y[i];
	return d == 0 && a->proto == b->proto;
}

/* est_peer is the reply entry of established forward entry c (key k),
 * its key in pk (zeroed by the caller): NULL for DR and TUN, and when
 * the entry at pk is not c's pair (its tuple was reused). */
static __always_inline FAM_VAL *FAM_FN(est_peer)(const FAM_KEY *k, const FAM_VAL *c, FAM_KEY *pk)
{
	FAM_KEY back = {};
	FAM_VAL *peer;

	if (!FAM_ADDR_SET(c->nsaddr))
		return NULL;
	FAM_FN(peer_key)(c, k->proto, pk);
	peer = bpf_map_lookup_elem(&FAM_EST, pk);
	if (!peer || !(peer->flags & CONN_F_REPLY))
		return NULL;
	FAM_FN(peer_key)(peer, k->proto, &back);
	return FAM_FN(same_key)(&back, k) ? peer : NULL;
}

/* unarm lets timer t (key k) go: uncounts its connection, once, and
 * deletes it (which cancels it, unless it is the one running). */
static __always_inline void FAM_FN(unarm)(FAM_KEY *k, struct conn_timer *t)
{
	__u64 was = __sync_lock_test_and_set(&t->active, AGE_UNCOUNTED);

	if (was != AGE_UNCOUNTED) {
		live_add(t->real_id, was, -1);
		if (t->persist)
			tmpl_control(&t->tmpl, -1);
	}
	bpf_map_delete_elem(&FAM_TIMERS, k);
}

/* forget lets the timer of connection k go, if it has one: the
 * connection is being deleted by other means (a reused tuple, a real's
 * removal). */
static __always_inline void FAM_FN(forget)(FAM_KEY *k)
{
	struct conn_timer *t = bpf_map_lookup_elem(&FAM_TIMERS, k);

	if (t)
		FAM_FN(unarm)(k, t);
}

/* expire is the timer of connection k: it ends the connection once idle
 * past its state's timeout (the later of its entries' last_seen), else
 * sleeps until then. */
static int FAM_FN(expire)(void *map, FAM_KEY *k, struct conn_timer *t)
{
	const struct aging_cfg *a = aging_cfg();
	FAM_KEY pk = {};
	FAM_VAL *c, *peer;
	__u64 now, last, to;

	if (!a)
		return 0; /* aging by timers turned off: the sweep walks */
	c = bpf_map_lookup_elem(&FAM_EST, k);
	if (!c || (c->flags & CONN_F_REPLY)) {
		FAM_FN(unarm)(k, t); /* deleted by other means */
		return 0;
	}
	/* Not the coarse clock of last_seen, which a syscall program (the
	 * sweep arms timers too) may not read: at most a tick later. */
	now = bpf_ktime_get_ns();
	peer = FAM_FN(est_peer)(k, c, &pk);
	last = c->last_seen;
	if (peer && peer->last_seen > last)
		last = peer->last_seen;
	to = age_timeout(a, k->proto, c->state);
	if (last + to > now) {
		bpf_timer_start(&t->timer, last + to - now, 0);
		return 0;
	}
	if (peer && (c->flags & CONN_F_FULLNAT)) {
		struct sweep_port *sp = bpf_ringbuf_reserve(&aged_ports, sizeof(*sp), 0);

		if (!sp) {
			stat_inc(STAT_AGE_DEFERRED);
			bpf_timer_start(&t->timer, AGE_NSEC_PER_SEC, 0);
			return 0;
		}
		__builtin_memset(sp, 0, sizeof(*sp));
		__builtin_memcpy(sp->addr, &pk.daddr, sizeof(pk.daddr));
		sp->port = pk.dport;
		sp->proto = pk.proto;
		sp->v6 = FAM_V6;
		bpf_ringbuf_submit(sp, 0);
	}
	if (FAM_SYNPROXY && (c->flags & CONN_F_SYNPROXY)) {
		bpf_map_delete_elem(&seqadjs, k);
		if (peer)
			bpf_map_delete_elem(&seqadjs, &pk);
	}
	if (peer)
		bpf_map_delete_elem(&FAM_EST, &pk);
	bpf_map_delete_elem(&FAM_EST, k);
	stat_inc(STAT_AGED);
	FAM_FN(unarm)(k, t);
	return 0;
}

/* arm gives established forward entry c (key k) its timer, unless it
 * has one, and counts it; now is on last_seen's clock. Returns 0 when it
 * has one. */
static __always_inline int FAM_FN(arm)(FAM_KEY *k, FAM_VAL *c, const struct aging_cfg *a, __u64 now)
{
	__u32 zero = 0, sid = c->svc_id;
	struct conn_timer_new *nt = bpf_map_lookup_elem(&timer_scratch, &zero);
	struct conn_timer *t;
	long err;

	if (!nt)
		return -1;
	__builtin_memset(nt, 0, sizeof(*nt));
	nt->real_id = c->real_id;
	nt->active = age_active(k->proto, c->state);
	if (c->flags & CONN_F_PERSIST) {
		struct sweep_persist *p = bpf_map_lookup_elem(&sweep_persistent, &sid);

		if (p) {
			nt->persist = 1;
			nt->tmpl.svc_id = sid;
			nt->tmpl.vport = p->port_zero ? 0 : k->dport;
			nt->tmpl.v6 = FAM_V6;
			tmpl_client((__be32 *)nt->tmpl.client, (const __be32 *)&k->saddr, sizeof(k->saddr), p->mask_bits);
		}
	}
	err = bpf_map_update_elem(&FAM_TIMERS, k, nt, BPF_NOEXIST);
	if (err == -17 /* EEXIST */) {
		c->flags |= CONN_F_TIMED;
		return 0;
	}
	if (err)
		goto fail;
	t = bpf_map_lookup_elem(&FAM_TIMERS, k);
	if (!t)
		goto fail;
	if (bpf_timer_init(&t->timer, &FAM_TIMERS, CLOCK_MONOTONIC) ||
	    bpf_timer_set_callback(&t->timer, FAM_FN(expire))) {
		bpf_map_delete_elem(&FAM_TIMERS, k);
		goto fail;
	}
	live_add(t->real_id, t->active, 1);
	if (t->persist)
		tmpl_control(&t->tmpl, 1);
	c->flags |= CONN_F_TIMED;
	bpf_timer_start(&t->timer, age_left(now, c->last_seen, age_timeout(a, k->proto, c->state)), 0);
	return 0;
fail:
	stat_inc(STAT_AGE_FAILED);
	return -1;
}

/* retime follows a state change of established forward entry c (key k):
 * its count moves between ActiveConn and InActConn, and its timer is
 * due at the new state's timeout (a closing state's is shorter). An
 * entry without a timer gets one. */
static __always_inline void FAM_FN(retime)(FAM_KEY *k, FAM_VAL *c)
{
	const struct aging_cfg *a = aging_cfg();
	struct conn_timer *t;
	__u64 now_active, was;

	if (!a)
		return;
	t = bpf_map_lookup_elem(&FAM_TIMERS, k);
	if (!t) {
		FAM_FN(arm)(k, c, a, bpf_ktime_get_coarse_ns());
		return;
	}
	c->flags |= CONN_F_TIMED;
	now_active = age_active(k->proto, c->state);
	was = __sync_lock_test_and_set(&t->active, now_active);
	if (was == AGE_UNCOUNTED) {
		/* Its timer was letting it go: it stays let go. */
		t->active = AGE_UNCOUNTED;
		return;
	}
	if (was != now_active) {
		live_add(t->real_id, was, -1);
		live_add(t->real_id, now_active, 1);
	}
	bpf_timer_start(&t->timer, age_timeout(a, k->proto, c->state), 0);
}

/* age_new arms connection k just promoted to the established table. */
static __always_inline void FAM_FN(age_new)(FAM_KEY *k)
{
	const struct aging_cfg *a = aging_cfg();
	FAM_VAL *c;

	if (!a)
		return;
	c = bpf_map_lookup_elem(&FAM_EST, k);
	if (c && !(c->flags & CONN_F_REPLY))
		FAM_FN(arm)(k, c, a, bpf_ktime_get_coarse_ns());
}
