/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* tcpopts.h: the walk over a TCP header's options, and what is done with
 * the options it finds: the SYN proxy's timestamps, window scale and SACK,
 * the MSS a TUN or FULLNAT connection clamps, the end of the options a
 * FULLNAT TOA option goes in front of. */
#ifndef XIPVS_TCPOPTS_H
#define XIPVS_TCPOPTS_H

#include <linux/bpf.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "consts.h"
#include "csum.h"

#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_MSS 2
#define TCPOPT_WINDOW 3
#define TCPOPT_SACK_PERM 4
#define TCPOPT_SACK 5
#define TCPOPT_TIMESTAMP 8
#define TCP_MAX_WSCALE 14

/* The TCP options of one packet, as xipvs_tcp_opts finds them. Offsets
 * are from the TCP header's start; 0 means absent. */
struct sp_opts {
	__u32 tsval;   /* host order */
	__u32 tsecr;   /* host order */
	__u8 ts_off;   /* of TSval (TSecr follows) */
	__u8 sack_off; /* of the first SACK block */
	__u8 sack_blocks;
	__u8 wscale;   /* TS_OPT_WSCALE: none */
	__u8 sack_ok;
	__u8 mss_off;  /* of the MSS option's value */
	__u8 eol_off;  /* of an end-of-options before the header's end */
	__u8 pad;      /* 16 bytes: the SYN proxy's frame has few to spare */
};

/* load_be32 reads a 32-bit network-order field at any alignment. */
static __always_inline __u32 load_be32(const __u8 *p)
{
	__u32 v;

	__builtin_memcpy(&v, p, 4);
	return bpf_ntohl(v);
}

/* TCPOPTS_MAX is how many options xipvs_tcp_opts reads, NOPs counted
 * one by one: an MSS after eleven NOPs, the end of macOS's eight. */
#define TCPOPTS_MAX 12

/* xipvs_tcp_opts walks the options of the TCP header th_off bytes into
 * the frame (at most TCPOPTS_MAX of them) into *o; returns 0, or -1 when
 * there is no TCP header there. A global function: the verifier checks
 * it once, not at every call with every caller's state. */
__noinline int xipvs_tcp_opts(struct xdp_md *ctx, __u64 th_off, struct sp_opts *o)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct tcphdr *th;
	__u8 *base;
	__u32 end, off = sizeof(*th);

	if (!o || th_off > 100)
		return -1;
	th = data + th_off;
	if ((void *)(th + 1) > data_end)
		return -1;
	base = (void *)th;
	end = th->doff * 4;
	o->wscale = TS_OPT_WSCALE;
	for (int i = 0; i < TCPOPTS_MAX; i++) {
		__u8 *opt;
		__u8 kind, len;

		if (off + 1 > end || off > 58)
			return 0;
		opt = base + off;
		if ((void *)(opt + 1) > data_end)
			return 0;
		kind = opt[0];
		if (kind == TCPOPT_EOL) {
			o->eol_off = off;
			return 0;
		}
		if (kind == TCPOPT_NOP) {
			off++;
			continue;
		}
		if (off + 2 > end || (void *)(opt + 2) > data_end)
			return 0;
		len = opt[1];
		if (len < 2 || off + len > end)
			return 0;
		if (kind == TCPOPT_MSS && len == 4) {
			o->mss_off = off + 2;
		} else if (kind == TCPOPT_WINDOW && len == 3 && (void *)(opt + 3) <= data_end) {
			o->wscale = opt[2] < TCP_MAX_WSCALE ? opt[2] : TCP_MAX_WSCALE;
		} else if (kind == TCPOPT_SACK_PERM && len == 2) {
			o->sack_ok = 1;
		} else if (kind == TCPOPT_TIMESTAMP && len == 10 && (void *)(opt + 10) <= data_end) {
			o->tsval = load_be32(opt + 2);
			o->tsecr = load_be32(opt + 6);
			o->ts_off = off + 2;
		} else if (kind == TCPOPT_SACK && len >= 10 && (len - 2) % 8 == 0) {
			o->sack_off = off + 2;
			o->sack_blocks = (len - 2) / 8;
		}
		off += len;
	}
	return 0;
}

/* One rewrite of an end-of-options and what follows into NOPs. */
struct eol_walk {
	struct xdp_md *ctx;
	__u32 th_off; /* the TCP header's offset in the frame */
	__u32 eol;    /* the end-of-options' offset in the header */
	__u32 end;    /* the header's length */
	__u32 word;   /* the next word's offset in the header */
	__u32 sum;    /* the checksum's running complement */
	__u32 fault;
};

/* eol_step rewrites one 16-bit word from the end-of-options on (a
 * bpf_loop callback: 0 goes on, 1 stops). */
static long eol_step(__u64 index, void *arg)
{
	struct eol_walk *w = arg;
	__u16 old, new;
	__u8 *b = (__u8 *)&new;

	if (w->word >= w->end || w->word >= 60)
		return 1;
	if (bpf_xdp_load_bytes(w->ctx, w->th_off + w->word, &old, sizeof(old)))
		goto fault;
	new = old;
	if (w->word >= w->eol)
		b[0] = TCPOPT_NOP;
	b[1] = TCPOPT_NOP;
	if (bpf_xdp_store_bytes(w->ctx, w->th_off + w->word, &new, sizeof(new)))
		goto fault;
	w->sum += (__u16)~old;
	w->sum += new;
	w->word += 2;
	return 0;
fault:
	w->fault = 1;
	return 1;
}

/* eol_to_nops: before a TOA option is appended to the options of the
 * TCP header th (th_off bytes into the frame), an end-of-options among
 * them (kind 0: a receiver stops reading there; macOS pads with them)
 * and whatever follows it become NOPs, so that the TOA is read; the
 * checksum follows, word by word. The walk finds it (xipvs_tcp_opts),
 * a bpf_loop callback rewrites it: each verified once. Returns 0 or -1
 * (a fault: the frame may be half rewritten, to be dropped). */
static __always_inline int eol_to_nops(struct xdp_md *ctx, __u64 th_off)
{
	struct sp_opts o = {};
	struct eol_walk w = { .ctx = ctx, .th_off = th_off };
	__u16 check;

	if (xipvs_tcp_opts(ctx, th_off, &o) < 0 || !o.eol_off)
		return 0;
	if (bpf_xdp_load_bytes(ctx, th_off + 12, &check, sizeof(check)))
		return -1;
	w.end = (((__u8 *)&check)[0] >> 4) * 4;
	if (bpf_xdp_load_bytes(ctx, th_off + 16, &check, sizeof(check)))
		return -1;
	w.eol = o.eol_off;
	w.word = o.eol_off & ~1u;
	w.sum = (__u16)~check;
	bpf_loop(30, eol_step, &w, 0);
	if (w.fault)
		return -1;
	check = csum_fold(w.sum);
	if (bpf_xdp_store_bytes(ctx, th_off + 16, &check, sizeof(check)))
		return -1;
	return 0;
}

#endif
