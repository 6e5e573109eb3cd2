//! The host adapter's netlink read of our table (`romana_host::nftread`) and its element
//! changes in the policy core's terms, both ways: keys to elements, set types, chains.

use romana_agent::firewall_ops::key;
use romana_host::nftnl::{ElementKey, ElementOp, SetElements};
use romana_host::nftread::{KeyKind, TableRead};
use romana_model::Family;
use romana_policy::nftplan::{Observed, SetDelta};
use romana_policy::nftread::{ReadChain, ReadSet};
use romana_policy::ruleset::{Element, SetType};

/// The table read, as the planner's `Observed`.
pub fn observed(t: TableRead) -> Observed {
    let fam = |v6: bool| if v6 { Family::V6 } else { Family::V4 };
    let sets = t.sets.into_iter().map(|(name, s)| ReadSet {
        name,
        ty: s.kind.map(|k| match k {
            KeyKind::Addr { v6 } => SetType::Addr(fam(v6)),
            KeyKind::AddrPort { v6 } => SetType::AddrPort(fam(v6)),
        }),
        elements: s.keys.map(|ks| ks.into_iter().map(element).collect()),
    });
    let chains = t.chains.into_iter().map(|(name, c)| ReadChain { name, base: c.base, rules: c.rules });
    romana_policy::nftread::observed(sets.collect(), chains.collect())
}

fn element(k: ElementKey) -> Element {
    match k {
        ElementKey::Addr(a) => Element::Addr(a),
        ElementKey::AddrPort(a, p) => Element::AddrPort(a, p),
    }
}

/// Element deltas as the host adapter's netlink batch takes them (deletions first, as in the
/// text).
pub fn set_elements(deltas: &[SetDelta]) -> Vec<SetElements> {
    let mut out = Vec::with_capacity(deltas.len() * 2);
    for d in deltas {
        for (op, elements) in [(ElementOp::Delete, &d.delete), (ElementOp::Add, &d.add)] {
            if !elements.is_empty() {
                out.push(SetElements { op, set: d.set.clone(), keys: elements.iter().map(key).collect() });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_become_deletions_then_additions_per_set() {
        let a = |s: &str| Element::Addr(s.parse().unwrap_or_else(|_| panic!("{s}")));
        let d = [
            SetDelta { set: "s1".into(), delete: vec![a("10.0.0.1")], add: vec![a("10.0.0.2")] },
            SetDelta {
                set: "np".into(),
                delete: vec![],
                add: vec![Element::AddrPort("fd00::1".parse().unwrap_or_else(|_| panic!()), 80)],
            },
        ];
        let got: Vec<(ElementOp, String, Vec<String>)> = set_elements(&d)
            .into_iter()
            .map(|c| (c.op, c.set, c.keys.iter().map(ToString::to_string).collect()))
            .collect();
        let want = [
            (ElementOp::Delete, "s1", vec!["10.0.0.1"]),
            (ElementOp::Add, "s1", vec!["10.0.0.2"]),
            (ElementOp::Add, "np", vec!["fd00::1 . 80"]),
        ];
        let want: Vec<(ElementOp, String, Vec<String>)> = want
            .into_iter()
            .map(|(o, s, k)| (o, s.to_owned(), k.into_iter().map(str::to_owned).collect()))
            .collect();
        assert_eq!(got, want);
    }
}
