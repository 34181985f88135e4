// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* director.bpf.c: the xipvs director, IPv4 (process) and IPv6 (process6).
 * For each TCP/UDP packet: a connection hit is forwarded (forward.h: DR
 * new Ethernet addresses, TUN an outer header, NAT and FULLNAT addresses
 * and ports rewritten, and their replies rewritten back), by XDP_TX or a
 * devmap redirect. A packet to a virtual service without a connection is
 * scheduled here from what Go computed ahead, or goes to the Go slow path
 * over AF_XDP (newflow.h), dropped while no socket is bound (never passed:
 * the director's stack would answer a SYN with a RST). ICMP errors about
 * a connection follow it (icmp.h). Everything else passes to the kernel
 * untouched. The headers hold one concept each, both families in each. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "consts.h"
#include "structs.h"
#include "maps.h"
#include "parse.h"
#include "stats.h"
#include "rewrite.h"
#include "conn.h"
#include "aging.h"
#include "lookup.h"
#include "icmp.h"
#include "synproxy.h"
#include "frag.h"
#include "picks.h"
#include "forward.h"
#include "newflow.h"
#include "sync.h"

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
		return reply6(ctx, p, &ck, c, stat);
	}
	if (!dflags)
		return XDP_PASS;
	if (c && !conn_reused(CONN4(c), p)) {
		__u8 was = c->state;

		if (embryonic && p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_F_SYN | TCP_F_ACK)) == TCP_F_SYN)
			c->flags |= CONN_F_SYN_SEEN;
		act = forward6(ctx, p, c, stat);
		if (*stat == STAT_FORWARD)
			conn6_sync_note(&ck, c);
		if (embryonic && *stat == STAT_FORWARD && conn_established(CONN4(c), p)) {
			conn6_promote(&ck, c);
			conn6_age_new(&ck);
			if (p->proto == IPPROTO_TCP)
				known_source6(ck.saddr);
		} else if (!embryonic && *stat == STAT_FORWARD && c->state != was) {
			conn6_retime(&ck, c);
		}
		return act;
	}
	if (replay) {
		*stat = STAT_DROP_NO_REAL; /* its connection went meanwhile */
		return XDP_DROP;
	}
	if (c && !embryonic) {
		conn6_forget(&ck, c);
		conn6_drop_est(&ck, c);
	}
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

static __always_inline int process(struct xdp_md *ctx, __u32 *stat)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	void *cursor = data;
	struct pkt p = {};
	struct conn_key ck = {};
	struct svc_val *sv;
	struct conn_val *c;
	__u8 dflags, sflags, vflags;
	int embryonic, act;

	*stat = STAT_PASS;
	switch (parse_eth(&cursor, data_end, &p)) {
	case ETH_P_IP_BE:
		break;
	case ETH_P_IPV6_BE:
		return process6(ctx, cursor, &p, stat, 0);
	default:
		return XDP_PASS;
	}
	if (parse_ipv4(&cursor, data_end, &p) < 0) {
		*stat = STAT_PASS_MALFORMED;
		return XDP_PASS;
	}
	if (p.proto == IPPROTO_ICMP) {
		if (p.fragment)
			return XDP_PASS;
		return icmp_error(ctx, &p, cursor, addr_flags(p.ip->daddr) & ADDR_F_VIP, stat);
	}
	if (p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP)
		return XDP_PASS;
	/* Traffic that is neither to a VIP nor from a NAT/FULLNAT real
	 * leaves here, after two array reads and no hash lookup. */
	vflags = addr_flags(p.ip->daddr);
	dflags = vflags & ADDR_F_VIP;
	sflags = addr_flags(p.ip->saddr) & ADDR_F_NAT_SOURCE;
	if (!dflags && !sflags)
		return XDP_PASS;
	/* What ip_rcv refuses (a bad header checksum, malformed options, a
	 * source route) the kernel refuses: never forwarded. */
	if (!ipv4_hdr_ok(ctx, p.ip)) {
		*stat = STAT_PASS_MALFORMED;
		return XDP_PASS;
	}
	if (p.fragment == FRAG_LATER) {
		/* No transport header: the first fragment's ports (frag.h). */
		if (frag_find(&p) < 0) {
			*stat = STAT_PASS_FRAGMENT;
			return XDP_PASS;
		}
	} else {
		if (parse_l4(cursor, data_end, &p) < 0) {
			*stat = STAT_PASS_MALFORMED;
			return XDP_PASS;
		}
	}

	ck.saddr = p.ip->saddr;
	ck.daddr = p.ip->daddr;
	ck.sport = p.sport;
	ck.dport = p.dport;
	ck.proto = p.proto;
	/* Admission control first: under a flood, a new source's SYN over
	 * the rate costs no connection or service lookup. */
	if (dflags && p.proto == IPPROTO_TCP &&
	    (p.tcp_flags & (TCP_F_SYN | TCP_F_ACK | TCP_F_RST | TCP_F_FIN)) == TCP_F_SYN) {
		stat_inc(STAT_NEW_SYN);
		if (!admit(ck.saddr)) {
			*stat = STAT_SHED;
			return XDP_DROP;
		}
	}
	/* The connection first: an established flow needs no service
	 * lookup (a connection exists only for a service's traffic, and
	 * goes with its service). */
	c = conn_lookup(&ck, &embryonic);
	/* A first fragment is noted for its later ones only when it is a
	 * connection's or a new flow's: nothing else earns a slow-path
	 * visit for its fragments. */
	if (c && p.fragment == FRAG_FIRST)
		frag_note(&p);
	if (c && (c->flags & CONN_F_REPLY)) {
		if (!sflags)
			return XDP_PASS;
		/* SYN proxy: the real's SYN-ACK is Go's to take. */
		if (c->flags & CONN_F_SP_PENDING)
			return to_slow_path(ctx, stat);
		return reply(ctx, &p, &ck, c, stat);
	}
	if (!dflags)
		return XDP_PASS;
	if (c && (c->flags & CONN_F_SP_PENDING))
		return to_slow_path(ctx, stat);
	if (c && !conn_reused(c, &p)) {
		__u8 was = c->state;

		if (embryonic && p.proto == IPPROTO_TCP && (p.tcp_flags & (TCP_F_SYN | TCP_F_ACK)) == TCP_F_SYN)
			c->flags |= CONN_F_SYN_SEEN;
		act = forward(ctx, &p, &ck, c, stat);
		if (*stat == STAT_FORWARD)
			conn_sync_note(&ck, c);
		if (embryonic && *stat == STAT_FORWARD && conn_established(c, &p)) {
			conn_promote(&ck, c);
			conn_age_new(&ck);
			if (p.proto == IPPROTO_TCP)
				known_source(ck.saddr);
		} else if (!embryonic && *stat == STAT_FORWARD && c->state != was) {
			conn_retime(&ck, c);
		}
		return act;
	}
	if (c && !embryonic) {
		conn_forget(&ck, c);
		conn_drop_est(&ck, c);
	}
	sv = service(&ck, vflags);
	if (!sv)
		return XDP_PASS;
	/* A later fragment of a new flow whose first fragment went to Go
	 * goes there too, to follow it once Go has written its connection
	 * (the kernel, without its first fragment, could only drop it). */
	if (p.fragment == FRAG_LATER)
		return to_slow_path(ctx, stat);
	if (p.proto == IPPROTO_TCP && synproxy_on(sv->flags)) {
		if ((p.tcp_flags & (TCP_F_SYN | TCP_F_ACK | TCP_F_RST | TCP_F_FIN)) == TCP_F_SYN)
			return sp_synack(ctx, &p, sv->flags, stat);
		act = sp_cookie_ack(ctx, &p, stat);
		if (act != FURTHER_PROCESSING)
			return act;
		return to_slow_path(ctx, stat);
	}
	if (p.proto == IPPROTO_TCP && !tcp_schedules(&p)) {
		*stat = STAT_PASS_NO_CONN;
		return XDP_PASS;
	}
	if (p.fragment == FRAG_FIRST)
		frag_note(&p);
	return new_flow(ctx, &p, &ck, sv->id, sv->flags, stat);
}

/* Names the shared enums in the object's BTF, so that bpf2go can generate
 * their Go constants; never read. */
const volatile struct shared_enums {
	enum fwd_method fwd;
	enum conn_flag conn_flag;
	enum real_flag real_flag;
	enum tcp_state tcp_state;
	enum stat_idx stat;
	enum addr_flag addr_flag;
	enum svc_flag svc_flag;
	enum defence_flag defence_flag;
	enum pick_kind pick_kind;
	enum shared_const shared_const;
} xipvs_shared_enums;

SEC("xdp")
int xipvs_director(struct xdp_md *ctx)
{
	__u32 stat = STAT_PASS;
	int act = process(ctx, &stat);

	/* One counter per packet; Go derives the total as their sum. */
	stat_inc(stat);
	return act;
}

/* xipvs_replay6 is the IPv6 slow path's way out: after it has written a
 * new connection, Go runs the frame through this program (BPF_PROG_RUN,
 * as received on its interface) and sends what comes out, so that the
 * first packet is transformed by the very code of the hit path. */
SEC("xdp")
int xipvs_replay6(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *cursor = (void *)(long)ctx->data;
	__u32 stat = STAT_DROP_NO_REAL;
	struct pkt p = {};
	int act = XDP_DROP;

	if (parse_eth(&cursor, data_end, &p) == ETH_P_IPV6_BE)
		act = process6(ctx, cursor, &p, &stat, 1);
	stat_inc(stat);
	return act;
}

char _license[] SEC("license") = "Dual BSD/GPL";
