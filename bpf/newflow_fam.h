/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* newflow_fam.h: a new flow scheduled in XDP, written once for both
 * families. newflow.h includes it twice, defining first:
 *   FAM_NAME(fn)       the function's name in the family: fn, fn##6
 *   FAM_KEY, FAM_VAL   the connection key and value (struct conn_key[6], ...)
 *   FAM_EMB, FAM_EST   the embryonic LRU and the established table
 *   FAM_SVC_KEY, FAM_SERVICES  the service key and the services map
 *   FAM_V6             0 or 1
 *   FAM_REAL_OK(r)     whether real r has an address of the family
 *   FAM_REAL_ADDR(r)   a pointer to it
 *   FAM_SADDR(p), FAM_DADDR(p)  the packet's addresses, as __be32 words
 *   FAM_PICK_FLOW(p)   what the hash schedulers hash (picks.h)
 *   FAM_FORWARD(ctx, p, ck, c, stat)  forward.h's forward for the family
 * Every body is __always_inline, with the family's own maps. No include
 * guard, on purpose. */

/* conn_create writes the entries of a new connection to real rid of
 * service sid as the Go slow path would (dataplane.RawEntries): for NAT
 * and FULLNAT the reply entry first, then the forward entry. Returns 0
 * or -1. */
static __always_inline int FAM_NAME(conn_create)(struct xdp_md *ctx, struct pkt *p, FAM_KEY *ck,
						 __u32 sid, __u32 sflags, __u32 rid, const struct real *r,
						 const struct laddr *la, __be16 lport)
{
	FAM_VAL v = {
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
		const void *src = la ? (const void *)la->addr : (const void *)&ck->saddr;
		__be16 sport = la ? lport : ck->sport;
		__u8 fnat = la ? CONN_F_FULLNAT : 0;
		__u32 ifindex = ctx->ingress_ifindex;
		struct iface *in = bpf_map_lookup_elem(&ifaces, &ifindex);
		__be16 *rp = bpf_map_lookup_elem(&real_ports, &rid);
		__be16 rport = rp && *rp ? *rp : ck->dport;
		FAM_KEY rk = {
			.sport = rport,
			.dport = sport,
			.proto = ck->proto,
		};
		FAM_VAL rv = {
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
		__builtin_memcpy(&rk.saddr, FAM_REAL_ADDR(r), sizeof(rk.saddr));
		__builtin_memcpy(&rk.daddr, src, sizeof(rk.daddr));
		__builtin_memcpy(&rv.nsaddr, &ck->daddr, sizeof(rv.nsaddr));
		__builtin_memcpy(&rv.ndaddr, &ck->saddr, sizeof(rv.ndaddr));
		__builtin_memcpy(rv.dmac, p->eth->h_source, ETH_ALEN);
		__builtin_memcpy(rv.smac, in->mac, ETH_ALEN);
		/* A FULLNAT reply key is the local port's: never over another's
		 * (the established table first, where a live one would be). */
		if (fnat && bpf_map_lookup_elem(&FAM_EST, &rk))
			return -1;
		if (bpf_map_update_elem(&FAM_EMB, &rk, &rv, fnat ? BPF_NOEXIST : BPF_ANY))
			return -1;
		v.flags |= fnat;
		__builtin_memcpy(&v.nsaddr, src, sizeof(v.nsaddr));
		__builtin_memcpy(&v.ndaddr, FAM_REAL_ADDR(r), sizeof(v.ndaddr));
		v.nsport = sport;
		v.ndport = rport;
	}
	return bpf_map_update_elem(&FAM_EMB, ck, &v, BPF_ANY) ? -1 : 0;
}

/* new_flow schedules a new connection of service sid here, from the
 * picks Go computed (pick_new), a FULLNAT one with a local port Go handed
 * over ahead (fnat_claim), and forwards its first packet; services
 * without picks, FULLNAT services without a ring or a port in it, and
 * failures go to the Go slow path. */
static __always_inline int FAM_NAME(new_flow)(struct xdp_md *ctx, struct pkt *p, FAM_KEY *ck,
					      __u32 sid, __u32 sflags, __u32 *stat)
{
	const struct laddr *la = NULL;
	struct fnat_port *fp;
	FAM_VAL *c;
	struct real *r;
	__u32 rid;

	/* FULLNAT: a local port from the service's ring, else Go's. */
	fp = fnat_ahead(sflags, p->proto);
	if (!fp)
		return to_slow_path(ctx, stat);
	r = pick_new(sid, sflags, FAM_SADDR(p), FAM_DADDR(p), FAM_V6 ? 16 : 4, p->dport, FAM_PICK_FLOW(p), &rid);
	if (r && r->fwd == FWD_FULLNAT)
		la = fnat_laddr(fp, FAM_V6);
	else if (fp->v)
		fnat_unclaim(fp);
	if (!r || !FAM_REAL_OK(r) || (r->fwd == FWD_FULLNAT && !la))
		goto slow;
	if (FAM_NAME(conn_create)(ctx, p, ck, sid, sflags, rid, r, la, fp->lport) < 0)
		goto slow;
	stat_inc(STAT_EMB_NEW);
	c = bpf_map_lookup_elem(&FAM_EMB, ck);
	if (!c)
		return to_slow_path(ctx, stat);
	count_pick(rid);
	return FAM_FORWARD(ctx, p, ck, c, stat);
slow:
	fnat_unclaim(fp);
	if (r && (sflags & SVC_F_ROOM))
		room_add(rid, 1); /* Go binds it */
	return to_slow_path(ctx, stat);
}

/* service looks up the service of a flow's (VIP, port, protocol); port 0
 * stands for every port of the VIP (a persistent port-zero service or an
 * all-ports port group), looked up only where the prefilter says some VIP
 * has one. */
static __always_inline struct svc_val *FAM_NAME(service)(const FAM_KEY *ck, __u8 flags)
{
	FAM_SVC_KEY sk = { .port = ck->dport, .proto = ck->proto };
	struct svc_val *sv;

	__builtin_memcpy(&sk.vip, &ck->daddr, sizeof(sk.vip));
	sv = bpf_map_lookup_elem(&FAM_SERVICES, &sk);
	if (sv || !(flags & ADDR_F_ALL_PORTS))
		return sv;
	sk.port = 0;
	return bpf_map_lookup_elem(&FAM_SERVICES, &sk);
}
