//! Whole transactions of our table over raw netlink: sets created and deleted, regular chains
//! created, flushed and deleted, rules appended (their expressions as the kernel takes them), set
//! elements; one nfnetlink batch, atomic like `nft -f`. Why: before it sends anything, nft fills
//! its cache from the kernel, and the kernel dumps a table's sets in time quadratic in their
//! number (each dump page walks the list from its start): with the 10,000 sets of 5,000 policies
//! x 50,000 endpoints, a policy change of four rules took 60-430 ms through libnftables
//! (docs/benchmarks.md). The batch needs no cache. Base chains (hooks) stay nft text.
//!
//! The expressions are the ones nft itself emits for our rules (`nft --debug=netlink`); the root
//! test `crates/agent/tests/nft_ops.rs` holds a table made by this path equal, as `nft list`
//! prints it, to one made by nft from the same plan's text.

use super::{
    CHUNK, ElementKey, NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFNL_SUBSYS_NFTABLES, NFPROTO_INET,
    NFT_MSG_DELSETELEM, NFT_MSG_NEWSETELEM, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, attr, cstr, message,
    nested,
};
use crate::nft_error::TABLE_SPEC;

const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_DELSET: u16 = 11;
const NLM_F_APPEND: u16 = 0x800;

const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
/// `NFTNL_UDATA_RULE_COMMENT`: the rule's comment in its user data.
const UDATA_RULE_COMMENT: u8 = 0;

/// A set's key, as `nft` declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKey {
    Ipv4,
    Ipv6,
    Ipv4Port,
    Ipv6Port,
}

impl SetKey {
    /// nft's datatype id (`ipv4_addr` 7, `ipv6_addr` 8, `inet_service` 13; a concatenation
    /// shifts the first left by 6) and the key's length (each field padded to 4 bytes).
    fn type_and_len(self) -> (u32, u32) {
        match self {
            SetKey::Ipv4 => (7, 4),
            SetKey::Ipv6 => (8, 16),
            SetKey::Ipv4Port => ((7 << 6) | 13, 8),
            SetKey::Ipv6Port => ((8 << 6) | 13, 20),
        }
    }

    /// The user data nft 1.0.6 gives such a set (its key's byte order, and a concatenation's
    /// fields), copied from `nft --debug=mnl` so that `nft list` prints our sets as its own.
    fn userdata(self) -> &'static [u8] {
        match self {
            SetKey::Ipv4 | SetKey::Ipv6 => &[0x00, 0x04, 0x02, 0x00, 0x00, 0x00],
            SetKey::Ipv4Port | SetKey::Ipv6Port => &[
                0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x03, 0x08, 0x00, 0x04, 0x0d, 0x00, 0x00, 0x00, 0x01,
                0x00,
            ],
        }
    }
}

/// nftables' comparison operators (`enum nft_cmp_ops`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq = 0,
    Lte = 3,
    Gte = 5,
}

/// Where a payload load starts (`enum nft_payload_bases`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Network = 1,
    Transport = 2,
}

/// The meta keys we load (`enum nft_meta_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    NfProto = 15,
    L4Proto = 16,
}

/// A rule's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Jump(String),
}

/// One expression of a rule, in the kernel's terms. Registers: 0 is the verdict, 1-4 the 16-byte
/// ones, 8-23 the 4-byte ones (`enum nft_registers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Meta {
        key: MetaKey,
        dreg: u32,
    },
    Payload {
        base: Base,
        offset: u32,
        len: u32,
        dreg: u32,
    },
    Cmp {
        op: CmpOp,
        sreg: u32,
        data: Vec<u8>,
    },
    /// `reg = (reg & mask) ^ 0`.
    Mask {
        reg: u32,
        mask: Vec<u8>,
    },
    Lookup {
        sreg: u32,
        set: String,
    },
    Verdict(Verdict),
}

/// One step of a transaction, in the order the batch sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A named set, with its elements.
    NewSet {
        name: String,
        key: SetKey,
        elements: Vec<ElementKey>,
    },
    AddElements {
        set: String,
        keys: Vec<ElementKey>,
    },
    DeleteElements {
        set: String,
        keys: Vec<ElementKey>,
    },
    /// A regular chain (no hook).
    NewChain {
        name: String,
    },
    /// Every rule of a chain deleted.
    FlushChain {
        name: String,
    },
    /// A rule appended to a chain, with its comment (our key).
    AppendRule {
        chain: String,
        exprs: Vec<Expr>,
        comment: String,
    },
    DeleteChain {
        name: String,
    },
    DeleteSet {
        name: String,
    },
}

fn be32(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

fn data_value(out: &mut Vec<u8>, ty: u16, data: &[u8]) {
    nested(out, ty, |out| attr(out, NFTA_DATA_VALUE, data));
}

/// One expression as an element of `NFTA_RULE_EXPRESSIONS`.
fn expression(out: &mut Vec<u8>, e: &Expr) {
    let name = match e {
        Expr::Meta { .. } => "meta",
        Expr::Payload { .. } => "payload",
        Expr::Cmp { .. } => "cmp",
        Expr::Mask { .. } => "bitwise",
        Expr::Lookup { .. } => "lookup",
        Expr::Verdict(_) => "immediate",
    };
    nested(out, NFTA_LIST_ELEM, |o| {
        attr(o, NFTA_EXPR_NAME, &cstr(name));
        nested(o, NFTA_EXPR_DATA, |o| expression_data(o, e));
    });
}

/// An expression's attributes (linux/netfilter/nf_tables.h: `NFTA_META_*`, `NFTA_PAYLOAD_*`, ...).
fn expression_data(o: &mut Vec<u8>, e: &Expr) {
    match e {
        Expr::Meta { key, dreg } => {
            attr(o, 2, &be32(*key as u32)); // NFTA_META_KEY
            attr(o, 1, &be32(*dreg)); // NFTA_META_DREG
        }
        Expr::Payload { base, offset, len, dreg } => {
            attr(o, 1, &be32(*dreg)); // NFTA_PAYLOAD_DREG
            attr(o, 2, &be32(*base as u32)); // NFTA_PAYLOAD_BASE
            attr(o, 3, &be32(*offset)); // NFTA_PAYLOAD_OFFSET
            attr(o, 4, &be32(*len)); // NFTA_PAYLOAD_LEN
        }
        Expr::Cmp { op, sreg, data } => {
            attr(o, 1, &be32(*sreg)); // NFTA_CMP_SREG
            attr(o, 2, &be32(*op as u32)); // NFTA_CMP_OP
            data_value(o, 3, data); // NFTA_CMP_DATA
        }
        Expr::Mask { reg, mask } => {
            attr(o, 1, &be32(*reg)); // NFTA_BITWISE_SREG
            attr(o, 2, &be32(*reg)); // NFTA_BITWISE_DREG
            attr(o, 3, &be32(mask.len() as u32)); // NFTA_BITWISE_LEN
            data_value(o, 4, mask); // NFTA_BITWISE_MASK
            data_value(o, 5, &vec![0; mask.len()]); // NFTA_BITWISE_XOR
        }
        Expr::Lookup { sreg, set } => {
            attr(o, 1, &cstr(set)); // NFTA_LOOKUP_SET
            attr(o, 2, &be32(*sreg)); // NFTA_LOOKUP_SREG
        }
        Expr::Verdict(v) => {
            attr(o, 1, &be32(0)); // NFTA_IMMEDIATE_DREG: the verdict register
            nested(o, 2, |o| {
                // NFTA_IMMEDIATE_DATA
                nested(o, NFTA_DATA_VERDICT, |o| {
                    let code: i32 = match v {
                        Verdict::Accept => 1,   // NF_ACCEPT
                        Verdict::Drop => 0,     // NF_DROP
                        Verdict::Jump(_) => -3, // NFT_JUMP
                    };
                    attr(o, NFTA_VERDICT_CODE, &code.to_be_bytes());
                    if let Verdict::Jump(chain) = v {
                        attr(o, NFTA_VERDICT_CHAIN, &cstr(chain));
                    }
                })
            })
        }
    }
}

/// A rule's user data holding its comment, as nft writes it.
fn comment(c: &str) -> Vec<u8> {
    let text = cstr(c);
    let mut out = vec![UDATA_RULE_COMMENT, text.len() as u8];
    out.extend_from_slice(&text);
    out
}

/// What each acked message of a batch was, for the error that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpBatch {
    pub bytes: Vec<u8>,
    pub first: u32,
    /// One line per acked message, in order: "creating set x", "a rule of chain y", ...
    pub what: Vec<String>,
}

/// The batch for `ops`, numbered from `seq`. `None` when a comment is too long for nft's user
/// data (255 bytes): such a plan goes as text.
pub fn op_batch(ops: &[Op], seq: u32) -> Option<OpBatch> {
    let table = cstr(TABLE_SPEC[2]);
    let mut bytes = Vec::new();
    message(&mut bytes, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES, &[]);
    let first = seq.wrapping_add(1);
    let mut what: Vec<String> = Vec::new();
    let mut set_id = 0u32;
    let send = |bytes: &mut Vec<u8>, what: &mut Vec<String>, ty: u16, flags: u16, attrs: &[u8], w: String| {
        let this = first.wrapping_add(what.len() as u32);
        let flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        message(bytes, (NFNL_SUBSYS_NFTABLES << 8) | ty, flags, this, NFPROTO_INET, 0, attrs);
        what.push(w);
    };
    let elements = |set: &str, keys: &[ElementKey]| -> Vec<Vec<u8>> {
        keys.chunks(CHUNK)
            .map(|chunk| {
                let mut a = Vec::new();
                attr(&mut a, 1, &table); // NFTA_SET_ELEM_LIST_TABLE
                attr(&mut a, 2, &cstr(set)); // NFTA_SET_ELEM_LIST_SET
                nested(&mut a, 3, |out| {
                    // NFTA_SET_ELEM_LIST_ELEMENTS
                    for k in chunk {
                        nested(out, NFTA_LIST_ELEM, |out| {
                            nested(out, 1, |out| attr(out, NFTA_DATA_VALUE, &k.data()))
                        });
                    }
                });
                a
            })
            .collect()
    };
    for op in ops {
        match op {
            Op::NewSet { name, key, elements: keys } => {
                let (ty, len) = key.type_and_len();
                set_id += 1;
                let mut a = Vec::new();
                attr(&mut a, NFTA_SET_TABLE, &table);
                attr(&mut a, NFTA_SET_NAME, &cstr(name));
                attr(&mut a, NFTA_SET_FLAGS, &be32(0));
                attr(&mut a, NFTA_SET_KEY_TYPE, &be32(ty));
                attr(&mut a, NFTA_SET_KEY_LEN, &be32(len));
                attr(&mut a, NFTA_SET_ID, &be32(set_id));
                attr(&mut a, NFTA_SET_USERDATA, key.userdata());
                send(&mut bytes, &mut what, NFT_MSG_NEWSET, NLM_F_CREATE, &a, format!("creating set {name}"));
                let w = format!("elements of set {name}");
                for a in elements(name, keys) {
                    send(&mut bytes, &mut what, NFT_MSG_NEWSETELEM, NLM_F_CREATE, &a, w.clone());
                }
            }
            Op::AddElements { set, keys } | Op::DeleteElements { set, keys } => {
                let (ty, flags, w) = match op {
                    Op::AddElements { .. } => (NFT_MSG_NEWSETELEM, NLM_F_CREATE, "added to"),
                    _ => (NFT_MSG_DELSETELEM, 0, "deleted from"),
                };
                let w = format!("elements {w} set {set}");
                for a in elements(set, keys) {
                    send(&mut bytes, &mut what, ty, flags, &a, w.clone());
                }
            }
            Op::NewChain { name } => {
                let mut a = Vec::new();
                attr(&mut a, NFTA_CHAIN_TABLE, &table);
                attr(&mut a, NFTA_CHAIN_NAME, &cstr(name));
                send(
                    &mut bytes,
                    &mut what,
                    NFT_MSG_NEWCHAIN,
                    NLM_F_CREATE,
                    &a,
                    format!("creating chain {name}"),
                );
            }
            Op::FlushChain { name } => {
                let mut a = Vec::new();
                attr(&mut a, NFTA_RULE_TABLE, &table);
                attr(&mut a, NFTA_RULE_CHAIN, &cstr(name));
                send(&mut bytes, &mut what, NFT_MSG_DELRULE, 0, &a, format!("flushing chain {name}"));
            }
            Op::AppendRule { chain, exprs, comment: c } => {
                if c.len() + 1 > u8::MAX as usize - 2 {
                    return None;
                }
                let mut a = Vec::new();
                attr(&mut a, NFTA_RULE_TABLE, &table);
                attr(&mut a, NFTA_RULE_CHAIN, &cstr(chain));
                nested(&mut a, NFTA_RULE_EXPRESSIONS, |out| exprs.iter().for_each(|e| expression(out, e)));
                attr(&mut a, NFTA_RULE_USERDATA, &comment(c));
                let w = format!("rule {c} of chain {chain}");
                send(&mut bytes, &mut what, NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, &a, w);
            }
            Op::DeleteChain { name } => {
                let mut a = Vec::new();
                attr(&mut a, NFTA_CHAIN_TABLE, &table);
                attr(&mut a, NFTA_CHAIN_NAME, &cstr(name));
                send(&mut bytes, &mut what, NFT_MSG_DELCHAIN, 0, &a, format!("deleting chain {name}"));
            }
            Op::DeleteSet { name } => {
                let mut a = Vec::new();
                attr(&mut a, NFTA_SET_TABLE, &table);
                attr(&mut a, NFTA_SET_NAME, &cstr(name));
                send(&mut bytes, &mut what, NFT_MSG_DELSET, 0, &a, format!("deleting set {name}"));
            }
        }
    }
    let end = first.wrapping_add(what.len() as u32);
    message(&mut bytes, NFNL_MSG_BATCH_END, NLM_F_REQUEST, end, 0, NFNL_SUBSYS_NFTABLES, &[]);
    Some(OpBatch { bytes, first, what })
}

/// The kernel's verdict on an op batch, from every answer read: `Ok` when each acked message was
/// answered with 0; else the first failure, naming what that message was.
pub fn op_verdict(b: &OpBatch, answers: &[(u32, i32)]) -> Result<(), String> {
    let n = b.what.len() as u32;
    let mut ok = 0u32;
    for &(seq, code) in answers.iter().filter(|(s, _)| s.wrapping_sub(b.first) < n) {
        if code != 0 {
            let what = &b.what[seq.wrapping_sub(b.first) as usize];
            return Err(format!("the kernel refused {what}: {}", std::io::Error::from_raw_os_error(-code)));
        }
        ok += 1;
    }
    if ok == n { Ok(()) } else { Err(format!("the kernel answered {ok} of {n} messages")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ops: &[Op], messages: usize) -> OpBatch {
        let b = op_batch(ops, 7).expect("encodable");
        assert_eq!(b.what.len(), messages, "{:?}", b.what);
        assert_eq!(b.first, 8);
        // Every message's length field adds up to the whole batch (framing is consistent).
        let mut at = 0;
        let mut count = 0;
        while at < b.bytes.len() {
            let len = u32::from_ne_bytes(b.bytes[at..at + 4].try_into().expect("four bytes")) as usize;
            assert!(len >= 20 && at + len <= b.bytes.len(), "message {count} at {at}: length {len}");
            at += len.div_ceil(4) * 4;
            count += 1;
        }
        assert_eq!((at, count), (b.bytes.len(), messages + 2), "begin, messages, end");
        b
    }

    #[test]
    fn each_op_is_one_acked_message_and_a_set_carries_its_elements() {
        let k = |s: &str| ElementKey::Addr(s.parse().expect("ip"));
        let ops = vec![
            Op::NewSet { name: "s".into(), key: SetKey::Ipv4, elements: vec![k("10.0.0.1"), k("10.0.0.2")] },
            Op::NewSet { name: "e".into(), key: SetKey::Ipv6, elements: vec![] },
            Op::NewChain { name: "c".into() },
            Op::FlushChain { name: "d".into() },
            Op::AppendRule {
                chain: "c".into(),
                exprs: vec![
                    Expr::Payload { base: Base::Network, offset: 12, len: 4, dreg: 1 },
                    Expr::Lookup { sreg: 1, set: "s".into() },
                    Expr::Verdict(Verdict::Jump("d".into())),
                ],
                comment: "00112233445566778".into(),
            },
            Op::DeleteChain { name: "x".into() },
            Op::DeleteSet { name: "y".into() },
        ];
        let b = check(&ops, 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1);
        assert_eq!(b.what[1], "elements of set s");
        assert_eq!(b.what[5], "rule 00112233445566778 of chain c");
        // The kernel's answers: all zero is Ok; one refusal names its message.
        let all: Vec<(u32, i32)> = (0..8).map(|i| (8 + i, 0)).collect();
        assert_eq!(op_verdict(&b, &all), Ok(()));
        let mut refused = all.clone();
        refused[5].1 = -2;
        let e = op_verdict(&b, &refused).expect_err("refused");
        assert!(e.contains("rule 00112233445566778 of chain c") && e.contains("No such file"), "{e}");
        assert!(op_verdict(&b, &all[..7]).expect_err("one unanswered").contains("7 of 8"));
    }

    #[test]
    fn a_comment_too_long_for_user_data_is_left_to_the_text_path() {
        let long = "x".repeat(300);
        let ops = [Op::AppendRule { chain: "c".into(), exprs: vec![], comment: long }];
        assert_eq!(op_batch(&ops, 1), None);
    }
}
