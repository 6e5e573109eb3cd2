//! The reconcile loop: takes watcher events, and while this replica leads and every kind has
//! been listed, plans (`plan::plan`) and applies the writes through `Romanad`, keeping its
//! picture of romanad current from each write's modelled effect and reading romanad afresh on
//! start, after a relist, after errors and every `resync`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event as K8sEvent, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::{mpsc, watch};
use tokio::time::sleep_until;

use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::plan::{Ctx, Write, foreign_tenants, host_conflicts, orphans, plan, skip_refused};
use crate::romanad::{Romanad, WriteError};
use crate::state::{Actual, Key};
use crate::watch::Event;

#[derive(Debug, Clone)]
pub struct Settings {
    pub grace: Duration,
    pub resync: Duration,
    pub identity: String,
}

/// After a failed read or write: try again this soon.
const RETRY: Duration = Duration::from_secs(1);

pub async fn run(
    mut rx: mpsc::Receiver<Event>,
    romanad: Romanad,
    kube: kube::Client,
    mut leader: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    cfg: Settings,
) {
    let mut intake = Intake::default();
    let mut actual: Option<Actual> = None;
    // Writes romanad refused (422/400): not retried until the object changes.
    let mut refused: Vec<Write> = Vec::new();
    let mut orphaned: BTreeMap<String, Instant> = BTreeMap::new();
    let mut next_resync = Instant::now() + cfg.resync;
    let mut retry_at: Option<Instant> = None;
    loop {
        // The next reclaim falling due (only future ones: one refused or failed must not spin
        // the loop), or a retry.
        let now = Instant::now();
        let due = orphaned.values().map(|t| *t + cfg.grace).filter(|d| *d > now).min();
        let wake = due.into_iter().chain(retry_at).min();
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { return };
                intake.handle(ev);
                while let Ok(ev) = rx.try_recv() {
                    intake.handle(ev);
                }
                intake.publish(&metrics);
            }
            r = leader.changed() => {
                if r.is_err() { return }
                // A new leader reads romanad: the old one may have written meanwhile.
                actual = None;
            }
            _ = sleep_until(next_resync.into()) => {
                next_resync = Instant::now() + cfg.resync;
                actual = None;
            }
            _ = sleep_until(wake.unwrap_or(next_resync).into()), if wake.is_some() => {
                // A retry, or a reclaim falling due: decide on a fresh read (CNI DEL may have
                // come since the last one).
                retry_at = None;
                actual = None;
            }
        }
        if !*leader.borrow() || !intake.ready() {
            continue;
        }
        if std::mem::take(&mut intake.relisted) {
            actual = None;
        }
        let a = match &mut actual {
            Some(a) => a,
            None => match romanad.read().await {
                Ok(a) => {
                    metrics.resyncs.inc();
                    // Orphans are found on fresh reads only (endpoints change through CNI, not
                    // through the API server): the grace counts from the read that saw one.
                    orphaned = orphans(&intake.desired, &a, &orphaned, Instant::now());
                    for (host, node_ip, held) in host_conflicts(&intake.desired, &a) {
                        tracing::warn!(
                            host,
                            node_ip,
                            held,
                            "host exists in romanad with another IP; left alone"
                        );
                    }
                    for ns in foreign_tenants(&intake.desired, &a) {
                        tracing::warn!(
                            namespace = ns,
                            "a tenant of this name exists in romanad with another external id (not made \
                             by romana-k8s); the namespace is left alone until the clash is resolved"
                        );
                    }
                    actual.insert(a)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read romanad; retrying");
                    metrics.error("read");
                    retry_at = Some(Instant::now() + RETRY);
                    continue;
                }
            },
        };
        let now = Instant::now();
        let ctx = Ctx { orphans: &orphaned, now, grace: cfg.grace };
        let writes = skip_refused(plan(&intake.desired, a, ctx), &mut refused);
        metrics.plan_seconds.observe(now.elapsed().as_secs_f64());
        let since = intake.oldest.take();
        metrics.last_plan_writes.set(i64::try_from(writes.len()).unwrap_or(i64::MAX));
        let mut failed = false;
        for w in writes {
            match romanad.apply(&w).await {
                Ok(()) => {
                    w.apply_to(a);
                    metrics.write(w.kind(), "ok");
                    if let Some(t) = since {
                        metrics.lag.observe(t.elapsed().as_secs_f64());
                    }
                    tracing::debug!(write = %w, "applied");
                }
                Err(WriteError::Refused(msg)) => {
                    metrics.write(w.kind(), "refused");
                    tracing::warn!(write = %w, error = %msg, "romanad refused a write");
                    if let Write::ApplyNetpol(k, n) = &w {
                        post_event(&kube, k, &n.uid, &msg, &cfg.identity, &metrics).await;
                    }
                    refused.push(w);
                }
                Err(e) => {
                    metrics.write(w.kind(), "error");
                    tracing::warn!(write = %w, error = %e, "write failed; will read romanad and retry");
                    failed = true;
                }
            }
        }
        metrics.plans.inc();
        if failed {
            actual = None;
            retry_at = Some(Instant::now() + RETRY);
        }
    }
}

/// A Warning Event on the policy romanad refused, so that `kubectl describe` shows why.
async fn post_event(kube: &kube::Client, k: &Key, uid: &str, msg: &str, identity: &str, metrics: &Metrics) {
    let now = Timestamp::now();
    let ev = K8sEvent {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", k.1)),
            namespace: Some(k.0.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("networking.k8s.io/v1".into()),
            kind: Some("NetworkPolicy".into()),
            name: Some(k.1.clone()),
            namespace: Some(k.0.clone()),
            uid: (!uid.is_empty()).then(|| uid.to_owned()),
            ..ObjectReference::default()
        },
        reason: Some("RefusedByRomana".into()),
        message: Some(msg.chars().take(1000).collect()),
        type_: Some("Warning".into()),
        source: Some(EventSource { component: Some("romana-k8s".into()), host: None }),
        reporting_component: Some("romana-k8s".into()),
        reporting_instance: Some(identity.to_owned()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        action: Some("Apply".into()),
        count: Some(1),
        ..K8sEvent::default()
    };
    if let Err(e) = Api::<K8sEvent>::namespaced(kube.clone(), &k.0).create(&PostParams::default(), &ev).await
    {
        tracing::warn!(policy = ?k, error = %e, "cannot post the Event");
        metrics.error("event");
    }
}
