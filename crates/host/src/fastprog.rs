//! The fast path's two BPF programs, assembled here (no compiler, no object files). Both run at a
//! device's tcx ingress, handle only IPv4 without options and with TTL above 1, decrement TTL
//! like a router (fixing the header checksum), and return "next" for everything else, so the
//! kernel's path and other programs on the device see it unchanged.
//!
//! - `romana_deliver`, on the uplinks: a packet for a local endpoint in the map goes straight into
//!   the endpoint's namespace (`bpf_redirect_peer` into the pod end of its veth).
//! - `romana_send`, on the endpoints' host-side veths: a packet from an endpoint in the map to
//!   another in the map goes into that one's namespace the same way; to anything else, the
//!   kernel's FIB gives the next hop, and when it is out of an uplink the packet is sent there
//!   (`bpf_redirect`, MACs from the FIB), past `ip_rcv` and the forward path; or, when the
//!   uplink is a veth whose far end is the next hop and nothing would see the packet leave
//!   (`romana_dataplane::fastpath::handoff`), handed to that end as if it had crossed the wire
//!   (`bpf_redirect_peer`). When the FIB has no neighbour yet, or the route is local or
//!   elsewhere, the kernel's path takes it.

use std::os::fd::OwnedFd;

use crate::bpf::{Asm, Cond, Reg, Size};

/// An uplink's entry in `romana_send`'s map: the MAC of the far end it may hand packets to,
/// laid out for aligned loads against the FIB result's (2 bytes, a 16-bit "known" flag, 4
/// bytes); all zero when it must transmit.
pub fn uplink_value(far_end: Option<[u8; 6]>) -> [u8; 8] {
    match far_end {
        Some(m) => [m[0], m[1], 1, 0, m[2], m[3], m[4], m[5]],
        None => [0; 8],
    }
}

// Kernel helpers (`enum bpf_func_id`).
const MAP_LOOKUP_ELEM: i32 = 1;
const L3_CSUM_REPLACE: i32 = 10;
const REDIRECT: i32 = 23;
const FIB_LOOKUP: i32 = 69;
const REDIRECT_PEER: i32 = 155;
// `struct __sk_buff` fields.
const SKB_PKT_TYPE: i16 = 4;
const SKB_MARK: i16 = 8;
const SKB_PROTOCOL: i16 = 16;
const SKB_IFINDEX: i16 = 40;
const SKB_DATA: i16 = 76;
const SKB_DATA_END: i16 = 80;
// tcx verdicts: go on to the next program (and then the stack); drop.
const TCX_NEXT: i32 = -1;
const TC_ACT_SHOT: i32 = 2;
/// `htons(ETH_P_IP)` as the 32-bit `protocol` field reads on a little-endian machine.
const ETH_P_IP_BE: i32 = 0x0008;
const AF_INET: i32 = 2;
// Offsets in the frame: Ethernet header, then IPv4.
const IP: i16 = 14;
const IP_TOS: i16 = IP + 1;
const IP_TTL: i16 = IP + 8;
const IP_PROTO: i16 = IP + 9;
const IP_CSUM: i32 = (IP + 10) as i32;
const IP_SADDR: i16 = IP + 12;
const IP_DADDR: i16 = IP + 16;
const IP_END: i32 = (IP + 20) as i32;
// The map key on the stack, and `struct bpf_fib_lookup` (64 bytes) below it.
const KEY: i16 = -4;
const FIB: i16 = -72;
const FIB_IFINDEX: i16 = FIB + 8;
const FIB_TOS: i16 = FIB + 12;
const FIB_SRC: i16 = FIB + 16;
const FIB_DST: i16 = FIB + 32;
const FIB_SMAC: i16 = FIB + 52;
const FIB_DMAC: i16 = FIB + 58;

/// Registers: r6 the packet's context, r7/r8 its data and end (kept across helper calls), r9 the
/// target link. Checks what both programs require and leaves r7/r8 set.
fn prologue(a: &mut Asm) {
    a.mov(6, 1);
    // Only frames addressed to this host (not seen promiscuously), IPv4.
    a.load(Size::W, 2, 6, SKB_PKT_TYPE);
    a.jump_imm(Cond::Ne, 2, 0, "next");
    a.load(Size::W, 2, 6, SKB_PROTOCOL);
    a.jump_imm(Cond::Ne, 2, ETH_P_IP_BE, "next");
    a.load(Size::W, 7, 6, SKB_DATA);
    a.load(Size::W, 8, 6, SKB_DATA_END);
    a.mov(2, 7);
    a.add_imm(2, IP_END);
    a.jump_reg(Cond::Gt, 2, 8, "next");
    // Version 4 without options; TTL 1 left to the kernel, which answers it with ICMP.
    a.load(Size::B, 2, 7, IP);
    a.jump_imm(Cond::Ne, 2, 0x45, "next");
    a.load(Size::B, 2, 7, IP_TTL);
    a.jump_imm(Cond::Le, 2, 1, "next");
}

/// `r0 = map[the packet's address at off]` (null when absent).
fn lookup(a: &mut Asm, map: &OwnedFd, off: i16) {
    a.load(Size::W, 2, 7, off);
    lookup_reg(a, map, 2);
}

/// `r0 = map[reg]` (null when absent); the key goes through the stack.
fn lookup_reg(a: &mut Asm, map: &OwnedFd, reg: Reg) {
    a.store(Size::W, 10, KEY, reg);
    a.load_map(1, map);
    a.mov(2, 10);
    a.add_imm(2, i32::from(KEY));
    a.call(MAP_LOOKUP_ELEM);
}

/// TTL - 1 and the checksum with it: TTL is the low byte of the 16-bit word it shares with the
/// protocol (as loaded little-endian), and it is at least 2, so no borrow. The packet pointers
/// are invalid afterwards.
fn decrement_ttl(a: &mut Asm) {
    a.load(Size::H, 3, 7, IP_TTL);
    a.mov(4, 3);
    a.add_imm(4, -1);
    a.store(Size::H, 7, IP_TTL, 4);
    a.mov(1, 6);
    a.mov_imm(2, IP_CSUM);
    a.mov_imm(5, 2);
    a.call(L3_CSUM_REPLACE);
    a.jump_imm(Cond::Ne, 0, 0, "drop");
}

/// Into the pod end of the veth in r9.
fn into_pod(a: &mut Asm) {
    clear_mark(a);
    a.mov(1, 9);
    a.mov_imm(2, 0);
    a.call(REDIRECT_PEER);
    a.exit();
}

/// Before `bpf_redirect_peer` into another namespace: a veth crossing would clear the mark
/// there (the helper leaves it), so none of this namespace's marks reaches the next.
fn clear_mark(a: &mut Asm) {
    a.store_imm(Size::W, 6, SKB_MARK, 0);
}

fn epilogue(mut a: Asm) -> Vec<u64> {
    a.label("next");
    a.mov_imm(0, TCX_NEXT);
    a.exit();
    // Only after the TTL was changed and its checksum could not be: the packet is corrupt.
    a.label("drop");
    a.mov_imm(0, TC_ACT_SHOT);
    a.exit();
    a.finish()
}

/// `romana_deliver`, reading `endpoints` (IPv4 address -> host-side veth index).
pub fn deliver(endpoints: &OwnedFd) -> Vec<u64> {
    let mut a = Asm::default();
    prologue(&mut a);
    lookup(&mut a, endpoints, IP_DADDR);
    a.jump_imm(Cond::Eq, 0, 0, "next");
    a.load(Size::W, 9, 0, 0);
    decrement_ttl(&mut a);
    into_pod(&mut a);
    epilogue(a)
}

/// `romana_send`, reading `endpoints` and `uplinks` (index -> `uplink_value`).
pub fn send(endpoints: &OwnedFd, uplinks: &OwnedFd) -> Vec<u64> {
    let mut a = Asm::default();
    prologue(&mut a);
    // The source must be an endpoint in the map: one no rule filters.
    lookup(&mut a, endpoints, IP_SADDR);
    a.jump_imm(Cond::Eq, 0, 0, "next");
    lookup(&mut a, endpoints, IP_DADDR);
    a.jump_imm(Cond::Eq, 0, 0, "remote");
    a.load(Size::W, 9, 0, 0);
    decrement_ttl(&mut a);
    into_pod(&mut a);

    // Another host's: ask the FIB, as the forward path would, from this link.
    a.label("remote");
    for off in (FIB..0).step_by(8) {
        a.store_imm(Size::DW, 10, off, 0);
    }
    a.store_imm(Size::B, 10, FIB, AF_INET);
    a.load(Size::B, 2, 7, IP_PROTO);
    a.store(Size::B, 10, FIB + 1, 2);
    a.load(Size::W, 2, 6, SKB_IFINDEX);
    a.store(Size::W, 10, FIB_IFINDEX, 2);
    a.load(Size::B, 2, 7, IP_TOS);
    a.store(Size::B, 10, FIB_TOS, 2);
    a.load(Size::W, 2, 7, IP_SADDR);
    a.store(Size::W, 10, FIB_SRC, 2);
    a.load(Size::W, 2, 7, IP_DADDR);
    a.store(Size::W, 10, FIB_DST, 2);
    // `tot_len` 0: the kernel checks the MTU against the packet itself (GSO-aware).
    a.mov(1, 6);
    a.mov(2, 10);
    a.add_imm(2, i32::from(FIB));
    a.mov_imm(3, 64);
    a.mov_imm(4, 0);
    a.call(FIB_LOOKUP);
    a.jump_imm(Cond::Ne, 0, 0, "next");
    // Only out of an uplink: toward a local endpoint its firewall must see the packet.
    a.load(Size::W, 9, 10, FIB_IFINDEX);
    lookup_reg(&mut a, uplinks, 9);
    a.jump_imm(Cond::Eq, 0, 0, "next");
    // r8 (the data end, not needed past here) becomes 1 when the uplink's entry holds its far
    // end's MAC (`uplink_value`: flag at 2) and the next hop is that end: then the packet is
    // handed to it as if it had crossed the wire. Otherwise the uplink transmits it.
    a.mov_imm(8, 0);
    a.load(Size::H, 2, 0, 2);
    a.jump_imm(Cond::Eq, 2, 0, "macs");
    a.load(Size::H, 2, 0, 0);
    a.load(Size::H, 3, 10, FIB_DMAC);
    a.jump_reg(Cond::Ne, 2, 3, "macs");
    a.load(Size::W, 2, 0, 4);
    a.load(Size::W, 3, 10, FIB_DMAC + 2);
    a.jump_reg(Cond::Ne, 2, 3, "macs");
    a.mov_imm(8, 1);
    clear_mark(&mut a);
    // The next hop's MACs (stack reads aligned: dmac at FIB+58 as 2 + 4, smac at +52 as 4 + 2).
    a.label("macs");
    a.load(Size::H, 2, 10, FIB_DMAC);
    a.store(Size::H, 7, 0, 2);
    a.load(Size::W, 2, 10, FIB_DMAC + 2);
    a.store(Size::W, 7, 2, 2);
    a.load(Size::W, 2, 10, FIB_SMAC);
    a.store(Size::W, 7, 6, 2);
    a.load(Size::H, 2, 10, FIB_SMAC + 4);
    a.store(Size::H, 7, 10, 2);
    decrement_ttl(&mut a);
    a.mov(1, 9);
    a.mov_imm(2, 0);
    a.jump_imm(Cond::Eq, 8, 0, "transmit");
    // Into the far end's ingress (its namespace's stack, or its own `romana_deliver`).
    a.call(REDIRECT_PEER);
    a.exit();
    a.label("transmit");
    a.call(REDIRECT);
    a.exit();
    epilogue(a)
}
