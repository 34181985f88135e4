/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* director6.h: the director for IPv6, included by director.bpf.c after
 * the IPv4 path whose pieces it shares (the TCP state machine of conn.h,
 * the pick sequences, the slow-path handoff). Its tables are IPv6's own:
 * services6, conns6 (embryonic, an LRU) and est_conns6 (established).
 * DR (new Ethernet addresses), TUN (IPv6 in IPv6), NAT (addresses and
 * ports rewritten, replies un-NATed) and FULLNAT (both ends rewritten,
 * TOA for IPv6 added) are forwarded here, with the
 * ICMPv6 errors about their connections; anything else of a VIP goes to
 * the slow path, and the rest of ICMPv6 (neighbour discovery first of
 * all) passes to the kernel. */
#ifndef XIPVS_DIRECTOR6_H
#define XIPVS_DIRECTOR6_H

#include <stddef.h>

/* conn.h's state functions take a conn_val; an IPv6 entry begins with
 * the same fields at the same offsets (asserted in structs.h). */
#define CONN4(c6) ((struct conn_val *)(c6))

static __always_inline void addr6_copy(__u8 *dst, const void *src)
{
	__builtin_memcpy(dst, src, 16);
}

static __always_inline int addr6_eq(const void *a, const void *b)
{
	const __u32 *x = a, *y = b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

static __always_inline int addr6_zero(const void *a)
{
	const __u32 *x = a;

	return (x[0] | x[1] | x[2] | x[3]) == 0;
}

static __always_inline __u8 addr6_flags(const void *a)
{
	__u32 i = addr6_slot(a);
	__u8 *f = bpf_map_lookup_elem(&addr_filter, &i);

	return f ? *f : 0;
}

/* csum_replace16 updates *sum for a 16-byte field going from -> to. */
static __always_inline void csum_replace16(__u16 *sum, const void *from, const void *to, int udp)
{
	const __u32 *f = from, *t = to;
	__u32 s = (__u16)~*sum;

#pragma unroll
	for (int i = 0; i < 4; i++) {
		s = csum_add32(s, ~f[i]);
		s = csum_add32(s, t[i]);
	}
	*sum = csum_fold(s);
	if (udp && *sum == 0)
		*sum = 0xffff;
}

static __always_inline struct conn_val6 *conn6_lookup(struct conn_key6 *k, int *embryonic)
{
	struct conn_val6 *c = bpf_map_lookup_elem(&est_conns6, k);

	*embryonic = 0;
	if (c)
		return c;
	c = bpf_map_lookup_elem(&conns6, k);
	*embryonic = c != NULL;
	return c;
}

static __always_inline void conn6_peer_key(const struct conn_val6 *c, __u8 proto, struct conn_key6 *pk)
{
	addr6_copy(pk->saddr, c->ndaddr);
	addr6_copy(pk->daddr, c->nsaddr);
	pk->sport = c->ndport;
	pk->dport = c->nsport;
	pk->proto = proto;
	pk->pad[0] = pk->pad[1] = pk->pad[2] = 0;
}

/* conn6_promote is conn_promote for IPv6 tables. */
static __always_inline void conn6_promote(struct conn_key6 *k, struct conn_val6 *c)
{
	struct conn_key6 rk = {};
	long err;

	if (!addr6_zero(c->nsaddr)) {
		struct conn_val6 *r;

		conn6_peer_key(c, k->proto, &rk);
		r = bpf_map_lookup_elem(&conns6, &rk);
		if (r && (r->flags & CONN_F_REPLY)) {
			err = bpf_map_update_elem(&est_conns6, &rk, r, BPF_NOEXIST);
			if (err && err != -17) {
				stat_inc(STAT_EST_FULL);
				return;
			}
			bpf_map_delete_elem(&conns6, &rk);
		}
	}
	err = bpf_map_update_elem(&est_conns6, k, c, BPF_NOEXIST);
	if (err && err != -17) {
		stat_inc(STAT_EST_FULL);
		return;
	}
	bpf_map_delete_elem(&conns6, k);
}

static __always_inline void conn6_drop_est(struct conn_key6 *k, struct conn_val6 *c)
{
	if (!addr6_zero(c->nsaddr)) {
		struct conn_key6 rk = {};

		conn6_peer_key(c, k->proto, &rk);
		bpf_map_delete_elem(&est_conns6, &rk);
	}
	bpf_map_delete_elem(&est_conns6, k);
}

/* nat6_rewrite gives the packet c's tuple; IPv6 has no header checksum,
 * the TCP/UDP one covers the addresses through the pseudo-header. */
static __always_inline void nat6_rewrite(struct xdp_md *ctx, struct pkt *p, const struct conn_val6 *c)
{
	struct ipv6hdr *ip6 = p->ip6;
	struct l4_fields f;

	if (!p->l4 || l4_fields(ctx, p, &f) < 0) {
		/* No transport header here: the addresses alone. */
		addr6_copy((__u8 *)&ip6->saddr, c->nsaddr);
		addr6_copy((__u8 *)&ip6->daddr, c->ndaddr);
		return;
	}
	if (!addr6_eq(&ip6->saddr, c->nsaddr)) {
		csum_replace16(f.sum, &ip6->saddr, c->nsaddr, f.udp);
		addr6_copy((__u8 *)&ip6->saddr, c->nsaddr);
	}
	if (!addr6_eq(&ip6->daddr, c->ndaddr)) {
		csum_replace16(f.sum, &ip6->daddr, c->ndaddr, f.udp);
		addr6_copy((__u8 *)&ip6->daddr, c->ndaddr);
	}
	nat_ports(&f, c->nsport, c->ndport);
}

/* ip6_len is what IPVS counts of an IPv6 packet: header and payload. */
static __always_inline __u64 ip6_len(const struct pkt *p)
{
	return sizeof(struct ipv6hdr) + bpf_ntohs(p->ip6->payload_len);
}

/* tun6_encap puts an outer IPv6 header (next header 41, director ->
 * real) in front of the packet, as IPVS's ip_vs_tunnel_xmit_v6: the
 * inner traffic class and hop limit, flow label 0. The Ethernet header
 * is rewritten toward r's next hop. Returns 0 or -1. */
static __always_inline int tun6_encap(struct xdp_md *ctx, const struct real *r)
{
	void *data, *data_end;
	struct ethhdr *eth;
	struct ipv6hdr *outer, *inner;

	if (bpf_xdp_adjust_head(ctx, -IP6IP6_HLEN))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	outer = (void *)(eth + 1);
	inner = (void *)(outer + 1);
	if ((void *)(inner + 1) > data_end)
		return -1;
	set_macs(eth, r->mac, r->src_mac);
	eth->h_proto = bpf_htons(ETH_P_IPV6);
	/* Version and traffic class from the inner header, no flow label. */
	*(__be32 *)outer = *(__be32 *)inner & bpf_htonl(0xfff00000);
	outer->payload_len = bpf_htons(bpf_ntohs(inner->payload_len) + sizeof(*inner));
	outer->nexthdr = IPPROTO_IPV6;
	outer->hop_limit = inner->hop_limit;
	addr6_copy((__u8 *)&outer->saddr, r->tun_src6);
	addr6_copy((__u8 *)&outer->daddr, r->addr6);
	return 0;
}

#define IPV6_MIN_MTU 1280
/* An ICMPv6 error quotes as much of the packet as fits the minimum MTU. */
#define PTB_QUOTE (IPV6_MIN_MTU - 40 - 8)
#define PTB_FRAME_LEN (sizeof(struct ethhdr) + 40 + 8 + PTB_QUOTE)

/* icmp6_too_big turns a packet too big for the tunnel into an ICMPv6
 * Packet Too Big (type 2, MTU mtu) back to its sender, from the address
 * it was sent to, out the way it came, quoting the first PTB_QUOTE bytes
 * of the packet (the frame must hold that many). Returns 0 or -1. */
static __always_inline int icmp6_too_big(struct xdp_md *ctx, __u32 mtu)
{
	const int grow = sizeof(struct ipv6hdr) + 8;
	void *data, *data_end;
	struct ethhdr *eth, *oeth;
	struct ipv6hdr *ip6, *oip6;
	__u8 dmac[ETH_ALEN], smac[ETH_ALEN];
	__u32 saddr[4], daddr[4], s = 0;
	__u8 *icmp;
	__s64 sum;

	if (bpf_xdp_adjust_head(ctx, -grow))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + PTB_FRAME_LEN > data_end)
		return -1;
	/* The old Ethernet header's bytes are reused by the new headers. */
	oeth = data + grow;
	oip6 = (void *)(oeth + 1);
	__builtin_memcpy(dmac, oeth->h_source, ETH_ALEN);
	__builtin_memcpy(smac, oeth->h_dest, ETH_ALEN);
	__builtin_memcpy(saddr, &oip6->daddr, 16);
	__builtin_memcpy(daddr, &oip6->saddr, 16);

	eth = data;
	ip6 = (void *)(eth + 1);
	icmp = (void *)(ip6 + 1);
	set_macs(eth, dmac, smac);
	eth->h_proto = bpf_htons(ETH_P_IPV6);
	*(__be32 *)ip6 = bpf_htonl(0x60000000);
	ip6->payload_len = bpf_htons(8 + PTB_QUOTE);
	ip6->nexthdr = IPPROTO_ICMPV6;
	ip6->hop_limit = 64;
	__builtin_memcpy(&ip6->saddr, saddr, 16);
	__builtin_memcpy(&ip6->daddr, daddr, 16);
	icmp[0] = 2; /* ICMPV6_PKT_TOOBIG */
	icmp[1] = 0;
	icmp[2] = icmp[3] = 0;
	*(__be32 *)(icmp + 4) = bpf_htonl(mtu);

	if (bpf_xdp_adjust_tail(ctx, (int)PTB_FRAME_LEN - (int)(data_end - data)))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + PTB_FRAME_LEN > data_end)
		return -1;
	/* The pseudo-header, then the message in three pieces (the helper
	 * takes at most 512 bytes). */
#pragma unroll
	for (int i = 0; i < 4; i++) {
		s = csum_add32(s, saddr[i]);
		s = csum_add32(s, daddr[i]);
	}
	s = csum_add32(s, bpf_htonl(8 + PTB_QUOTE));
	s = csum_add32(s, bpf_htonl(IPPROTO_ICMPV6));
	icmp = data + sizeof(struct ethhdr) + 40;
	sum = bpf_csum_diff(NULL, 0, (void *)icmp, 512, s);
	if (sum < 0)
		return -1;
	sum = bpf_csum_diff(NULL, 0, (void *)(icmp + 512), 512, (__u32)sum);
	if (sum < 0)
		return -1;
	sum = bpf_csum_diff(NULL, 0, (void *)(icmp + 1024), 8 + PTB_QUOTE - 1024, (__u32)sum);
	if (sum < 0)
		return -1;
	*(__u16 *)(icmp + 2) = csum_fold((__u32)sum);
	return 0;
}

/* TCP header words toa6_insert may move: doff 10 at most, so that the
 * 20-byte option fits in the 60-byte maximum. */
#define TOA6_MAX_DOFF 10

/* toa6_insert adds the TOA option for IPv6 in the format DPVS's toa
 * module reads (kind 254, length 20: the client's port, then its 16-byte
 * address, network order) at the end of the TCP options of a packet whose
 * TCP header follows the IPv6 header. The headers move 20 bytes toward
 * the front; the payload stays. Returns 0, -1 when there is no room (or
 * an extension header: the packet is left as it was) or -2 when the frame
 * could not be grown. */
static __always_inline int toa6_insert(struct xdp_md *ctx, const __u8 *caddr, __be16 cport)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	struct tcphdr *th;
	__u32 doff, words;
	__u16 oldlen, newlen, oldw, neww;
	__u8 *toa;

	if ((void *)(ip6 + 1) > data_end || ip6->nexthdr != IPPROTO_TCP)
		return -1;
	th = (void *)(ip6 + 1);
	if ((void *)(th + 1) > data_end)
		return -1;
	doff = th->doff;
	if (doff > TOA6_MAX_DOFF)
		return -1;
	/* Read after an end-of-options? Not by anyone: NOPs instead. */
	if (eol_to_nops(ctx, sizeof(struct ethhdr) + sizeof(struct ipv6hdr)) < 0)
		return -2;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (bpf_xdp_adjust_head(ctx, -TCPOLEN_TOA6))
		return -2;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	/* Move the Ethernet, IPv6 and TCP headers down, 16 bits at a time. */
	words = (sizeof(struct ethhdr) + sizeof(struct ipv6hdr)) / 2 + doff * 2;
	for (__u32 i = 0; i < (sizeof(struct ethhdr) + sizeof(struct ipv6hdr)) / 2 + TOA6_MAX_DOFF * 2; i++) {
		__u16 *dst = data + i * 2;
		__u16 *src = data + TCPOLEN_TOA6 + i * 2;

		if (i >= words)
			break;
		if ((void *)(src + 1) > data_end)
			return -2;
		*dst = *src;
	}
	ip6 = data + sizeof(struct ethhdr);
	th = (void *)(ip6 + 1);
	if ((void *)(th + 1) > data_end)
		return -2;
	toa = (void *)th + doff * 4;
	if ((void *)(toa + TCPOLEN_TOA6) > data_end)
		return -2;
	toa[0] = TCPOPT_TOA;
	toa[1] = TCPOLEN_TOA6;
	__builtin_memcpy(toa + 2, &cport, 2);
	__builtin_memcpy(toa + 4, caddr, 16);

	oldlen = ip6->payload_len;
	newlen = bpf_htons(bpf_ntohs(oldlen) + TCPOLEN_TOA6);
	ip6->payload_len = newlen;
	/* The pseudo-header's length (the payload's, with no extension
	 * header), the data offset word, and the option's own words. */
	csum_replace2(&th->check, oldlen, newlen);
	oldw = *(__u16 *)((void *)th + 12);
	th->doff = doff + TCPOLEN_TOA6 / 4;
	neww = *(__u16 *)((void *)th + 12);
	csum_replace2(&th->check, oldw, neww);
	{
		__u16 *o = (void *)toa;
		__u32 s = (__u16)~th->check;

#pragma unroll
		for (int i = 0; i < TCPOLEN_TOA6 / 2; i++)
			s += o[i];
		th->check = csum_fold(s);
	}
	return 0;
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

/* reply6 un-NATs a real's IPv6 reply, as reply() does IPv4's. */
static __always_inline int reply6(struct xdp_md *ctx, struct pkt *p, struct conn_val6 *c, __u32 *stat)
{
	conn_touch(CONN4(c));
	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_F_SYN | TCP_F_FIN | TCP_F_RST))) {
		struct conn_key6 fk = {};
		struct conn_val6 *f;
		int embryonic;

		conn6_peer_key(c, p->proto, &fk);
		f = conn6_lookup(&fk, &embryonic);
		if (f)
			conn_state(CONN4(f), p, DIR_OUTPUT);
	}
	/* FULLNAT: the client's segments must leave room for TOA. */
	if (p->proto == IPPROTO_TCP && (c->flags & CONN_F_FULLNAT) && (p->tcp_flags & TCP_F_SYN))
		clamp_mss(ctx, p->l4, 0xffff, TCPOLEN_TOA6);
	real_account(c->real_id, ip6_len(p), 1);
	nat6_rewrite(ctx, p, c);
	set_macs(p->eth, c->dmac, c->smac);
	*stat = STAT_REPLY;
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

/* conn6_create writes a new IPv6 connection's entries as the slow path
 * would (dataplane/slowpath6.go): NAT's reply entry first. */
static __always_inline int conn6_create(struct xdp_md *ctx, struct pkt *p, struct conn_key6 *ck,
					__u32 sid, __u32 sflags, __u32 rid, const struct real *r,
					const struct laddr *la, __be16 lport)
{
	struct conn_val6 v = {
		.last_seen = bpf_ktime_get_coarse_ns(),
		.real_id = rid,
		.svc_id = sid,
		.flags = (sflags & SVC_F_PERSIST) ? CONN_F_PERSIST : 0,
	};

	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_F_SYN | TCP_F_ACK)) == TCP_F_SYN)
		v.flags |= CONN_F_SYN_SEEN;
	if (r->fwd == FWD_MASQ || (r->fwd == FWD_FULLNAT && la)) {
		/* FULLNAT: the source becomes the local address and port. */
		const __u8 *src = la ? la->addr : (const __u8 *)ck->saddr;
		__be16 sport = la ? lport : ck->sport;
		__u8 fnat = la ? CONN_F_FULLNAT : 0;
		__u32 ifindex = ctx->ingress_ifindex;
		struct iface *in = bpf_map_lookup_elem(&ifaces, &ifindex);
		__be16 *rp = bpf_map_lookup_elem(&real_ports, &rid);
		__be16 rport = rp && *rp ? *rp : ck->dport;
		struct conn_key6 rk = {
			.sport = rport,
			.dport = sport,
			.proto = ck->proto,
		};
		struct conn_val6 rv = {
			.last_seen = v.last_seen,
			.real_id = rid,
			.svc_id = sid,
			.flags = CONN_F_REPLY | fnat,
			.nsport = ck->dport,
			.ndport = ck->sport,
			.ifindex = ifindex,
		};

		if (!in)
			return -1;
		addr6_copy(rk.saddr, r->addr6);
		addr6_copy(rk.daddr, src);
		addr6_copy(rv.nsaddr, ck->daddr);
		addr6_copy(rv.ndaddr, ck->saddr);
		__builtin_memcpy(rv.dmac, p->eth->h_source, ETH_ALEN);
		__builtin_memcpy(rv.smac, in->mac, ETH_ALEN);
		/* A FULLNAT reply key is the local port's: never over another's. */
		if (fnat && bpf_map_lookup_elem(&est_conns6, &rk))
			return -1;
		if (bpf_map_update_elem(&conns6, &rk, &rv, fnat ? BPF_NOEXIST : BPF_ANY))
			return -1;
		v.flags |= fnat;
		addr6_copy(v.nsaddr, src);
		addr6_copy(v.ndaddr, r->addr6);
		v.nsport = sport;
		v.ndport = rport;
	}
	return bpf_map_update_elem(&conns6, ck, &v, BPF_ANY) ? -1 : 0;
}

/* new_flow6 is new_flow for IPv6. */
static __always_inline int new_flow6(struct xdp_md *ctx, struct pkt *p, struct conn_key6 *ck,
				     __u32 sid, __u32 sflags, __u32 *stat)
{
	const struct laddr *la = NULL;
	struct fnat_port *fp;
	struct conn_val6 *c;
	struct real *r;
	__u32 rid;

	/* FULLNAT: a local port from the service's ring, else Go's. */
	fp = fnat_ahead(sflags, p->proto);
	if (!fp)
		return to_slow_path(ctx, stat);
	r = pick_new(sid, sflags, p->ip6->saddr.in6_u.u6_addr32, p->ip6->daddr.in6_u.u6_addr32, 16, p->dport,
		     pick_flow6(p), &rid);
	if (r && r->fwd == FWD_FULLNAT)
		la = fnat_laddr(fp, 1);
	else if (fp->v)
		fnat_unclaim(fp);
	if (!r || !(r->flags & REAL_F_IPV6) || (r->fwd == FWD_FULLNAT && !la))
		goto slow;
	if (conn6_create(ctx, p, ck, sid, sflags, rid, r, la, fp->lport) < 0)
		goto slow;
	c = bpf_map_lookup_elem(&conns6, ck);
	if (!c)
		return to_slow_path(ctx, stat);
	count_pick(rid);
	return forward6(ctx, p, c, stat);
slow:
	fnat_unclaim(fp);
	return to_slow_path(ctx, stat);
}

static __always_inline struct svc_val *service6(const struct conn_key6 *ck, __u8 flags)
{
	struct svc_key6 sk = { .port = ck->dport, .proto = ck->proto };
	struct svc_val *sv;

	addr6_copy(sk.vip, ck->daddr);
	sv = bpf_map_lookup_elem(&services6, &sk);
	if (sv || !(flags & ADDR_F_ALL_PORTS))
		return sv;
	sk.port = 0;
	return bpf_map_lookup_elem(&services6, &sk);
}

/* process6 handles an IPv6 frame whose Ethernet header p holds. replay:
 * the slow path runs a frame whose connection it has just written
 * (xipvs_replay6), which is forwarded as a hit or dropped, never handed
 * over again. */
static __always_inline int process6(struct xdp_md *ctx, void *cursor, struct pkt *p, __u32 *stat,
				    const int replay)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct conn_key6 ck = {};
	struct conn_val6 *c;
	struct svc_val *sv;
	__u8 vflags, dflags, sflags;
	int embryonic, act;

	act = parse_ipv6(ctx, &cursor, data_end, p);
	if (act == PARSE_KERNEL) {
		/* Segments left, or more headers than we walk: the kernel's
		 * (counted when it is a service's or a real's). */
		if ((addr6_flags(&p->ip6->daddr) & ADDR_F_VIP) || (addr6_flags(&p->ip6->saddr) & ADDR_F_NAT_SOURCE))
			*stat = STAT_PASS_FRAGMENT;
		return XDP_PASS;
	}
	if (act < 0) {
		*stat = STAT_PASS_MALFORMED;
		return XDP_PASS;
	}
	if (!replay && p->proto == IPPROTO_ICMPV6 && !p->fragment)
		return icmp6_error(ctx, p, cursor, addr6_flags(&p->ip6->daddr) & ADDR_F_VIP, stat);
	if (p->proto != IPPROTO_TCP && p->proto != IPPROTO_UDP)
		return XDP_PASS;
	vflags = addr6_flags(&p->ip6->daddr);
	dflags = vflags & ADDR_F_VIP;
	sflags = addr6_flags(&p->ip6->saddr) & ADDR_F_NAT_SOURCE;
	if (!dflags && !sflags)
		return XDP_PASS;
	if (p->fragment == FRAG_LATER) {
		/* No transport header: the first fragment's ports (frag.h). */
		if (frag_find(p) < 0) {
			*stat = STAT_PASS_FRAGMENT;
			return XDP_PASS;
		}
	} else {
		if (parse_l4(cursor, data_end, p) < 0) {
			*stat = STAT_PASS_MALFORMED;
			return XDP_PASS;
		}
	}
	addr6_copy(ck.saddr, &p->ip6->saddr);
	addr6_copy(ck.daddr, &p->ip6->daddr);
	ck.sport = p->sport;
	ck.dport = p->dport;
	ck.proto = p->proto;
	/* Admission control first, as for IPv4 (sources by their /64). */
	if (dflags && !replay && p->proto == IPPROTO_TCP &&
	    (p->tcp_flags & (TCP_F_SYN | TCP_F_ACK | TCP_F_RST | TCP_F_FIN)) == TCP_F_SYN) {
		stat_inc(STAT_NEW_SYN);
		if (!admit6(ck.saddr)) {
			*stat = STAT_SHED;
			return XDP_DROP;
		}
	}
	c = conn6_lookup(&ck, &embryonic);
	/* Noted only for a connection or a new flow, as for IPv4. */
	if (c && p->fragment == FRAG_FIRST)
		frag_note(p);
	if (c && (c->flags & CONN_F_REPLY)) {
		if (!sflags)
			return XDP_PASS;
		return reply6(ctx, p, c, stat);
	}
	if (!dflags)
		return XDP_PASS;
	if (c && !conn_reused(CONN4(c), p)) {
		if (embryonic && p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_F_SYN | TCP_F_ACK)) == TCP_F_SYN)
			c->flags |= CONN_F_SYN_SEEN;
		act = forward6(ctx, p, c, stat);
		if (embryonic && *stat == STAT_FORWARD && conn_established(CONN4(c), p)) {
			conn6_promote(&ck, c);
			if (p->proto == IPPROTO_TCP)
				known_source6(ck.saddr);
		}
		return act;
	}
	if (replay) {
		*stat = STAT_DROP_NO_REAL; /* its connection went meanwhile */
		return XDP_DROP;
	}
	if (c && !embryonic)
		conn6_drop_est(&ck, c);
	sv = service6(&ck, vflags);
	if (!sv)
		return XDP_PASS;
	if (p->fragment == FRAG_LATER)
		return to_slow_path(ctx, stat); /* follows its first, as for IPv4 */
	if (p->proto == IPPROTO_TCP && !tcp_schedules(p)) {
		*stat = STAT_PASS_NO_CONN;
		return XDP_PASS;
	}
	if (p->fragment == FRAG_FIRST)
		frag_note(p);
	return new_flow6(ctx, p, &ck, sv->id, sv->flags, stat);
}

#endif
