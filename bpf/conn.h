/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* conn.h: TCP state seen by the director, as IPVS tracks it (its three
 * tables: both directions for NAT and FULLNAT, client -> server only for
 * DR and TUN), and the cheap last-seen refresh. */
#ifndef XIPVS_CONN_H
#define XIPVS_CONN_H

#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "maps.h"
#include "parse.h"
#include "stats.h"
#include "structs.h"

/* IPVS's tcp_states, by direction: INPUT (client -> server when the
 * director sees both directions: NAT, FULLNAT), OUTPUT (server -> client
 * replies), INPUT-ONLY (DR, TUN: replies bypass the director).
 * Rows: syn, fin, ack, rst; columns: current state sNO..sSA. */
#define DIR_INPUT 0
#define DIR_OUTPUT 1
#define DIR_INPUT_ONLY 2

/* Not static: the object's BTF names it, and Go's copy (the slow path's
 * transform) is checked against it. */
const __u8 tcp_states[3][4][TCPS_LAST] = {
	{
	/*        sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA */
	/*syn*/ { 3,   1,   1,   3,   3,   3,   3,   3,   3,   3,   3 },
	/*fin*/ { 6,   7,   2,   5,   5,   5,   6,   7,   8,   9,   5 },
	/*ack*/ { 1,   1,   2,   1,   4,   5,   6,   7,   6,   9,   1 },
	/*rst*/ { 6,   6,   6,   3,   6,   6,   6,   6,   8,   9,   3 },
	},
	{
	/*syn*/ { 2,   1,   2,   3,   2,   2,   2,   2,   2,   9,   3 },
	/*fin*/ { 5,   4,   2,   5,   4,   5,   6,   5,   8,   9,   5 },
	/*ack*/ { 1,   1,   2,   1,   4,   5,   6,   7,   8,   1,   1 },
	/*rst*/ { 6,   6,   2,   6,   6,   5,   6,   6,   6,   6,   6 },
	},
	{
	/*syn*/ { 3,   1,   1,   3,   3,   3,   3,   3,   3,   3,   3 },
	/*fin*/ { 6,   4,   2,   5,   4,   5,   6,   7,   8,   9,   5 },
	/*ack*/ { 1,   1,   2,   1,   4,   5,   6,   7,   6,   9,   1 },
	/*rst*/ { 6,   6,   6,   3,   6,   6,   6,   6,   8,   9,   6 },
	},
};

/* tcp_event maps flags to a row as IPVS's tcp_state_idx does: rst wins,
 * then syn, fin, ack; -1 leaves the state alone. */
static __always_inline int tcp_event(__u8 flags)
{
	if (flags & TCP_F_RST)
		return 3;
	if (flags & TCP_F_SYN)
		return 0;
	if (flags & TCP_F_FIN)
		return 1;
	if (flags & TCP_F_ACK)
		return 2;
	return -1;
}

/* A SYN without ACK on a connection that is closing is a new connection
 * reusing the tuple: it goes back to the scheduler (no port-reuse stall). */
static __always_inline int conn_reused(const struct conn_val *c, const struct pkt *p)
{
	if (p->proto != IPPROTO_TCP)
		return 0;
	if ((p->tcp_flags & (TCP_F_SYN | TCP_F_ACK)) != TCP_F_SYN)
		return 0;
	return c->state == TCPS_FIN_WAIT || c->state == TCPS_TIME_WAIT ||
	       c->state == TCPS_CLOSE || c->state == TCPS_CLOSE_WAIT ||
	       c->state == TCPS_LAST_ACK;
}

/* conn_touch refreshes last_seen, at most once per granularity. */
static __always_inline void conn_touch(struct conn_val *c)
{
	__u64 now = bpf_ktime_get_coarse_ns();

	if (now - c->last_seen > LAST_SEEN_GRANULARITY_NS)
		c->last_seen = now;
}

/* conn_state moves c's TCP state on a packet of direction dir. */
static __always_inline void conn_state(struct conn_val *c, const struct pkt *p, int dir)
{
	int ev;

	if (p->proto != IPPROTO_TCP || dir < 0 || dir > DIR_INPUT_ONLY)
		return;
	ev = tcp_event(p->tcp_flags);
	if (ev < 0 || c->state >= TCPS_LAST)
		return;
	{
		__u8 next = tcp_states[dir][ev][c->state];

		if (next != c->state)
			c->state = next;
	}
}

static __always_inline void conn_update(struct conn_val *c, const struct pkt *p, int dir)
{
	conn_touch(c);
	conn_state(c, p, dir);
}

/* The tables' operations, once for both families (conn_fam.h): conn_lookup,
 * conn_peer_key, conn_promote, conn_drop_est and their conn6_ twins. */
#define FAM_FN(op) conn_##op
#define FAM_KEY struct conn_key
#define FAM_VAL struct conn_val
#define FAM_EMB conns
#define FAM_EST est_conns
#define FAM_ADDR_SET(a) ((a) != 0)
#include "conn_fam.h"
#include "fam_undef.h"

#define FAM_FN(op) conn6_##op
#define FAM_KEY struct conn_key6
#define FAM_VAL struct conn_val6
#define FAM_EMB conns6
#define FAM_EST est_conns6
#define FAM_ADDR_SET(a) (!addr6_zero(a))
#include "conn_fam.h"
#include "fam_undef.h"

/* UDP flows are promoted at their third packet: one packet is a query or
 * a flood, more is a flow. */
#define UDP_PROMOTE_HITS 2

/* conn_established reports whether embryonic entry c, just forwarded,
 * now belongs in est_conns: TCP once established after a SYN (or the SYN
 * proxy's validated handshake), UDP after a few packets. */
static __always_inline int conn_established(struct conn_val *c, const struct pkt *p)
{
	if (p->proto == IPPROTO_TCP)
		return c->state == TCPS_ESTABLISHED && (c->flags & (CONN_F_SYN_SEEN | CONN_F_SYNPROXY));
	if (c->hits < UDP_PROMOTE_HITS)
		c->hits++;
	return c->hits >= UDP_PROMOTE_HITS;
}

/* conn.h's state functions take a conn_val; an IPv6 entry begins with
 * the same fields at the same offsets (asserted in structs.h). */
#define CONN4(c6) ((struct conn_val *)(c6))

#endif
