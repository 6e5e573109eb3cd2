//! Set elements of our table over raw netlink: one nfnetlink batch of `NFT_MSG_NEWSETELEM` /
//! `NFT_MSG_DELSETELEM` messages, atomic like any nftables transaction, without `nft`. What it
//! saves is nft's cache: before it sends anything, `nft` (and libnftables, even with a context
//! kept open) reads the table's sets and chains from the kernel, and that read grows with the
//! cluster (2 ms at 1,000 policies x 10,000 endpoints, 8-11 ms at 5x, measured in
//! docs/benchmarks.md) where the batch itself costs tens of microseconds. Only element changes of
//! sets that exist go this way; anything else (new sets, chains, rules) stays `nft -f` text.
//! `script` renders the very same changes as nft text: the fallback, and the reference the
//! root test compares this path with (`tests/nftnl.rs`).

use std::fmt;
use std::net::IpAddr;

use crate::nft_error::{NftError, TABLE_SPEC};

/// An element's key, as the set's type lays it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ElementKey {
    /// `ipv4_addr` / `ipv6_addr`.
    Addr(IpAddr),
    /// `ipv4_addr . inet_service` / `ipv6_addr . inet_service`.
    AddrPort(IpAddr, u16),
}

impl ElementKey {
    /// The key as the kernel stores it: each field of a concatenation padded to a 32-bit
    /// register, the port in network byte order.
    pub fn data(&self) -> Vec<u8> {
        let addr = |ip: &IpAddr| match ip {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        match self {
            ElementKey::Addr(ip) => addr(ip),
            ElementKey::AddrPort(ip, port) => {
                let mut d = addr(ip);
                d.extend_from_slice(&port.to_be_bytes());
                d.extend_from_slice(&[0, 0]);
                d
            }
        }
    }
}

impl ElementKey {
    /// The length of `data`.
    pub fn len(&self) -> usize {
        let addr = |ip: &IpAddr| if ip.is_ipv4() { 4 } else { 16 };
        match self {
            ElementKey::Addr(ip) => addr(ip),
            ElementKey::AddrPort(ip, _) => addr(ip) + 4,
        }
    }

    /// Never: a key holds at least an address (clippy asks for it beside `len`).
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for ElementKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElementKey::Addr(a) => write!(f, "{a}"),
            ElementKey::AddrPort(a, p) => write!(f, "{a} . {p}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementOp {
    Add,
    Delete,
}

/// Elements added to or deleted from one set of our table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetElements {
    pub op: ElementOp,
    pub set: String,
    pub keys: Vec<ElementKey>,
}

/// A way to apply element changes to our table, all or nothing.
pub trait ElementPath {
    fn apply_elements(&mut self, changes: &[SetElements]) -> Result<(), NftError>;
}

/// Keys per message: a message of 1,024 IPv6 keys is about 33 KiB.
const CHUNK: usize = 1024;
/// A batch larger than this is sent as nft text instead: it must fit the socket's send buffer
/// in one `send` (the default `wmem_default` is 208 KiB), and such a change is no pod start.
pub const MAX_BATCH: usize = 128 * 1024;
/// The largest batch once the socket's buffers are raised past the system's limits
/// (`SO_SNDBUFFORCE`/`SO_RCVBUFFORCE`, which the agent may, as root): a whole table at 5,000
/// policies x 50,000 endpoints is 3-6 MB, and nft's text of it takes seconds to parse.
const LARGE_BATCH: usize = 48 << 20;

/// The same changes as `nft -f` text (deletions and additions in the order given).
pub fn script(changes: &[SetElements]) -> String {
    let table = TABLE_SPEC[1..].join(" ");
    let mut out = String::new();
    for c in changes.iter().filter(|c| !c.keys.is_empty()) {
        let verb = match c.op {
            ElementOp::Add => "add",
            ElementOp::Delete => "delete",
        };
        for chunk in c.keys.chunks(CHUNK) {
            let keys: Vec<String> = chunk.iter().map(ToString::to_string).collect();
            out.push_str(&format!("{verb} element {table} {} {{ {} }}\n", c.set, keys.join(", ")));
        }
    }
    out
}

// nfnetlink's framing (linux/netlink.h, netfilter/nfnetlink.h, netfilter/nf_tables.h).
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NFPROTO_INET: u8 = 1;

/// One encoded batch: the bytes, and the sequence numbers of the messages the kernel acks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub bytes: Vec<u8>,
    /// The first acked message's sequence number; the acked ones follow without gaps.
    pub first: u32,
    pub acked: u32,
}

fn attr(out: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len() + (4 - len % 4) % 4, 0);
}

/// A nested attribute whose content `fill` writes; its length is patched afterwards.
fn nested(out: &mut Vec<u8>, ty: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    fill(out);
    let len = (out.len() - at) as u16;
    out[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// A netlink message: header, nfgenmsg (family, version 0, resource id), attributes.
fn message(out: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]) {
    let len = 16 + 4 + attrs.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[family, 0]);
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(attrs);
}

/// The batch for `changes`, its messages numbered from `seq`: begin, one message per set, op
/// and chunk of keys (each acked), end. Empty changes give no element message.
pub fn batch(changes: &[SetElements], seq: u32) -> Batch {
    let mut bytes = Vec::new();
    message(&mut bytes, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES, &[]);
    let first = seq.wrapping_add(1);
    let mut acked = 0u32;
    for c in changes {
        let (ty, flags) = match c.op {
            ElementOp::Add => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE),
            ElementOp::Delete => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK),
        };
        for chunk in c.keys.chunks(CHUNK) {
            let mut attrs = Vec::new();
            attr(&mut attrs, NFTA_SET_ELEM_LIST_TABLE, &cstr(TABLE_SPEC[2]));
            attr(&mut attrs, NFTA_SET_ELEM_LIST_SET, &cstr(&c.set));
            nested(&mut attrs, NFTA_SET_ELEM_LIST_ELEMENTS, |out| {
                for k in chunk {
                    nested(out, NFTA_LIST_ELEM, |out| {
                        nested(out, NFTA_SET_ELEM_KEY, |out| attr(out, NFTA_DATA_VALUE, &k.data()))
                    });
                }
            });
            let this = first.wrapping_add(acked);
            message(&mut bytes, (NFNL_SUBSYS_NFTABLES << 8) | ty, flags, this, NFPROTO_INET, 0, &attrs);
            acked += 1;
        }
    }
    let end = first.wrapping_add(acked);
    message(&mut bytes, NFNL_MSG_BATCH_END, NLM_F_REQUEST, end, 0, NFNL_SUBSYS_NFTABLES, &[]);
    Batch { bytes, first, acked }
}

/// The bytes `batch` would take, without encoding it.
pub fn batch_size(changes: &[SetElements]) -> usize {
    let header = 20;
    let per_message = header + 4 + pad(c_len(TABLE_SPEC[2])) + 4;
    changes
        .iter()
        .flat_map(|c| {
            let set = 4 + pad(c_len(&c.set));
            c.keys
                .chunks(CHUNK)
                .map(move |ch| per_message + set + ch.iter().map(|k| 12 + pad(k.len())).sum::<usize>())
        })
        .sum::<usize>()
        + 2 * header
}

fn c_len(s: &str) -> usize {
    s.len() + 1
}

fn pad(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// What the kernel said about one acked message: its sequence number and errno (0: done).
fn answers(buf: &[u8]) -> Vec<(u32, i32)> {
    let u32_at = |i: usize| buf.get(i..i + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    let mut out = Vec::new();
    let mut at = 0;
    while let (Some(len), Some(kind)) =
        (u32_at(at), buf.get(at + 4..at + 6).map(|b| u16::from_ne_bytes([b[0], b[1]])))
    {
        let len = len as usize;
        if len < 16 || at + len > buf.len() {
            break;
        }
        if kind == NLMSG_ERROR
            && let (Some(code), Some(seq)) = (u32_at(at + 16), u32_at(at + 20 + 8))
        {
            out.push((seq, code as i32));
        }
        at += (len + 3) & !3;
    }
    out
}

/// The kernel's verdict on a batch, from every answer read: `Ok` when each acked message was
/// answered with 0; else the first failure, with the set it named.
pub fn verdict(b: &Batch, changes: &[SetElements], answers: &[(u32, i32)]) -> Result<(), NftError> {
    let mine = |seq: u32| seq.wrapping_sub(b.first) < b.acked;
    let mut ok = 0u32;
    for &(seq, code) in answers.iter().filter(|(s, _)| mine(*s)) {
        if code != 0 {
            let which = message_set(changes, seq.wrapping_sub(b.first) as usize);
            return Err(NftError::Elements(format!(
                "the kernel refused the elements of set {which}: {}",
                std::io::Error::from_raw_os_error(-code)
            )));
        }
        ok += 1;
    }
    if ok == b.acked {
        Ok(())
    } else {
        Err(NftError::Elements(format!("the kernel answered {ok} of {} element messages", b.acked)))
    }
}

/// The set named by the `i`th element message of a batch.
fn message_set(changes: &[SetElements], i: usize) -> String {
    changes
        .iter()
        .flat_map(|c| std::iter::repeat_n(&c.set, c.keys.len().div_ceil(CHUNK)))
        .nth(i)
        .cloned()
        .unwrap_or_else(|| "?".into())
}

/// A netlink socket of the namespace it was opened in, for element batches.
#[derive(Debug)]
pub struct ElementSocket {
    pub(crate) socket: netlink_sys::Socket,
    pub(crate) seq: u32,
    /// The largest batch this socket sends: `LARGE_BATCH` when its buffers could be raised.
    max_batch: usize,
}

fn nl_err(what: &str, e: std::io::Error) -> NftError {
    NftError::Elements(format!("{what}: {e}"))
}

impl ElementSocket {
    /// A socket in the calling thread's namespace.
    pub fn open() -> Result<ElementSocket, NftError> {
        use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
        let mut s = Socket::new(NETLINK_NETFILTER).map_err(|e| nl_err("socket", e))?;
        s.bind_auto().map_err(|e| nl_err("bind", e))?;
        s.connect(&SocketAddr::new(0, 0)).map_err(|e| nl_err("connect", e))?;
        // Acks without the request copied back; errors are read in full either way.
        s.set_cap_ack(true).map_err(|e| nl_err("NETLINK_CAP_ACK", e))?;
        // Room to send a large batch in one `send`, and for the acks of all its messages (an
        // ack lost to a full receive buffer would read as a refusal of a batch that was taken).
        let raised = [true, false].into_iter().all(|send| force_buffer(&s, send, LARGE_BATCH + (8 << 20)));
        Ok(ElementSocket { socket: s, seq: 1, max_batch: if raised { LARGE_BATCH } else { MAX_BATCH } })
    }

    /// The largest batch this socket sends (larger changes go as nft text).
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }
}

/// Sets a socket buffer's size past `rmem_max`/`wmem_max` (needs CAP_NET_ADMIN); whether it did.
fn force_buffer(s: &netlink_sys::Socket, send: bool, bytes: usize) -> bool {
    use nix::sys::socket::{setsockopt, sockopt};
    if send {
        setsockopt(s, sockopt::SndBufForce, &bytes).is_ok()
    } else {
        setsockopt(s, sockopt::RcvBufForce, &bytes).is_ok()
    }
}

impl ElementSocket {
    /// Sends one batch and reads every answer the kernel queued for it (the acks of `n`
    /// messages numbered from `first`).
    fn exchange(&mut self, bytes: &[u8], first: u32, n: u32) -> Result<Vec<(u32, i32)>, NftError> {
        self.socket.send(bytes, 0).map_err(|e| nl_err("send", e))?;
        // nfnetlink processes a batch inside `send`: every answer is queued by now, so the
        // reads never wait (an answer missing is an error, not a hang).
        let mut all = Vec::new();
        loop {
            let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
            match self.socket.recv(&mut buf, libc::MSG_DONTWAIT) {
                Ok(_) => all.extend(answers(&buf)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(nl_err("receive", e)),
            }
            if all.iter().filter(|(s, _)| s.wrapping_sub(first) < n).count() as u32 >= n {
                break;
            }
        }
        Ok(all)
    }

    /// `Err` when a batch of `len` bytes is over what this socket sends in one `send`.
    fn fits(&self, len: usize) -> Result<(), NftError> {
        if len > self.max_batch {
            return Err(NftError::Elements(format!("a batch of {len} bytes is over {}", self.max_batch)));
        }
        Ok(())
    }

    /// Applies `ops` as one batch (`ops.rs`): all or nothing.
    pub fn apply_ops(&mut self, ops: &[ops::Op]) -> Result<(), NftError> {
        let Some(b) = ops::op_batch(ops, self.seq) else {
            return Err(NftError::Elements("a rule's comment is too long for a netlink batch".into()));
        };
        let n = b.what.len() as u32;
        self.seq = self.seq.wrapping_add(n + 2);
        if n == 0 {
            return Ok(());
        }
        self.fits(b.bytes.len())?;
        let all = self.exchange(&b.bytes, b.first, n)?;
        ops::op_verdict(&b, &all).map_err(NftError::Elements)
    }
}

impl ElementPath for ElementSocket {
    fn apply_elements(&mut self, changes: &[SetElements]) -> Result<(), NftError> {
        let b = batch(changes, self.seq);
        self.seq = self.seq.wrapping_add(b.acked + 2);
        if b.acked == 0 {
            return Ok(());
        }
        self.fits(b.bytes.len())?;
        let all = self.exchange(&b.bytes, b.first, b.acked)?;
        verdict(&b, changes, &all)
    }
}

pub mod ops;
#[cfg(test)]
mod tests;
