/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* forward.h: a packet of a known connection, forwarded: toward its real
 * server (DR new Ethernet addresses, TUN an outer header, NAT and FULLNAT
 * rewritten, TOA added on FULLNAT's handshake-completing ACK, SYN proxy
 * adjustments applied) or, for a real's reply (NAT, FULLNAT), un-NATed
 * back to the client the way its packets came. IPv4, then IPv6. */
#ifndef XIPVS_FORWARD_H
#define XIPVS_FORWARD_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "conn.h"
#include "aging.h"
#include "frag.h"
#include "icmp.h"
#include "lookup.h"
#include "rewrite.h"
#include "stats.h"
#include "synproxy.h"

/* synproxy_forward and synproxy_reply apply a SYN-proxied connection's
 * adjustments (its seqadjs entry under key k) to a TCP packet. */
static __always_inline void synproxy_adjust(struct xdp_md *ctx, struct pkt *p, struct conn_key *k, int reply)
{
	struct seqadj *a = bpf_map_lookup_elem(&seqadjs, k);
	__u32 th_off = (void *)p->l4 - (void *)(long)ctx->data;
	struct seqadj adj;

	if (!a || p->proto != IPPROTO_TCP || !p->l4)
		return;
	adj = *a;
	xipvs_seqadj(ctx, th_off, &adj, reply);
}

static __always_inline void synproxy_forward(struct xdp_md *ctx, struct pkt *p, struct conn_key *k)
{
	synproxy_adjust(ctx, p, k, 0);
}

static __always_inline void synproxy_reply(struct xdp_md *ctx, struct pkt *p, struct conn_key *k)
{
	synproxy_adjust(ctx, p, k, 1);
}

/* forward_tun sends a packet of a TUN connection: MSS clamped on SYNs,
 * ICMP fragmentation-needed for a DF packet the tunnel cannot carry,
 * then the outer header. */
static __always_inline int forward_tun(struct xdp_md *ctx, struct pkt *p, const struct real *r,
				       __u32 *stat)
{
	__u16 len = bpf_ntohs(p->ip->tot_len);
	__u16 mtu = r->mtu;

	if (p->proto == IPPROTO_TCP && (p->tcp_flags & TCP_F_SYN) && mtu > IPIP_HLEN + 40)
		clamp_mss(ctx, p->l4, mtu - IPIP_HLEN - 40, 0);
	if (mtu && len + IPIP_HLEN > mtu) {
		if (!(p->ip->frag_off & bpf_htons(IP_DF))) {
			*stat = STAT_DROP_TOO_BIG;
			return XDP_DROP;
		}
		if (icmp_frag_needed(ctx, mtu - IPIP_HLEN) < 0) {
			*stat = STAT_DROP_ADJUST;
			return XDP_DROP;
		}
		*stat = STAT_ICMP_FRAG_NEEDED;
		return XDP_TX;
	}
	if (tun_encap(ctx, r) < 0) {
		*stat = STAT_DROP_ADJUST;
		return XDP_DROP;
	}
	*stat = STAT_FORWARD;
	return egress(ctx, r->ifindex);
}

/* forward_real sends a packet of a known connection toward its real
 * server. Returns an XDP action. */
static __always_inline int forward_real(struct xdp_md *ctx, struct pkt *p, struct conn_key *k,
					struct conn_val *c, __u32 *stat)
{
	__u32 rid = c->real_id;
	struct real *r = bpf_map_lookup_elem(&reals, &rid);
	__u8 old_state = c->state;

	if (!r || r->addr == 0) {
		*stat = STAT_DROP_NO_REAL;
		return XDP_DROP;
	}
	if (!(r->flags & REAL_F_MAC_VALID)) {
		*stat = STAT_DROP_NO_MAC;
		return XDP_DROP;
	}
	switch (r->fwd) {
	case FWD_DROUTE:
		conn_update(c, p, DIR_INPUT_ONLY);
		set_macs(p->eth, r->mac, r->src_mac);
		break;
	case FWD_TUNNEL:
		conn_update(c, p, DIR_INPUT_ONLY);
		return forward_tun(ctx, p, r, stat);
	case FWD_MASQ:
		conn_update(c, p, DIR_INPUT);
		nat_rewrite(ctx, p, c);
		set_macs(p->eth, r->mac, r->src_mac);
		if (c->flags & CONN_F_SYNPROXY)
			synproxy_forward(ctx, p, k);
		break;
	case FWD_FULLNAT: {
		__be32 caddr = p->ip->saddr;
		__be16 cport = p->sport;

		conn_update(c, p, DIR_INPUT);
		nat_rewrite(ctx, p, c);
		set_macs(p->eth, r->mac, r->src_mac);
		if (c->flags & CONN_F_SYNPROXY)
			synproxy_forward(ctx, p, k);
		/* The toa module reads the option from the ACK that completes
		 * the handshake (SYN_RECV -> ESTABLISHED here). */
		if (p->proto == IPPROTO_TCP && old_state == TCPS_SYN_RECV &&
		    (p->tcp_flags & (TCP_F_SYN | TCP_F_RST | TCP_F_ACK)) == TCP_F_ACK) {
			/* A fragment cannot grow: the TOA would move every
			 * later fragment's offset. */
			int err = ip_fragmented(p) ? -1 : toa_insert(ctx, caddr, cport);

			if (err == -2) {
				*stat = STAT_DROP_ADJUST;
				return XDP_DROP;
			}
			if (err < 0)
				stat_inc(STAT_TOA_SKIPPED);
		}
		break;
	}
	default:
		*stat = STAT_DROP_NO_REAL;
		return XDP_DROP;
	}
	*stat = STAT_FORWARD;
	return egress(ctx, r->ifindex);
}

/* forward is forward_real with the real's traffic accounted. */
static __always_inline int forward(struct xdp_md *ctx, struct pkt *p, struct conn_key *k,
				   struct conn_val *c, __u32 *stat)
{
	__u64 len = bpf_ntohs(p->ip->tot_len);
	int act = forward_real(ctx, p, k, c, stat);

	if (*stat == STAT_FORWARD)
		real_account(c->real_id, len, 0);
	return act;
}

/* forward_fullnat6 sends a packet of an IPv6 FULLNAT connection: both
 * ends rewritten, and on the ACK that completes the handshake the TOA
 * option with the client's address, which the toa module reads. */
static __always_inline int forward_fullnat6(struct xdp_md *ctx, struct pkt *p, struct conn_val6 *c,
					    const struct real *r, __u32 *stat)
{
	__u8 old_state = c->state;
	__be16 cport = p->sport;
	__u8 caddr[16];

	addr6_copy(caddr, &p->ip6->saddr);
	conn_update(CONN4(c), p, DIR_INPUT);
	real_account(c->real_id, ip6_len(p), 0);
	nat6_rewrite(ctx, p, c);
	set_macs(p->eth, r->mac, r->src_mac);
	if (p->proto == IPPROTO_TCP && old_state == TCPS_SYN_RECV &&
	    (p->tcp_flags & (TCP_F_SYN | TCP_F_RST | TCP_F_ACK)) == TCP_F_ACK) {
		/* A fragment cannot grow (frag.h). */
		int err = ip_fragmented(p) ? -1 : toa6_insert(ctx, caddr, cport);

		if (err == -2) {
			*stat = STAT_DROP_ADJUST;
			return XDP_DROP;
		}
		if (err < 0)
			stat_inc(STAT_TOA_SKIPPED);
	}
	*stat = STAT_FORWARD;
	return egress(ctx, r->ifindex);
}

/* forward_tun6 is forward_tun for IPv6 in IPv6: the MSS of a SYN clamped
 * to what fits the tunnel (MTU - 40 - 60), a packet too big for it
 * answered with Packet Too Big (IPv6 routers never fragment), else the
 * outer header. */
static __always_inline int forward_tun6(struct xdp_md *ctx, struct pkt *p, const struct real *r,
					__u32 *stat)
{
	__u32 len = ip6_len(p);
	__u32 mtu = r->mtu;

	if (p->proto == IPPROTO_TCP && (p->tcp_flags & TCP_F_SYN) && mtu > IP6IP6_HLEN + 60)
		clamp_mss(ctx, p->l4, mtu - IP6IP6_HLEN - 60, 0);
	if (mtu && len + IP6IP6_HLEN > mtu) {
		/* A tunnel that cannot carry the minimum MTU is misconfigured
		 * (xipvsd warns): there is no smaller MTU to announce. */
		if (mtu < IP6IP6_HLEN + IPV6_MIN_MTU) {
			*stat = STAT_DROP_TOO_BIG;
			return XDP_DROP;
		}
		if (icmp6_too_big(ctx, mtu - IP6IP6_HLEN) < 0) {
			*stat = STAT_DROP_ADJUST;
			return XDP_DROP;
		}
		*stat = STAT_ICMP_FRAG_NEEDED;
		return XDP_TX;
	}
	if (tun6_encap(ctx, r) < 0) {
		*stat = STAT_DROP_ADJUST;
		return XDP_DROP;
	}
	*stat = STAT_FORWARD;
	return egress(ctx, r->ifindex);
}

/* forward6 sends a packet of a known IPv6 connection to its real. */
static __always_inline int forward6(struct xdp_md *ctx, struct pkt *p, struct conn_val6 *c, __u32 *stat)
{
	__u32 rid = c->real_id;
	struct real *r = bpf_map_lookup_elem(&reals, &rid);

	if (!r || !(r->flags & REAL_F_IPV6)) {
		*stat = STAT_DROP_NO_REAL;
		return XDP_DROP;
	}
	if (!(r->flags & REAL_F_MAC_VALID)) {
		*stat = STAT_DROP_NO_MAC;
		return XDP_DROP;
	}
	switch (r->fwd) {
	case FWD_DROUTE:
		conn_update(CONN4(c), p, DIR_INPUT_ONLY);
		break;
	case FWD_MASQ:
		conn_update(CONN4(c), p, DIR_INPUT);
		nat6_rewrite(ctx, p, c);
		break;
	case FWD_TUNNEL:
		conn_update(CONN4(c), p, DIR_INPUT_ONLY);
		real_account(rid, ip6_len(p), 0);
		return forward_tun6(ctx, p, r, stat);
	case FWD_FULLNAT:
		return forward_fullnat6(ctx, p, c, r, stat);
	default:
		*stat = STAT_DROP_NO_REAL;
		return XDP_DROP;
	}
	set_macs(p->eth, r->mac, r->src_mac);
	real_account(rid, ip6_len(p), 0);
	*stat = STAT_FORWARD;
	return egress(ctx, r->ifindex);
}

/* A real's reply, once for both families (reply_fam.h): reply, reply6. */
#define FAM_NAME(fn) fn
#define FAM_KEY struct conn_key
#define FAM_VAL struct conn_val
#define FAM_CONN(op) conn_##op
#define FAM_IP_LEN(p) bpf_ntohs((p)->ip->tot_len)
#define FAM_NAT_REWRITE nat_rewrite
#define FAM_TOA_LEN TCPOLEN_TOA
#define FAM_SYNPROXY 1
#include "reply_fam.h"
#include "fam_undef.h"

#define FAM_NAME(fn) fn##6
#define FAM_KEY struct conn_key6
#define FAM_VAL struct conn_val6
#define FAM_CONN(op) conn6_##op
#define FAM_IP_LEN(p) ip6_len(p)
#define FAM_NAT_REWRITE nat6_rewrite
#define FAM_TOA_LEN TCPOLEN_TOA6
#define FAM_SYNPROXY 0 /* no SYN proxy for IPv6 */
#include "reply_fam.h"
#include "fam_undef.h"

#endif
