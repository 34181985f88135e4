/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* aging_fam.h: aging.h's counts and events, written once for both
 * families. aging.h includes it twice, defining first:
 *   FAM_FN(op)        the operation's name in the family: conn_op, conn6_op
 *   FAM_KEY, FAM_VAL  the connection key and value
 *   FAM_EST           the established table
 *   FAM_V6            0 or 1
 *   FAM_ADDR_SET(a)   whether address a (a value's nsaddr) is set
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

/* control_of adds n to the controls of the template a connection of
 * service sid with flags and key k (on the stack) follows, when it is
 * persistent and the template exists. A global function: the verifier
 * checks it once, not at every caller. */
__noinline int FAM_FN(control_of)(const FAM_KEY *k, __u32 sid, __u32 flags, __s32 n)
{
	struct sweep_persist *p;
	struct sweep_tmpl t = {};
	struct tmpl_val *v;

	if (!k || !(flags & CONN_F_PERSIST))
		return 0;
	p = bpf_map_lookup_elem(&sweep_persistent, &sid);
	if (!p)
		return 0;
	t.svc_id = sid;
	t.vport = p->port_zero ? 0 : k->dport;
	t.v6 = FAM_V6;
	tmpl_masked((__be32 *)t.client, (const __be32 *)&k->saddr, sizeof(k->saddr), p->mask);
	v = bpf_map_lookup_elem(&tmpls, &t);
	if (v)
		__sync_fetch_and_add(&v->controls, n);
	return 0;
}

/* control adds n to the controls of the template connection c (key k)
 * follows (control_of). */
static __always_inline void FAM_FN(control)(const FAM_KEY *k, const FAM_VAL *c, __s32 n)
{
	FAM_KEY kc;

	if (!(c->flags & CONN_F_PERSIST))
		return;
	__builtin_memcpy(&kc, k, sizeof(kc));
	FAM_FN(control_of)(&kc, c->svc_id, c->flags, n);
}

/* count counts established forward entry c (key k) in: its real's
 * ActiveConn or InActConn by its state (recorded in its flags), its
 * template's controls. */
static __always_inline void FAM_FN(count)(const FAM_KEY *k, FAM_VAL *c)
{
	__u32 kind = age_active(k->proto, c->state);

	live_add(c->real_id, kind, 1);
	FAM_FN(control)(k, c, 1);
	c->flags |= CONN_F_COUNTED | (kind == AGE_ACTIVE ? CONN_F_COUNTED_ACTIVE : 0);
}

/* recount moves counted entry c (key k) to the count its state belongs
 * to, when it changed (a state change, here or written by Go). */
static __always_inline void FAM_FN(recount)(const FAM_KEY *k, FAM_VAL *c)
{
	__u32 was = c->flags & CONN_F_COUNTED_ACTIVE ? AGE_ACTIVE : AGE_INACTIVE;
	__u32 kind = age_active(k->proto, c->state);

	if (was == kind)
		return;
	live_add(c->real_id, was, -1);
	live_add(c->real_id, kind, 1);
	if (kind == AGE_ACTIVE)
		c->flags |= CONN_F_COUNTED_ACTIVE;
	else
		c->flags &= ~CONN_F_COUNTED_ACTIVE;
}

/* age_note stamps established forward entry c (key k) and tells Go's
 * index about it. */
static __always_inline void FAM_FN(age_note)(const FAM_KEY *k, FAM_VAL *c)
{
	struct age_event *e = bpf_ringbuf_reserve(&age_events, sizeof(*e), 0);

	if (!e) {
		stat_inc(STAT_AGE_LOST);
		return;
	}
	c->hits++;
	__builtin_memset(e, 0, sizeof(*e));
	__builtin_memcpy(e->key, k, sizeof(*k));
	e->v6 = FAM_V6;
	e->state = c->state;
	e->stamp = c->hits;
	bpf_ringbuf_submit(e, 0);
}

/* age_new counts connection k, just promoted to the established table,
 * and tells Go's index. */
static __always_inline void FAM_FN(age_new)(FAM_KEY *k)
{
	FAM_VAL *c;

	if (!aging_cfg())
		return;
	c = bpf_map_lookup_elem(&FAM_EST, k);
	if (!c || (c->flags & (CONN_F_REPLY | CONN_F_COUNTED)))
		return;
	FAM_FN(count)(k, c);
	FAM_FN(age_note)(k, c);
}

/* retime follows a state change of established forward entry c (key k):
 * its count moves between ActiveConn and InActConn, and Go's index
 * learns its new deadline (a closing state's is sooner). */
static __always_inline void FAM_FN(retime)(FAM_KEY *k, FAM_VAL *c)
{
	if (!aging_cfg() || !(c->flags & CONN_F_COUNTED))
		return; /* the reaper or a full sweep counts it */
	FAM_FN(recount)(k, c);
	FAM_FN(age_note)(k, c);
}

/* forget uncounts established forward entry c (key k), which is being
 * deleted. */
static __always_inline void FAM_FN(forget)(const FAM_KEY *k, FAM_VAL *c)
{
	if (!(c->flags & CONN_F_COUNTED))
		return;
	live_add(c->real_id, c->flags & CONN_F_COUNTED_ACTIVE ? AGE_ACTIVE : AGE_INACTIVE, -1);
	FAM_FN(control)(k, c, -1);
	c->flags &= ~(CONN_F_COUNTED | CONN_F_COUNTED_ACTIVE);
}
