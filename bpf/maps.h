/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* maps.h: every map of the director program, one purpose each. */
#ifndef XIPVS_MAPS_H
#define XIPVS_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "structs.h"

/* The defence settings (Go). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct defence_cfg);
} defence SEC(".maps");

/* SYN-proxied connections' adjustments, by either connection key. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_CONNS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct conn_key);
	__type(value, struct seqadj);
} seqadjs SEC(".maps");

/* Sources that completed a TCP handshake recently (written when a
 * connection is promoted): admission control lets them through. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, KNOWN_SOURCES);
	__type(key, __be32);
	__type(value, __u64);
} known_sources SEC(".maps");

/* IPv6 sources that completed a handshake, by their /64 (the first 8
 * bytes of the address, as they lie). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, KNOWN_SOURCES);
	__type(key, __u64);
	__type(value, __u64);
} known_sources6 SEC(".maps");

/* In front of the two LRUs above: one read of a 256 KB array tells a
 * flood's new sources, whose slots no known source touched within the
 * hour, from the rest, which the LRU then confirms (a slot shared with a
 * known source costs the lookup, never a wrong answer). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct known_filter);
} known_filter SEC(".maps");

/* Admission control's pacing of new sources, per CPU: the time (ns) the
 * next SYN is due (GCRA's theoretical arrival time). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} admit_tat SEC(".maps");

/* Virtual services; a miss here means the packet is not ours. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SERVICES);
	__type(key, struct svc_key);
	__type(value, struct svc_val);
} services SEC(".maps");

/* IPv6 virtual services. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SERVICES);
	__type(key, struct svc_key6);
	__type(value, struct svc_val);
} services6 SEC(".maps");

/* Real servers by id; id 0 is never used. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_REALS);
	__type(key, __u32);
	__type(value, struct real);
} reals SEC(".maps");

/* The prefilter: by addr_slot(address), whether some VIP (ADDR_F_VIP)
 * or NAT/FULLNAT real address (ADDR_F_NAT_SOURCE) hashes there. Most
 * traffic that is not ours leaves after two reads of it; a hit is then
 * checked against the services map or the connection table. Go keeps it
 * in step with services and nat_sources. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ADDR_SLOTS);
	__type(key, __u32);
	__type(value, __u8);
} addr_filter SEC(".maps");

/* Embryonic connections (a TCP connection before its handshake
 * completes, a UDP flow before its second packet), written by Go's slow
 * path and by new_flow, read and state-updated here. An LRU: under a SYN
 * flood the oldest embryonic entries make room, nothing else does. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_CONNS);
	__type(key, struct conn_key);
	__type(value, struct conn_val);
} conns SEC(".maps");

/* Established connections, promoted from conns (conn_promote). A plain
 * hash: an entry leaves only by its timeout (the sweep) or its real's
 * removal, never to make room; when it is full a connection stays
 * embryonic (counted: est_full). Allocated per entry. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_CONNS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct conn_key);
	__type(value, struct conn_val);
} est_conns SEC(".maps");

/* IPv6 connections: conns and est_conns for IPv6 tuples. Go sizes them
 * (a quarter of the IPv4 tables unless told otherwise). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_CONNS / 4);
	__type(key, struct conn_key6);
	__type(value, struct conn_val6);
} conns6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_CONNS / 4);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct conn_key6);
	__type(value, struct conn_val6);
} est_conns6 SEC(".maps");

/* Services whose new flows XDP schedules: which pick sequence or table
 * is live, by service id (picks.h). A service without an entry goes to
 * Go. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct pick_ctl);
} pick_ctls SEC(".maps");

/* The pick sequences, keyed by service id << 1 | slot; allocated only
 * for the services that have them. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct pick_seq);
} pick_seqs SEC(".maps");

/* The hashing schedulers' tables (sh, dh, mh): the real of each bucket,
 * by (service id << 1 | slot, bucket); a bucket Go must decide has no
 * entry. Allocated only for the services that have them. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HASH_PICKS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct hash_pick_key);
	__type(value, __u32);
} hash_picks SEC(".maps");

/* Persistence templates (picks.h): by (service, client network,
 * virtual port). XDP makes them for the new flows it schedules, Go for
 * the slow path's, and Go ends them (expiry, a real gone or failing). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_TEMPLATES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sweep_tmpl);
	__type(value, struct tmpl_val);
} tmpls SEC(".maps");

/* Each real's port (network order; 0 keeps the client's), for NAT
 * connections XDP makes. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_REALS);
	__type(key, __u32);
	__type(value, __be16);
} real_ports SEC(".maps");

/* Connections XDP scheduled to each real, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_REALS);
	__type(key, __u32);
	__type(value, __u64);
} real_conns SEC(".maps");

/* Each real's room under its upper threshold (-x), for SVC_F_ROOM
 * services: how many more connections it may be given before IPVS would
 * find it overloaded (u - ActiveConn - InActConn). Go stores it at every
 * recount and takes one for each connection it binds; XDP takes one for
 * each it binds (picks.h room_take, room_add). A real without a
 * threshold has more room than any flood takes between two recounts.
 * Memory-mapped: Go adds atomically. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_REALS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __s64);
} real_room SEC(".maps");

/* Director interfaces: MAC and AF_XDP slot, keyed by ifindex. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_IFACES);
	__type(key, __u32);
	__type(value, struct iface);
} ifaces SEC(".maps");

/* Egress ports for a real reached through another interface. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, MAX_IFACES);
	__type(key, __u32);
	__type(value, __u32);
} tx_ports SEC(".maps");

/* AF_XDP sockets of the slow path: slot * MAX_QUEUES + rx queue. */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_IFACES * MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* Per-real traffic counters by real id, per CPU (no atomics on the hit
 * path); Go sums the CPUs, derives service totals and rates. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_REALS);
	__type(key, __u32);
	__type(value, struct real_stats);
} real_traffic SEC(".maps");

/* What the Go slow path forwarded itself (the first packets of new
 * connections), counted as the program counts: per real and by STAT_*.
 * Written by Go only (absolute totals), so that they survive a restart
 * with the rest of the counters. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_REALS);
	__type(key, __u32);
	__type(value, struct real_stats);
} slow_traffic SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} slow_stats SEC(".maps");

/* IP fragments of the flows the director forwards: the first fragment's
 * ports by (addresses, identification, protocol), so that the later
 * ones, which carry none, follow their connection to its real (as
 * Cilium's fragment tracking). An LRU: a datagram's fragments arrive
 * within microseconds of each other. Written and read by XDP only. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_FRAGS);
	__type(key, struct frag_key);
	__type(value, struct frag_ports);
} frags SEC(".maps");

/* frags' key and value under construction, per CPU: in a map value
 * rather than on the stack, which the director has little of left. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct frag_scratch);
} frag_scratch SEC(".maps");

/* Global counters (STAT_*), per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* FULLNAT local ports Go hands XDP ahead (internal/server/fnat.go):
 * FNAT_SLOTS slots per ring and protocol (ring * 2 + (proto == UDP)),
 * each 0 (empty) or laddr id << 32 | port << 16 | 1. XDP takes one with
 * an atomic exchange; Go fills the empty ones. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FNAT_RINGS * 2 * FNAT_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE); /* Go fills it in place */
	__type(key, __u32);
	__type(value, __u64);
} fnat_slots SEC(".maps");

/* Each ring's first slot not yet taken (as far as XDP knows): XDP looks
 * from there, and Go fills from there on, so the filled slots run on
 * from it. Shared by the CPUs; a race only costs a probe. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FNAT_RINGS * 2);
	__type(key, __u32);
	__type(value, __u32);
} fnat_cursor SEC(".maps");

/* new_flow's fnat_port. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fnat_port);
} fnat_scratch SEC(".maps");

/* FULLNAT local addresses by id. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_LADDRS);
	__type(key, __u32);
	__type(value, struct laddr);
} laddrs SEC(".maps");

/* Aging events (aging.h, struct age_event): an established connection
 * Go's deadline index must look at (promoted, or its state changed).
 * Go drains it at every sweep. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 23);
} age_events SEC(".maps");

/* Counted established connections per real id (struct live_count): kept
 * by the events that change them (a promotion, a state change, an end),
 * never recounted by a walk. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_REALS);
	__type(key, __u32);
	__type(value, struct live_count);
} est_live SEC(".maps");

/* Aging by Go's deadline index: on, and the timeouts (Go's). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct aging_cfg);
} aging_conf SEC(".maps");

/* Persistent services by id (Go's, rewritten at every sweep): how a
 * connection names its template (the client under the netmask). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct sweep_persist);
} sweep_persistent SEC(".maps");

#endif
