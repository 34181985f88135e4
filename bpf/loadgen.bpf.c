// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* loadgen.bpf.c: the benchmark harness's three XDP programs (bench/).
 *
 *   loadgen_gen      run through BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES:
 *                    writes flow number n of the configured set into the
 *                    frame (source address and port, the checksums; for
 *                    IPv6 the address's last 32 bits) and transmits it
 *                    (XDP_TX out of the run's ingress ifindex).
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
 * Frames are recycled by the live-frames page pool with whatever the last
 * hop left in them (a NAT rewrite, an IPIP header), so the generator
 * rewrites all of the headers from its template on every run. */
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

/* loadgen_ceiling's rewrite, set before load. */
volatile const __u8 ceiling_dst[ETH_ALEN];
volatile const __u8 ceiling_src[ETH_ALEN];

static __always_inline __u16 fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

SEC("xdp")
int loadgen_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct gen_cfg *cfg;
	__u64 *seq, n;
	__u32 addr, ports, sum;
	__u16 port;

	if (data + GEN_HDR_LEN > data_end)
		return XDP_ABORTED;
	cfg = bpf_map_lookup_elem(&gen_config, &zero);
	seq = bpf_map_lookup_elem(&gen_seq, &zero);
	if (!cfg || !seq)
		return XDP_ABORTED;
	n = __sync_fetch_and_add(seq, 1);
	if (cfg->flows)
		n %= cfg->flows;
	ports = cfg->ports ? cfg->ports : 1;
	addr = bpf_htonl(cfg->addr_base + (__u32)(n / ports));
	port = bpf_htons(cfg->port_base + (__u16)(n % ports));
	if (cfg->v6) {
		/* No header checksum; the address's last word and the port go
		 * into the TCP checksum as IPv4's do. */
		if (data + GEN6_HDR_LEN > data_end)
			return XDP_ABORTED;
		__builtin_memcpy(data, cfg->hdr, GEN6_HDR_LEN);
		*(__u32 *)(data + GEN6_SRC_LOW) = addr;
		*(__u16 *)(data + GEN6_TCP_OFF) = port;
		sum = cfg->tcp_sum + (addr & 0xffff) + (addr >> 16) + port;
		*(__u16 *)(data + GEN6_TCP_OFF + 16) = fold(sum);
		return XDP_TX;
	}

	__builtin_memcpy(data, cfg->hdr, GEN_HDR_LEN);
	*(__u32 *)(data + GEN_IP_OFF + 12) = addr;
	*(__u16 *)(data + GEN_TCP_OFF) = port;
	sum = cfg->ip_sum + (addr & 0xffff) + (addr >> 16);
	*(__u16 *)(data + GEN_IP_OFF + 10) = fold(sum);
	sum = cfg->tcp_sum + (addr & 0xffff) + (addr >> 16) + port;
	*(__u16 *)(data + GEN_TCP_OFF + 16) = fold(sum);
	return XDP_TX;
}

SEC("xdp")
int loadgen_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct sink_count *c;
	__u32 key;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP) && eth->h_proto != bpf_htons(ETH_P_IPV6))
		return XDP_PASS;
	/* IPv6 to a multicast MAC is the director's own (neighbour
	 * discovery, MLD), never a forwarded frame. */
	if (eth->h_proto == bpf_htons(ETH_P_IPV6) && (eth->h_dest[0] & 1))
		return XDP_PASS;
	key = eth->h_dest[5];
	c = bpf_map_lookup_elem(&sink_counts, &key);
	if (c) {
		c->pkts++;
		c->bytes += data_end - data;
	}
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
