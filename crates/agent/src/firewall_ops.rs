//! A firewall plan's steps as netlink operations (`romana_host::nftnl::ops`): each rule lowered to
//! the expressions nft emits for its text (`nft --debug=netlink`). Pure. `None` when a step is
//! outside what we express (a base chain, a match of the base chains' or NAT's vocabulary, an
//! `except` list, which nft builds as an anonymous set): that plan goes as nft text. Policy and
//! bucket chains, which are what a policy change rewrites, use only what is expressed here.

use romana_host::nftnl::ElementKey;
use romana_host::nftnl::ops::{Base, CmpOp, Expr, MetaKey, Op, SetKey, Verdict};
use romana_model::{Cidr, Family, addr_value};
use romana_policy::model::Protocol;
use romana_policy::nftplan::Step;
use romana_policy::ruleset::{Dir, Element, Line, Match, SetType, Verdict as LineVerdict};

/// The plan's steps as operations, or `None` when any of them is not expressed.
pub fn ops(steps: &[Step]) -> Option<Vec<Op>> {
    let mut out = Vec::with_capacity(steps.len());
    for step in steps {
        match step {
            Step::AddSet { name, set } => out.push(Op::NewSet {
                name: name.clone(),
                key: set_key(set.ty),
                elements: set.elements.iter().map(key).collect(),
            }),
            Step::Elements(d) => {
                if !d.delete.is_empty() {
                    out.push(Op::DeleteElements {
                        set: d.set.clone(),
                        keys: d.delete.iter().map(key).collect(),
                    });
                }
                if !d.add.is_empty() {
                    out.push(Op::AddElements { set: d.set.clone(), keys: d.add.iter().map(key).collect() });
                }
            }
            Step::AddChain { base: Some(_), .. } => return None,
            Step::AddChain { name, base: None } => out.push(Op::NewChain { name: name.clone() }),
            Step::FlushChain(name) => out.push(Op::FlushChain { name: name.clone() }),
            Step::AddRules { chain, rules } => {
                for (line, k) in rules.lines().iter().zip(rules.keys()) {
                    out.push(Op::AppendRule { chain: chain.clone(), exprs: rule(line)?, comment: k.clone() });
                }
            }
            Step::DeleteChain(name) => out.push(Op::DeleteChain { name: name.clone() }),
            Step::DeleteSet(name) => out.push(Op::DeleteSet { name: name.clone() }),
        }
    }
    Some(out)
}

fn set_key(ty: SetType) -> SetKey {
    match ty {
        SetType::Addr(Family::V4) => SetKey::Ipv4,
        SetType::Addr(Family::V6) => SetKey::Ipv6,
        SetType::AddrPort(Family::V4) => SetKey::Ipv4Port,
        SetType::AddrPort(Family::V6) => SetKey::Ipv6Port,
    }
}

/// A set element as the netlink batches carry it.
pub fn key(e: &Element) -> ElementKey {
    match e {
        Element::Addr(a) => ElementKey::Addr(*a),
        Element::AddrPort(a, p) => ElementKey::AddrPort(*a, *p),
    }
}

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
        Protocol::Icmp => 1,
        Protocol::Icmpv6 => 58,
    }
}

/// The network header's address field: offset and length.
fn addr_field(family: Family, dir: Dir) -> (u32, u32) {
    match (family, dir) {
        (Family::V4, Dir::Src) => (12, 4),
        (Family::V4, Dir::Dst) => (16, 4),
        (Family::V6, Dir::Src) => (8, 16),
        (Family::V6, Dir::Dst) => (24, 16),
    }
}

/// What the expressions so far have established, so a dependency nft would not repeat is not
/// repeated (`ip saddr` after `ip daddr` checks the family once).
#[derive(Default)]
struct Lowering {
    exprs: Vec<Expr>,
    family: Option<Family>,
    l4: Option<u8>,
}

impl Lowering {
    fn cmp(&mut self, op: CmpOp, data: Vec<u8>) {
        self.exprs.push(Expr::Cmp { op, sreg: 1, data });
    }

    fn family(&mut self, f: Family) {
        if self.family != Some(f) {
            self.exprs.push(Expr::Meta { key: MetaKey::NfProto, dreg: 1 });
            // NFPROTO_IPV4 / NFPROTO_IPV6: one byte, as nft compares it.
            self.cmp(CmpOp::Eq, vec![if f == Family::V4 { 2 } else { 10 }]);
            self.family = Some(f);
        }
    }

    /// `meta l4proto`, always (`explicit`, as the text says it) or as a payload's dependency.
    fn l4(&mut self, proto: u8, explicit: bool) {
        if explicit || self.l4 != Some(proto) {
            self.exprs.push(Expr::Meta { key: MetaKey::L4Proto, dreg: 1 });
            self.cmp(CmpOp::Eq, vec![proto]);
            self.l4 = Some(proto);
        }
    }

    fn load(&mut self, base: Base, offset: u32, len: u32, dreg: u32) {
        self.exprs.push(Expr::Payload { base, offset, len, dreg });
    }

    fn matches(&mut self, m: &Match) -> Option<()> {
        match m {
            Match::InSet { dir, family, set } => {
                self.family(*family);
                let (offset, len) = addr_field(*family, *dir);
                self.load(Base::Network, offset, len, 1);
                self.exprs.push(Expr::Lookup { sreg: 1, set: set.clone() });
            }
            Match::InNet { dir, cidr, except } if except.is_empty() => self.net(*dir, cidr),
            Match::Proto(p) => self.l4(proto_number(*p), true),
            Match::Ports { protocol, first, last } => {
                self.l4(proto_number(*protocol), false);
                self.load(Base::Transport, 2, 2, 1);
                if first == last {
                    self.cmp(CmpOp::Eq, first.to_be_bytes().to_vec());
                } else {
                    self.cmp(CmpOp::Gte, first.to_be_bytes().to_vec());
                    self.cmp(CmpOp::Lte, last.to_be_bytes().to_vec());
                }
            }
            Match::DstPortIn { protocol, family, set } => {
                self.l4(proto_number(*protocol), true);
                self.family(*family);
                let (offset, len) = addr_field(*family, Dir::Dst);
                self.load(Base::Network, offset, len, 1);
                // The port in the register right after the address: the 4-byte register 9 after
                // an IPv4 address in register 1, the 16-byte register 2 after an IPv6 one.
                self.load(Base::Transport, 2, 2, if *family == Family::V4 { 9 } else { 2 });
                self.exprs.push(Expr::Lookup { sreg: 1, set: set.clone() });
            }
            Match::Icmp { family, icmp_type, code } => {
                self.family(*family);
                self.l4(if *family == Family::V4 { 1 } else { 58 }, false);
                self.load(Base::Transport, 0, 1, 1);
                self.cmp(CmpOp::Eq, vec![*icmp_type]);
                if let Some(c) = code {
                    self.load(Base::Transport, 1, 1, 1);
                    self.cmp(CmpOp::Eq, vec![*c]);
                }
            }
            _ => return None,
        }
        Some(())
    }

    fn net(&mut self, dir: Dir, cidr: &Cidr) {
        let family = cidr.family();
        self.family(family);
        let (offset, len) = addr_field(family, dir);
        self.load(Base::Network, offset, len, 1);
        let bytes = |v: u128| -> Vec<u8> {
            let all = v.to_be_bytes();
            all[16 - len as usize..].to_vec()
        };
        let bits = len * 8;
        if u32::from(cidr.prefix_len()) < bits {
            let mask =
                if cidr.prefix_len() == 0 { 0 } else { !0u128 << (128 - u32::from(cidr.prefix_len())) };
            let mask = mask >> (128 - bits);
            self.exprs.push(Expr::Mask { reg: 1, mask: bytes(mask) });
        }
        self.cmp(CmpOp::Eq, bytes(addr_value(cidr.network())));
    }
}

/// One rule's expressions, or `None` when a match or its verdict is not expressed here.
pub fn rule(line: &Line) -> Option<Vec<Expr>> {
    let mut l = Lowering::default();
    for m in &line.matches {
        l.matches(m)?;
    }
    let v = match &line.verdict {
        LineVerdict::Accept => Verdict::Accept,
        LineVerdict::Drop => Verdict::Drop,
        LineVerdict::Jump(c) => Verdict::Jump(c.clone()),
        LineVerdict::Masquerade | LineVerdict::Dnat { .. } => return None,
    };
    l.exprs.push(Expr::Verdict(v));
    Some(l.exprs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(matches: Vec<Match>, want: Option<Vec<Expr>>) {
        let line = Line { matches, verdict: LineVerdict::Accept };
        let got = rule(&line).map(|mut e| {
            assert_eq!(e.pop(), Some(Expr::Verdict(Verdict::Accept)));
            e
        });
        assert_eq!(got, want, "{line}");
    }

    fn nfproto(v: u8) -> [Expr; 2] {
        [Expr::Meta { key: MetaKey::NfProto, dreg: 1 }, Expr::Cmp { op: CmpOp::Eq, sreg: 1, data: vec![v] }]
    }

    fn l4(v: u8) -> [Expr; 2] {
        [Expr::Meta { key: MetaKey::L4Proto, dreg: 1 }, Expr::Cmp { op: CmpOp::Eq, sreg: 1, data: vec![v] }]
    }

    fn load(base: Base, offset: u32, len: u32, dreg: u32) -> Expr {
        Expr::Payload { base, offset, len, dreg }
    }

    fn eq(data: &[u8]) -> Expr {
        Expr::Cmp { op: CmpOp::Eq, sreg: 1, data: data.to_vec() }
    }

    #[test]
    fn rules_lower_to_what_nft_emits() {
        let net = |s: &str| s.parse::<Cidr>().expect("cidr");
        // `ip saddr @s tcp dport 80-90`: the family once, the protocol as the port's dependency.
        let mut want: Vec<Expr> = nfproto(2).into();
        want.extend([load(Base::Network, 12, 4, 1), Expr::Lookup { sreg: 1, set: "s".into() }]);
        want.extend(l4(6));
        want.extend([
            load(Base::Transport, 2, 2, 1),
            Expr::Cmp { op: CmpOp::Gte, sreg: 1, data: vec![0, 80] },
            Expr::Cmp { op: CmpOp::Lte, sreg: 1, data: vec![0, 90] },
        ]);
        check(
            vec![
                Match::InSet { dir: Dir::Src, family: Family::V4, set: "s".into() },
                Match::Ports { protocol: Protocol::Tcp, first: 80, last: 90 },
            ],
            Some(want),
        );
        // `meta l4proto udp udp dport 53`: the explicit protocol is the dependency.
        let mut want: Vec<Expr> = l4(17).into();
        want.extend([load(Base::Transport, 2, 2, 1), eq(&[0, 53])]);
        check(
            vec![Match::Proto(Protocol::Udp), Match::Ports { protocol: Protocol::Udp, first: 53, last: 53 }],
            Some(want),
        );
        // `ip6 daddr fd00::/64`: the address masked; a /128 and a /32 compare whole.
        let mut want: Vec<Expr> = nfproto(10).into();
        let mut mask = vec![0xff; 8];
        mask.extend([0; 8]);
        let mut value = vec![0xfd, 0];
        value.extend([0; 14]);
        want.extend([load(Base::Network, 24, 16, 1), Expr::Mask { reg: 1, mask }, eq(&value)]);
        check(vec![Match::InNet { dir: Dir::Dst, cidr: net("fd00::/64"), except: vec![] }], Some(want));
        let mut want: Vec<Expr> = nfproto(2).into();
        want.extend([load(Base::Network, 12, 4, 1), eq(&[10, 1, 2, 3])]);
        check(vec![Match::InNet { dir: Dir::Src, cidr: net("10.1.2.3/32"), except: vec![] }], Some(want));
        // `0.0.0.0/0` masks everything away, as nft does.
        let mut want: Vec<Expr> = nfproto(2).into();
        want.extend([load(Base::Network, 16, 4, 1), Expr::Mask { reg: 1, mask: vec![0; 4] }, eq(&[0; 4])]);
        check(vec![Match::InNet { dir: Dir::Dst, cidr: net("0.0.0.0/0"), except: vec![] }], Some(want));
        // The named port's concatenation: the port in the register after the address.
        let mut want: Vec<Expr> = l4(6).into();
        want.extend(nfproto(10));
        want.extend([
            load(Base::Network, 24, 16, 1),
            load(Base::Transport, 2, 2, 2),
            Expr::Lookup { sreg: 1, set: "np".into() },
        ]);
        check(
            vec![Match::DstPortIn { protocol: Protocol::Tcp, family: Family::V6, set: "np".into() }],
            Some(want),
        );
        // `icmp type 8 icmp code 0`.
        let mut want: Vec<Expr> = nfproto(2).into();
        want.extend(l4(1));
        want.extend([load(Base::Transport, 0, 1, 1), eq(&[8]), load(Base::Transport, 1, 1, 1), eq(&[0])]);
        check(vec![Match::Icmp { family: Family::V4, icmp_type: 8, code: Some(0) }], Some(want));
        // What stays nft text: an except list (an anonymous set), the base chains' matches.
        let except =
            Match::InNet { dir: Dir::Src, cidr: net("10.0.0.0/8"), except: vec![net("10.9.0.0/16")] };
        check(vec![except], None);
        check(vec![Match::Established], None);
        check(vec![Match::Icmpv6Types(vec![135])], None);
    }

    #[test]
    fn a_plan_with_a_base_chain_or_nat_stays_text() {
        use romana_policy::ruleset::{Chain, Hook};
        use std::sync::Arc;
        let base = Step::AddChain { name: "fwd".into(), base: Some((Hook::Forward, 0)) };
        assert_eq!(ops(&[base]), None);
        let nat = Chain::new(None, vec![Line { matches: vec![], verdict: LineVerdict::Masquerade }]);
        assert_eq!(ops(&[Step::AddRules { chain: "n".into(), rules: Arc::new(nat) }]), None);
        let jump = Chain::new(None, vec![Line { matches: vec![], verdict: LineVerdict::Jump("p".into()) }]);
        let got = ops(&[
            Step::AddChain { name: "b".into(), base: None },
            Step::AddRules { chain: "b".into(), rules: Arc::new(jump.clone()) },
        ])
        .expect("expressed");
        assert_eq!(
            got,
            [
                Op::NewChain { name: "b".into() },
                Op::AppendRule {
                    chain: "b".into(),
                    exprs: vec![Expr::Verdict(Verdict::Jump("p".into()))],
                    comment: jump.keys()[0].clone()
                }
            ]
        );
    }
}
