/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* conn.h: TCP state seen by the director, as IPVS tracks it for packets
 * that only flow client -> server (DR and TUN: IPVS's "INPUT-ONLY" table),
 * and the cheap last-seen refresh. */
#ifndef XIPVS_CONN_H
#define XIPVS_CONN_H

#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "parse.h"
#include "structs.h"

/* Event rows: syn, fin, ack, rst; columns: current state sNO..sSA. */
static const __u8 input_only[4][TCPS_LAST] = {
	/*        sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA */
	/*syn*/ { 3,   1,   1,   3,   3,   3,   3,   3,   3,   3,   3 },
	/*fin*/ { 6,   4,   2,   5,   4,   5,   6,   7,   8,   9,   5 },
	/*ack*/ { 1,   1,   2,   1,   4,   5,   6,   7,   6,   9,   1 },
	/*rst*/ { 6,   6,   6,   3,   6,   6,   6,   6,   8,   9,   6 },
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

static __always_inline void conn_update(struct conn_val *c, const struct pkt *p)
{
	__u64 now = bpf_ktime_get_coarse_ns();
	int ev;

	if (now - c->last_seen > LAST_SEEN_GRANULARITY_NS)
		c->last_seen = now;
	if (p->proto != IPPROTO_TCP)
		return;
	ev = tcp_event(p->tcp_flags);
	if (ev < 0 || c->state >= TCPS_LAST)
		return;
	{
		__u8 next = input_only[ev][c->state];

		if (next != c->state)
			c->state = next;
	}
}

#endif
