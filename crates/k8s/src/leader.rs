//! Leader election on a `coordination.k8s.io/v1` Lease: reads it, asks `lease::decide`, and
//! creates or replaces it with the read resourceVersion (optimistic concurrency: of two replicas
//! racing, the API server lets one win). Publishes whether this replica leads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::lease::{Decision, LeaseView, decide};
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

fn view(l: &Lease) -> LeaseView {
    let s = l.spec.clone().unwrap_or_default();
    LeaseView {
        holder: s.holder_identity,
        renew_us: s.renew_time.map(|t| t.0.as_microsecond()),
        duration_s: i64::from(s.lease_duration_seconds.unwrap_or(15)),
        transitions: s.lease_transitions.unwrap_or(0),
    }
}

fn spec(e: &Election, now: Timestamp, acquired: Option<Timestamp>, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(e.identity.clone()),
        lease_duration_seconds: Some(i32::try_from(e.duration.as_secs()).unwrap_or(i32::MAX).max(1)),
        acquire_time: acquired.map(MicroTime),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    }
}

/// Runs for ever: tries every `duration / 5` while waiting, renews every `duration / 3` while
/// leading; stops leading when it could not renew within the lease duration.
pub async fn run(api: Api<Lease>, e: Election, tx: watch::Sender<bool>, metrics: Arc<Metrics>) {
    let mut last_renew: Option<Instant> = None;
    loop {
        let now = Timestamp::now();
        let leading = match step(&api, &e, now).await {
            Ok(true) => {
                last_renew = Some(Instant::now());
                true
            }
            Ok(false) => false,
            Err(err) => {
                tracing::warn!(lease = %e.name, error = %err, "lease call failed");
                metrics.error("lease");
                // Keep leading only while the last renewal is younger than the lease.
                last_renew.is_some_and(|t| t.elapsed() < e.duration)
            }
        };
        // Only a change wakes the loop (a renewal is no news: the loop re-reads romanad when
        // leadership changes).
        let changed = tx.send_if_modified(|v| std::mem::replace(v, leading) != leading);
        if changed {
            tracing::info!(identity = %e.identity, leading, "leadership changed");
        }
        metrics.leader.set(i64::from(leading));
        let pause = if leading { e.duration / 3 } else { e.duration / 5 };
        tokio::time::sleep(pause.max(Duration::from_millis(100))).await;
    }
}

/// One round; `Ok(true)` when this replica holds the Lease afterwards.
async fn step(api: &Api<Lease>, e: &Election, now: Timestamp) -> Result<bool, kube::Error> {
    let current = api.get_opt(&e.name).await?;
    let decision = decide(current.as_ref().map(view).as_ref(), &e.identity, now.as_microsecond());
    let conflict = |r: Result<Lease, kube::Error>| match r {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(err) => Err(err),
    };
    match (decision, current) {
        (Decision::Create, _) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(e.name.clone()),
                    namespace: Some(e.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec(e, now, Some(now), 0)),
            };
            conflict(api.create(&PostParams::default(), &lease).await)
        }
        (Decision::Renew, Some(mut lease)) => {
            let s = lease.spec.get_or_insert_with(LeaseSpec::default);
            s.renew_time = Some(MicroTime(now));
            s.lease_duration_seconds = spec(e, now, None, 0).lease_duration_seconds;
            conflict(api.replace(&e.name, &PostParams::default(), &lease).await)
        }
        (Decision::Acquire { transitions }, Some(mut lease)) => {
            lease.spec = Some(spec(e, now, Some(now), transitions));
            conflict(api.replace(&e.name, &PostParams::default(), &lease).await)
        }
        (Decision::Wait { .. }, _) | (_, None) => Ok(false),
    }
}
