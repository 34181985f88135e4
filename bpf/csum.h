/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* csum.h: Internet checksum arithmetic (RFC 1071, incremental updates by
 * RFC 1624 eqn. 3). Fields are summed as they lie in memory: the one's
 * complement sum does not depend on byte order as long as every word is
 * read the same way. */
#ifndef XIPVS_CSUM_H
#define XIPVS_CSUM_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

static __always_inline __u16 csum_fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* csum_add32 adds both halves of a 32-bit word to a running sum. */
static __always_inline __u32 csum_add32(__u32 s, __u32 w)
{
	return s + (w & 0xffff) + (w >> 16);
}

/* csum_replace2 updates *sum for a 16-bit field going from -> to. */
static __always_inline void csum_replace2(__u16 *sum, __u16 from, __u16 to)
{
	__u32 s = (__u16)~*sum;

	s += (__u16)~from;
	s += to;
	*sum = csum_fold(s);
}

/* csum_replace4 updates *sum for a 32-bit field going from -> to. */
static __always_inline void csum_replace4(__u16 *sum, __u32 from, __u32 to)
{
	__u32 s = (__u16)~*sum;

	s = csum_add32(s, ~from);
	s = csum_add32(s, to);
	*sum = csum_fold(s);
}

/* l4_csum_replace4 is csum_replace4 for a TCP or UDP checksum: a UDP
 * checksum of zero means "none" and stays zero, and a computed zero is
 * sent as 0xffff (RFC 768). */
static __always_inline void l4_csum_replace4(__u16 *sum, __u32 from, __u32 to, int udp)
{
	if (udp && *sum == 0)
		return;
	csum_replace4(sum, from, to);
	if (udp && *sum == 0)
		*sum = 0xffff;
}

static __always_inline void l4_csum_replace2(__u16 *sum, __u16 from, __u16 to, int udp)
{
	if (udp && *sum == 0)
		return;
	csum_replace2(sum, from, to);
	if (udp && *sum == 0)
		*sum = 0xffff;
}

/* CSUM_MAX bounds what csum_bytes sums; CSUM_CHUNK is what one step
 * copies out of the frame. */
#define CSUM_MAX 2048
#define CSUM_CHUNK 32

/* One walk of csum_bytes. */
struct csum_walk {
	struct xdp_md *ctx;
	__u32 off, len;
	__s64 sum;
	__u8 buf[CSUM_CHUNK];
};

/* csum_step sums the next chunk (a bpf_loop callback: 0 goes on, 1
 * stops; sum -1 on a fault). */
static long csum_step(__u64 index, void *arg)
{
	struct csum_walk *w = arg;
	__u32 n = w->len > CSUM_CHUNK ? CSUM_CHUNK : w->len;

	if (!n)
		return 1;
	/* A no-op for n in [1, CSUM_CHUNK]: it puts that range in the
	 * verifier's sight (6.18, clang-19). */
	n = ((n - 1) & (CSUM_CHUNK - 1)) + 1;
	__builtin_memset(w->buf, 0, sizeof(w->buf));
	if (bpf_xdp_load_bytes(w->ctx, w->off, w->buf, n))
		goto fault;
	w->sum = bpf_csum_diff(NULL, 0, (__be32 *)w->buf, (n + 3) & ~3u, (__u32)w->sum);
	if (w->sum < 0)
		goto fault;
	w->off += n;
	w->len -= n;
	return 0;
fault:
	w->sum = -1;
	return 1;
}

/* csum_bytes returns the one's complement sum (unfolded, words as they
 * lie in memory) of len bytes of the frame at offset off, added to seed,
 * or -1 when they run past the frame or past CSUM_MAX. The bytes are
 * copied out a chunk at a time (bpf_xdp_load_bytes) and summed there,
 * the last chunk padded with zeros (an odd last byte is the first of a
 * word, as RFC 1071 pads it), by a bpf_loop callback the verifier checks
 * once however many places call it. */
static __always_inline __s64 csum_bytes(struct xdp_md *ctx, __u32 off, __u32 len, __u32 seed)
{
	struct csum_walk w = { .ctx = ctx, .off = off, .len = len, .sum = seed };

	if (len > CSUM_MAX)
		return -1;
	bpf_loop(CSUM_MAX / CSUM_CHUNK, csum_step, &w, 0);
	if (w.sum < 0 || w.len)
		return -1;
	return w.sum;
}

/* ipv4_csum returns the checksum of a 20-byte IPv4 header whose check
 * field is zero. */
static __always_inline __u16 ipv4_csum(const void *hdr)
{
	const __u16 *w = hdr;
	__u32 s = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		s += w[i];
	return csum_fold(s);
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

#endif
