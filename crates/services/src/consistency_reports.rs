//! The hosts' reports in the store (`liveness-report/<host>`): the heartbeat handler keeps the
//! agent's report, stamped with this replica's clock, writing only when it changed or its stamp
//! is getting old (a heartbeat comes every half second; a write per heartbeat would be a store
//! write per host per tick); the consistency check reads them all (`consistency_kernel.rs`
//! judges them).

use std::collections::BTreeMap;

use romana_api::diagnose::{HostReport, StoredReport};
use romana_store::StoreExt;

use crate::service_error::ServiceResult;
use crate::state::AppState;

/// A report unchanged is written again once its stamp is this old, so that its age says how
/// long ago the agent last reported (`consistency_kernel::STALE_MS` is well above it).
pub const REFRESH_MS: u64 = 15_000;

/// Whether `new` must be written over `old` at `now`.
pub fn due(old: Option<&StoredReport>, new: &HostReport, now: u64) -> bool {
    match old {
        None => true,
        Some(o) => {
            o.report.counts != new.counts
                || o.report.details != new.details
                || now.saturating_sub(o.at_ms) >= REFRESH_MS
        }
    }
}

/// Keeps `report` as `host`'s at `now` (ms since the epoch), when it is due.
pub async fn keep(s: &AppState, host: &str, report: HostReport, now: u64) -> ServiceResult<()> {
    let key = s.keys.host_report(host);
    let old = s.store.get(&key).await?.and_then(|kv| serde_json::from_slice::<StoredReport>(&kv.value).ok());
    if !due(old.as_ref(), &report, now) {
        return Ok(());
    }
    let stored = StoredReport { report, at_ms: now };
    let value = serde_json::to_vec(&stored).unwrap_or_default();
    s.store.put(&key, value).await?;
    Ok(())
}

/// Every host's last report.
pub async fn read(s: &AppState) -> ServiceResult<BTreeMap<String, StoredReport>> {
    let prefix = s.keys.host_reports();
    let (kvs, _) = s.store.range(&prefix).await?;
    Ok(kvs
        .iter()
        .filter_map(|kv| {
            let host = kv.key.strip_prefix(&prefix)?.to_owned();
            serde_json::from_slice::<StoredReport>(&kv.value).ok().map(|r| (host, r))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(kind: &str) -> HostReport {
        HostReport { counts: [(kind.to_owned(), 1)].into(), details: vec![], agent_ms: 0 }
    }

    #[test]
    fn a_report_is_written_when_new_changed_or_old() {
        let old = StoredReport { report: report("route-missing"), at_ms: 1_000 };
        let cases = [
            (None, "route-missing", 1_000, true),
            (Some(&old), "route-missing", 1_000 + REFRESH_MS - 1, false),
            (Some(&old), "route-missing", 1_000 + REFRESH_MS, true),
            (Some(&old), "table-differs", 1_001, true),
        ];
        for (old, kind, now, want) in cases {
            assert_eq!(due(old, &report(kind), now), want, "{old:?} {kind} {now}");
        }
    }
}
