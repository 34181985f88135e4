/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* synproxy.h: the SYN proxy (NAT and FULLNAT services) and admission
 * control (every service), the XDP half.
 *
 * SYN proxy, as DPVS's and the kernel's SYNPROXY target do it: a SYN to
 * a SYN-proxied service is answered here with a SYN-ACK whose sequence
 * number is a SYN cookie (the kernel's, bpf_tcp_raw_gen_syncookie_ipv4)
 * and whose window is 0; no state is kept. The client's options that
 * the cookie cannot hold (window scale, SACK, the MSS index) ride in the
 * low bits of the SYN-ACK's TSval, as the kernel's cookie_init_timestamp
 * does, and come back in the ACK's TSecr. An ACK with a valid cookie
 * goes to Go, which schedules the connection, opens it to the real and,
 * on the real's SYN-ACK, writes the adjustments below, acknowledges the
 * real and opens the client's window (dataplane/slowpath/synproxy.go). From then
 * on the connection is forwarded here, with the real's sequence numbers,
 * timestamps and window shifted to what the client was told. A spoofed
 * SYN costs one SYN-ACK and nothing else.
 *
 * Admission control: with a rate set, SYNs from sources that have not
 * completed a handshake recently (known_sources) are paced per CPU
 * (GCRA); those over the rate are dropped (STAT_SHED). Known sources
 * always pass. */
#ifndef XIPVS_SYNPROXY_H
#define XIPVS_SYNPROXY_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "consts.h"
#include "csum.h"
#include "maps.h"
#include "parse.h"
#include "rewrite.h"
#include "tcpopts.h"
#include "stats.h"

/* swap_halves byte-swaps both 16-bit halves of v: a field at an odd
 * offset from the checksummed area's start counts byte-swapped. */
static __always_inline __u32 swap_halves(__u32 v)
{
	return ((v & 0x00ff00ffu) << 8) | ((v >> 8) & 0x00ff00ffu);
}

/* tcp_set32 writes host-order value to the 32-bit field at off from the
 * TCP header th, updating its checksum. Returns -1 out of bounds. */
static __always_inline int tcp_set32(struct tcphdr *th, void *data_end, __u32 off, __u32 value)
{
	__u8 *f;
	__u32 from, to;

	if (off > 56)
		return -1;
	f = (__u8 *)th + off;
	if ((void *)(f + 4) > data_end)
		return -1;
	__builtin_memcpy(&from, f, 4);
	to = bpf_htonl(value);
	if (off & 1)
		csum_replace4(&th->check, swap_halves(from), swap_halves(to));
	else
		csum_replace4(&th->check, from, to);
	__builtin_memcpy(f, &to, 4);
	return 0;
}

/* xipvs_seqadj shifts a TCP packet (header th_off bytes into the frame)
 * of a SYN-proxied connection. Toward the real (reply 0): its
 * acknowledgment, SACK blocks and TSecr to the real's numbers. Toward
 * the client (reply 1): its sequence number, TSval and window to what
 * the client was told. A global function, verified once. */
__noinline int xipvs_seqadj(struct xdp_md *ctx, __u64 th_off, const struct seqadj *a, int reply)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct sp_opts o = {};
	struct tcphdr *th;
	__u32 delta, tsoff;
	int wshift;

	if (!a || th_off > 100)
		return -1;
	delta = a->delta;
	wshift = a->wshift;
	th = data + th_off;
	if ((void *)(th + 1) > data_end)
		return -1;
	if (reply) {
		__u32 win = bpf_ntohs(th->window);
		__be16 nwin;

		tcp_set32(th, data_end, 4, bpf_ntohl(th->seq) + delta);
		if (wshift > 0 && wshift < 15)
			win <<= wshift;
		else if (wshift < 0 && wshift > -15)
			win = (win + (1u << -wshift) - 1) >> -wshift;
		if (win > 0xffff)
			win = 0xffff;
		nwin = bpf_htons(win);
		if (nwin != th->window) {
			csum_replace2(&th->check, th->window, nwin);
			th->window = nwin;
		}
	} else if (th->ack) {
		tcp_set32(th, data_end, 8, bpf_ntohl(th->ack_seq) - delta);
	}
	xipvs_tcp_opts(ctx, th_off, &o);
	/* Re-derived: the verifier forgets th's range across the call. */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	th = data + th_off;
	if ((void *)(th + 1) > data_end)
		return -1;
	/* Read again rather than kept across the call: the callee-saved
	 * registers hold ctx, th_off, a and reply, and a spill would cost
	 * the director stack it has none of. */
	delta = a->delta;
	tsoff = a->tsoff;
	if (o.ts_off) {
		if (reply)
			tcp_set32(th, data_end, o.ts_off, o.tsval + tsoff);
		else
			tcp_set32(th, data_end, o.ts_off + 4, o.tsecr - tsoff);
	}
	if (reply)
		return 0;
	for (int i = 0; i < 4; i++) {
		__u32 off = o.sack_off + i * 8;
		__u8 *b;

		if (i >= o.sack_blocks || off > 52)
			break;
		b = (__u8 *)th + off;
		if ((void *)(b + 8) > data_end)
			break;
		tcp_set32(th, data_end, off, load_be32(b) - delta);
		tcp_set32(th, data_end, off + 4, load_be32(b + 4) - delta);
	}
	return 0;
}

/* The kernel's IPv4 SYN cookie MSS table (msstab in syncookies.c). */
static __always_inline __u32 sp_mss_index(__u32 mss)
{
	if (mss >= 1460)
		return 3;
	if (mss >= 1440)
		return 2;
	if (mss >= 1300)
		return 1;
	return 0;
}

/* SYN-ACK sizes: Ethernet, IP, TCP with MSS only (no timestamps: the
 * client's other options cannot be kept) or with MSS, SACK-permitted or
 * NOPs, timestamps, and window scale or NOPs. */
#define SP_OPTS_SHORT 4
#define SP_OPTS_LONG 20
#define SP_FRAME_SHORT (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct tcphdr) + SP_OPTS_SHORT)
#define SP_FRAME_LONG (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct tcphdr) + SP_OPTS_LONG)

/* sp_csum_ok checks a SYN's IP and TCP checksums (no payload). */
static __always_inline int sp_csum_ok(struct iphdr *ip, struct tcphdr *th, __u32 tcp_len, void *data_end)
{
	__s64 s;
	__u32 sum;

	s = bpf_csum_diff(0, 0, (__be32 *)ip, sizeof(*ip), 0);
	if (s < 0 || csum_fold(s) != 0)
		return 0;
	s = bpf_csum_diff(0, 0, (__be32 *)th, tcp_len, 0);
	if (s < 0)
		return 0;
	sum = s;
	sum = csum_add32(sum, ip->saddr);
	sum = csum_add32(sum, ip->daddr);
	sum += bpf_htons(IPPROTO_TCP);
	sum += bpf_htons(tcp_len);
	return csum_fold(sum) == 0;
}

/* sp_grow_front makes room for grow more bytes after a SYN's headers
 * (Ethernet, 20-byte IP, TCP; no payload) where the frame has no room at
 * its tail (a socket buffer's frame: generic XDP, a veth's copy): it
 * grows at the front and slides the headers there, 8 bytes at a time
 * (forward: the source is always ahead of what is written). What then
 * follows the headers is theirs no more and is overwritten by the
 * answer. Returns 0 or -1. */
static __always_inline int sp_grow_front(struct xdp_md *ctx, __u32 grow)
{
	void *data, *data_end;
	__u64 off = grow;

	if (grow > 40 || bpf_xdp_adjust_head(ctx, -(int)grow))
		return -1;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	/* A no-op (grow <= 40) the barrier keeps: the verifier, which lost
	 * grow's bound, sees the offset's (6.18, clang-19). */
	barrier_var(off);
	off &= 63;
	/* Every 8 bytes from the new front up to the old end; what is
	 * copied past the headers is never read. */
	for (int i = 0; i < (sizeof(struct ethhdr) + sizeof(struct iphdr) + 60) / 8; i++) {
		__u64 *dst = data + i * 8, *src = data + off + i * 8;

		if ((void *)(src + 1) > data_end || (void *)(dst + 1) > data_end)
			break;
		*dst = *src;
	}
	return 0;
}

/* sp_synack answers a SYN (no ACK, RST or FIN; 20-byte IP header, no
 * payload) with a cookie SYN-ACK, in place, out the way it came. */
static __always_inline int sp_synack(struct xdp_md *ctx, struct pkt *p, __u32 svc_flags, __u32 *stat)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct tcphdr *th = p->l4;
	__u32 key = 0, tcp_len, tsval = 0, mss, wscale, seq, frame;
	struct defence_cfg *def = bpf_map_lookup_elem(&defence, &key);
	__u8 dmac[ETH_ALEN], smac[ETH_ALEN];
	__be32 saddr, daddr;
	__be16 sport, dport;
	struct sp_opts o = {};
	__u32 hdr[10] = {}; /* the TCP header and options we send */
	__u8 *opt = (__u8 *)&hdr[5];
	__s64 cookie;
	__u32 sum = 0;
	int has_ts;

	*stat = STAT_SP_DROP;
	tcp_len = th->doff * 4;
	if (p->ip->ihl != 5 || tcp_len < sizeof(*th) || p->l4_len != tcp_len)
		return XDP_DROP;
	/* Room for the longest TCP header after this one's start, so that
	 * the helpers may read tcp_len bytes of it whatever it is (the
	 * kernel's xdp_synproxy selftest does the same). */
	if (bpf_xdp_adjust_tail(ctx, 60 - (int)tcp_len) && sp_grow_front(ctx, 60 - tcp_len) < 0)
		return XDP_DROP;
	{
		void *data = (void *)(long)ctx->data;
		struct ethhdr *eth = data;
		struct iphdr *ip = data + sizeof(*eth);

		data_end = (void *)(long)ctx->data_end;
		th = (void *)(ip + 1);
		if ((void *)th + 60 > data_end)
			return XDP_DROP;
		tcp_len = th->doff * 4;
		if (tcp_len < sizeof(*th))
			return XDP_DROP;
		if (!sp_csum_ok(ip, th, tcp_len, data_end))
			return XDP_DROP;
		cookie = bpf_tcp_raw_gen_syncookie_ipv4(ip, th, tcp_len);
		if (cookie < 0)
			return XDP_DROP;
		/* What the answer needs of the SYN, before the frame changes. */
		__builtin_memcpy(dmac, eth->h_source, ETH_ALEN);
		__builtin_memcpy(smac, eth->h_dest, ETH_ALEN);
		saddr = ip->daddr;
		daddr = ip->saddr;
		sport = th->dest;
		dport = th->source;
		seq = bpf_ntohl(th->seq);
	}
	xipvs_tcp_opts(ctx, sizeof(struct ethhdr) + sizeof(struct iphdr), &o);
	has_ts = o.ts_off != 0;

	/* Unset (all zero): the defaults, as Go's SetDefence writes them. */
	if (!def || !def->mss) {
		mss = 1460;
		wscale = 7;
	} else {
		mss = def->mss;
		wscale = def->wscale;
	}
	if (svc_flags & SVC_F_TOA_ROOM)
		mss -= TCPOLEN_TOA;
	hdr[0] = sport | (dport << 16);
	hdr[1] = bpf_htonl((__u32)cookie);
	hdr[2] = bpf_htonl(seq + 1);
	/* data offset, flags SYN|ACK, window 0: the client sends nothing
	 * until Go opens the window once the real has answered. */
	hdr[3] = bpf_htons(((has_ts ? 5 + SP_OPTS_LONG / 4 : 5 + SP_OPTS_SHORT / 4) << 12) | 0x12);
	hdr[4] = 0;
	opt[0] = TCPOPT_MSS;
	opt[1] = 4;
	opt[2] = mss >> 8;
	opt[3] = mss & 0xff;
	if (has_ts) {
		tsval = (__u32)(bpf_ktime_get_ns() / 1000000) & ~((1u << TS_OPT_BITS) - 1);
		tsval |= o.wscale & TS_OPT_WSCALE;
		if (o.sack_ok)
			tsval |= TS_OPT_SACK;
		tsval |= sp_mss_index((__u32)(cookie >> 32) & 0xffff) << TS_OPT_MSS_SHIFT;
		opt[4] = o.sack_ok ? TCPOPT_SACK_PERM : TCPOPT_NOP;
		opt[5] = o.sack_ok ? 2 : TCPOPT_NOP;
		opt[6] = TCPOPT_TIMESTAMP;
		opt[7] = 10;
		hdr[7] = bpf_htonl(tsval);
		hdr[8] = bpf_htonl(o.tsval);
		opt[16] = TCPOPT_NOP;
		if (o.wscale != TS_OPT_WSCALE) {
			opt[17] = TCPOPT_WINDOW;
			opt[18] = 3;
			opt[19] = wscale;
		} else {
			opt[17] = opt[18] = opt[19] = TCPOPT_NOP;
		}
	}
	frame = has_ts ? SP_FRAME_LONG : SP_FRAME_SHORT;
	{
		__u64 cur = (void *)(long)ctx->data_end - (void *)(long)ctx->data;

		asm volatile("" : "+r"(cur)); /* keep the subtraction a scalar */
		if (bpf_xdp_adjust_tail(ctx, (int)frame - (int)cur))
			return XDP_DROP;
	}
	{
		void *data = (void *)(long)ctx->data;
		struct ethhdr *eth = data;
		struct iphdr *ip = data + sizeof(*eth);
		struct tcphdr *nth = (void *)(ip + 1);
		__u32 tlen = frame - sizeof(*eth) - sizeof(*ip);

		data_end = (void *)(long)ctx->data_end;
		if (data + SP_FRAME_SHORT > data_end)
			return XDP_DROP;
		set_macs(eth, dmac, smac);
		eth->h_proto = bpf_htons(ETH_P_IP);
		*(__u8 *)ip = 0x45;
		ip->tos = 0;
		ip->tot_len = bpf_htons(sizeof(*ip) + tlen);
		ip->id = 0;
		ip->frag_off = bpf_htons(IP_DF);
		ip->ttl = 64;
		ip->protocol = IPPROTO_TCP;
		ip->check = 0;
		ip->saddr = saddr;
		ip->daddr = daddr;
		ip->check = ipv4_csum(ip);

		sum = csum_add32(sum, saddr);
		sum = csum_add32(sum, daddr);
		sum += bpf_htons(IPPROTO_TCP);
		sum += bpf_htons(tlen);
#pragma unroll
		for (int i = 0; i < 10; i++)
			if (i < tlen / 4)
				sum = csum_add32(sum, hdr[i]);
		((__u16 *)hdr)[8] = csum_fold(sum);
		if (has_ts) {
			if ((void *)nth + sizeof(struct tcphdr) + SP_OPTS_LONG > data_end)
				return XDP_DROP;
			__builtin_memcpy(nth, hdr, sizeof(struct tcphdr) + SP_OPTS_LONG);
		} else {
			if ((void *)nth + sizeof(struct tcphdr) + SP_OPTS_SHORT > data_end)
				return XDP_DROP;
			__builtin_memcpy(nth, hdr, sizeof(struct tcphdr) + SP_OPTS_SHORT);
		}
	}
	*stat = STAT_SP_SYNACK;
	return XDP_TX;
}

/* sp_cookie_ack takes a client's ACK to a SYN-proxied service with no
 * connection: with a valid cookie it goes to Go (FURTHER_PROCESSING),
 * else it is dropped. A client whose ACK was lost probes our zero window
 * with the sequence number before its next one: no data, and a cookie
 * that checks with seq + 1; it goes to Go as the ACK it stands for. */
static __always_inline int sp_cookie_ack(struct xdp_md *ctx, struct pkt *p, __u32 *stat)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct tcphdr *th = p->l4;
	struct tcphdr probe;

	*stat = STAT_SP_DROP;
	if ((p->tcp_flags & (TCP_F_SYN | TCP_F_RST | TCP_F_ACK)) != TCP_F_ACK)
		return XDP_DROP;
	if ((void *)(th + 1) > data_end)
		return XDP_DROP;
	if (bpf_tcp_raw_check_syncookie_ipv4(p->ip, th) == 0)
		return FURTHER_PROCESSING;
	if (p->l4_len != th->doff * 4)
		return XDP_DROP;
	__builtin_memcpy(&probe, th, sizeof(probe));
	probe.seq = bpf_htonl(bpf_ntohl(th->seq) + 1);
	if (bpf_tcp_raw_check_syncookie_ipv4(p->ip, &probe) != 0)
		return XDP_DROP;
	if (tcp_set32(th, data_end, 4, bpf_ntohl(th->seq) + 1) < 0)
		return XDP_DROP;
	return FURTHER_PROCESSING;
}

/* synproxy_on reports whether a service's new connections go through
 * the SYN proxy now. */
static __always_inline int synproxy_on(__u32 svc_flags)
{
	__u32 key = 0;
	struct defence_cfg *def;

	if (svc_flags & SVC_F_SYNPROXY)
		return 1;
	if (!(svc_flags & SVC_F_SYNPROXY_AUTO))
		return 0;
	def = bpf_map_lookup_elem(&defence, &key);
	return def && (def->flags & DEF_F_ENGAGED);
}

/* tcp_schedules reports whether a TCP packet that has no connection may
 * start one, as IPVS's tcp_conn_schedule: a SYN (a SYN-ACK too, for
 * active FTP), never a RST; any other packet only with --sloppy-tcp
 * (IPVS's sloppy_tcp), so that a flow ECMP moves here from another
 * director is picked up mid-stream. One map read, for packets with no
 * connection that are not SYNs. */
static __always_inline int tcp_schedules(const struct pkt *p)
{
	__u32 key = 0;
	struct defence_cfg *def;

	if (p->tcp_flags & TCP_F_RST)
		return 0;
	if (p->tcp_flags & TCP_F_SYN)
		return 1;
	def = bpf_map_lookup_elem(&defence, &key);
	return def && (def->flags & DEF_F_SLOPPY_TCP);
}

/* known_epoch is the known-source filter's clock at now (coarse ns),
 * never 0 (the mark of a slot no handshake touched). */
static __always_inline __u16 known_epoch(__u64 now)
{
	__u16 e = (__u16)(now >> KNOWN_EPOCH_SHIFT);

	return e ? e : 1;
}

/* known_slot hashes a source (an IPv4 address, or an IPv6 /64 folded to
 * 32 bits) to its slot in the filter (Fibonacci hashing). */
static __always_inline __u32 known_slot(__u32 x)
{
	return (x * 2654435761u) >> (32 - KNOWN_FILTER_BITS);
}

/* known_slot6 is known_slot for an IPv6 source's /64, folded. */
static __always_inline __u32 known_slot6(__u64 prefix)
{
	return known_slot((__u32)prefix ^ (__u32)(prefix >> 32));
}

/* known_recently reports whether some source hashing to slot completed a
 * handshake within KNOWN_TTL_EPOCHS of now: if not, the source is new
 * without an LRU lookup. */
static __always_inline int known_recently(__u32 slot, __u64 now)
{
	__u32 key = 0;
	struct known_filter *f = bpf_map_lookup_elem(&known_filter, &key);
	__u16 e;

	if (!f)
		return 1; /* no filter: ask the LRU */
	e = f->epoch[slot & (KNOWN_FILTER_SLOTS - 1)];
	return e && (__u16)(known_epoch(now) - e) < KNOWN_TTL_EPOCHS;
}

/* mark_known stamps a source's slot with now's epoch. */
static __always_inline void mark_known(__u32 slot, __u64 now)
{
	__u32 key = 0;
	struct known_filter *f = bpf_map_lookup_elem(&known_filter, &key);

	if (f)
		f->epoch[slot & (KNOWN_FILTER_SLOTS - 1)] = known_epoch(now);
}

/* within_rate takes one new source's SYN from this CPU's pacing (GCRA on
 * the coarse clock: the rate holds over time, admissions bunch at its
 * ticks) and reports whether there was room for it. */
static __always_inline int within_rate(struct defence_cfg *def, __u64 now)
{
	__u32 key = 0;
	__u64 *tat = bpf_map_lookup_elem(&admit_tat, &key);

	if (!tat)
		return 1;
	if (*tat < now)
		*tat = now;
	if (*tat - now > def->admit_burst)
		return 0;
	*tat += def->admit_interval;
	return 1;
}

static __always_inline struct defence_cfg *admission_on(void)
{
	__u32 key = 0;
	struct defence_cfg *def = bpf_map_lookup_elem(&defence, &key);

	return def && def->admit_interval ? def : NULL;
}

/* admit reports whether a SYN from an IPv4 source may open a connection:
 * a known one (a handshake within the hour, still in known_sources)
 * always; a new one within the rate, which IPv4 and IPv6 sources share.
 * A flood's source costs one read of the filter, the clock and the
 * pacing: no hash lookup. */
static __always_inline int admit(__be32 saddr)
{
	struct defence_cfg *def = admission_on();
	__u64 now;

	if (!def)
		return 1;
	now = bpf_ktime_get_coarse_ns();
	if (known_recently(known_slot(saddr), now) && bpf_map_lookup_elem(&known_sources, &saddr))
		return 1;
	return within_rate(def, now);
}

/* prefix64 is the /64 of an IPv6 address, as it lies. */
static __always_inline __u64 prefix64(const void *saddr)
{
	__u64 prefix;

	__builtin_memcpy(&prefix, saddr, 8);
	return prefix;
}

/* admit6 is admit for an IPv6 source, known by its /64: one host's
 * addresses (privacy extensions) count as one source, and a flood from
 * one /64 is paced as one. */
static __always_inline int admit6(const void *saddr)
{
	struct defence_cfg *def = admission_on();
	__u64 now, prefix = prefix64(saddr);

	if (!def)
		return 1;
	now = bpf_ktime_get_coarse_ns();
	if (known_recently(known_slot6(prefix), now) &&
	    bpf_map_lookup_elem(&known_sources6, &prefix))
		return 1;
	return within_rate(def, now);
}

/* known_source records that saddr completed a handshake. */
static __always_inline void known_source(__be32 saddr)
{
	__u64 now = bpf_ktime_get_coarse_ns();

	mark_known(known_slot(saddr), now);
	bpf_map_update_elem(&known_sources, &saddr, &now, BPF_ANY);
}

/* known_source6 records that the /64 of saddr completed a handshake. */
static __always_inline void known_source6(const void *saddr)
{
	__u64 now = bpf_ktime_get_coarse_ns(), prefix = prefix64(saddr);

	mark_known(known_slot6(prefix), now);
	bpf_map_update_elem(&known_sources6, &prefix, &now, BPF_ANY);
}

#endif
