//! Reclaim: the loop that gathers the consistency picture (every replica, so its sightings and
//! the `romana_check_disagreements` gauges are current wherever `GET /check` lands) and, on the
//! route manager's leader only, releases what `consistency::reclaim` chooses: addresses of
//! endpoints on hosts dead past the grace, allocations without endpoint past theirs. Each
//! release is logged and counted. A replica's sightings start when it starts, so a new leader
//! waits a full grace from then (later, never earlier).

use std::time::Duration;

use romana_api::rest::EndpointInfo;

use crate::consistency::{self, Alloc, Block, Endpoint, Picture, Reason};
use crate::service_error::ServiceResult;
use crate::state::AppState;

/// Blocks listed per hold of the IPAM's read lock (4,096 addresses in /28 blocks).
const LISTING_PAGE: usize = 256;

/// Milliseconds since the epoch (the one clock reading; the cores take it as an argument).
pub fn now_ms() -> u64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The picture as this replica sees it now: IPAM's allocations, hosts and blocks, the endpoint
/// registry from the store, liveness as the route manager's loop last read it. The store is read
/// here; the records are parsed and the picture built on a background thread (10,000 endpoint
/// records are tens of ms of CPU that requests must not wait behind, issue 22).
pub async fn gather(s: &AppState) -> ServiceResult<Picture> {
    let (kvs, _) = s.store.range(&s.keys.endpoints()).await?;
    let reports = crate::consistency_reports::read(s).await?;
    let st = s.clone();
    Ok(crate::background::run(move || picture(&st, &kvs, reports)).await)
}

/// The picture from the endpoint records `kvs` and the hosts' `reports` (CPU only).
fn picture(
    s: &AppState,
    kvs: &[romana_store::KeyValue],
    reports: std::collections::BTreeMap<String, romana_api::diagnose::StoredReport>,
) -> Picture {
    // Only the records that changed since the last picture are parsed (`RecordCache`).
    let endpoints = s.check.records.lock().unwrap_or_else(|e| e.into_inner()).endpoints(kvs, |v| {
        serde_json::from_slice::<EndpointInfo>(v).ok().map(|e| Endpoint {
            kind: if e.labels.get("romana.io/kind").is_some_and(|k| k == "vm") { "vm" } else { "pod" }
                .to_owned(),
            name: e.name,
            ip: e.ip,
            host: e.host,
        })
    });
    // Under the IPAM's read lock only the listing (names are shared, not copied), a page of
    // blocks at a time: the actor waits for this lock before every change, and the whole
    // listing at 50,000 addresses held it 8-14 ms. Pages of a changing IPAM are not one
    // picture; the check's graces absorb that (a suspect must persist over passes).
    let listing = std::time::Instant::now();
    let (mut allocations, mut cursor, mut longest) = (Vec::new(), None, std::time::Duration::ZERO);
    loop {
        let held = std::time::Instant::now();
        let (page, next) = s.ipam.read(|v| v.ipam.allocations_page(cursor, LISTING_PAGE));
        longest = longest.max(held.elapsed());
        allocations.extend(page);
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let (hosts, blocks) = s.ipam.read(|v| (v.ipam.hosts(), v.ipam.blocks()));
    // How long allocations waited for a page at most: `RUST_LOG=romana_services::reclaim=debug`.
    tracing::debug!(
        listing_ms = listing.elapsed().as_secs_f64() * 1e3,
        longest_page_ms = longest.as_secs_f64() * 1e3,
        "consistency listing"
    );
    let mut p = Picture {
        allocations: allocations
            .into_iter()
            .map(|a| Alloc { name: a.name.to_string(), ip: a.ip.to_string(), host: a.host.to_string() })
            .collect(),
        hosts: hosts.into_iter().map(|h| h.name.to_string()).collect(),
        blocks: blocks
            .into_iter()
            .filter_map(|b| {
                b.owner.map(|(_, _, h)| Block {
                    network: b.network.to_string(),
                    cidr: b.cidr.to_string(),
                    host: h.to_string(),
                })
            })
            .collect(),
        ..Picture::default()
    };
    p.endpoints = endpoints;
    p.reports = reports;
    let l = s.liveness.read().unwrap_or_else(|e| e.into_inner());
    p.monitored = l.monitored.clone();
    p.live = l.live.clone();
    p
}

async fn is_leader(s: &AppState) -> bool {
    let key = s.keys.leader("route-manager");
    matches!(s.store.get(&key).await, Ok(Some(kv)) if kv.value == s.instance.as_bytes())
}

/// What a pass did: addresses released, and how long the gather and the check took, wall time
/// (what the next pass is paced by; the releases are store writes and are left out).
#[derive(Debug, Clone, Copy)]
pub struct Passed {
    pub reclaimed: usize,
    pub cost: Duration,
}

/// One pass: gather, observe, set the gauges, and (the leader) release what is due.
pub async fn pass(s: &AppState, now: u64) -> ServiceResult<Passed> {
    let started = std::time::Instant::now();
    let p = gather(s).await?;
    let gathered = started.elapsed();
    // The check compares every allocation with every record: on the background thread too.
    let st = s.clone();
    let (endpoints, due) = crate::background::run(move || {
        let seen = st.check.observe(&p, now);
        let found = crate::consistency_kernel::check_all(&p, &seen, now, st.check.graces);
        st.metrics.set_disagreements(&consistency::counts(&found));
        (p.endpoints.len(), consistency::reclaim(&p, &seen, now, st.check.graces))
    })
    .await;
    tracing::debug!(
        endpoints,
        gather_ms = gathered.as_secs_f64() * 1e3,
        check_ms = (started.elapsed() - gathered).as_secs_f64() * 1e3,
        "consistency pass"
    );
    let cost = started.elapsed();
    if !is_leader(s).await {
        return Ok(Passed { reclaimed: 0, cost });
    }
    let mut done = 0;
    for r in due {
        let why = match r.reason {
            Reason::DeadHost => {
                // The record first, so a failed release leaves a leak (reclaimed later), never
                // an endpoint without its address.
                crate::pod_join::delete_endpoint(s, &r.name, |_| Ok(())).await.map_err(|e| {
                    crate::service_error::ServiceError::Unavailable(format!(
                        "deleting endpoint {}: {}",
                        r.name, e.message
                    ))
                })?;
                "dead-host"
            }
            Reason::Leak => {
                // An endpoint registered since the picture was read keeps its address.
                if s.store.get(&s.keys.endpoint(&r.name)).await?.is_some() {
                    continue;
                }
                "leak"
            }
        };
        match s.ipam.release(r.name.clone()).await {
            Ok(_) => {
                tracing::warn!(name = %r.name, ip = %r.ip, host = %r.host, reason = why, "reclaimed an address");
                s.metrics.reclaimed(why);
                done += 1;
            }
            // Another pass (or replica) got there first.
            Err(
                crate::service_error::ServiceError::NotFound(_)
                | crate::service_error::ServiceError::Ipam(romana_ipam::IpamError::NotFound(_)),
            ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Passed { reclaimed: done, cost })
}

/// A pass's share of the time at most: after a pass whose gather and check took `cost` (wall
/// time, mostly CPU), the next starts `cost * PACE` after it at the earliest. At 50,000
/// endpoints a pass is 0.1-0.3 s on a 2-core server, beside the pod starts it would slow
/// (issue 22); every 5 s that was 2-5% of a core for a check whose graces are minutes.
const PACE: u32 = 50;

/// How long after a pass that took `cost` the next one starts: `every`, or longer when the pass
/// was costly (`PACE`), but not beyond a quarter of the shorter grace (nor below `every`), so
/// that a suspect is still seen several times within it.
pub fn next_pass_in(every: Duration, cost: Duration, g: crate::consistency::Graces) -> Duration {
    let quarter = Duration::from_millis(g.leak_ms.min(g.dead_ms) / 4);
    (cost * PACE).min(quarter).max(every)
}

/// How long the IPAM must have had no command before a pass starts: a pass at 50,000 endpoints
/// is 0.1-0.3 s of CPU, and run in a burst of pod starts on a 2-core server it slowed every ADD
/// beside it (their agent-side time doubled for 150 ms; issue 22).
const QUIET: Duration = Duration::from_millis(500);

/// How long to wait before a pass, given the time `since` the IPAM's last command and how long
/// this pass has `waited` already: until `QUIET` after that command, but not in all beyond
/// `most` (a cluster that allocates without pause is still checked). `None`: start now.
pub fn quiet_wait(since: Option<Duration>, waited: Duration, most: Duration) -> Option<Duration> {
    let since = since?;
    (since < QUIET && waited < most).then(|| (QUIET - since).min(most - waited))
}

/// Runs `pass` on every replica that serves the topology service.
pub fn spawn(s: AppState) {
    let g = s.check.graces;
    let every = Duration::from_millis((g.leak_ms.min(g.dead_ms) / 4).clamp(200, 5_000));
    // A pass waits for a burst to end for at most the interval.
    let most = every;
    tokio::spawn(async move {
        loop {
            let mut waited = Duration::ZERO;
            while let Some(d) = quiet_wait(s.ipam.since_last_command(), waited, most) {
                tokio::time::sleep(d).await;
                waited += d;
            }
            if !waited.is_zero() {
                tracing::debug!(
                    waited_ms = waited.as_secs_f64() * 1e3,
                    "consistency pass after a burst of allocations"
                );
            }
            let started = tokio::time::Instant::now();
            let cost = match pass(&s, now_ms()).await {
                Ok(p) => p.cost,
                // A failure's time is mostly waiting (a store timeout): tried again at the interval.
                Err(e) => {
                    tracing::warn!(error = %e, "consistency pass failed; trying again");
                    Duration::ZERO
                }
            };
            tokio::time::sleep_until(started + next_pass_in(every, cost, g)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consistency::Graces;

    /// (ms since the last command, ms waited, most) -> the wait before the pass, in ms.
    #[test]
    fn a_pass_waits_for_a_burst_of_allocations_to_end_within_a_bound() {
        let ms = Duration::from_millis;
        let cases = [
            // No command ever, or the last long ago: now.
            ((None, 0, 5_000), None),
            ((Some(600), 0, 5_000), None),
            ((Some(500), 0, 5_000), None),
            // A command 100 ms ago: until 500 ms after it.
            ((Some(100), 0, 5_000), Some(400)),
            ((Some(0), 4_800, 5_000), Some(200)),
            // Waited the most already: now, burst or not.
            ((Some(0), 5_000, 5_000), None),
            ((Some(100), 200, 200), None),
        ];
        for ((since, waited, most), want) in cases {
            let got = quiet_wait(since.map(ms), ms(waited), ms(most));
            assert_eq!(got, want.map(ms), "since {since:?} ms, waited {waited} ms, most {most} ms");
        }
    }

    /// (interval, pass cost, shorter grace) in ms -> the wait from one pass's start to the next.
    #[test]
    fn costly_passes_are_spaced_out_within_the_graces() {
        let cases = [
            // Cheap passes keep the interval.
            ((5_000, 20, 600_000), 5_000),
            // 200 ms passes: 10 s apart (2% of a core).
            ((5_000, 200, 600_000), 10_000),
            // Never beyond a quarter of the grace...
            ((5_000, 10_000, 600_000), 150_000),
            ((1_000, 200, 20_000), 5_000),
            // ...nor below the interval, even when the grace is short (tests use 800 ms).
            ((200, 30, 800), 200),
            ((200, 2, 800), 200),
        ];
        for ((every, cost, grace), want) in cases {
            let g = Graces { leak_ms: grace, dead_ms: grace * 2 };
            let got = next_pass_in(Duration::from_millis(every), Duration::from_millis(cost), g);
            assert_eq!(
                got,
                Duration::from_millis(want),
                "every {every} ms, cost {cost} ms, grace {grace} ms"
            );
        }
    }
}
