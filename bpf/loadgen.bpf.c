// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* loadgen.bpf.c: the benchmark harness's XDP programs (bench/).
 *
 *   loadgen_gen      run through BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES
 *                    where the kernel allows it: writes flow number n of the
 *                    configured set into the frame (source address and
 *                    port, the checksums; for IPv6 the address's last 32
 *                    bits) and transmits it (XDP_TX out of the run's
 *                    ingress ifindex).
 *   loadgen_loop     the closed loop's far end, attached natively where
 *                    the subject's forwarded frames land: counts them as
 *                    loadgen_sink does, and sends every frame the loop
 *                    seeded (a tag in its last bytes) straight back to the
 *                    subject as the next flow of its slot (XDP_TX); frames
 *                    without a tag are counted and dropped.
 *   loadgen_probe    drops everything: what the harness runs once, live,
 *                    to learn whether the kernel allows live frames.
 *   loadgen_sink     attached natively where the forwarded frames land:
 *                    counts IPv4 and IPv6 frames per destination MAC (the
 *                    real server the director chose) and drops them; ARP
 *                    and the rest pass.
 *   loadgen_spoofed  attached on a flood's source: drops what comes back to
 *                    the spoofed sources (RFC 2544's benchmarking range,
 *                    198.18.0.0/15) and passes everything else, so the
 *                    host can also be a legitimate client on the same link.
 *   loadgen_ceiling  the best a forwarder can do on this hop: rewrite the
 *                    MACs and XDP_TX, no parsing beyond Ethernet, no lookup.
 *   loadgen_reflb    the minimal load balancer, what any LB pays for an
 *                    established flow: parse to the ports, one service hash
 *                    lookup, one LRU connection lookup, MAC rewrite, XDP_TX.
 *
 * Frames are recycled (by the live-frames page pool, or by the loop) with
 * whatever the last hop left in them (a NAT rewrite, an IPIP header, a TOA
 * option), so flows are written over all of the headers from the template
 * every time, after the loop has cut the frame back to the template's
 * length from its front. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Ethernet + IPv4 (no options) + TCP (no options). */
#define GEN_HDR_LEN 54
#define GEN_IP_OFF 14
#define GEN_TCP_OFF 34
/* Ethernet + IPv6 (no extension header) + TCP (no options). */
#define GEN6_HDR_LEN 74
#define GEN6_SRC_LOW 34 /* the source address's last 32 bits */
#define GEN6_TCP_OFF 54

/* What loadgen_gen sends: a header template and how flow n differs from
 * it. Checksum bases are one's complement sums (unfolded, of 16-bit words
 * as loaded from memory) of every checksummed word except the checksum
 * itself, the source address and, for TCP, the source port. */
struct gen_cfg {
	__u8 hdr[GEN6_HDR_LEN]; /* GEN_HDR_LEN bytes of it for IPv4 */
	__u16 port_base;   /* host order */
	__u32 addr_base;   /* host order */
	__u32 ports;       /* source ports per address */
	__u32 flows;       /* flows cycled through; 0: never repeat a tuple */
	__u32 ip_sum;      /* IPv4 header checksum base */
	__u32 tcp_sum;     /* TCP checksum base (pseudo header included) */
	__u32 v6;          /* the template is IPv6 */
	__u32 len;         /* the template's length */
	__u32 tail;        /* the template ends in a loop tag (LOOP_TAG_LEN
			    * bytes the checksum bases leave out) */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_cfg);
} gen_config SEC(".maps");

/* Frames generated so far (one counter, added atomically: it numbers the
 * flows, so two CPUs must not hand out the same number). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gen_seq SEC(".maps");

struct sink_count {
	__u64 pkts;
	__u64 bytes;
};

/* Frames counted by loadgen_sink, by the last byte of their destination
 * MAC. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct sink_count);
} sink_counts SEC(".maps");

/* The closed loop. A seeded frame carries a tag in its last bytes: the
 * slot it fills and the slot's generation when it was seeded. */
enum loop_const {
	LOOP_MAGIC = 0x4c50, /* "LP" */
	LOOP_TAG_LEN = 8,
	LOOP_MAX_FRAME = 2048,
	LOOP_MAX_SLOTS = 4096,
};

struct loop_tag {
	__be16 magic;
	__u16 gen;
	__u32 slot;
};

/* What loadgen_loop does with tagged frames. Flow numbers: the frame of
 * slot s on its k-th trip carries flow start + k * slots + s (modulo
 * gen_cfg.flows where set), so a loop never repeats a tuple unless told
 * to cycle through a set. */
struct loop_cfg {
	__u64 start;
	__u32 slots;
	__u32 on; /* 0: tagged frames are dropped (the loop drains) */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct loop_cfg);
} loop_config SEC(".maps");

/* One frame in flight per slot: its trip count and generation (the
 * seeder replaces a lost frame under a new generation; the old one, if
 * it was only late, is dropped when it comes back). */
struct loop_slot {
	__u64 k;
	__u16 gen;
	__u16 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LOOP_MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct loop_slot);
} loop_slots SEC(".maps");

/* loadgen_loop's counters (per CPU). */
enum loop_counter {
	LOOP_LOOPED,  /* sent back to the subject as the next flow */
	LOOP_STALE,   /* a replaced frame that came back late */
	LOOP_STOPPED, /* tagged, while the loop was off or for no slot */
	LOOP_COUNTERS,
};

/* Names the loop's tag and counters in the object's BTF, so that bpf2go
 * generates their Go types and constants; never read. */
const volatile struct loop_types {
	enum loop_const consts;
	enum loop_counter counter;
	struct loop_tag tag;
} loadgen_loop_types;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, LOOP_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} loop_counts SEC(".maps");

/* loadgen_ceiling's rewrite, set before load. */
volatile const __u8 ceiling_dst[ETH_ALEN];
volatile const __u8 ceiling_src[ETH_ALEN];

static __always_inline __u16 fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* write_flow writes flow n of cfg over the headers of the frame at data
 * (cfg->len bytes long): the template's headers with n's source address
 * and port, and both checksums completed. Returns -1 if the frame is
 * shorter than the template says. */
static __always_inline int write_flow(void *data, void *data_end, const struct gen_cfg *cfg, __u64 n)
{
	__u32 addr, ports, sum, tail = 0;
	__u16 port;

	ports = cfg->ports ? cfg->ports : 1;
	addr = bpf_htonl(cfg->addr_base + (__u32)(n / ports));
	port = bpf_htons(cfg->port_base + (__u16)(n % ports));
	if (cfg->tail) {
		/* The tag's four words join the TCP checksum as the address
		 * and port do; the bound keeps the offset in the verifier's
		 * sight (a frame is at most LOOP_MAX_FRAME bytes). */
		__u32 off = cfg->len - LOOP_TAG_LEN;
		__u16 *t;

		if (off > LOOP_MAX_FRAME - LOOP_TAG_LEN)
			return -1;
		t = data + off;
		if ((void *)(t + 4) > data_end)
			return -1;
		tail = (__u32)t[0] + t[1] + t[2] + t[3];
	}
	if (cfg->v6) {
		/* No header checksum; the address's last word and the port go
		 * into the TCP checksum as IPv4's do. */
		if (data + GEN6_HDR_LEN > data_end)
			return -1;
		__builtin_memcpy(data, cfg->hdr, GEN6_HDR_LEN);
		*(__u32 *)(data + GEN6_SRC_LOW) = addr;
		*(__u16 *)(data + GEN6_TCP_OFF) = port;
		sum = cfg->tcp_sum + (addr & 0xffff) + (addr >> 16) + port + tail;
		*(__u16 *)(data + GEN6_TCP_OFF + 16) = fold(sum);
		return 0;
	}
	if (data + GEN_HDR_LEN > data_end)
		return -1;
	__builtin_memcpy(data, cfg->hdr, GEN_HDR_LEN);
	*(__u32 *)(data + GEN_IP_OFF + 12) = addr;
	*(__u16 *)(data + GEN_TCP_OFF) = port;
	sum = cfg->ip_sum + (addr & 0xffff) + (addr >> 16);
	*(__u16 *)(data + GEN_IP_OFF + 10) = fold(sum);
	sum = cfg->tcp_sum + (addr & 0xffff) + (addr >> 16) + port + tail;
	*(__u16 *)(data + GEN_TCP_OFF + 16) = fold(sum);
	return 0;
}

SEC("xdp")
int loadgen_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct gen_cfg *cfg;
	__u64 *seq, n;

	cfg = bpf_map_lookup_elem(&gen_config, &zero);
	seq = bpf_map_lookup_elem(&gen_seq, &zero);
	if (!cfg || !seq)
		return XDP_ABORTED;
	n = __sync_fetch_and_add(seq, 1);
	if (cfg->flows)
		n %= cfg->flows;
	if (write_flow(data, data_end, cfg, n) < 0)
		return XDP_ABORTED;
	return XDP_TX;
}

SEC("xdp")
int loadgen_probe(struct xdp_md *ctx)
{
	return XDP_DROP;
}

/* forwarded_frame reports whether eth's frame may be one a subject
 * forwarded: IPv4 or IPv6, and not IPv6 to a multicast MAC (the
 * director's own neighbour discovery and MLD). */
static __always_inline int forwarded_frame(struct ethhdr *eth, void *data_end)
{
	if ((void *)(eth + 1) > data_end)
		return 0;
	if (eth->h_proto != bpf_htons(ETH_P_IP) && eth->h_proto != bpf_htons(ETH_P_IPV6))
		return 0;
	return !(eth->h_proto == bpf_htons(ETH_P_IPV6) && (eth->h_dest[0] & 1));
}

/* count_frame counts a frame for the real server its destination MAC
 * names. */
static __always_inline void count_frame(struct ethhdr *eth, __u64 len)
{
	__u32 key = eth->h_dest[5];
	struct sink_count *c = bpf_map_lookup_elem(&sink_counts, &key);

	if (c) {
		c->pkts++;
		c->bytes += len;
	}
}

/* loop_counted bumps one of the loop's counters. */
static __always_inline void loop_counted(enum loop_counter which)
{
	__u32 key = which;
	__u64 *c = bpf_map_lookup_elem(&loop_counts, &key);

	if (c)
		(*c)++;
}

SEC("xdp")
int loadgen_loop(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct loop_slot *slot;
	struct loop_cfg *lc;
	struct gen_cfg *cfg;
	struct loop_tag *tag;
	enum loop_counter counter;
	__u32 zero = 0, len, off, sid;
	__u16 gen;
	__u64 k, n;
	int delta;

	if (!forwarded_frame(eth, data_end))
		return XDP_PASS;
	len = data_end - data;
	count_frame(eth, len);

	/* The tag: the frame's last LOOP_TAG_LEN bytes, which no subject
	 * moves (an encapsulation or a TCP option goes in front of them). */
	if (len < sizeof(*eth) + LOOP_TAG_LEN || len > LOOP_MAX_FRAME)
		return XDP_DROP;
	/* The mask is a no-op after the check; it keeps clang-19 from
	 * folding data + off + LOOP_TAG_LEN into data_end, which the
	 * verifier cannot bound. */
	off = (len - LOOP_TAG_LEN) & (LOOP_MAX_FRAME - 1);
	tag = data + off;
	if ((void *)(tag + 1) > data_end)
		return XDP_DROP;
	if (tag->magic != bpf_htons(LOOP_MAGIC))
		return XDP_DROP; /* not the loop's: counted, as the sink does */
	lc = bpf_map_lookup_elem(&loop_config, &zero);
	cfg = bpf_map_lookup_elem(&gen_config, &zero);
	if (!lc || !cfg || !lc->on || tag->slot >= lc->slots) {
		counter = LOOP_STOPPED;
		goto drop;
	}
	sid = tag->slot;
	gen = tag->gen;
	slot = bpf_map_lookup_elem(&loop_slots, &sid);
	if (!slot || slot->gen != gen) {
		/* A frame the seeder gave up on and replaced. */
		counter = LOOP_STALE;
		goto drop;
	}
	/* Back to the template's length: what a subject added sits in
	 * front of the tag (an outer header, a TCP option), and the headers
	 * are written afresh. */
	delta = (int)len - (int)cfg->len;
	if (delta) {
		if (bpf_xdp_adjust_head(ctx, delta))
			return XDP_DROP;
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
	}
	k = slot->k + 1;
	slot->k = k;
	n = lc->start + k * lc->slots + sid;
	if (cfg->flows)
		n %= cfg->flows;
	if (write_flow(data, data_end, cfg, n) < 0)
		return XDP_DROP;
	loop_counted(LOOP_LOOPED);
	return XDP_TX;
drop:
	loop_counted(counter);
	return XDP_DROP;
}

SEC("xdp")
int loadgen_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if (!forwarded_frame(eth, data_end))
		return XDP_PASS;
	count_frame(eth, data_end - data);
	return XDP_DROP;
}

SEC("xdp")
int loadgen_spoofed(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	if ((ip->daddr & bpf_htonl(0xfffe0000)) == bpf_htonl(0xc6120000))
		return XDP_DROP;
	return XDP_PASS;
}

SEC("xdp")
int loadgen_ceiling(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	/* Byte by byte: a memcpy from a volatile const is folded to the
	 * initializer by clang-19. */
#pragma unroll
	for (int i = 0; i < ETH_ALEN; i++) {
		eth->h_dest[i] = ceiling_dst[i];
		eth->h_source[i] = ceiling_src[i];
	}
	return XDP_TX;
}

/* The reference LB's tables. */
struct ref_svc_key {
	__be32 vip;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

struct ref_conn_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct ref_conn {
	__u8 mac[ETH_ALEN]; /* the real's */
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct ref_svc_key);
	__type(value, __u32);
} ref_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 20);
	__type(key, struct ref_conn_key);
	__type(value, struct ref_conn);
} ref_conns SEC(".maps");

SEC("xdp")
int loadgen_reflb(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct ref_svc_key sk = {};
	struct ref_conn_key ck = {};
	struct ref_conn *c;
	__be16 *ports;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl < 5)
		return XDP_PASS;
	ports = (void *)ip + ip->ihl * 4;
	if ((void *)(ports + 2) > data_end || (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP))
		return XDP_PASS;
	sk.vip = ip->daddr;
	sk.port = ports[1];
	sk.proto = ip->protocol;
	if (!bpf_map_lookup_elem(&ref_services, &sk))
		return XDP_PASS;
	ck.saddr = ip->saddr;
	ck.daddr = ip->daddr;
	ck.sport = ports[0];
	ck.dport = ports[1];
	ck.proto = ip->protocol;
	c = bpf_map_lookup_elem(&ref_conns, &ck);
	if (!c)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, c->mac, ETH_ALEN);
#pragma unroll
	for (int i = 0; i < ETH_ALEN; i++)
		eth->h_source[i] = ceiling_src[i];
	return XDP_TX;
}

char _license[] SEC("license") = "Dual BSD/GPL";
