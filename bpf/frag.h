/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* frag.h: fragments of the flows the director forwards, IPv4 and IPv6.
 * IPVS sees whole datagrams (the kernel reassembles them first); XDP sees
 * fragments. The first fragment carries the transport header: it is
 * handled as any packet, and its ports are noted under (addresses,
 * identification, protocol). A later fragment carries none: its ports
 * are found there, and it follows its connection with the connection's
 * transform applied to its IP header alone (the transport checksum, in
 * the first fragment, already covers what changed). A later fragment
 * that comes before its first, or of a datagram XDP did not forward,
 * goes to the kernel, as before. */
#ifndef XIPVS_FRAG_H
#define XIPVS_FRAG_H

#include "maps.h"
#include "parse.h"

/* frag_scratch_of fills the per-CPU scratch key for p's datagram; NULL
 * if there is none. */
static __always_inline struct frag_scratch *frag_scratch_of(const struct pkt *p)
{
	__u32 zero = 0;
	struct frag_scratch *s = bpf_map_lookup_elem(&frag_scratch, &zero);

	if (!s)
		return NULL;
	__builtin_memset(&s->key, 0, sizeof(s->key));
	if (p->ip6) {
		__builtin_memcpy(s->key.saddr, &p->ip6->saddr, 16);
		__builtin_memcpy(s->key.daddr, &p->ip6->daddr, 16);
	} else if (p->ip) {
		__builtin_memcpy(s->key.saddr, &p->ip->saddr, 4);
		__builtin_memcpy(s->key.daddr, &p->ip->daddr, 4);
	} else {
		return NULL;
	}
	s->key.id = p->frag_id;
	s->key.proto = p->proto;
	return s;
}

/* frag_note records a first fragment's ports. */
static __always_inline void frag_note(const struct pkt *p)
{
	struct frag_scratch *s = frag_scratch_of(p);

	if (!s)
		return;
	s->ports.sport = p->sport;
	s->ports.dport = p->dport;
	bpf_map_update_elem(&frags, &s->key, &s->ports, BPF_ANY);
}

/* frag_find gives a later fragment the ports its first fragment noted;
 * returns 0, or -1 when there are none. */
static __always_inline int frag_find(struct pkt *p)
{
	struct frag_scratch *s = frag_scratch_of(p);
	struct frag_ports *v;

	if (!s)
		return -1;
	v = bpf_map_lookup_elem(&frags, &s->key);
	if (!v)
		return -1;
	p->sport = v->sport;
	p->dport = v->dport;
	return 0;
}

/* ip_fragmented reports whether p is a fragment (first or later). An
 * IPv4 header is read again: deep in the forwarding paths, a test of
 * p->fragment (a constant on each path from the IPv4 parser) would have
 * the verifier walk every path once for whole packets and once for each
 * kind of fragment (445k instructions against 161k). IPv6's comes from
 * the extension-header walk, unknown to the verifier either way. */
static __always_inline int ip_fragmented(const struct pkt *p)
{
	if (p->ip)
		return (p->ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) != 0;
	return p->fragment != 0;
}

#endif
