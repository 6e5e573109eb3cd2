//! Our table read over raw netlink (dumps of sets, their elements, chains and rules), for the
//! agent's start and repair passes: `nft -j list table` costs nft 0.2 s of CPU at 1,000 policies
//! x 10,000 endpoints and 1.4 s at 5x (docs/benchmarks.md), most of it turning every rule back
//! into text that we only compare by its comment. This reads what the comparison needs: each
//! set's type, flags and keys, each chain's hook, priority and type, each rule's comment. What
//! it cannot decode is reported as such (an unknown set type, an unreadable key), as the JSON
//! reader does, so that the plan replaces it. The reference is `nft -j` (tests/nftread.rs).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::nft_error::{NftError, TABLE_SPEC};
use crate::nftnl::{ElementKey, ElementSocket};

/// The key types we create (nft's datatype ids: ipv4_addr 7, ipv6_addr 8, inet_service 13; a
/// concatenation is the first id shifted by 6 bits, then the next).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Addr { v6: bool },
    AddrPort { v6: bool },
}

impl KeyKind {
    fn of(type_id: u32) -> Option<KeyKind> {
        match type_id {
            7 => Some(KeyKind::Addr { v6: false }),
            8 => Some(KeyKind::Addr { v6: true }),
            461 => Some(KeyKind::AddrPort { v6: false }),
            525 => Some(KeyKind::AddrPort { v6: true }),
            _ => None,
        }
    }

    fn key(self, data: &[u8]) -> Option<ElementKey> {
        let addr = |b: &[u8]| -> Option<IpAddr> {
            match b.len() {
                4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
                16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
                _ => None,
            }
        };
        let alen = |v6: bool| if v6 { 16 } else { 4 };
        match self {
            KeyKind::Addr { v6 } if data.len() == alen(v6) => addr(data).map(ElementKey::Addr),
            KeyKind::AddrPort { v6 } if data.len() == alen(v6) + 4 => {
                let (a, p) = data.split_at(alen(v6));
                Some(ElementKey::AddrPort(addr(a)?, u16::from_be_bytes([p[0], p[1]])))
            }
            _ => None,
        }
    }
}

/// A set as read: `kind` is `None` for a type or flags we never create; `keys` is `None` when
/// an element could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetRead {
    pub kind: Option<KeyKind>,
    pub keys: Option<Vec<ElementKey>>,
}

/// A chain as read: its hook (`nft`'s name: `forward`, ...), priority and type when it is a base
/// chain, and each rule's comment (empty for a rule without one), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRead {
    pub base: Option<(String, i32, String)>,
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableRead {
    pub sets: BTreeMap<String, SetRead>,
    pub chains: BTreeMap<String, ChainRead>,
}

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_GETSETELEM: u16 = 13;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NFPROTO_INET: u8 = 1;
/// Set flags nft shows (constant, interval, timeout, map, eval...): all but concat (0x80).
const FOREIGN_SET_FLAGS: u32 = !0x80;
/// `NFT_SET_ANONYMOUS`: a set made for one rule's literal list.
const NFT_SET_ANONYMOUS: u32 = 0x1;

/// The attributes of a message's payload (after the nfgenmsg), by type (nesting bit cleared).
fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((ty, &b[4..len]));
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    out
}

fn get<'a>(a: &[(u16, &'a [u8])], ty: u16) -> Option<&'a [u8]> {
    a.iter().find(|(t, _)| *t == ty).map(|(_, v)| *v)
}

fn string(v: Option<&[u8]>) -> String {
    let v = v.unwrap_or_default();
    String::from_utf8_lossy(v.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
}

fn be32(v: Option<&[u8]>) -> Option<u32> {
    v.and_then(|v| v.get(..4)).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn cstr_attr(out: &mut Vec<u8>, ty: u16, s: &str) {
    let len = 4 + s.len() + 1;
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    out.resize(out.len() + (4 - len % 4) % 4, 0);
}

fn read_err(what: &str, e: impl std::fmt::Display) -> NftError {
    NftError::Elements(format!("reading the table over netlink, {what}: {e}"))
}

impl ElementSocket {
    /// One request; every answer's payload (after the nfgenmsg) until the dump ends or the
    /// kernel acks. `Err` carries the kernel's errno as an `io::Error`.
    fn ask(&mut self, ty: u16, flags: u16, attrs: &[u8]) -> Result<Vec<Vec<u8>>, std::io::Error> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut m = Vec::with_capacity(20 + attrs.len());
        m.extend_from_slice(&((20 + attrs.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | ty).to_ne_bytes());
        m.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&[NFPROTO_INET, 0, 0, 0]);
        m.extend_from_slice(attrs);
        self.socket.send(&m, 0)?;
        let mut out = Vec::new();
        loop {
            let (buf, _) = self.socket.recv_from_full()?;
            let mut at = 0;
            while at + 16 <= buf.len() {
                let len = u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
                let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                let mflags = u16::from_ne_bytes([buf[at + 6], buf[at + 7]]);
                let mseq = u32::from_ne_bytes([buf[at + 8], buf[at + 9], buf[at + 10], buf[at + 11]]);
                if len < 16 || at + len > buf.len() {
                    break;
                }
                let body = &buf[at + 16..at + len];
                at += (len + 3) & !3;
                if mseq != seq {
                    continue;
                }
                if mflags & NLM_F_DUMP_INTR != 0 {
                    return Err(std::io::Error::other("the table changed during the dump"));
                }
                match kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = body.get(..4).map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        return if code == 0 {
                            Ok(out)
                        } else {
                            Err(std::io::Error::from_raw_os_error(-code))
                        };
                    }
                    _ => out.push(body.get(4..).unwrap_or_default().to_vec()),
                }
            }
        }
    }

    /// Our table (`None`: there is none), read in five requests plus one per set.
    pub fn read_table(&mut self) -> Result<Option<TableRead>, NftError> {
        self.read(true)
    }

    /// Our table without its sets' elements (each set read holds none): five requests. The one
    /// request per set is what a full read pays for in a large table (the kernel finds each set
    /// by walking the table's list of sets: 3.5 s at 10,000 sets).
    pub fn read_structure(&mut self) -> Result<Option<TableRead>, NftError> {
        self.read(false)
    }

    fn read(&mut self, elements: bool) -> Result<Option<TableRead>, NftError> {
        let table = TABLE_SPEC[2];
        let mut name = Vec::new();
        cstr_attr(&mut name, 1, table);
        match self.ask(NFT_MSG_GETTABLE, NLM_F_ACK, &name) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(read_err("table", e)),
            Ok(_) => {}
        }
        let ours = |a: &[(u16, &[u8])]| string(get(a, 1)) == table;
        let mut t = TableRead::default();
        for m in self.ask(NFT_MSG_GETSET, NLM_F_DUMP, &name).map_err(|e| read_err("sets", e))? {
            let a = attrs(&m);
            if !ours(&a) {
                continue;
            }
            let flags = be32(get(&a, 3)).unwrap_or(0);
            // Anonymous sets (`{ 133, 134 }` inside a rule) belong to their rule, as `nft -j`
            // shows them: never ours to plan for (deleting one bound to a rule is EBUSY).
            if flags & NFT_SET_ANONYMOUS != 0 {
                continue;
            }
            let kind = be32(get(&a, 4))
                .and_then(KeyKind::of)
                .filter(|_| flags & FOREIGN_SET_FLAGS == 0 && get(&a, 6).is_none());
            t.sets.insert(string(get(&a, 2)), SetRead { kind, keys: Some(vec![]) });
        }
        for (set, read) in t.sets.iter_mut().filter(|_| elements) {
            let mut req = name.clone();
            cstr_attr(&mut req, 2, set);
            let answers = self.ask(NFT_MSG_GETSETELEM, NLM_F_DUMP, &req).map_err(|e| read_err(set, e))?;
            let Some(kind) = read.kind else { continue };
            let mut keys = Vec::new();
            for m in answers {
                for (_, elem) in attrs(get(&attrs(&m), 3).unwrap_or_default()) {
                    let data = get(&attrs(elem), 1).and_then(|k| get(&attrs(k), 1));
                    match data.and_then(|d| kind.key(d)) {
                        Some(k) => keys.push(k),
                        None => {
                            read.keys = None;
                            break;
                        }
                    }
                }
            }
            if read.keys.is_some() {
                read.keys = Some(keys);
            }
        }
        for m in self.ask(NFT_MSG_GETCHAIN, NLM_F_DUMP, &name).map_err(|e| read_err("chains", e))? {
            let a = attrs(&m);
            if !ours(&a) {
                continue;
            }
            let base = get(&a, 4).map(|h| {
                let h = attrs(h);
                let hook = match be32(get(&h, 1)) {
                    Some(0) => "prerouting",
                    Some(1) => "input",
                    Some(2) => "forward",
                    Some(3) => "output",
                    Some(4) => "postrouting",
                    _ => "?",
                };
                let prio = be32(get(&h, 2)).map_or(i32::MIN, |p| p as i32);
                (hook.to_owned(), prio, string(get(&a, 7)))
            });
            t.chains.insert(string(get(&a, 3)), ChainRead { base, rules: vec![] });
        }
        for m in self.ask(NFT_MSG_GETRULE, NLM_F_DUMP, &name).map_err(|e| read_err("rules", e))? {
            let a = attrs(&m);
            if !ours(&a) {
                continue;
            }
            if let Some(c) = t.chains.get_mut(&string(get(&a, 2))) {
                c.rules.push(comment(get(&a, 7).unwrap_or_default()));
            }
        }
        Ok(Some(t))
    }
}

/// A rule's comment in its user data (libnftnl's TLVs: type, length, value; the comment is type
/// 0, NUL-terminated).
fn comment(mut udata: &[u8]) -> String {
    while udata.len() >= 2 {
        let (ty, len) = (udata[0], udata[1] as usize);
        let Some(v) = udata.get(2..2 + len) else { break };
        if ty == 0 {
            return string(Some(v));
        }
        udata = &udata[2 + len..];
    }
    String::new()
}
