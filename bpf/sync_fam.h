/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* sync_fam.h: sync.h's event, written once for both families. sync.h
 * includes it twice, defining first FAM_FN(op), FAM_KEY, FAM_VAL and
 * FAM_V6. No include guard, on purpose. */

/* sync_note writes connection k's (forward entry c) event when sync.h
 * says IPVS would sync it now. */
static __always_inline void FAM_FN(sync_note)(const FAM_KEY *k, FAM_VAL *c)
{
	__u32 zero = 0, now;
	struct sync_cfg *cfg = bpf_map_lookup_elem(&sync_conf, &zero);
	struct sync_event *e;

	if (!cfg || !cfg->on || (c->flags & CONN_F_REPLY))
		return;
	if (k->proto == IPPROTO_TCP && !sync_state(c->state))
		return;
	now = bpf_ktime_get_coarse_ns() / 1000000000ULL;
	/* The state it was last synced in, plus one (0: never). */
	if (SYNC_STATE(c) == (__u8)(c->state + 1) && now - SYNC_AT(c) < cfg->refresh_s)
		return;
	e = bpf_ringbuf_reserve(&sync_events, sizeof(*e), 0);
	if (!e) {
		stat_inc(STAT_SYNC_LOST);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	__builtin_memcpy(e->saddr, &k->saddr, sizeof(k->saddr));
	__builtin_memcpy(e->daddr, &k->daddr, sizeof(k->daddr));
	__builtin_memcpy(e->nsaddr, &c->nsaddr, sizeof(c->nsaddr));
	__builtin_memcpy(e->ndaddr, &c->ndaddr, sizeof(c->ndaddr));
	e->sport = k->sport;
	e->dport = k->dport;
	e->nsport = c->nsport;
	e->ndport = c->ndport;
	e->real_id = c->real_id;
	e->svc_id = c->svc_id;
	e->proto = k->proto;
	e->state = c->state;
	e->flags = c->flags;
	e->v6 = FAM_V6;
	bpf_ringbuf_submit(e, 0);
	SYNC_AT(c) = now;
	SYNC_STATE(c) = c->state + 1;
}
