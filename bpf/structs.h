/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* structs.h: every struct shared with Go. Explicitly padded; network byte
 * order is spelled in the type (__be32, __be16). Go mirrors these through
 * bpf2go's generated types; dataplane/layout_test.go pins their sizes. */
#ifndef XIPVS_STRUCTS_H
#define XIPVS_STRUCTS_H

#include <stddef.h>

#include <linux/types.h>
#include "consts.h"

/* Virtual service key: (VIP, port, protocol). */
struct svc_key {
	__be32 vip;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

/* An IPv6 virtual service key. */
struct svc_key6 {
	__u8 vip[16];
	__be16 port;
	__u8 proto;
	__u8 pad;
};

struct svc_val {
	__u32 id;    /* service id, chosen by Go */
	__u32 flags; /* SVC_F_* */
};

/* A fragmented datagram: its addresses (an IPv4 one in the first 4
 * bytes), identification and protocol. */
struct frag_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 id;
	__u8 proto;
	__u8 pad[3];
};

/* The ports its first fragment carried. */
struct frag_ports {
	__be16 sport;
	__be16 dport;
};

/* frags' key and value under construction (frag_scratch). */
struct frag_scratch {
	struct frag_key key;
	struct frag_ports ports;
};

/* A SYN-proxied connection's adjustments, under both of its keys: what
 * the client was told minus what the real chose. */
struct seqadj {
	__u32 delta;  /* the real's sequence numbers: cookie ISN - real's ISN */
	__u32 tsoff;  /* the real's timestamps: our TSval - the real's */
	__s8 wshift;  /* the real's window scale - the one we advertised */
	__u8 pad[3];
};

/* The director's defence settings, written by Go. */
struct defence_cfg {
	__u32 flags;        /* DEF_F_* */
	__u16 mss;          /* the MSS our SYN-ACKs advertise */
	__u8 wscale;        /* the window scale they advertise */
	__u8 pad;
	__u64 admit_interval; /* ns between new sources' SYNs per CPU; 0: no limit */
	__u64 admit_burst;    /* ns of credit a CPU may bank */
};

/* The known-source filter: by a hash of a source (an IPv4 address or an
 * IPv6 /64), the epoch of the last handshake a source hashing there
 * completed; 0: none. */
struct known_filter {
	__u16 epoch[KNOWN_FILTER_SLOTS];
};

/* Connection key: the client's 5-tuple as it reaches the director. */
struct conn_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* A connection entry, in the embryonic table (conns, an LRU) until the
 * connection is established, then in the established one (est_conns, a
 * hash that never evicts). A NAT or FULLNAT connection has two: the forward
 * entry under the client's tuple and a reply entry (CONN_F_REPLY) under
 * the tuple of the real server's replies, so either direction is found
 * in one lookup. The n* fields are the tuple a packet leaves with (NAT
 * and FULLNAT): forward NAT (CIP, RIP, CPORT, RPORT), forward FULLNAT
 * (LIP, RIP, LPORT, RPORT), replies (VIP, CIP, VPORT, CPORT). Swapping
 * the n* fields of one entry gives the key of the other. */
struct conn_val {
	__u64 last_seen; /* bpf_ktime_get_coarse_ns() of the last refresh */
	__u32 real_id;   /* index into the reals array */
	__u32 svc_id;
	__u8 state;      /* TCPS_*; UDP stays TCPS_NONE; kept on the forward entry */
	__u8 flags;      /* CONN_F_* */
	__u16 hits;      /* UDP: packets seen while embryonic (promotion) */
	__be32 nsaddr;
	__be32 ndaddr;
	__be16 nsport;
	__be16 ndport;
	__u32 ifindex;   /* reply entries: egress interface toward the client */
	__u8 dmac[6];    /* reply entries: the client's previous hop */
	__u8 smac[6];    /* reply entries: the egress interface's MAC */
};

/* An IPv6 connection's key and entry: conn_key and conn_val with
 * 16-byte addresses, in tables of their own (conns6, est_conns6) so that
 * an IPv4 connection stays 16 + 48 bytes. conn_val6 begins as conn_val
 * does (last_seen .. hits at the same offsets: conn.h's state functions
 * take either), then the n* tuple and the reply entry's next hop. */
struct conn_key6 {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct conn_val6 {
	__u64 last_seen;
	__u32 real_id;
	__u32 svc_id;
	__u8 state;
	__u8 flags;
	__u16 hits;
	__be16 nsport;
	__be16 ndport;
	__u8 nsaddr[16];
	__u8 ndaddr[16];
	__u32 ifindex;
	__u8 dmac[6];
	__u8 smac[6];
};

/* The shared prefix: code written for conn_val reads a conn_val6. */
_Static_assert(offsetof(struct conn_val6, last_seen) == offsetof(struct conn_val, last_seen), "conn_val6 prefix");
_Static_assert(offsetof(struct conn_val6, real_id) == offsetof(struct conn_val, real_id), "conn_val6 prefix");
_Static_assert(offsetof(struct conn_val6, svc_id) == offsetof(struct conn_val, svc_id), "conn_val6 prefix");
_Static_assert(offsetof(struct conn_val6, state) == offsetof(struct conn_val, state), "conn_val6 prefix");
_Static_assert(offsetof(struct conn_val6, flags) == offsetof(struct conn_val, flags), "conn_val6 prefix");
_Static_assert(offsetof(struct conn_val6, hits) == offsetof(struct conn_val, hits), "conn_val6 prefix");

/* A real server as the data plane needs it. An IPv6 real has addr 0
 * (REAL_F_IPV6) and its address in addr6. */
struct real {
	__be32 addr;
	__u32 ifindex; /* egress interface */
	__u8 mac[6];   /* next hop MAC (the real's own in DR; a gateway's
			* for a routed TUN, NAT or FULLNAT real) */
	__u8 fwd;      /* FWD_* */
	__u8 flags;    /* REAL_F_* */
	__u8 src_mac[6]; /* the egress interface's MAC, so the hit path
			  * needs no interface lookup */
	__u16 mtu;       /* egress MTU (TUN: what the outer packet must fit) */
	__be32 tun_src;  /* TUN: outer source, the director's address */
	__u8 addr6[16];  /* an IPv6 real's address */
	__u8 tun_src6[16]; /* TUN to an IPv6 real: the outer source */
};

/* A FULLNAT local address, by the id fnat_slots name it with. */
struct laddr {
	__u8 addr[16]; /* IPv4: the first 4 bytes */
	__u8 v6;
	__u8 pad[3];
};

/* A local port fnat_claim took (a per-CPU scratch: the stack is full). */
struct fnat_port {
	__u64 v;    /* the slot's value; 0: none taken */
	__u32 slot; /* where it came from, to give it back */
	__u32 lid;  /* its local address's id (laddrs) */
	__be16 lport;
	__u8 pad[6];
};

/* Traffic of one real server (per CPU): packets and bytes (IP length,
 * as IPVS counts) toward it and, NAT and FULLNAT only, back from it. */
struct real_stats {
	__u64 inpkts;
	__u64 inbytes;
	__u64 outpkts;
	__u64 outbytes;
};

/* Which of a service's two pick sequences or tables XDP reads: Go
 * writes the other, then flips slot. */
struct pick_ctl {
	__u32 slot;
	__u32 kind; /* PICK_*: a sequence, or the hash of a table */
};

/* A bucket of a hashing scheduler's table (hash_picks): service id << 1
 * | slot, as pick_seqs. */
struct hash_pick_key {
	__u32 sid_slot;
	__u32 bucket;
};

/* A service's next picks, as Go's scheduler makes them: the n-th new
 * flow of the service goes to reals[n] while n < len; past the end, the
 * tail from loop on repeats (a cycle: rr and wrr repeat from 0; a
 * lookahead of the least-connection family from where its picks become
 * periodic), or, when loop is PICK_NO_LOOP, the flow goes to Go. */
struct pick_seq {
	__u64 cursor; /* new flows scheduled from this sequence */
	__u32 len;
	__u32 loop;
	__u32 reals[PICK_SEQ_LEN];
};

/* The sweep's arguments and results (BPF_PROG_RUN context of
 * sweep.bpf.c): idle timeouts in ns by TCP state and for UDP. */
struct sweep_args {
	__u64 now;
	__u64 tcp_timeout[TCPS_LAST];
	__u64 udp_timeout;
	__u64 orphan_age;
	__u32 gen;      /* counts of this sweep carry it */
	__u32 released; /* out: FULLNAT ports written to sweep_released */
	__u64 seen;     /* out: entries visited */
	__u64 expired;  /* out: connections deleted */
	__u64 kept;     /* out: expired FULLNAT entries left for the next
			 * sweep (sweep_released was full) */
	__u32 ipv6;     /* walk the IPv6 tables too: Go sets it once an IPv6
			 * connection may exist (walking an empty table still
			 * costs its buckets) */
	__u32 drop_stale; /* also delete the connections whose real is gone
			   * (the first sweep after a restart adopted the
			   * table: no walk of its own at start) */
	__u32 full;       /* with aging by the index: walk the established
			   * tables too (count what is not, end what is due
			   * or stale); without, they are always walked */
	__u32 pad;
};

/* One real's live connections as the sweep counted them. */
struct sweep_count {
	__u32 gen;
	__u32 pad;
	__u64 active;   /* ESTABLISHED TCP, as IPVS's ActiveConn */
	__u64 inactive; /* the rest, UDP included (InActConn) */
};

/* A FULLNAT local port the sweep freed: an IPv4 address in addr's
 * first four bytes (v6 0), or an IPv6 one. */
struct sweep_port {
	__u8 addr[16];
	__be16 port;
	__u8 proto;
	__u8 v6;
};

/* A persistent service as the sweep needs it: the client netmask and
 * whether templates ignore the virtual port. */
struct sweep_persist {
	__u32 mask_bits;
	__u32 port_zero;
	__be32 mask[4]; /* mask_bits as a mask over the client's address
			 * words (Go's): no branch for the verifier to follow */
};

/* A persistence template's key (tmpls), and a template with a live
 * connection (the sweep's sweep_owned): the service, the client's
 * address under the service's netmask (an IPv4 address in its first
 * four bytes, v6 0, or an IPv6 address, v6 1) and the virtual port (0
 * for port-zero templates). */
struct sweep_tmpl {
	__u32 svc_id;
	__u8 client[16];
	__be16 vport;
	__u8 v6;
	__u8 pad;
};

/* A persistence template (tmpls): the real its client network sticks
 * to, and when a new connection last followed it (coarse ns). */
struct tmpl_val {
	__u32 real_id;
	__s32 controls;  /* established connections that follow it, as
			  * IPVS's n_control (aging.h: while they are
			  * counted); may go below 0 when Go made it again
			  * under live connections: read as none */
	__u64 last_used;
};

/* An aging event (aging.h): an established connection whose deadline
 * Go's index must (re)learn, with the stamp its index entry carries.
 * IPv4 keys in key's first 16 bytes. */
struct age_event {
	__u8 key[40];
	__u8 v6;
	__u8 state;
	__u16 stamp;
	__u32 pad;
};

/* One connection the reaper judges (sweep.bpf.c xipvs_reap): its key and
 * the stamp of Go's index entry, written by Go; out: how long until it is
 * due (ns), 0 when it ended, is gone or the entry is stale. */
struct reap_slot {
	__u8 key[40];
	__u8 v6;
	__u8 pad;
	__u16 stamp;
	__u32 pad2;
	__u64 left;
};

/* A reaper run: slots 0..n-1 of reap_slots at time now. */
struct reap_args {
	__u64 now;
	__u32 n;
	__u32 released; /* out: FULLNAT ports written to sweep_released */
	__u64 expired;  /* out: connections ended */
	__u64 kept;     /* out: due FULLNAT connections left (sweep_released full) */
};

/* Established connections per real (est_live, per CPU: the CPUs' sum
 * is the count; one CPU's share may be negative). */
struct live_count {
	__s64 active;
	__s64 inactive;
};

/* Aging by Go's deadline index (aging.h): on, and the timeouts (ns). */
struct aging_cfg {
	__u64 tcp_timeout[TCPS_LAST];
	__u64 udp_timeout;
	__u32 on;
	__u32 pad;
};

/* A director interface, keyed by ifindex. */
struct iface {
	__u8 mac[6];
	__u16 slot; /* 0..MAX_IFACES-1: selects the AF_XDP socket block */
};

#endif
