/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* csum.h: Internet checksum arithmetic (RFC 1071, incremental updates by
 * RFC 1624 eqn. 3). Fields are summed as they lie in memory: the one's
 * complement sum does not depend on byte order as long as every word is
 * read the same way. */
#ifndef XIPVS_CSUM_H
#define XIPVS_CSUM_H

#include <linux/types.h>

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

#endif
