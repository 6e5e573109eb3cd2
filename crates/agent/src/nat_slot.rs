//! What egress NAT's loop (the binary's `nat.rs`) and the firewall's passes share: the NAT
//! inputs as last read from the topology, and how a pass's table takes them. No I/O.

use std::sync::{Arc, Mutex};

use std::collections::BTreeSet;
use std::net::IpAddr;

use romana_policy::incremental::Part;
use romana_policy::nat::{CHAIN, NatConfig, amend_pass};
use romana_policy::nftplan::Observed;
use romana_policy::ruleset::Element;

use crate::machine::pass::Compiled;

/// What the firewall's passes read: the NAT inputs, `None` until known (or when this kernel
/// cannot do NAT: then no chain is ever added).
#[derive(Debug, Default)]
pub struct NatSlot(Mutex<Option<Arc<NatConfig>>>);

impl NatSlot {
    pub fn get(&self) -> Option<Arc<NatConfig>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the inputs; returns whether they changed.
    pub fn set(&self, cfg: NatConfig) -> bool {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_deref() == Some(&cfg) {
            return false;
        }
        *slot = Some(Arc::new(cfg));
        true
    }

    /// Whether an endpoint pass's `part` on the table in force (`known`) changes the NAT chain:
    /// the first local endpoint in a masqueraded network, or the last one gone. Endpoint passes
    /// carry no NAT chain, so such a change must be a compile (a pod's first packets out must be
    /// masqueraded, or conntrack keeps their flow un-NATed).
    pub fn changed_by(&self, known: &Observed, part: &Part) -> bool {
        let Some(nat) = self.get() else { return false };
        let set = |n: &str| part.sets.get(n).or_else(|| known.sets.get(n));
        let local: BTreeSet<IpAddr> = ["local-4", "local-6"]
            .into_iter()
            .filter_map(set)
            .flat_map(|s| s.elements.iter())
            .filter_map(|e| match e {
                Element::Addr(ip) => Some(*ip),
                Element::AddrPort(..) => None,
            })
            .collect();
        match (nat.chain(&local), known.chains.get(CHAIN)) {
            (None, None) => false,
            (Some(want), Some(have)) => !have.holds(&want),
            _ => true,
        }
    }

    /// Takes the endpoints NAT masquerades out of an endpoint pass's fast path set (their packets
    /// must reach postrouting).
    pub fn keep_off_fast_path(&self, unfiltered: &mut BTreeSet<IpAddr>) {
        if let Some(nat) = self.get() {
            unfiltered.retain(|ip| !nat.masquerades_from(*ip));
        }
    }

    /// Adds the chain to a pass's table, and takes the endpoints it masquerades off the fast path.
    pub fn amend(&self, c: &mut Compiled) {
        if let Some(nat) = self.get() {
            amend_pass(&mut c.desired, &mut c.unfiltered, &nat);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn set_reports_changes_only() {
        let slot = NatSlot::default();
        assert!(slot.get().is_none());
        let cfg = NatConfig { masquerade: vec!["10.0.0.0/8".parse().unwrap()], ..NatConfig::default() };
        assert!(slot.set(cfg.clone()));
        assert!(!slot.set(cfg.clone()), "the same inputs again change nothing");
        assert!(slot.set(NatConfig::default()));
        assert_eq!(slot.get().as_deref(), Some(&NatConfig::default()));
    }

    #[test]
    fn an_endpoint_pass_that_changes_the_nat_chain_is_told_apart() {
        use romana_model::Family;
        use romana_policy::ruleset::{Ruleset, Set, SetType};
        let local = |ips: &[&str]| {
            let mut s = Set::new(SetType::Addr(Family::V4));
            s.elements = ips.iter().map(|i| Element::Addr(i.parse().unwrap())).collect();
            Arc::new(s)
        };
        let part = |ips: &[&str]| {
            let mut p = Part::default();
            p.sets.insert("local-4".into(), local(ips));
            p
        };
        let slot = NatSlot::default();
        let empty = Observed::default();
        assert!(!slot.changed_by(&empty, &part(&["10.0.0.2"])), "no NAT inputs: never");
        slot.set(NatConfig { masquerade: vec!["10.0.0.0/8".parse().unwrap()], ..NatConfig::default() });
        // The first pod in the masqueraded network: the chain must come.
        assert!(slot.changed_by(&empty, &part(&["10.0.0.2"])));
        // A pod outside it: no chain either way.
        assert!(!slot.changed_by(&empty, &part(&["192.0.2.7"])));
        // The chain in force already covers the network: a second pod changes nothing.
        let mut rs = Ruleset::default();
        rs.sets.insert("local-4".into(), local(&["10.0.0.2"]));
        romana_policy::nat::add_to(&mut rs, &slot.get().unwrap());
        let known = Observed::of(&rs);
        assert!(!slot.changed_by(&known, &part(&["10.0.0.2", "10.0.0.3"])));
        // The last one gone: the chain must go.
        assert!(slot.changed_by(&known, &part(&[])));
        let mut unfiltered: BTreeSet<IpAddr> =
            ["10.0.0.2", "192.0.2.7"].iter().map(|i| i.parse().unwrap()).collect();
        slot.keep_off_fast_path(&mut unfiltered);
        assert_eq!(unfiltered, ["192.0.2.7".parse().unwrap()].into());
    }
}
