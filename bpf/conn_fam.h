/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* conn_fam.h: the connection tables' operations, written once for both
 * families. conn.h includes it twice, defining first:
 *   FAM_FN(op)       the operation's name in the family: conn_op, conn6_op
 *   FAM_KEY, FAM_VAL the family's key and value (struct conn_key[6], ...)
 *   FAM_EMB, FAM_EST its embryonic LRU and its established table
 *   FAM_ADDR_SET(a)  whether address a (a value's nsaddr) is set
 * Every body is __always_inline: each family's code is what it was when
 * written out twice, with its own maps (no pointer the verifier must
 * follow to one of two). No include guard, on purpose. */

/* lookup finds a connection entry: established first, then embryonic
 * (*embryonic says which). */
static __always_inline FAM_VAL *FAM_FN(lookup)(FAM_KEY *k, int *embryonic)
{
	FAM_VAL *c = bpf_map_lookup_elem(&FAM_EST, k);

	*embryonic = 0;
	if (c)
		return c;
	c = bpf_map_lookup_elem(&FAM_EMB, k);
	*embryonic = c != NULL;
	return c;
}

/* peer_key is the key of the other entry of a NAT or FULLNAT pair. */
static __always_inline void FAM_FN(peer_key)(const FAM_VAL *c, __u8 proto, FAM_KEY *pk)
{
	__builtin_memcpy(&pk->saddr, &c->ndaddr, sizeof(pk->saddr));
	__builtin_memcpy(&pk->daddr, &c->nsaddr, sizeof(pk->daddr));
	pk->sport = c->ndport;
	pk->dport = c->nsport;
	pk->proto = proto;
	pk->pad[0] = pk->pad[1] = pk->pad[2] = 0;
}

/* promote moves connection k (entry c) from the embryonic table to the
 * established one, its reply entry first (NAT, FULLNAT). When the
 * established table is full the connection stays embryonic, counted. */
static __always_inline void FAM_FN(promote)(FAM_KEY *k, FAM_VAL *c)
{
	FAM_KEY rk = {};
	long err;

	if (FAM_ADDR_SET(c->nsaddr)) {
		FAM_VAL *r;

		FAM_FN(peer_key)(c, k->proto, &rk);
		r = bpf_map_lookup_elem(&FAM_EMB, &rk);
		if (r && (r->flags & CONN_F_REPLY)) {
			err = bpf_map_update_elem(&FAM_EST, &rk, r, BPF_NOEXIST);
			if (err && err != -17 /* EEXIST: promoted already */) {
				stat_inc(STAT_EST_FULL);
				return;
			}
			bpf_map_delete_elem(&FAM_EMB, &rk);
		}
	}
	err = bpf_map_update_elem(&FAM_EST, k, c, BPF_NOEXIST);
	if (err && err != -17) {
		stat_inc(STAT_EST_FULL);
		return;
	}
	bpf_map_delete_elem(&FAM_EMB, k);
}

/* drop_est removes an established connection (and its reply entry)
 * whose tuple a new connection takes over (conn_reused). */
static __always_inline void FAM_FN(drop_est)(FAM_KEY *k, FAM_VAL *c)
{
	if (FAM_ADDR_SET(c->nsaddr)) {
		FAM_KEY rk = {};

		FAM_FN(peer_key)(c, k->proto, &rk);
		bpf_map_delete_elem(&FAM_EST, &rk);
	}
	bpf_map_delete_elem(&FAM_EST, k);
}
