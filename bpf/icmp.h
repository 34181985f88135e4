/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* icmp.h: ICMP errors about tracked connections, as IPVS's
 * ip_vs_in_icmp and ip_vs_out_icmp handle them.
 *
 * An error is a destination-unreachable (fragmentation-needed among
 * them), source-quench or time-exceeded message quoting the IP header
 * and at least the ports of the packet that caused it. Two directions:
 *   toward a VIP: the quoted packet left from the VIP toward a client (a
 *     real's reply; a router on the client's path sends frag-needed to
 *     its source, the VIP, which is the director). The connection is the
 *     quoted tuple reversed; the error goes on to its real: as it is for
 *     DR (new MACs) and TUN (IP-in-IP), translated for NAT and FULLNAT so
 *     that the real sees its own packet quoted.
 *   from the inside (NAT, FULLNAT): the quoted packet went from the
 *     director to a real (a router on the real's side, or the real
 *     itself). The reply entry is the quoted tuple reversed; the error is
 *     translated to what the client sent and goes to the client from the
 *     VIP.
 * A translation rewrites the quoted header's addresses and ports and the
 * outer destination (and source where it would reveal an inside address
 * or where the real must see the local address), with the outer IP, the
 * quoted IP and the ICMP checksums updated incrementally; the quoted
 * TCP/UDP checksum is left as it is, as IPVS leaves it (a receiver never
 * checks it). Everything else ICMP passes to the kernel. */
#ifndef XIPVS_ICMP_H
#define XIPVS_ICMP_H

#include "conn.h"
#include "csum.h"
#include "lookup.h"
#include "parse.h"
#include "rewrite.h"
#include "stats.h"

#define ICMP_SOURCE_QUENCH 4
#define ICMP_TIME_EXCEEDED 11

/* What an ICMP error quotes. */
struct icmp_quote {
	struct icmp_frag *icmp; /* the ICMP header (8 bytes) */
	struct iphdr *ip;       /* the quoted IP header */
	__be16 *ports;          /* its source and destination ports */
};

/* parse_icmp_error finds the quoted packet of an ICMP error in p's
 * payload: a TCP or UDP packet with a whole IP header and its ports, not
 * a later fragment. Returns 0 or -1 (not an error we handle). */
static __always_inline int parse_icmp_error(void *cursor, void *data_end, struct pkt *p,
					    struct icmp_quote *q)
{
	struct icmp_frag *icmp = cursor;
	struct iphdr *ip;
	__u32 hlen;

	if ((void *)(icmp + 1) > data_end)
		return -1;
	if (icmp->type != ICMP_DEST_UNREACH && icmp->type != ICMP_SOURCE_QUENCH &&
	    icmp->type != ICMP_TIME_EXCEEDED)
		return -1;
	ip = (void *)(icmp + 1);
	if ((void *)(ip + 1) > data_end)
		return -1;
	if (ip->version != 4 || ip->ihl < 5)
		return -1;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return -1;
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return -1;
	hlen = ip->ihl * 4;
	/* The quote must lie within the outer IP payload, ports included. */
	if (sizeof(*icmp) + hlen + 4 > p->l4_len)
		return -1;
	q->ports = (void *)ip + hlen;
	if ((void *)(q->ports + 2) > data_end)
		return -1;
	q->icmp = icmp;
	q->ip = ip;
	return 0;
}

/* icmp_csum_ok reports whether an ICMP message of len bytes (the IP
 * payload) sums to zero. */
static __always_inline int icmp_csum_ok(struct xdp_md *ctx, void *icmp, __u32 len)
{
	__s64 s = csum_bytes(ctx, icmp - (void *)(long)ctx->data, len, 0);

	return s >= 0 && csum_fold((__u32)s) == 0;
}

/* icmp_word updates the ICMP checksum and *field for a 16-bit change. */
static __always_inline void icmp_set2(struct icmp_quote *q, __be16 *field, __be16 to)
{
	csum_replace2(&q->icmp->checksum, *field, to);
	*field = to;
}

/* icmp_set4 changes a 32-bit field of the quoted IP header: the quoted
 * header's checksum follows, and the ICMP checksum follows both. */
static __always_inline void icmp_set4(struct icmp_quote *q, __be32 *field, __be32 to)
{
	__u16 old_check = q->ip->check;

	csum_replace4(&q->ip->check, *field, to);
	csum_replace4(&q->icmp->checksum, *field, to);
	csum_replace2(&q->icmp->checksum, old_check, q->ip->check);
	*field = to;
}

/* icmp_translate makes the quoted packet the one entry c's traffic
 * leaves with, reversed: what the receiver of the error sent. The outer
 * destination becomes that sender; the outer source becomes src unless
 * src is 0. */
static __always_inline void icmp_translate(struct pkt *p, struct icmp_quote *q,
					   const struct conn_val *c, __be32 src)
{
	icmp_set4(q, &q->ip->saddr, c->ndaddr);
	icmp_set4(q, &q->ip->daddr, c->nsaddr);
	icmp_set2(q, &q->ports[0], c->ndport);
	icmp_set2(q, &q->ports[1], c->nsport);
	csum_replace4(&p->ip->check, p->ip->daddr, c->ndaddr);
	p->ip->daddr = c->ndaddr;
	if (src) {
		csum_replace4(&p->ip->check, p->ip->saddr, src);
		p->ip->saddr = src;
	}
}

/* icmp_to_real sends an error quoting a packet from a VIP on to the real
 * of the connection (forward entry c). */
static __always_inline int icmp_to_real(struct xdp_md *ctx, struct pkt *p, struct icmp_quote *q,
					struct conn_val *c, __u32 *stat)
{
	__u32 rid = c->real_id;
	struct real *r = bpf_map_lookup_elem(&reals, &rid);
	__u16 len = bpf_ntohs(p->ip->tot_len);

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
		break;
	case FWD_TUNNEL:
		if (r->mtu && len + IPIP_HLEN > r->mtu) {
			*stat = STAT_DROP_TOO_BIG;
			return XDP_DROP;
		}
		real_account(rid, len, 0);
		if (tun_encap(ctx, r) < 0) {
			*stat = STAT_DROP_ADJUST;
			return XDP_DROP;
		}
		*stat = STAT_ICMP_FORWARD;
		return egress(ctx, r->ifindex);
	case FWD_MASQ:
		icmp_translate(p, q, c, 0);
		break;
	case FWD_FULLNAT:
		/* The real sees the error from the local address: it may have
		 * no route back to the router that sent it. */
		icmp_translate(p, q, c, c->nsaddr);
		break;
	default:
		*stat = STAT_DROP_NO_REAL;
		return XDP_DROP;
	}
	real_account(rid, len, 0);
	set_macs(p->eth, r->mac, r->src_mac);
	*stat = STAT_ICMP_FORWARD;
	return egress(ctx, r->ifindex);
}

/* icmp_error handles an ICMP error (p's protocol is ICMP, not a
 * fragment). vip: the outer destination is a VIP. */
static __always_inline int icmp_error(struct xdp_md *ctx, struct pkt *p, void *cursor, int vip,
				      __u32 *stat)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct icmp_quote q;
	struct conn_key k = {};
	struct conn_val *c;
	int embryonic;

	if (parse_icmp_error(cursor, data_end, p, &q) < 0)
		return XDP_PASS;
	/* An error with a bad checksum (or a bad outer header) is the
	 * kernel's to drop, as icmp_rcv does: it tears nothing down and goes
	 * nowhere. */
	if (!ipv4_hdr_ok(ctx, p->ip) || !icmp_csum_ok(ctx, q.icmp, p->l4_len)) {
		*stat = STAT_PASS_MALFORMED;
		return XDP_PASS;
	}
	/* The connection the quoted packet belongs to, seen from its other
	 * end: the key of the packets that came the other way. */
	k.saddr = q.ip->daddr;
	k.daddr = q.ip->saddr;
	k.sport = q.ports[1];
	k.dport = q.ports[0];
	k.proto = q.ip->protocol;
	if (vip && q.ip->saddr == p->ip->daddr) {
		c = conn_lookup(&k, &embryonic);
		if (!c || (c->flags & CONN_F_REPLY))
			return XDP_PASS;
		conn_touch(c);
		return icmp_to_real(ctx, p, &q, c, stat);
	}
	/* From the inside: only toward a NAT or FULLNAT real's address. */
	if (!(addr_flags(q.ip->daddr) & ADDR_F_NAT_SOURCE))
		return XDP_PASS;
	c = conn_lookup(&k, &embryonic);
	if (!c || !(c->flags & CONN_F_REPLY))
		return XDP_PASS;
	conn_touch(c);
	real_account(c->real_id, bpf_ntohs(p->ip->tot_len), 1);
	/* To the client from the VIP, whoever sent it inside. */
	icmp_translate(p, &q, c, c->nsaddr);
	set_macs(p->eth, c->dmac, c->smac);
	*stat = STAT_ICMP_FORWARD;
	return egress(ctx, c->ifindex);
}

/* ICMPv6 errors about tracked connections, as IPVS's ip_vs_in_icmp_v6
 * and ip_vs_out_icmp_v6 (icmp.h says how for IPv4; the same two
 * directions here): destination unreachable, packet too big and time
 * exceeded, quoting a TCP or UDP packet right after its IPv6 header (a
 * quoted extension header is not followed: the error passes). The
 * ICMPv6 checksum covers the outer addresses through the pseudo-header,
 * so it follows every address changed, outer or quoted; the quoted
 * TCP/UDP checksum is left as it is, as IPVS leaves it. */
#define ICMPV6_DEST_UNREACH 1

#define ICMPV6_PKT_TOOBIG 2

#define ICMPV6_TIME_EXCEED 3

/* What an ICMPv6 error quotes. */
struct icmp6_quote {
	__u16 *sum;          /* the ICMPv6 checksum */
	struct ipv6hdr *ip6; /* the quoted IPv6 header */
	__be16 *ports;       /* its source and destination ports */
};

/* icmp6_csum_ok reports whether an ICMPv6 message (the upper-layer
 * payload, p->l4_len bytes at icmp) checks with its pseudo header. */
static __always_inline int icmp6_csum_ok(struct xdp_md *ctx, const struct pkt *p, void *icmp)
{
	__u32 *sa = (__u32 *)&p->ip6->saddr, *da = (__u32 *)&p->ip6->daddr;
	__u64 s = bpf_htonl(p->l4_len) + (__u32)bpf_htonl(IPPROTO_ICMPV6);
	__s64 sum;

#pragma unroll
	for (int i = 0; i < 4; i++)
		s += (__u64)sa[i] + da[i];
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	sum = csum_bytes(ctx, icmp - (void *)(long)ctx->data, p->l4_len, (__u32)s);
	return sum >= 0 && csum_fold((__u32)sum) == 0;
}

static __always_inline int parse_icmp6_error(void *cursor, void *data_end, const struct pkt *p,
					     struct icmp6_quote *q)
{
	__u8 *icmp = cursor;
	struct ipv6hdr *ip6;

	if ((void *)(icmp + 8) > data_end)
		return -1;
	if (icmp[0] != ICMPV6_DEST_UNREACH && icmp[0] != ICMPV6_PKT_TOOBIG && icmp[0] != ICMPV6_TIME_EXCEED)
		return -1;
	ip6 = (void *)(icmp + 8);
	if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
		return -1;
	if (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP)
		return -1;
	/* The quote must lie within the outer payload, ports included. */
	if (8 + sizeof(*ip6) + 4 > p->l4_len)
		return -1;
	q->ports = (void *)(ip6 + 1);
	if ((void *)(q->ports + 2) > data_end)
		return -1;
	q->sum = (void *)(icmp + 2);
	q->ip6 = ip6;
	return 0;
}

/* icmp6_set_addr changes an address of the message or of the outer
 * header; the ICMPv6 checksum follows. */
static __always_inline void icmp6_set_addr(struct icmp6_quote *q, void *field, const void *to)
{
	csum_replace16(q->sum, field, to, 0);
	addr6_copy(field, to);
}

static __always_inline void icmp6_set_port(struct icmp6_quote *q, __be16 *field, __be16 to)
{
	csum_replace2(q->sum, *field, to);
	*field = to;
}

/* icmp6_translate is icmp_translate: the quoted packet becomes the one
 * entry c's traffic leaves with, reversed; the outer destination its
 * sender, the outer source src unless NULL. */
static __always_inline void icmp6_translate(struct pkt *p, struct icmp6_quote *q,
					    const struct conn_val6 *c, const __u8 *src)
{
	icmp6_set_addr(q, &q->ip6->saddr, c->ndaddr);
	icmp6_set_addr(q, &q->ip6->daddr, c->nsaddr);
	icmp6_set_port(q, &q->ports[0], c->ndport);
	icmp6_set_port(q, &q->ports[1], c->nsport);
	icmp6_set_addr(q, &p->ip6->daddr, c->ndaddr);
	if (src)
		icmp6_set_addr(q, &p->ip6->saddr, src);
}

/* icmp6_to_real sends an error quoting a packet from a VIP on to the
 * real of the connection (forward entry c). */
static __always_inline int icmp6_to_real(struct xdp_md *ctx, struct pkt *p, struct icmp6_quote *q,
					 struct conn_val6 *c, __u32 *stat)
{
	__u32 rid = c->real_id;
	struct real *r = bpf_map_lookup_elem(&reals, &rid);
	__u32 len = ip6_len(p);

	if (!r || !(r->flags & REAL_F_IPV6)) {
		*stat = STAT_DROP_NO_REAL;
		return XDP_DROP;
	}
	if (!(r->flags & REAL_F_MAC_VALID)) {
		*stat = STAT_DROP_NO_MAC;
		return XDP_DROP;
	}
	real_account(rid, len, 0);
	switch (r->fwd) {
	case FWD_DROUTE:
		break;
	case FWD_TUNNEL:
		if (r->mtu && len + IP6IP6_HLEN > r->mtu) {
			*stat = STAT_DROP_TOO_BIG;
			return XDP_DROP;
		}
		if (tun6_encap(ctx, r) < 0) {
			*stat = STAT_DROP_ADJUST;
			return XDP_DROP;
		}
		*stat = STAT_ICMP_FORWARD;
		return egress(ctx, r->ifindex);
	case FWD_MASQ:
		icmp6_translate(p, q, c, NULL);
		break;
	case FWD_FULLNAT:
		/* The real sees the error from the local address: it may have
		 * no route back to the router that sent it. */
		icmp6_translate(p, q, c, c->nsaddr);
		break;
	default:
		*stat = STAT_DROP_NO_REAL;
		return XDP_DROP;
	}
	set_macs(p->eth, r->mac, r->src_mac);
	*stat = STAT_ICMP_FORWARD;
	return egress(ctx, r->ifindex);
}

/* icmp6_error handles an ICMPv6 message (p's protocol is ICMPv6, not a
 * fragment); anything but an error about a connection passes, neighbour
 * discovery first of all. vip: the outer destination is a VIP. */
static __always_inline int icmp6_error(struct xdp_md *ctx, struct pkt *p, void *cursor, int vip, __u32 *stat)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct icmp6_quote q;
	struct conn_key6 k = {};
	struct conn_val6 *c;
	int embryonic;

	if (parse_icmp6_error(cursor, data_end, p, &q) < 0)
		return XDP_PASS;
	/* A bad checksum is the kernel's to drop (icmpv6_rcv). */
	if (!icmp6_csum_ok(ctx, p, cursor)) {
		*stat = STAT_PASS_MALFORMED;
		return XDP_PASS;
	}
	/* The connection, seen from the quoted packet's other end. */
	addr6_copy(k.saddr, &q.ip6->daddr);
	addr6_copy(k.daddr, &q.ip6->saddr);
	k.sport = q.ports[1];
	k.dport = q.ports[0];
	k.proto = q.ip6->nexthdr;
	if (vip && addr6_eq(&q.ip6->saddr, &p->ip6->daddr)) {
		c = conn6_lookup(&k, &embryonic);
		if (!c || (c->flags & CONN_F_REPLY))
			return XDP_PASS;
		conn_touch(CONN4(c));
		return icmp6_to_real(ctx, p, &q, c, stat);
	}
	/* From the inside: only toward a NAT or FULLNAT real's address. */
	if (!(addr6_flags(&q.ip6->daddr) & ADDR_F_NAT_SOURCE))
		return XDP_PASS;
	c = conn6_lookup(&k, &embryonic);
	if (!c || !(c->flags & CONN_F_REPLY))
		return XDP_PASS;
	conn_touch(CONN4(c));
	real_account(c->real_id, ip6_len(p), 1);
	/* To the client from the VIP, whoever sent it inside. */
	icmp6_translate(p, &q, c, c->nsaddr);
	set_macs(p->eth, c->dmac, c->smac);
	*stat = STAT_ICMP_FORWARD;
	return egress(ctx, c->ifindex);
}

#endif
