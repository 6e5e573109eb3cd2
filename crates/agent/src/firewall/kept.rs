//! The firewall's ports on this host: the kept nftables connections of the host's namespace
//! (transactions over netlink or libnftables, reads over netlink or `nft -j`), each commit passing
//! the saved table's guard first, and the fast path's map; and what the agent says once about
//! which of those paths it uses.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Mutex;

use romana_agent::error::FirewallError;
use romana_agent::ports::{FastPathMap, Nftables};
use romana_host::nft::{Nft, NftError};
use romana_policy::nftjson;
use romana_policy::nftplan::{NftPlan, Observed};

use super::saved;
use crate::fastpath::Deliver;

/// The kept nftables connections of the host's namespace (opened there on first use), and the
/// saved table's guard, which every commit passes first (`saved.rs`).
#[derive(Debug, Default)]
pub(super) struct KeptNft(pub(super) Mutex<Nft>, pub(super) saved::SaveGuard);

impl KeptNft {
    fn lock(&self) -> std::sync::MutexGuard<'_, Nft> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Nftables for KeptNft {
    fn generation(&self) -> Result<u32, NftError> {
        self.lock().generation()
    }
    fn list(&self, background: bool) -> Result<Option<Observed>, FirewallError> {
        // The read over netlink (`romana_host::nftread`: a few ms where `nft -j` takes hundreds
        // at 10,000 endpoints) is the default since two `romana chaos` runs with it passed (300 s
        // each, 74 and 76 kills, no violation; docs/benchmarks.md). ROMANA_NFT_NETLINK_READ=0
        // falls back to `nft -j`, as does any error of the netlink read (logged).
        if std::env::var_os("ROMANA_NFT_NETLINK_READ").is_none_or(|v| v != "0") {
            // On a socket of its own: a listing (seconds at 50,000 endpoints) never holds the
            // kept connection that transactions go through.
            match Nft::default().read_table() {
                Ok(t) => return Ok(t.map(crate::firewall_read::observed)),
                Err(e) => {
                    tracing::debug!(error = %e, "reading the table over netlink failed; listing it with nft")
                }
            }
        }
        Ok(romana_host::nft::list_table(background)?.map(|j| nftjson::parse(&j)).transpose()?)
    }
    fn apply(&self, script: &str) -> Result<(), NftError> {
        self.1.before_commit();
        self.lock().apply(script)
    }
    fn apply_plan(&self, plan: &NftPlan) -> Result<(), NftError> {
        self.1.before_commit();
        let mut nft = self.lock();
        let ops = || plan.steps.as_deref().and_then(romana_agent::firewall_ops::ops);
        let r = match &plan.elements {
            Some(deltas) => nft.apply_elements(&crate::firewall_read::set_elements(deltas)),
            None => match ops().filter(|_| netlink_transactions()) {
                Some(ops) => nft.apply_ops(&ops, &plan.script).map(|refused| {
                    if let Some(why) = refused {
                        tracing::warn!(error = %why, "the netlink batch was refused; applied as nft text");
                    }
                }),
                None => nft.apply(&plan.script),
            },
        };
        tell_batches(nft.uses_batches());
        r
    }
    fn uses_library(&self) -> Option<bool> {
        self.lock().uses_library()
    }
}

impl FastPathMap for Deliver {
    fn narrow(&self, allowed: &BTreeSet<IpAddr>) -> Result<usize, romana_host::BpfError> {
        Deliver::narrow(self, allowed)
    }
    fn allow(&self, allowed: BTreeSet<IpAddr>) -> Result<usize, romana_host::BpfError> {
        Deliver::allow(self, allowed)
    }
}

/// Whether whole transactions may go over netlink (`romana_agent::firewall_ops`); on unless
/// `ROMANA_NFT_NETLINK_OPS=0` (then every transaction but element changes is nft text).
fn netlink_transactions() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("ROMANA_NFT_NETLINK_OPS").is_none_or(|v| v != "0"))
}

/// Says once whether element changes go over netlink, and when the kernel turned them away.
fn tell_batches(batches: Option<bool>) {
    static TOLD: std::sync::Once = std::sync::Once::new();
    match batches {
        Some(true) => TOLD.call_once(|| tracing::info!("set element changes go over netlink")),
        Some(false) => TOLD.call_once(|| {
            tracing::warn!("set element batches over netlink failed here; element changes run as nft text")
        }),
        None => {}
    }
}

/// Says once whether nftables transactions go through libnftables.
pub(super) fn tell_library(library: Option<bool>) {
    static TOLD: std::sync::Once = std::sync::Once::new();
    match library {
        Some(true) => TOLD.call_once(|| tracing::info!("nftables transactions go through libnftables")),
        Some(false) => TOLD.call_once(|| {
            tracing::warn!(
                "libnftables.so.1 did not load; every transaction runs nft -f (about 20 ms more each)"
            )
        }),
        None => {}
    }
}
