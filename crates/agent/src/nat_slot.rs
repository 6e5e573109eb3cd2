//! What egress NAT's loop (the binary's `nat.rs`) and the firewall's passes share: the NAT
//! inputs as last read from the topology, and how a pass's table takes them. No I/O.

use std::sync::{Arc, Mutex};

use romana_policy::nat::{NatConfig, amend_pass};

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
}
