/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* reply_fam.h: a real server's reply (NAT, FULLNAT), written once for
 * both families. forward.h includes it twice, defining first:
 *   FAM_NAME(fn)      the function's name in the family: fn, fn##6
 *   FAM_KEY, FAM_VAL  the connection key and value
 *   FAM_CONN(op)      conn.h's operation for the family (conn_op, conn6_op)
 *   FAM_IP_LEN(p)     the packet's IP length, as IPVS counts it
 *   FAM_NAT_REWRITE   rewrite.h's address and port rewrite for the family
 *   FAM_TOA_LEN       the TOA option's length (TCPOLEN_TOA, TCPOLEN_TOA6)
 *   FAM_SYNPROXY      whether the family's connections can be SYN-proxied
 * No include guard, on purpose. */

/* reply un-NATs a real server's reply (NAT, FULLNAT) back to VIP:VPORT ->
 * client and sends it out the way the client's packets came in. TCP
 * flags that can move the state are applied to the forward entry, with
 * IPVS's OUTPUT table. */
static __always_inline int FAM_NAME(reply)(struct xdp_md *ctx, struct pkt *p, FAM_KEY *k, FAM_VAL *c, __u32 *stat)
{
	conn_touch((struct conn_val *)c);
	if (p->proto == IPPROTO_TCP) {
		if (p->tcp_flags & (TCP_F_SYN | TCP_F_FIN | TCP_F_RST)) {
			FAM_KEY fk = {};
			FAM_VAL *f;
			int embryonic;

			FAM_CONN(peer_key)(c, p->proto, &fk);
			f = FAM_CONN(lookup)(&fk, &embryonic);
			if (f) {
				__u8 was = f->state;

				conn_state((struct conn_val *)f, p, DIR_OUTPUT);
				if (!embryonic && f->state != was)
					FAM_CONN(retime)(&fk, f);
			}
		}
		/* FULLNAT: the client's segments must leave room for TOA. */
		if ((c->flags & CONN_F_FULLNAT) && (p->tcp_flags & TCP_F_SYN))
			clamp_mss(ctx, p->l4, 0xffff, FAM_TOA_LEN);
	}
	real_account(c->real_id, FAM_IP_LEN(p), 1);
	FAM_NAT_REWRITE(ctx, p, c);
	if (FAM_SYNPROXY && (c->flags & CONN_F_SYNPROXY))
		synproxy_reply(ctx, p, (struct conn_key *)k);
	set_macs(p->eth, c->dmac, c->smac);
	*stat = STAT_REPLY;
	return egress(ctx, c->ifindex);
}
