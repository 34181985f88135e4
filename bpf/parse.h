/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* parse.h: header parsing. Parsers return the next protocol or -1 when the
 * frame is too short or malformed (xdp-tutorial's convention). */
#ifndef XIPVS_PARSE_H
#define XIPVS_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "consts.h"
#include "csum.h"

/* What the director needs of one packet. */
struct pkt {
	struct ethhdr *eth;
	struct iphdr *ip;      /* IPv4; NULL for IPv6 */
	struct ipv6hdr *ip6;   /* IPv6; NULL for IPv4 */
	void *l4;       /* the TCP or UDP header */
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags; /* TCP_F_* below; 0 for UDP */
	__u8 fragment;  /* FRAG_FIRST or FRAG_LATER; 0 for a whole packet */
	__u16 l4_len;   /* IP total length minus the IP header(s) */
	__u32 frag_id;  /* a fragment's identification (IPv4's 16 bits) */
};

/* pkt.fragment: a first fragment carries the transport header (ports);
 * a later one does not, and follows the first (frags). */
#define FRAG_FIRST 1
#define FRAG_LATER 2

/* parse_ipv6's result for a packet that is the kernel's to take. */
#define PARSE_KERNEL -2

#define TCP_F_FIN 0x01
#define TCP_F_SYN 0x02
#define TCP_F_RST 0x04
#define TCP_F_ACK 0x10

/* parse_eth returns the EtherType (network order) or -1. */
static __always_inline int parse_eth(void **cursor, void *data_end, struct pkt *p)
{
	struct ethhdr *eth = *cursor;

	if ((void *)(eth + 1) > data_end)
		return -1;
	p->eth = eth;
	*cursor = eth + 1;
	return eth->h_proto;
}

/* parse_ipv4 returns the IP protocol or -1. The header length is validated
 * before it is used to move the cursor; the total length must cover the
 * header and fit the frame (which Ethernet may pad beyond it). */
static __always_inline int parse_ipv4(void **cursor, void *data_end, struct pkt *p)
{
	struct iphdr *ip = *cursor;
	__u32 hlen, len;

	if ((void *)(ip + 1) > data_end)
		return -1;
	if (ip->version != 4 || ip->ihl < 5)
		return -1;
	hlen = ip->ihl * 4;
	if (*cursor + hlen > data_end)
		return -1;
	len = bpf_ntohs(ip->tot_len);
	if (len < hlen || *cursor + len > data_end)
		return -1;
	p->ip = ip;
	p->proto = ip->protocol;
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		p->fragment = FRAG_LATER;
	else if (ip->frag_off & bpf_htons(IP_MF))
		p->fragment = FRAG_FIRST;
	p->frag_id = ip->id;
	p->l4_len = len - hlen;
	*cursor += hlen;
	return ip->protocol;
}

/* IPv4 options ipv4_opts_ok knows (include/uapi/linux/ip.h). */
#define IPV4_OPT_END 0
#define IPV4_OPT_NOOP 1
#define IPV4_OPT_RR 7
#define IPV4_OPT_TS 68
#define IPV4_OPT_LSRR 131
#define IPV4_OPT_SSRR 137

/* One walk over IPv4 options, copied out of the frame. */
struct opts_walk {
	__u8 o[44]; /* the options (at most 40 bytes), then zeros */
	__u32 i;    /* the next option's offset */
	__u32 len;  /* the options' length */
	int ok;
};

/* opts_step checks the option at w->i and moves past it (a bpf_loop
 * callback: 0 goes on, 1 stops). */
static long opts_step(__u64 index, void *arg)
{
	struct opts_walk *w = arg;
	__u32 i = w->i;
	__u8 t, l;

	if (i >= w->len || i >= 40)
		return 1;
	t = w->o[i];
	if (t == IPV4_OPT_END)
		return 1;
	if (t == IPV4_OPT_NOOP) {
		w->i = i + 1;
		return 0;
	}
	l = w->o[i + 1];
	if (w->len - i < 2 || l < 2 || l > w->len - i)
		goto bad;
	switch (t) {
	case IPV4_OPT_LSRR:
	case IPV4_OPT_SSRR:
		goto bad;
	case IPV4_OPT_RR:
		if (l < 3 || w->o[i + 2] < 4)
			goto bad;
		break;
	case IPV4_OPT_TS:
		if (l < 4 || w->o[i + 2] < 5)
			goto bad;
		break;
	}
	w->i = i + l;
	return 0;
bad:
	w->ok = 0;
	return 1;
}

/* ipv4_opts_ok reports whether the options of the IPv4 header at offset
 * off (ihl words long, whole in the frame) are what the kernel's
 * ip_options_compile takes from a received packet: every option within
 * the header, record-route and timestamp pointers where they may point,
 * and no source route (which ip_rcv drops unless accept_source_route is
 * set, never the case on a director). What it refuses, the kernel
 * refuses before IPVS sees it. The walk is a bpf_loop callback, verified
 * once. */
static __always_inline int ipv4_opts_ok(struct xdp_md *ctx, __u32 off, __u32 ihl)
{
	struct opts_walk w = { .len = (ihl - 5) * 4, .ok = 1 };

	if (ihl <= 5)
		return 1;
	if (w.len > 40 || bpf_xdp_load_bytes(ctx, off + sizeof(struct iphdr), w.o, w.len))
		return 0;
	bpf_loop(40, opts_step, &w, 0);
	return w.ok;
}

/* ipv4_opts_sum returns the one's complement sum of the options of the
 * IPv4 header at offset off (ihl words, more than 5), -1 on a fault. */
static __always_inline __s64 ipv4_opts_sum(struct xdp_md *ctx, __u32 off, __u32 ihl)
{
	__u8 o[40] = {};
	__u32 len = (ihl - 5) * 4;

	if (len > 40 || bpf_xdp_load_bytes(ctx, off + sizeof(struct iphdr), o, len))
		return -1;
	return bpf_csum_diff(NULL, 0, (__be32 *)o, len, 0);
}

/* ipv4_hdr_ok reports whether ip's header checksum is right and its
 * options well formed, as ip_rcv checks (the header is whole in the
 * frame: parse_ipv4 took it). */
static __always_inline int ipv4_hdr_ok(struct xdp_md *ctx, struct iphdr *ip)
{
	void *data = (void *)(long)ctx->data;
	__u32 *w = (__u32 *)ip;
	__u64 s = 0;
	__s64 opts = 0;
	__u32 ihl = ip->ihl;

#pragma unroll
	for (int i = 0; i < 5; i++)
		s += w[i];
	if (ihl > 5) {
		opts = ipv4_opts_sum(ctx, (void *)ip - data, ihl);
		if (opts < 0)
			return 0;
	}
	s += (__u64)opts;
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffffffff) + (s >> 32);
	if (csum_fold((__u32)s) != 0)
		return 0;
	return ipv4_opts_ok(ctx, (void *)ip - data, ihl);
}

/* IPv6 next-header values parse_ipv6 knows. */
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_DEST 60

/* One walk over a packet's IPv6 extension headers (ext_step). */
struct ext_walk {
	struct xdp_md *ctx;
	__u32 off;     /* the next header's offset in the frame */
	__u32 end;     /* the IPv6 payload's end in the frame */
	__u32 id;      /* a fragment header's identification */
	__u8 next;     /* the next header's type */
	__u8 fragment; /* FRAG_*, from a fragment header */
	__u8 done;     /* the upper layer (or a later fragment's data) found */
	__u8 verdict;  /* 0, EXT_BAD or EXT_KERNEL */
};

#define EXT_BAD 1    /* malformed, as the kernel's parsers judge it */
#define EXT_KERNEL 2 /* the kernel's: segments left, too many headers */

/* ext_step moves past the extension header at w->off (a bpf_loop
 * callback: 0 goes on, 1 stops). */
static long ext_step(__u64 index, void *arg)
{
	struct ext_walk *w = arg;
	__u8 h[8];
	__u32 hl;

	if (w->next != NEXTHDR_HOP && w->next != NEXTHDR_ROUTING && w->next != NEXTHDR_DEST &&
	    w->next != NEXTHDR_FRAGMENT) {
		w->done = 1;
		return 1;
	}
	/* Hop-by-hop options come first or not at all (RFC 8200 4.1; the
	 * kernel answers a parameter problem). */
	if (w->next == NEXTHDR_HOP && index > 0)
		goto bad;
	if (w->off + 8 > w->end || bpf_xdp_load_bytes(w->ctx, w->off, h, sizeof(h)))
		goto bad;
	if (w->next == NEXTHDR_FRAGMENT) {
		/* Offset (13 bits, in 8-byte units) and M; an atomic fragment
		 * (neither) is a whole packet (RFC 8200 4.5). */
		__u16 fo = (h[2] << 8) | h[3];

		__builtin_memcpy(&w->id, h + 4, 4);
		hl = 8;
		if (fo & ~7) {
			/* A later fragment: no transport header follows. */
			w->fragment = FRAG_LATER;
			w->next = h[0];
			w->off += hl;
			w->done = 1;
			return 1;
		}
		if (fo & 1)
			w->fragment = FRAG_FIRST;
	} else {
		hl = (h[1] + 1) * 8;
		if (w->next == NEXTHDR_ROUTING && h[3] != 0) {
			/* Segments left: not for us yet. */
			w->verdict = EXT_KERNEL;
			return 1;
		}
	}
	w->off += hl;
	if (w->off > w->end)
		goto bad;
	w->next = h[0];
	return 0;
bad:
	w->verdict = EXT_BAD;
	return 1;
}

/* xipvs_ipv6_ext walks the extension headers from offset off of the
 * frame (the first of type next) to the payload's end: returns the walk
 * packed as EXT_*() reads it, EXT_F_BAD (malformed) or EXT_F_KERNEL. A global
 * function (verified once) around a bpf_loop callback (verified once):
 * any chain of headers, up to IPV6_MAX_EXT of them, is one path for the
 * verifier instead of one per shape. */
__noinline __u64 xipvs_ipv6_ext(struct xdp_md *ctx, __u32 off, __u32 end, __u32 next)
{
	struct ext_walk w = { .ctx = ctx, .off = off, .end = end, .next = next };

	if (!ctx)
		return EXT_F_BAD;
	bpf_loop(IPV6_MAX_EXT + 1, ext_step, &w, 0);
	if (w.verdict == EXT_BAD)
		return EXT_F_BAD;
	if (w.verdict == EXT_KERNEL || !w.done || w.off > EXT_MAX_OFF)
		return EXT_F_KERNEL;
	return (__u64)w.id << 32 | (__u64)w.fragment << 24 | (__u64)w.next << 16 | w.off;
}

/* parse_ipv6 returns the upper-layer protocol or -1 (malformed). Its
 * extension headers (hop-by-hop first, destination options, routing
 * without segments left, fragment) are walked by xipvs_ipv6_ext; a
 * routing header with segments left (the destination is not yet the
 * final one) or more than IPV6_MAX_EXT headers return PARSE_KERNEL:
 * the kernel's to take. The payload length must fit the frame (a jumbogram, length 0, is
 * malformed here). */
static __always_inline int parse_ipv6(struct xdp_md *ctx, void **cursor, void *data_end, struct pkt *p)
{
	void *data = (void *)(long)ctx->data;
	struct ipv6hdr *ip6 = *cursor;
	__u8 *h;
	__u32 len, ext = 0;
	__u8 next;

	if ((void *)(ip6 + 1) > data_end)
		return -1;
	if (ip6->version != 6)
		return -1;
	len = bpf_ntohs(ip6->payload_len);
	if (len == 0 || (void *)(ip6 + 1) + len > data_end)
		return -1;
	p->ip6 = ip6;
	next = ip6->nexthdr;
	h = (void *)(ip6 + 1);
	if (next == NEXTHDR_HOP || next == NEXTHDR_ROUTING || next == NEXTHDR_DEST || next == NEXTHDR_FRAGMENT) {
		__u32 start = (void *)h - data;
		__u64 r = xipvs_ipv6_ext(ctx, start, start + len, next);
		__u32 off;

		if (r & EXT_F_BAD)
			return -1;
		if (r & EXT_F_KERNEL)
			return PARSE_KERNEL;
		off = EXT_OFF(r);
		if (off < start || off > EXT_MAX_OFF)
			return -1;
		next = EXT_NEXT(r);
		p->fragment = EXT_FRAG(r);
		p->frag_id = EXT_ID(r);
		ext = off - start;
		h = data + off;
	}
	if ((void *)h > data_end)
		return -1;
	p->proto = next;
	p->l4_len = len - ext;
	*cursor = h;
	return next;
}

/* parse_l4 fills ports and TCP flags; returns the protocol or -1. The
 * TCP header (options included) or the UDP length must fit the IP
 * payload. */
static __always_inline int parse_l4(void *cursor, void *data_end, struct pkt *p)
{
	p->l4 = cursor;
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *tcp = cursor;

		if ((void *)(tcp + 1) > data_end)
			return -1;
		if (tcp->doff < 5 || tcp->doff * 4 > p->l4_len)
			return -1;
		p->sport = tcp->source;
		p->dport = tcp->dest;
		p->tcp_flags = (tcp->fin ? TCP_F_FIN : 0) | (tcp->syn ? TCP_F_SYN : 0) |
			       (tcp->rst ? TCP_F_RST : 0) | (tcp->ack ? TCP_F_ACK : 0);
		return IPPROTO_TCP;
	}
	if (p->proto == IPPROTO_UDP) {
		struct udphdr *udp = cursor;
		__u16 ulen;

		if ((void *)(udp + 1) > data_end)
			return -1;
		ulen = bpf_ntohs(udp->len);
		/* A first fragment's UDP length is the whole datagram's. */
		if (ulen < sizeof(*udp) || (ulen > p->l4_len && p->fragment != FRAG_FIRST))
			return -1;
		if (p->ip6 && udp->check == 0)
			return -1; /* IPv6 UDP must carry a checksum */
		p->sport = udp->source;
		p->dport = udp->dest;
		return IPPROTO_UDP;
	}
	return -1;
}

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

#endif
