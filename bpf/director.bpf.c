// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* director.bpf.c: the xipvs director. For each IPv4 TCP/UDP packet (IPv6:
 * director6.h): a
 * connection hit is forwarded here (DR: new Ethernet addresses; TUN: an
 * IP-in-IP header; NAT and FULLNAT: addresses and ports rewritten, and
 * their replies rewritten back), by XDP_TX or a devmap redirect. A packet
 * to a virtual service without a connection goes to the Go slow path over
 * AF_XDP, or is dropped while no socket is bound (never passed: the
 * director's stack would answer a SYN with a RST). ICMP errors about a
 * connection follow it (icmp.h). Everything else passes to the kernel
 * untouched. */
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
#include "lookup.h"
#include "icmp.h"
#include "synproxy.h"
#include "frag.h"
#include "picks.h"

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

/* reply un-NATs a real server's reply (NAT, FULLNAT) back to VIP:VPORT ->
 * client and sends it out the way the client's packets came in. TCP
 * flags that can move the state are applied to the forward entry, with
 * IPVS's OUTPUT table. */
static __always_inline int reply(struct xdp_md *ctx, struct pkt *p, struct conn_key *k,
				 struct conn_val *c, __u32 *stat)
{
	conn_touch(c);
	if (p->proto == IPPROTO_TCP) {
		if (p->tcp_flags & (TCP_F_SYN | TCP_F_FIN | TCP_F_RST)) {
			struct conn_key fk = {
				.saddr = c->ndaddr,
				.daddr = c->nsaddr,
				.sport = c->ndport,
				.dport = c->nsport,
				.proto = p->proto,
			};
			int embryonic;
			struct conn_val *f = conn_lookup(&fk, &embryonic);

			if (f)
				conn_state(f, p, DIR_OUTPUT);
		}
		/* FULLNAT: the client's segments must leave room for TOA. */
		if ((c->flags & CONN_F_FULLNAT) && (p->tcp_flags & TCP_F_SYN))
			clamp_mss(ctx, p->l4, 0xffff, TCPOLEN_TOA);
	}
	real_account(c->real_id, bpf_ntohs(p->ip->tot_len), 1);
	nat_rewrite(ctx, p, c);
	if (c->flags & CONN_F_SYNPROXY)
		synproxy_reply(ctx, p, k);
	set_macs(p->eth, c->dmac, c->smac);
	*stat = STAT_REPLY;
	return egress(ctx, c->ifindex);
}

/* to_slow_path hands a new flow's packet to the AF_XDP socket of this rx
 * queue; with no socket bound the packet is dropped. */
static __always_inline int to_slow_path(struct xdp_md *ctx, __u32 *stat)
{
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 q = ctx->rx_queue_index;
	struct iface *in = bpf_map_lookup_elem(&ifaces, &ifindex);
	int act;

	if (!in || q >= MAX_QUEUES || in->slot >= MAX_IFACES) {
		*stat = STAT_DROP_NO_XSK;
		return XDP_DROP;
	}
	act = bpf_redirect_map(&xsks, in->slot * MAX_QUEUES + q, XDP_DROP);
	*stat = act == XDP_REDIRECT ? STAT_SLOW_PATH : STAT_DROP_NO_XSK;
	return act;
}

/* conn_create writes the entries of a new connection to real rid of
 * service sid, as the Go slow path would (dataplane/slowpath.go
 * rawEntries): for NAT the reply entry first, then the forward entry.
 * Returns 0 or -1. */
static __always_inline int conn_create(struct xdp_md *ctx, struct pkt *p, struct conn_key *ck,
				       __u32 sid, __u32 sflags, __u32 rid, const struct real *r,
				       const struct laddr *la, __be16 lport)
{
	struct conn_val v = {
		.last_seen = bpf_ktime_get_coarse_ns(),
		.real_id = rid,
		.svc_id = sid,
		/* A persistent service's: the sweep finds its template owned. */
		.flags = (sflags & SVC_F_PERSIST) ? CONN_F_PERSIST : 0,
	};

	if (p->proto == IPPROTO_TCP && (p->tcp_flags & (TCP_F_SYN | TCP_F_ACK)) == TCP_F_SYN)
		v.flags |= CONN_F_SYN_SEEN;

	if (r->fwd == FWD_MASQ || (r->fwd == FWD_FULLNAT && la)) {
		/* FULLNAT: the source becomes the local address and port. */
		__be32 src = la ? *(const __be32 *)la->addr : ck->saddr;
		__be16 sport = la ? lport : ck->sport;
		__u8 fnat = la ? CONN_F_FULLNAT : 0;
		__u32 ifindex = ctx->ingress_ifindex;
		struct iface *in = bpf_map_lookup_elem(&ifaces, &ifindex);
		__be16 *rp = bpf_map_lookup_elem(&real_ports, &rid);
		__be16 rport = rp && *rp ? *rp : ck->dport;
		struct conn_key rk = {
			.saddr = r->addr,
			.daddr = src,
			.sport = rport,
			.dport = sport,
			.proto = ck->proto,
		};
		struct conn_val rv = {
			.last_seen = v.last_seen,
			.real_id = rid,
			.svc_id = sid,
			.flags = CONN_F_REPLY | fnat,
			.nsaddr = ck->daddr,
			.ndaddr = ck->saddr,
			.nsport = ck->dport,
			.ndport = ck->sport,
			.ifindex = ifindex,
		};

		if (!in)
			return -1;
		__builtin_memcpy(rv.dmac, p->eth->h_source, ETH_ALEN);
		__builtin_memcpy(rv.smac, in->mac, ETH_ALEN);
		/* A FULLNAT reply key is the local port's: never over another's
		 * (est_conns first, where a live one would be). */
		if (fnat && bpf_map_lookup_elem(&est_conns, &rk))
			return -1;
		if (bpf_map_update_elem(&conns, &rk, &rv, fnat ? BPF_NOEXIST : BPF_ANY))
			return -1;
		v.flags |= fnat;
		v.nsaddr = src;
		v.ndaddr = r->addr;
		v.nsport = sport;
		v.ndport = rport;
	}
	return bpf_map_update_elem(&conns, ck, &v, BPF_ANY) ? -1 : 0;
}

/* new_flow schedules a new connection of service sid here, from the
 * picks Go computed (pick_new), a FULLNAT one with a local port Go handed
 * over ahead (fnat_claim), and forwards its first packet; services
 * without picks, FULLNAT services without a ring or a port in it, and
 * failures go to the Go slow path. */
static __always_inline int new_flow(struct xdp_md *ctx, struct pkt *p, struct conn_key *ck,
				    __u32 sid, __u32 sflags, __u32 *stat)
{
	struct conn_val *c;
	struct real *r;
	__u32 rid;

	const struct laddr *la = NULL;
	struct fnat_port *fp;

	/* FULLNAT: a local port from the service's ring, else Go's. */
	fp = fnat_ahead(sflags, p->proto);
	if (!fp)
		return to_slow_path(ctx, stat);
	r = pick_new(sid, sflags, &p->ip->saddr, &p->ip->daddr, 4, p->dport, pick_flow4(p), &rid);
	if (r && r->fwd == FWD_FULLNAT)
		la = fnat_laddr(fp, 0);
	else if (fp->v)
		fnat_unclaim(fp);
	if (!r || r->addr == 0 || (r->fwd == FWD_FULLNAT && !la))
		goto slow;
	if (conn_create(ctx, p, ck, sid, sflags, rid, r, la, fp->lport) < 0)
		goto slow;
	c = bpf_map_lookup_elem(&conns, ck);
	if (!c)
		return to_slow_path(ctx, stat);
	count_pick(rid);
	return forward(ctx, p, ck, c, stat);
slow:
	fnat_unclaim(fp);
	return to_slow_path(ctx, stat);
}

/* service looks up the service of (VIP, port, protocol); port 0 stands
 * for every port of the VIP (a persistent port-zero service or an
 * all-ports port group), looked up only where the prefilter says some
 * VIP has one. */
static __always_inline struct svc_val *service(__be32 vip, __be16 port, __u8 proto, __u8 flags)
{
	struct svc_key sk = { .vip = vip, .port = port, .proto = proto };
	struct svc_val *sv = bpf_map_lookup_elem(&services, &sk);

	if (sv || !(flags & ADDR_F_ALL_PORTS))
		return sv;
	sk.port = 0;
	return bpf_map_lookup_elem(&services, &sk);
}

#include "director6.h"

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
		if (embryonic && p.proto == IPPROTO_TCP && (p.tcp_flags & (TCP_F_SYN | TCP_F_ACK)) == TCP_F_SYN)
			c->flags |= CONN_F_SYN_SEEN;
		act = forward(ctx, &p, &ck, c, stat);
		if (embryonic && *stat == STAT_FORWARD && conn_established(c, &p)) {
			conn_promote(&ck, c);
			if (p.proto == IPPROTO_TCP)
				known_source(ck.saddr);
		}
		return act;
	}
	if (c && !embryonic)
		conn_drop_est(&ck, c);
	sv = service(p.ip->daddr, p.dport, p.proto, vflags);
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
