/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* sync.h: connection sync from events. While a master sync daemon runs
 * (internal/daemon/sync.go sets sync_cfg.on), a connection's packet
 * toward its real writes an event to the sync_events ring when IPVS
 * would sync it (ip_vs_sync_conn_needed): a TCP connection entering a
 * state IPVS syncs (ESTABLISHED, FIN_WAIT, TIME_WAIT, CLOSE,
 * CLOSE_WAIT), and one in such a state, or a UDP one, whose last event
 * is refresh_s seconds old. The master reads the ring and multicasts
 * what it finds: its cost follows the connections that change or live
 * on, not the table, and no table is walked. A forward entry keeps its
 * last event's time and state in fields only reply entries use
 * (conn_val.ifindex, dmac[0]: SYNC_AT, SYNC_STATE), so the tables'
 * layout is what it was. */
#ifndef XIPVS_SYNC_H
#define XIPVS_SYNC_H

#include "maps.h"
#include "stats.h"

struct sync_cfg {
	__u32 on;        /* a master runs: events wanted */
	__u32 refresh_s; /* a live connection's event again after this long */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sync_cfg);
} sync_conf SEC(".maps");

/* An event: the connection as the master syncs it. IPv4 addresses in
 * the first 4 bytes. */
struct sync_event {
	__u8 saddr[16];  /* the client */
	__u8 daddr[16];  /* the virtual address */
	__u8 nsaddr[16]; /* NAT, FULLNAT: the source toward the real (FULLNAT: local address) */
	__u8 ndaddr[16]; /* NAT, FULLNAT: the real */
	__be16 sport, dport;
	__be16 nsport, ndport;
	__u32 real_id;
	__u32 svc_id;
	__u8 proto;
	__u8 state;
	__u8 flags; /* CONN_F_* */
	__u8 v6;
};

/* Never read: puts struct sync_event in the object's BTF, for bpf2go. */
const volatile struct sync_event sync_event_btf;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} sync_events SEC(".maps");

#define SYNC_AT(c) ((c)->ifindex)
#define SYNC_STATE(c) ((c)->dmac[0])

/* sync_state reports whether IPVS syncs a TCP connection in state s. */
static __always_inline int sync_state(__u8 s)
{
	return s == TCPS_ESTABLISHED || s == TCPS_FIN_WAIT || s == TCPS_TIME_WAIT || s == TCPS_CLOSE ||
	       s == TCPS_CLOSE_WAIT;
}

#define FAM_FN(op) conn_##op
#define FAM_KEY struct conn_key
#define FAM_VAL struct conn_val
#define FAM_V6 0
#include "sync_fam.h"
#include "fam_undef.h"

#define FAM_FN(op) conn6_##op
#define FAM_KEY struct conn_key6
#define FAM_VAL struct conn_val6
#define FAM_V6 1
#include "sync_fam.h"
#include "fam_undef.h"

#endif
