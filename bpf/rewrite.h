/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* rewrite.h: packet transforms per forwarding method.
 *   DR:      only the Ethernet addresses change.
 *   TUN:     an outer IPv4 header (IP-in-IP) goes in front of the packet.
 *   NAT:     addresses and ports rewritten with incremental checksums.
 *   FULLNAT: as NAT on both ends, plus the TOA option on the packet that
 *            completes the handshake.
 * Functions that grow or shrink the frame invalidate every packet pointer
 * and re-derive theirs from ctx. */
#ifndef XIPVS_REWRITE_H
#define XIPVS_REWRITE_H

#include <stddef.h>
#include <linux/if_ether.h>
#include "csum.h"
#include "parse.h"
#include "structs.h"
#include "tcpopts.h"

#define IP_DF 0x4000

/* ICMP destination unreachable with the next-hop MTU (RFC 1191); spelled
 * out because linux/icmp.h pulls in libc headers. */
struct icmp_frag {
	__u8 type;
	__u8 code;
	__u16 checksum;
	__u16 unused;
	__be16 mtu;
};
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4
/* The smallest MSS clamping leaves (RFC 879's default). */
#define MSS_FLOOR 536

static __always_inline void set_macs(struct ethhdr *eth, const __u8 *dst, const __u8 *src)
{
	__builtin_memcpy(eth->h_dest, dst, ETH_ALEN);
	__builtin_memcpy(eth->h_source, src, ETH_ALEN);
}

/* The fields NAT rewrites in a TCP or UDP header. */
struct l4_fields {
	__u16 *sum;
	__be16 *sport;
	__be16 *dport;
	int udp;
};

/* l4_fields finds them; -1 when the header does not fit the frame (the
 * parser checked that it does, on a path the verifier cannot always
 * connect to this one). */
static __always_inline int l4_fields(struct xdp_md *ctx, struct pkt *p, struct l4_fields *f)
{
	void *data_end = (void *)(long)ctx->data_end;

	f->udp = p->proto == IPPROTO_UDP;
	if (f->udp) {
		struct udphdr *uh = p->l4;

		if (!uh || (void *)(uh + 1) > data_end)
			return -1;
		f->sum = &uh->check;
		f->sport = &uh->source;
		f->dport = &uh->dest;
	} else {
		struct tcphdr *th = p->l4;

		if (!th || (void *)(th + 1) > data_end)
			return -1;
		f->sum = &th->check;
		f->sport = &th->source;
		f->dport = &th->dest;
	}
	return 0;
}

/* nat_ports gives the packet c's ports (nsport, ndport): the part of the
 * rewrite both families share. */
static __always_inline void nat_ports(struct l4_fields *f, __be16 nsport, __be16 ndport)
{
	if (*f->sport != nsport) {
		l4_csum_replace2(f->sum, *f->sport, nsport, f->udp);
		*f->sport = nsport;
	}
	if (*f->dport != ndport) {
		l4_csum_replace2(f->sum, *f->dport, ndport, f->udp);
		*f->dport = ndport;
	}
}

/* nat_rewrite gives the packet the tuple (nsaddr, ndaddr, nsport, ndport)
 * of c, updating the IP and the TCP/UDP checksums incrementally. */
static __always_inline void nat_rewrite(struct xdp_md *ctx, struct pkt *p, const struct conn_val *c)
{
	struct iphdr *ip = p->ip;
	struct l4_fields f;

	if (!p->l4 || l4_fields(ctx, p, &f) < 0) {
		/* No transport header here: the addresses alone (the
		 * first fragment's checksum covers the change). */
		if (ip->saddr != c->nsaddr) {
			csum_replace4(&ip->check, ip->saddr, c->nsaddr);
			ip->saddr = c->nsaddr;
		}
		if (ip->daddr != c->ndaddr) {
			csum_replace4(&ip->check, ip->daddr, c->ndaddr);
			ip->daddr = c->ndaddr;
		}
		return;
	}
	if (ip->saddr != c->nsaddr) {
		csum_replace4(&ip->check, ip->saddr, c->nsaddr);
		l4_csum_replace4(f.sum, ip->saddr, c->nsaddr, f.udp);
		ip->saddr = c->nsaddr;
	}
	if (ip->daddr != c->ndaddr) {
		csum_replace4(&ip->check, ip->daddr, c->ndaddr);
		l4_csum_replace4(f.sum, ip->daddr, c->ndaddr, f.udp);
		ip->daddr = c->ndaddr;
	}
	nat_ports(&f, c->nsport, c->ndport);
}

/* clamp_mss lowers the MSS option of a SYN (wherever it is among the
 * options: xipvs_tcp_opts walks them all) to min(mss - minus, max), not
 * below MSS_FLOOR. */
static __always_inline void clamp_mss(struct xdp_md *ctx, struct tcphdr *th, __u16 max, __u16 minus)
{
	void *data = (void *)(long)ctx->data;
	void *data_end;
	__u64 th_off = (void *)th - data;
	struct sp_opts o = {};
	__u16 mss, want;
	__be16 nmss;
	__u8 *opt;

	if (xipvs_tcp_opts(ctx, th_off, &o) < 0 || !o.mss_off || th_off > 100)
		return;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	th = data + th_off;
	opt = (void *)th + (o.mss_off & 63);
	if ((void *)(th + 1) > data_end || (void *)(opt + 2) > data_end)
		return;
	mss = (opt[0] << 8) | opt[1];
	want = mss > minus ? mss - minus : 0;
	if (want > max)
		want = max;
	if (want < MSS_FLOOR)
		want = MSS_FLOOR;
	if (want >= mss)
		return;
	nmss = bpf_htons(want);
	/* The checksum sums 16-bit words from the TCP header's start, read
	 * as they lie (little endian here). An MSS at an odd offset (after
	 * an odd number of NOPs) straddles two words and counts
	 * byte-swapped: as the plain number. */
	if (o.mss_off & 1)
		csum_replace2(&th->check, mss, want);
	else
		csum_replace2(&th->check, *(__u16 *)opt, nmss);
	__builtin_memcpy(opt, &nmss, 2);
}

/* tun_encap puts an outer IPv4 header (protocol 4, director -> real) in
 * front of the packet, as IPVS's ip_vs_tunnel_xmit: TOS, TTL and DF
 * copied from the inner header, ID taken from it too. The Ethernet
 * header is rewritten toward r's next hop. Returns 0 or -1. */
static __always_inline int tun_encap(struct xdp_md *ctx, const struct real *r)
{
	void *data, *data_end;
	struct ethhdr *eth;
	struct iphdr *outer, *inner;

	if (bpf_xdp_adjust_head(ctx, -IPIP_HLEN))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	outer = data + sizeof(*eth);
	inner = (void *)outer + IPIP_HLEN;
	if ((void *)(inner + 1) > data_end)
		return -1;
	set_macs(eth, r->mac, r->src_mac);
	eth->h_proto = bpf_htons(ETH_P_IP);
	*(__u8 *)outer = 0x45; /* version 4, 5 words */
	outer->tos = inner->tos;
	outer->tot_len = bpf_htons(bpf_ntohs(inner->tot_len) + IPIP_HLEN);
	outer->id = inner->id;
	outer->frag_off = inner->frag_off & bpf_htons(IP_DF);
	outer->ttl = inner->ttl;
	outer->protocol = IPPROTO_IPIP;
	outer->check = 0;
	outer->saddr = r->tun_src;
	outer->daddr = r->addr;
	outer->check = ipv4_csum(outer);
	return 0;
}

#define ICMP_FRAME_LEN (sizeof(struct ethhdr) + 2 * sizeof(struct iphdr) + sizeof(struct icmp_frag) + 8)

/* icmp_frag_needed turns a packet too big for the tunnel into an ICMP
 * fragmentation-needed error back to its sender (type 3 code 4, next-hop
 * MTU mtu, the offending IP header and 8 bytes of it quoted), from the
 * address it was sent to, out the way it came. Needs a 20-byte IP header.
 * Returns 0 or -1. */
static __always_inline int icmp_frag_needed(struct xdp_md *ctx, __u16 mtu)
{
	const int grow = sizeof(struct iphdr) + sizeof(struct icmp_frag);
	void *data, *data_end;
	struct ethhdr *eth, *oeth;
	struct iphdr *ip, *oip;
	struct icmp_frag *icmp;
	__u8 dmac[ETH_ALEN], smac[ETH_ALEN];
	__be32 saddr, daddr;
	__u32 s = 0;

	if (bpf_xdp_adjust_head(ctx, -grow))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + ICMP_FRAME_LEN > data_end)
		return -1;
	oeth = data + grow;
	oip = (void *)(oeth + 1);
	if (oip->ihl != 5)
		return -1;
	__builtin_memcpy(dmac, oeth->h_source, ETH_ALEN);
	__builtin_memcpy(smac, oeth->h_dest, ETH_ALEN);
	saddr = oip->daddr;
	daddr = oip->saddr;

	eth = data;
	ip = (void *)(eth + 1);
	icmp = (void *)(ip + 1);
	set_macs(eth, dmac, smac);
	eth->h_proto = bpf_htons(ETH_P_IP);
	*(__u8 *)ip = 0x45;
	ip->tos = 0xc0; /* IPTOS_PREC_INTERNETCONTROL, as icmp_send */
	ip->tot_len = bpf_htons(ICMP_FRAME_LEN - sizeof(struct ethhdr));
	ip->id = 0;
	ip->frag_off = 0;
	ip->ttl = 64;
	ip->protocol = IPPROTO_ICMP;
	ip->check = 0;
	ip->saddr = saddr;
	ip->daddr = daddr;
	ip->check = ipv4_csum(ip);
	icmp->type = ICMP_DEST_UNREACH;
	icmp->code = ICMP_FRAG_NEEDED;
	icmp->checksum = 0;
	icmp->unused = 0;
	icmp->mtu = bpf_htons(mtu);

	if (bpf_xdp_adjust_tail(ctx, (int)ICMP_FRAME_LEN - (int)(data_end - data)))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + ICMP_FRAME_LEN > data_end)
		return -1;
	{
		__u16 *w = data + sizeof(struct ethhdr) + sizeof(struct iphdr);

#pragma unroll
		for (int i = 0; i < (sizeof(struct icmp_frag) + sizeof(struct iphdr) + 8) / 2; i++)
			s += w[i];
		icmp = (void *)w;
		icmp->checksum = csum_fold(s);
	}
	return 0;
}

/* TCP header words (with options) toa_insert may move: doff 13 at most,
 * so that the option fits in the 60-byte maximum. */
#define TOA_MAX_DOFF 13

/* toa_insert adds the TOA option (kind 254, length 8: client port, then
 * client IPv4 address, network order) at the end of the TCP options of
 * a packet with a 20-byte IP header. The headers move 8 bytes toward the
 * front; the payload stays. Returns 0, -1 when there is no room (the
 * packet is left as it was) or -2 when the frame could not be grown. */
static __always_inline int toa_insert(struct xdp_md *ctx, __be32 caddr, __be16 cport)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct tcphdr *th;
	__u32 doff, words;
	__u16 oldlen, newlen, oldw, neww;
	__u8 *toa;

	if ((void *)(ip + 1) > data_end || ip->ihl != 5)
		return -1;
	th = (void *)(ip + 1);
	if ((void *)(th + 1) > data_end)
		return -1;
	doff = th->doff;
	if (doff > TOA_MAX_DOFF)
		return -1;
	/* Read after an end-of-options? Not by anyone: NOPs instead. */
	if (eol_to_nops(ctx, sizeof(struct ethhdr) + sizeof(struct iphdr)) < 0)
		return -2;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (bpf_xdp_adjust_head(ctx, -TCPOLEN_TOA))
		return -2;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	/* Move Ethernet, IP and TCP headers down, 16 bits at a time (the
	 * TCP header starts 2 bytes off a 4-byte boundary). */
	words = (sizeof(struct ethhdr) + sizeof(struct iphdr)) / 2 + doff * 2;
	for (__u32 i = 0; i < (sizeof(struct ethhdr) + sizeof(struct iphdr)) / 2 + TOA_MAX_DOFF * 2; i++) {
		__u16 *dst = data + i * 2;
		__u16 *src = data + TCPOLEN_TOA + i * 2;

		if (i >= words)
			break;
		if ((void *)(src + 1) > data_end)
			return -2;
		*dst = *src;
	}
	ip = data + sizeof(struct ethhdr);
	th = (void *)(ip + 1);
	if ((void *)(th + 1) > data_end)
		return -2;
	toa = (void *)th + doff * 4;
	if ((void *)(toa + TCPOLEN_TOA) > data_end)
		return -2;
	toa[0] = TCPOPT_TOA;
	toa[1] = TCPOLEN_TOA;
	__builtin_memcpy(toa + 2, &cport, 2);
	__builtin_memcpy(toa + 4, &caddr, 4);

	oldlen = ip->tot_len;
	newlen = bpf_htons(bpf_ntohs(oldlen) + TCPOLEN_TOA);
	csum_replace2(&ip->check, oldlen, newlen);
	ip->tot_len = newlen;
	/* The pseudo-header's TCP length, the data offset word, and the
	 * option's own words. */
	csum_replace2(&th->check, bpf_htons(bpf_ntohs(oldlen) - sizeof(*ip)),
		      bpf_htons(bpf_ntohs(newlen) - sizeof(*ip)));
	oldw = *(__u16 *)((void *)th + 12);
	th->doff = doff + TCPOLEN_TOA / 4;
	neww = *(__u16 *)((void *)th + 12);
	csum_replace2(&th->check, oldw, neww);
	{
		__u16 *o = (void *)toa;
		__u32 s = (__u16)~th->check;

		s += o[0];
		s += o[1];
		s += o[2];
		s += o[3];
		th->check = csum_fold(s);
	}
	return 0;
}

#define IPV6_MIN_MTU 1280
/* An ICMPv6 error quotes as much of the packet as fits the minimum MTU. */
#define PTB_QUOTE (IPV6_MIN_MTU - 40 - 8)
#define PTB_FRAME_LEN (sizeof(struct ethhdr) + 40 + 8 + PTB_QUOTE)

/* TCP header words toa6_insert may move: doff 10 at most, so that the
 * 20-byte option fits in the 60-byte maximum. */
#define TOA6_MAX_DOFF 10

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

#endif
