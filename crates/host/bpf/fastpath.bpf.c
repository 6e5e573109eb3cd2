// SPDX-License-Identifier: MIT OR GPL-2.0
//
// The fast path's two BPF programs (docs/fastpath.md), compiled by crates/host/build.rs with
// `clang -O2 -g -target bpf` and loaded by crates/host/src/fastpath.rs through aya. Both run at a
// device's tcx ingress, handle only IPv4 without options and with TTL above 1 and IPv6 without
// extension headers, with hop limit above 1 and off the link's own traffic (neighbour and router
// discovery, link-local and multicast addresses), decrement TTL or hop limit like a router
// (fixing the IPv4 header checksum), and return TCX_NEXT for everything else, so the kernel's
// path and other programs on the device see it unchanged.
//
// - romana_deliver, on the uplinks: a packet for a local endpoint in the map goes straight into
//   the endpoint's namespace (bpf_redirect_peer into the pod end of its veth).
// - romana_send, on the endpoints' host-side veths: a packet from an endpoint in the map to
//   another in the map goes into that one's namespace the same way; to anything else, the
//   kernel's FIB gives the next hop, and when it is out of an uplink the packet is sent there
//   (bpf_redirect, MACs from the FIB), past ip_rcv and the forward path; or, when the uplink is a
//   veth whose far end is the next hop and nothing would see the packet leave
//   (romana_dataplane::fastpath::handoff), handed to that end as if it had crossed the wire
//   (bpf_redirect_peer). When the FIB has no neighbour yet, or the route is local or elsewhere,
//   the kernel's path takes it.
//
// The maps' keys and values are explicit structs whose layout the Rust side writes byte for byte
// (fastprog.rs: `endpoint_key`, `endpoint6_key`, `uplink_value`); the static assertions below pin
// it. Each family has its endpoint map (IPv6's with a 16-byte key); the uplinks are shared.

#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// tcx verdict "go on to the next program (and then the stack)": `enum tcx_action_base` of Linux
// 6.6's uapi, newer than the headers of Debian 12's linux-libc-dev.
#define TCX_NEXT -1
#define AF_INET 2
#define AF_INET6 10

// An endpoint: its IPv4 address as on the wire -> the index of its host-side veth.
struct endpoint_key {
	__be32 addr;
};
struct endpoint_value {
	__u32 ifindex;
};
// An endpoint's IPv6 address as on the wire -> the same value.
struct endpoint6_key {
	__u8 addr[16];
};

// An uplink, by index -> the MAC of the far end romana_send may hand packets to, valid when
// `handoff` is 1; all zero when it must transmit.
struct uplink_key {
	__u32 ifindex;
};
struct uplink_value {
	__u8 far_end[ETH_ALEN];
	__u8 handoff;
	__u8 pad;
};

_Static_assert(sizeof(struct endpoint_key) == 4, "endpoint key: 4 bytes");
_Static_assert(sizeof(struct endpoint_value) == 4, "endpoint value: 4 bytes");
_Static_assert(sizeof(struct endpoint6_key) == 16, "IPv6 endpoint key: 16 bytes");
_Static_assert(sizeof(struct uplink_key) == 4, "uplink key: 4 bytes");
_Static_assert(sizeof(struct uplink_value) == 8, "uplink value: 8 bytes");
_Static_assert(offsetof(struct uplink_value, handoff) == 6, "uplink value: flag after the MAC");

// More local endpoints than a host has; entries are allocated as they are added, so an idle
// agent holds no kernel memory for a full map.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_value);
} romana_eps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct endpoint6_key);
	__type(value, struct endpoint_value);
} romana_eps6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct uplink_key);
	__type(value, struct uplink_value);
} romana_uplinks SEC(".maps");

// The IPv4 header of a packet both programs may handle, or NULL: addressed to this host (not seen
// promiscuously), IPv4 without options, TTL above 1 (TTL 1 is left to the kernel, which answers
// it with ICMP time exceeded).
static __always_inline struct iphdr *ipv4(struct __sk_buff *skb)
{
	if (skb->pkt_type != 0 /* PACKET_HOST */ || skb->protocol != bpf_htons(ETH_P_IP))
		return NULL;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > end)
		return NULL;
	if (*(__u8 *)ip != 0x45 || ip->ttl <= 1)
		return NULL;
	return ip;
}

static __always_inline struct endpoint_value *endpoint(__be32 addr)
{
	struct endpoint_key key = {.addr = addr};
	return bpf_map_lookup_elem(&romana_eps, &key);
}

// TTL - 1 and the checksum with it (TTL is at least 2: no wrap). Returns non-zero when the
// checksum could not be fixed. The packet's pointers are invalid afterwards.
static __always_inline int decrement_ttl(struct __sk_buff *skb, struct iphdr *ip)
{
	// TTL shares a 16-bit word with the protocol: the checksum is updated over that word.
	__u16 *word = (__u16 *)&ip->ttl;
	__u16 old = *word;
	ip->ttl--;
	return bpf_l3_csum_replace(skb, sizeof(struct ethhdr) + offsetof(struct iphdr, check), old, *word, 2);
}

// Whether two MACs are the same: by hand, as clang turns __builtin_memcmp into a call to memcmp,
// which BPF has not.
static __always_inline int same_mac(const __u8 *a, const __u8 *b)
{
	return ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) | (a[5] ^ b[5])) == 0;
}

// Whether an IPv6 next header is an extension header (IANA's list, RFC 7045): the kernel parses
// those (hop-by-hop options are for every router, fragments for conntrack).
static __always_inline int extension_header(__u8 h)
{
	switch (h) {
	case 0:   // hop-by-hop options
	case 43:  // routing
	case 44:  // fragment
	case 50:  // ESP
	case 51:  // AH
	case 60:  // destination options
	case 135: // mobility
	case 139: // HIP
	case 140: // shim6
	case 253: // experiments
	case 254:
		return 1;
	}
	return 0;
}

// Whether an IPv6 address may be routed between links: not link-local (fe80::/10), which a
// router never forwards, nor multicast (ff00::/8), nor unspecified.
static __always_inline int routable(const struct in6_addr *a)
{
	__u8 b0 = a->in6_u.u6_addr8[0], b1 = a->in6_u.u6_addr8[1];
	if (b0 == 0xff || (b0 == 0xfe && (b1 & 0xc0) == 0x80))
		return 0;
	return (a->in6_u.u6_addr32[0] | a->in6_u.u6_addr32[1] | a->in6_u.u6_addr32[2] | a->in6_u.u6_addr32[3]) != 0;
}

// ICMPv6 types that belong to the link, not to a flow between endpoints: multicast listener
// queries, reports and done (130-132), router solicitation and advertisement, neighbour
// solicitation and advertisement, redirect (133-137), MLDv2 reports (143). The policy's
// always-allowed types (ICMPV6_ALWAYS_ALLOWED) and redirects.
static __always_inline int link_icmpv6(__u8 type)
{
	return (type >= 130 && type <= 137) || type == 143;
}

// Into the pod end of the veth `ifindex`. A veth crossing would clear the mark there (the helper
// leaves it), so none of this namespace's marks reaches the next.
static __always_inline int into_peer(struct __sk_buff *skb, __u32 ifindex)
{
	skb->mark = 0;
	return bpf_redirect_peer(ifindex, 0);
}

// The IPv6 header of a packet both programs may handle, or NULL: addressed to this host, hop
// limit above 1 (hop limit 1 is left to the kernel, which answers it with ICMPv6 time exceeded),
// the next header a transport protocol rather than an extension header this does not parse, no
// link-local or multicast address (the kernel neither forwards those nor must anything skip it
// there), and no neighbour discovery, router discovery or multicast listener message: those are
// the link's own and always the kernel's.
static __always_inline struct ipv6hdr *ipv6(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	if ((void *)(ip6 + 1) > end)
		return NULL;
	if ((*(__u8 *)ip6 >> 4) != 6 || ip6->hop_limit <= 1)
		return NULL;
	if (extension_header(ip6->nexthdr) || !routable(&ip6->saddr) || !routable(&ip6->daddr))
		return NULL;
	if (ip6->nexthdr == IPPROTO_ICMPV6) {
		__u8 *type = (void *)(ip6 + 1);
		if ((void *)(type + 1) > end || link_icmpv6(*type))
			return NULL;
	}
	return ip6;
}

static __always_inline struct endpoint_value *endpoint6(const struct in6_addr *addr)
{
	struct endpoint6_key key;
	__builtin_memcpy(key.addr, addr, sizeof(key.addr));
	return bpf_map_lookup_elem(&romana_eps6, &key);
}

// The uplink the FIB's answer leaves by, when romana_send may send there: the Ethernet header
// takes the FIB's MACs, and the result says whether to hand the packet to the far end (1) or
// transmit it (0); -1 when the kernel's path takes it (not an uplink: toward a local endpoint its
// firewall must see the packet).
static __always_inline int uplink(struct __sk_buff *skb, struct bpf_fib_lookup *fib)
{
	struct uplink_key key = {.ifindex = fib->ifindex};
	struct uplink_value *up = bpf_map_lookup_elem(&romana_uplinks, &key);
	if (!up)
		return -1;
	// Handed to the far end as if it had crossed the wire when the uplink's entry holds its MAC
	// and the next hop is that end; otherwise the uplink transmits.
	int handoff = up->handoff == 1 && same_mac(up->far_end, fib->dmac);
	struct ethhdr *eth = (void *)(long)skb->data;
	if ((void *)(eth + 1) > (void *)(long)skb->data_end)
		return -1;
	__builtin_memcpy(eth->h_dest, fib->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib->smac, ETH_ALEN);
	return handoff;
}

// Out of the uplink `ifindex`: into the far end's ingress (its namespace's stack, or its own
// romana_deliver) when `handoff`, else transmitted.
static __always_inline int out(struct __sk_buff *skb, __u32 ifindex, int handoff)
{
	if (handoff)
		return into_peer(skb, ifindex);
	return bpf_redirect(ifindex, 0);
}

static __always_inline int deliver4(struct __sk_buff *skb)
{
	struct iphdr *ip = ipv4(skb);
	if (!ip)
		return TCX_NEXT;
	struct endpoint_value *to = endpoint(ip->daddr);
	if (!to)
		return TCX_NEXT;
	__u32 ifindex = to->ifindex;
	// Only after the TTL was changed and its checksum could not be: the packet is corrupt.
	if (decrement_ttl(skb, ip))
		return TC_ACT_SHOT;
	return into_peer(skb, ifindex);
}

static __always_inline int deliver6(struct __sk_buff *skb)
{
	struct ipv6hdr *ip6 = ipv6(skb);
	if (!ip6)
		return TCX_NEXT;
	struct endpoint_value *to = endpoint6(&ip6->daddr);
	if (!to)
		return TCX_NEXT;
	// IPv6 has no header checksum.
	ip6->hop_limit--;
	return into_peer(skb, to->ifindex);
}

SEC("classifier")
int romana_deliver(struct __sk_buff *skb)
{
	if (skb->pkt_type != 0 /* PACKET_HOST */)
		return TCX_NEXT;
	if (skb->protocol == bpf_htons(ETH_P_IP))
		return deliver4(skb);
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return deliver6(skb);
	return TCX_NEXT;
}

static __always_inline int send4(struct __sk_buff *skb)
{
	struct iphdr *ip = ipv4(skb);
	if (!ip)
		return TCX_NEXT;
	// The source must be an endpoint in the map: one no rule filters.
	if (!endpoint(ip->saddr))
		return TCX_NEXT;
	struct endpoint_value *to = endpoint(ip->daddr);
	if (to) {
		__u32 ifindex = to->ifindex;
		if (decrement_ttl(skb, ip))
			return TC_ACT_SHOT;
		return into_peer(skb, ifindex);
	}

	// Another host's: ask the FIB, as the forward path would, from this link. `tot_len` 0: the
	// kernel checks the MTU against the packet itself (GSO-aware).
	struct bpf_fib_lookup fib;
	__builtin_memset(&fib, 0, sizeof(fib));
	fib.family = AF_INET;
	fib.l4_protocol = ip->protocol;
	fib.ifindex = skb->ifindex;
	fib.tos = ip->tos;
	fib.ipv4_src = ip->saddr;
	fib.ipv4_dst = ip->daddr;
	if (bpf_fib_lookup(skb, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return TCX_NEXT;
	int handoff = uplink(skb, &fib);
	if (handoff < 0)
		return TCX_NEXT;
	if (decrement_ttl(skb, ip))
		return TC_ACT_SHOT;
	return out(skb, fib.ifindex, handoff);
}

static __always_inline int send6(struct __sk_buff *skb)
{
	struct ipv6hdr *ip6 = ipv6(skb);
	if (!ip6)
		return TCX_NEXT;
	if (!endpoint6(&ip6->saddr))
		return TCX_NEXT;
	struct endpoint_value *to = endpoint6(&ip6->daddr);
	if (to) {
		ip6->hop_limit--;
		return into_peer(skb, to->ifindex);
	}

	// As for IPv4; the flow label and traffic class take the place of the TOS (fib rules may
	// match them).
	struct bpf_fib_lookup fib;
	__builtin_memset(&fib, 0, sizeof(fib));
	fib.family = AF_INET6;
	fib.l4_protocol = ip6->nexthdr;
	fib.ifindex = skb->ifindex;
	fib.flowinfo = *(__be32 *)ip6 & bpf_htonl(0x0FFFFFFF);
	__builtin_memcpy(fib.ipv6_src, &ip6->saddr, sizeof(fib.ipv6_src));
	__builtin_memcpy(fib.ipv6_dst, &ip6->daddr, sizeof(fib.ipv6_dst));
	if (bpf_fib_lookup(skb, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return TCX_NEXT;
	int handoff = uplink(skb, &fib);
	if (handoff < 0)
		return TCX_NEXT;
	ip6->hop_limit--;
	return out(skb, fib.ifindex, handoff);
}

SEC("classifier")
int romana_send(struct __sk_buff *skb)
{
	if (skb->pkt_type != 0 /* PACKET_HOST */)
		return TCX_NEXT;
	if (skb->protocol == bpf_htons(ETH_P_IP))
		return send4(skb);
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return send6(skb);
	return TCX_NEXT;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
