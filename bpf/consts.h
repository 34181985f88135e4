/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/* consts.h: limits (overridable with -D at build time), verdict helpers,
 * counter indexes and the IPVS TCP state numbers shared with Go. */
#ifndef XIPVS_CONSTS_H
#define XIPVS_CONSTS_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

#ifndef MAX_SERVICES
/* Entries of the services map: one per virtual port; a port group
 * (firewall-mark service) takes one per port it binds. */
#define MAX_SERVICES 65536
#endif
#ifndef MAX_REALS
#define MAX_REALS 8192
#endif
/* Default size of the connection table; Go resizes it before load. */
#ifndef MAX_CONNS
#define MAX_CONNS 1048576
#endif

/* Connections the reaper judges in one run (reap_slots). */
#ifndef REAP_MAX
#define REAP_MAX 4096
#endif
#ifndef MAX_FRAGS
/* Fragmented datagrams in flight whose later fragments can be told
 * their connection (frags). */
#define MAX_FRAGS 16384
#endif
#ifndef MAX_IFACES
#define MAX_IFACES 64
#endif
/* AF_XDP sockets are keyed by iface_slot * MAX_QUEUES + rx_queue_index. */
#ifndef MAX_QUEUES
#define MAX_QUEUES 64
#endif

/* Longest pick sequence (a cycle of rr or wrr, a lookahead of the
 * least-connection family) XDP schedules new flows from; a power of
 * two. */
#ifndef PICK_SEQ_LEN
#define PICK_SEQ_LEN 1024
#endif
_Static_assert((PICK_SEQ_LEN & (PICK_SEQ_LEN - 1)) == 0, "PICK_SEQ_LEN: a power of two");
/* pick_seq.loop: the sequence does not repeat. */
#define PICK_NO_LOOP 0xffffffff
/* A persistent service's client netmask (-M, a prefix length) sits in
 * the top byte of its svc_val.flags. */
#define SVC_MASK_SHIFT 24
/* Persistence templates XDP and Go keep (tmpls), all services. */
#ifndef MAX_TEMPLATES
#define MAX_TEMPLATES 1048576
#endif
/* Buckets of the hashing schedulers' tables, all services together. */
#ifndef HASH_PICKS_MAX
#define HASH_PICKS_MAX 262144
#endif
/* sh's and dh's tables (CONFIG_IP_VS_SH_TAB_BITS, _DH_); mh's
 * (CONFIG_IP_VS_MH_TAB_INDEX 12: primes[4]) and its first hsiphash key
 * (generate_hash_secret: both halves 2654435761). */
#define SH_TAB_BITS 8
#define MH_TAB_SIZE 4093
#define MH_KEY1 2654435761ULL
/* A hash bucket's value with this bit: its owner is unavailable and
 * mh-fallback hashes the flow again (picks.h mh_fallback), up to
 * MH_PROBES times before Go's turn. */
#define PICK_UNAVAIL 0x80000000u
#define MH_PROBES 4

/* FULLNAT ports one sweep can free; more are left for the next. */
#ifndef MAX_SWEEP_RELEASED
#define MAX_SWEEP_RELEASED 65536
#endif

/* Sources admission control remembers (known_sources). */
#ifndef KNOWN_SOURCES
#define KNOWN_SOURCES 131072
#endif

/* Slots of the known-source filter (known_filter), 2^KNOWN_FILTER_BITS. */
#define KNOWN_FILTER_BITS 17
#define KNOWN_FILTER_SLOTS (1u << KNOWN_FILTER_BITS)

/* The filter's clock: coarse ns >> KNOWN_EPOCH_SHIFT (4.3 s), kept in 16
 * bits (it wraps in 78 h, which only ever costs a lookup). A source is
 * known for KNOWN_TTL_EPOCHS (an hour) after its last handshake. */
#define KNOWN_EPOCH_SHIFT 32
#ifndef KNOWN_TTL_EPOCHS
#define KNOWN_TTL_EPOCHS 838
#endif

/* Slots of the address prefilter (addr_filter); a power of two. */
#define ADDR_SLOTS 65536

/* addr_filter flags. */
enum addr_flag {
	ADDR_F_VIP = 0x1,        /* a VIP: traffic to it may be a service's */
	ADDR_F_NAT_SOURCE = 0x2, /* a NAT/FULLNAT real: traffic from it may be a reply */
	ADDR_F_ALL_PORTS = 0x4,  /* a VIP with a port-zero (every port) service key */
};

/* addr_slot folds an IPv4 address (as loaded from the packet) to its
 * prefilter slot. dataplane/addrfilter.go computes the same. */
static __always_inline __u32 addr_slot(__u32 addr)
{
	return (addr ^ (addr >> 16)) & (ADDR_SLOTS - 1);
}

/* addr6_slot folds an IPv6 address to its slot: its four words XORed,
 * then as addr_slot (dataplane/addrfilter.go computes the same). */
static __always_inline __u32 addr6_slot(const __u32 *a)
{
	return addr_slot(a[0] ^ a[1] ^ a[2] ^ a[3]);
}

/* A stage that did not decide the packet's fate returns this (Katran). */
#define FURTHER_PROCESSING -1

#define ETH_P_IP_BE 0x0008 /* htons(ETH_P_IP) on little endian */
#define ETH_P_IPV6_BE 0xDD86 /* htons(ETH_P_IPV6) */
/* The IPv6 extension headers parse_ipv6 walks, at most this many (the
 * kernel has no limit but the packet; five destination-options headers
 * reach a real, as through IPVS), ending at most EXT_MAX_OFF bytes into
 * the frame. xipvs_ipv6_ext's result: the upper layer's offset, its
 * type, FRAG_* and the fragment identification (as it lies in the
 * packet); EXT_F_KERNEL: the kernel's; EXT_F_BAD: malformed. */
#define IPV6_MAX_EXT 16
#define EXT_MAX_OFF 1024
#define EXT_F_KERNEL (1ULL << 26)
#define EXT_F_BAD (1ULL << 27)
#define EXT_OFF(r) ((__u32)(r) & 0x7ff)
#define EXT_NEXT(r) ((__u8)((r) >> 16))
#define EXT_FRAG(r) ((__u8)((r) >> 24) & 3)
#define EXT_ID(r) ((__u32)((__u64)(r) >> 32))
#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

/* The named enums below are shared with Go: bpf2go generates their Go
 * constants from the object's BTF (-type), so they are never copied by
 * hand. */

/* Forwarding methods (real.fwd), as IPVS IP_VS_CONN_F_* low bits. */
/* How XDP schedules a service's new flows (pick_ctl.kind, picks.h): from
 * a pick sequence, or from a table by the hash its scheduler computes. */
enum pick_kind {
	PICK_SEQUENCE = 0, /* rr, wrr, lc, wlc, sed, nq */
	PICK_SH,           /* hash_32 of the source address */
	PICK_SH_PORT,      /* hash_32 of the source port + address (sh-port) */
	PICK_DH,           /* hash_32 of the destination address */
	PICK_MH,           /* hsiphash of the source address */
	PICK_MH_PORT,      /* hsiphash of the source port + address (mh-port) */
};

enum fwd_method {
	FWD_MASQ = 0,
	FWD_TUNNEL = 2,
	FWD_DROUTE = 3,
	FWD_FULLNAT = 5, /* DPVS's DPVS_FWD_MODE_FNAT */
};

/* conn_val.flags */
enum conn_flag {
	CONN_F_REPLY = 0x1,   /* a reply entry (real server -> client) */
	CONN_F_FULLNAT = 0x2, /* either entry of a FULLNAT connection */
	CONN_F_PERSIST = 0x4, /* a persistent service's: the sweep lists
			       * the template it belongs to */
	CONN_F_SP_PENDING = 0x8, /* SYN proxy: Go is opening the connection
				  * to the real; its packets go to Go */
	CONN_F_SYNPROXY = 0x10,  /* SYN proxy: sequence numbers, timestamps
				  * and window adjusted (seqadj) */
	CONN_F_SYN_SEEN = 0x20,  /* TCP: a SYN opened it; only such a
				  * connection is promoted to est_conns (a
				  * blind ACK flood creates none there) */
	CONN_F_COUNTED = 0x40,   /* established, counted in est_live and its
				  * template's controls (aging.h) */
	CONN_F_COUNTED_ACTIVE = 0x80, /* ... as active (else inactive) */
};

/* svc_val.flags */
enum svc_flag {
	SVC_F_SYNPROXY = 0x1,      /* SYN proxy always (-j/--synproxy) */
	SVC_F_SYNPROXY_AUTO = 0x2, /* SYN proxy while the defence is engaged
				    * (a TCP service of NAT/FULLNAT reals) */
	SVC_F_TOA_ROOM = 0x4,      /* FULLNAT reals: advertise an MSS 8 lower */
	SVC_F_PERSIST = 0x8,       /* persistent (-p): new flows follow templates */
	SVC_F_TMPL_PORT0 = 0x10,   /* its templates ignore the virtual port */
	SVC_F_LOCAL = 0x20,        /* lblc: new flows follow their destination
				    * address's entry (tmpls, keyed by it) */
	SVC_F_ROOM = 0x40,         /* a real has an upper threshold: a new flow
				    * takes room from its real (real_room) or
				    * goes to Go */
	SVC_F_LOCAL_SET = 0x80,    /* lblcr: an entry's real with no room left
				    * is skipped (ip_vs_dest_set_min), where
				    * lblc binds it anyway */
};

/* A service with FULLNAT reals whose new flows XDP may open: its ring of
 * local ports (fnat_slots) in svc_val.flags bits 8..15, 0 for none. */
#define SVC_RING_SHIFT 8
#define SVC_RING_MASK 0xff
#define FNAT_RINGS 256   /* ring ids 1..255, each for TCP and UDP */
#define FNAT_SLOTS 1024  /* local ports per ring and protocol */
#define FNAT_PROBES 16   /* slots a new flow looks at before Go's turn */
#define MAX_LADDRS 1024  /* local addresses by id (laddrs) */

/* defence.flags */
enum defence_flag {
	DEF_F_ENGAGED = 0x1, /* the slow path is overloaded: SYN proxy for
			      * SVC_F_SYNPROXY_AUTO services */
	DEF_F_SLOPPY_TCP = 0x2, /* any TCP packet but a RST may start a
				 * connection (IPVS's sloppy_tcp) */
};

/* SYN cookie timestamps: the low TS_OPT_BITS of the SYN-ACK's TSval carry
 * the client's options, read back from its ACK's TSecr (the kernel's
 * cookie_init_timestamp does the same with 6 bits). */
#define TS_OPT_WSCALE 0xf  /* the client's window scale; 0xf: none */
#define TS_OPT_SACK 0x10   /* the client offered SACK */
#define TS_OPT_MSS_SHIFT 5 /* 2 bits: index into the kernel's v4 MSS table */
#define TS_OPT_BITS 7

/* TOA: the client's address as a TCP option (the toa module's format). */
#define TCPOPT_TOA 254
#define TCPOLEN_TOA 8
#define TCPOLEN_TOA6 20 /* DPVS's toa for IPv6: kind 254, port, 16-byte address */
/* Outer IPv4 header of a TUN packet. */
#define IPIP_HLEN 20
#define IP6IP6_HLEN 40 /* the outer IPv6 header of IPv6-in-IPv6 */

/* real.flags */
enum real_flag {
	REAL_F_MAC_VALID = 0x1,
	REAL_F_IPV6 = 0x2,       /* an IPv6 real: addr6 holds its address */
	REAL_F_LOCAL_OK = 0x4,   /* lblc: may keep its destination addresses
				  * (weight > 0, not overloaded as lblc's
				  * is_overloaded says; Go keeps it) */
};

/* IPVS TCP states (include/uapi/linux/ip_vs.h numbering), conn_val.state. */
enum tcp_state {
	TCPS_NONE = 0,
	TCPS_ESTABLISHED = 1,
	TCPS_SYN_SENT = 2,
	TCPS_SYN_RECV = 3,
	TCPS_FIN_WAIT = 4,
	TCPS_TIME_WAIT = 5,
	TCPS_CLOSE = 6,
	TCPS_CLOSE_WAIT = 7,
	TCPS_LAST_ACK = 8,
	TCPS_LISTEN = 9,
	TCPS_SYNACK = 10,
	TCPS_LAST = 11,
};

/* The fast path refreshes conn.last_seen at most this often, so a busy
 * flow does not write the shared entry on every packet. */
#define LAST_SEEN_GRANULARITY_NS 1000000000ULL

/* Global counters (stats map index). */
enum stat_idx {
	STAT_PASS = 0,        /* passed to the kernel: not ours */
	STAT_FORWARD,             /* connection hit, forwarded */
	STAT_SLOW_PATH,       /* new flow handed to AF_XDP */
	STAT_DROP_NO_XSK,     /* new flow, no AF_XDP socket bound: dropped */
	STAT_DROP_NO_MAC,     /* real's MAC not yet resolved: dropped */
	STAT_DROP_NO_REAL,    /* connection names a real that is gone */
	STAT_PASS_MALFORMED,  /* truncated or bad header: passed untouched */
	STAT_PASS_FRAGMENT,   /* IPv4 fragment: passed */
	STAT_REPLY,           /* NAT/FULLNAT reply un-NATed, forwarded */
	STAT_ICMP_FRAG_NEEDED,/* TUN: DF packet too big, ICMP (ICMPv6 packet too big) sent back */
	STAT_DROP_TOO_BIG,    /* TUN: packet too big for the tunnel, no DF */
	STAT_TOA_SKIPPED,     /* FULLNAT: no room for the TOA option */
	STAT_DROP_ADJUST,     /* growing or shrinking the frame failed */
	STAT_EST_FULL,        /* a connection stayed embryonic: est_conns full */
	STAT_ICMP_FORWARD,    /* an ICMP error about a connection, sent on */
	STAT_SP_SYNACK,       /* SYN proxy: a SYN answered with a cookie SYN-ACK */
	STAT_SP_DROP,         /* SYN proxy: no valid cookie (or a bad checksum) */
	STAT_SHED,            /* admission: a new source's SYN over the rate */
	STAT_NEW_SYN,         /* event: a SYN (no ACK, RST, FIN) to a VIP */
	STAT_PASS_NO_CONN,    /* TCP, no connection and no SYN (sloppy TCP off), or a RST: passed */
	STAT_SYNC_LOST,       /* a sync event the full ring could not take */
	STAT_AGE_LOST,        /* an aging event the full ring could not take: Go
			       * rebuilds its index from the table */
	STAT_AGED,            /* an established connection ended by the reaper */
	STAT_EMB_NEW,         /* event: a connection XDP wrote into the embryonic table
			       * (the sweep skips that table while it is empty) */
	STAT_MAX,
};

/* The limits and protocol numbers Go shares with this program, as an
 * enum: a #define never reaches the object's BTF, an enum does, and
 * bpf2go generates Go's constants from it (dataplane/bpfobj). */
enum shared_const {
	SC_MAX_SERVICES = MAX_SERVICES,
	SC_MAX_REALS = MAX_REALS,
	SC_MAX_IFACES = MAX_IFACES,
	SC_MAX_QUEUES = MAX_QUEUES,
	SC_MAX_CONNS = MAX_CONNS,
	SC_REAP_MAX = REAP_MAX,
	SC_ADDR_SLOTS = ADDR_SLOTS,
	SC_MH_TAB_SIZE = MH_TAB_SIZE,
	SC_PICK_UNAVAIL = PICK_UNAVAIL,
	SC_TCPOPT_TOA = TCPOPT_TOA,
	SC_TCPOLEN_TOA = TCPOLEN_TOA,
	SC_TCPOLEN_TOA6 = TCPOLEN_TOA6,
	SC_IPIP_HLEN = IPIP_HLEN,
	SC_TS_OPT_WSCALE = TS_OPT_WSCALE,
	SC_TS_OPT_SACK = TS_OPT_SACK,
	SC_TS_OPT_MSS_SHIFT = TS_OPT_MSS_SHIFT,
};

#endif
