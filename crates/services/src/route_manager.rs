//! The Route Manager: host liveness from agents' leased heartbeats, and a notice of every host's
//! route set (`RouteSetNotice`: the stamp of its inputs) published to the store
//! (`routes/<host>`) when the stamp moves, for agents to follow on the watch and read the set
//! with `GET /routes/{host}`. A host that stops
//! renewing its heartbeat lease has its routes withdrawn from every other host's set; they come
//! back when it returns. One replica publishes (the leader, `leader.rs`); every replica answers
//! `GET /routes/{host}` from the same rule (`route_sets.rs`). Heartbeats arrive through
//! `liveness_api.rs`. Knows nothing of HTTP.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use romana_store::{Op, Store, Txn};

use crate::ipam_sync::IpamHandle;
use crate::keys::Keys;
use crate::leader::{BEAT, Election};
pub use crate::liveness::Liveness;
use crate::route_cache::RouteSetCache;

/// Writes per transaction when publishing, by count and by bytes: etcd refuses a request over
/// 1.5 MiB by default. (Whole sets were published before the notices: a leaf of a hundred hosts
/// with 5,000 blocks has sets of about 400 KB, and a hundred of them in one transaction were
/// refused and the pass retried forever.)
const BATCH_OPS: usize = 100;
const BATCH_BYTES: usize = 1024 * 1024;

/// `ops` in order, in transactions of at most `BATCH_OPS` writes and `BATCH_BYTES` of keys and
/// values (a single larger write alone).
fn batches(ops: Vec<Op>) -> Vec<Vec<Op>> {
    let size = |op: &Op| match op {
        Op::Put { key, value, .. } => key.len() + value.len(),
        Op::Delete { key } | Op::Get { key } => key.len(),
        Op::DeletePrefix { prefix } | Op::Range { prefix } => prefix.len(),
    };
    let mut out: Vec<Vec<Op>> = Vec::new();
    let mut bytes = 0;
    for op in ops {
        let n = size(&op);
        match out.last_mut() {
            Some(last) if last.len() < BATCH_OPS && bytes + n <= BATCH_BYTES => {
                bytes += n;
                last.push(op);
            }
            _ => {
                bytes = n;
                out.push(vec![op]);
            }
        }
    }
    out
}

async fn read_liveness(
    store: &dyn Store,
    keys: &Keys,
) -> Result<(BTreeSet<String>, BTreeSet<String>), romana_store::StoreError> {
    let strip = |kvs: Vec<romana_store::KeyValue>, prefix: &str| -> BTreeSet<String> {
        kvs.into_iter().filter_map(|kv| kv.key.strip_prefix(prefix).map(str::to_owned)).collect()
    };
    let (seen, _) = store.range(&keys.liveness_seen_prefix()).await?;
    let (live, _) = store.range(&keys.liveness_prefix()).await?;
    Ok((strip(seen, &keys.liveness_seen_prefix()), strip(live, &keys.liveness_prefix())))
}

/// What a pass is computed from: the IPAM's routes mark (`Synced::routes_mark`), the hosts
/// monitored and the hosts alive. An unchanged input is no pass.
type PassInput = ((i64, u64), BTreeSet<String>, BTreeSet<String>);

/// Follows liveness (every replica) and publishes route sets (the leader).
pub fn spawn(
    store: Arc<dyn Store>,
    keys: Keys,
    ipam: IpamHandle,
    liveness: Arc<RwLock<Liveness>>,
    instance: String,
) {
    tokio::spawn(async move {
        let mut cache = RouteSetCache::default();
        let mut election = Election::new(keys.leader("route-manager"), instance);
        let mut leading = false;
        let mut last_input: Option<PassInput> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut last_round: Option<Instant> = None;
        let mut vips_seen: crate::vips_leader::Seen = None;
        loop {
            // Liveness is read on the tick; an IPAM change (a new block, a host) wakes the loop
            // at once, so agents following the watch see new routes without waiting a tick.
            tokio::select! {
                _ = tick.tick() => {}
                _ = ipam.changed() => {}
            }
            if let Ok((seen, live)) = read_liveness(&*store, &keys).await {
                let mut l = liveness.write().unwrap_or_else(|p| p.into_inner());
                l.monitored = seen;
                l.live = live;
            }
            // Leadership (`leader.rs`): a round every `BEAT`, not on every IPAM wake-up.
            let now = Instant::now();
            if last_round.is_none_or(|t| now.duration_since(t) >= BEAT) {
                let was = leading;
                leading = election.round(&*store, now).await;
                last_round = Some(now);
                if was && !leading {
                    tracing::warn!("the route manager no longer leads: route sets are not published here");
                }
            }
            if !leading {
                cache.unpublish_all();
                last_input = None;
                vips_seen = None;
                continue;
            }
            // VIPs follow liveness on every tick (cheap while there are none).
            let live = liveness.read().unwrap_or_else(|p| p.into_inner()).live.clone();
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            if let Err(e) = crate::vips_leader::pass(&*store, &keys, &live, now_ms, &mut vips_seen).await {
                tracing::warn!(error = %e, "VIP pass failed; retrying next tick");
            }
            // A pass only when what the sets depend on changed; it then writes only the notices
            // whose stamp moved (docs/benchmarks.md, "Route sets: growth with the hosts").
            let input = {
                let l = liveness.read().unwrap_or_else(|p| p.into_inner());
                (ipam.read(|v| v.routes_mark()), l.monitored.clone(), l.live.clone())
            };
            if last_input.as_ref() == Some(&input) {
                continue;
            }
            // Every host's stamp, read under the IPAM's lock on a background thread (one walk
            // over the blocks: under 1 ms at 50,000 endpoints), and a notice for each host
            // whose stamp moved (`route_cache.rs`); no set is computed here.
            let pass_start = Instant::now();
            let (taken, i, l) = (std::mem::take(&mut cache), ipam.clone(), Arc::clone(&liveness));
            let (refreshed, moved, changes) = crate::background::run(move || {
                let mut cache = taken;
                let live = || l.read().unwrap_or_else(|p| p.into_inner());
                let moved = i.read(|v| cache.refresh(&v.ipam, &live()));
                let changes = cache.changes();
                (cache, moved, changes)
            })
            .await;
            cache = refreshed;
            let mut ops: Vec<Op> =
                changes.put.into_iter().map(|(h, v)| Op::put(keys.routes(&h), v)).collect();
            ops.extend(changes.delete.iter().map(|h| Op::delete(keys.routes(h))));
            let computed = pass_start.elapsed();
            let mut ok = true;
            let written = ops.len();
            for chunk in batches(ops) {
                // Only while this replica leads: a deposed leader writes nothing.
                let published = store.txn(Txn::when(vec![election.guard()], chunk)).await;
                if !published.is_ok_and(|r| r.succeeded) {
                    ok = false;
                    break;
                }
            }
            // How long a change takes to reach `routes/` at this size (docs/benchmarks.md,
            // fan-out): `RUST_LOG=romana_services::route_manager=debug`.
            tracing::debug!(
                loaded_at = input.0.0,
                routes_revision = input.0.1,
                hosts = cache.len(),
                moved,
                written,
                compute_ms = computed.as_secs_f64() * 1e3,
                publish_ms = (pass_start.elapsed() - computed).as_secs_f64() * 1e3,
                ok,
                "route pass"
            );
            if ok {
                cache.published();
                last_input = Some(input);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (value sizes) -> batch lengths.
    fn check(sizes: &[usize], expect: &[usize]) {
        let ops: Vec<Op> =
            sizes.iter().enumerate().map(|(i, n)| Op::put(format!("k{i:03}"), vec![0; *n])).collect();
        let keys: Vec<String> = ops.iter().map(|o| format!("{o:?}")).collect();
        let got = batches(ops);
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), expect, "{sizes:?}");
        let flat: Vec<String> = got.iter().flatten().map(|o| format!("{o:?}")).collect();
        assert_eq!(flat, keys, "every write once, in order");
        for b in &got {
            let bytes: usize = b
                .iter()
                .map(|o| if let Op::Put { key, value, .. } = o { key.len() + value.len() } else { 0 })
                .sum();
            assert!(b.len() == 1 || bytes <= BATCH_BYTES, "{bytes} bytes in {} writes", b.len());
        }
    }

    #[test]
    fn publishing_keeps_each_transaction_under_the_stores_limits() {
        check(&[], &[]);
        check(&[10; 250], &[100, 100, 50]);
        // Sets of 400 KB (a leaf of 5,000 blocks): two per transaction.
        check(&[400 * 1024; 5], &[2, 2, 1]);
        // A set over the limit goes alone; the small ones around it together.
        check(&[10, 2 * 1024 * 1024, 10, 10], &[1, 1, 2]);
        check(&[BATCH_BYTES - 4, 1, 1], &[1, 2]);
    }
}
