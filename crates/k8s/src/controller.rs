//! The reconcile loop: takes watcher events, and while this replica leads and every kind has
//! been listed, plans (`plan::plan`) and applies the writes through `Romanad`, keeping its
//! picture of romanad current from each write's modelled effect and reading romanad afresh on
//! start, after a relist, after errors and every `resync`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::time::sleep_until;

use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::plan::{Ctx, Write, foreign_tenants, host_conflicts, orphans, plan, skip_refused};
use crate::romanad::{Romanad, WriteError};
use crate::state::{Actual, Key};
use crate::svc_report::{self, Regarding};
use crate::vip_plan;
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
    // romanad's last refusal of each Service's VIP, reported on the Service until it changes.
    let mut vip_refusals: BTreeMap<Key, String> = BTreeMap::new();
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
                // A VIP refused for its address (taken, say) may be free now: tried again once
                // per resync, never hot.
                refused.retain(|w| w.vip_service().is_none());
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
                Ok(made) => {
                    w.apply_to(a);
                    if let Some(k) = w.vip_service() {
                        vip_refusals.remove(&k);
                    }
                    if let Some(v) = made {
                        let k = (v.tenant.clone(), v.service.clone());
                        let msg = format!("VIP {} forwards to the Service's pods", v.address);
                        service_event(
                            &kube,
                            &intake,
                            &k,
                            ("Normal", "VipCreated", &msg),
                            &cfg.identity,
                            &metrics,
                        )
                        .await;
                        a.vips.insert(v.address.clone(), v);
                    }
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
                    if let Some(k) = w.vip_service() {
                        let ev = ("Warning", "VipRefusedByRomana", msg.as_str());
                        service_event(&kube, &intake, &k, ev, &cfg.identity, &metrics).await;
                        vip_refusals.insert(k, msg.clone());
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
        vip_refusals.retain(|k, _| intake.desired.services.contains_key(k));
        report(&kube, &mut intake, a, &vip_refusals, &metrics).await;
        metrics.plans.inc();
        if failed {
            actual = None;
            retry_at = Some(Instant::now() + RETRY);
        }
    }
}

/// A Warning Event on the policy romanad refused, so that `kubectl describe` shows why.
async fn post_event(kube: &kube::Client, k: &Key, uid: &str, msg: &str, identity: &str, metrics: &Metrics) {
    let about = Regarding { api_version: "networking.k8s.io/v1", kind: "NetworkPolicy", key: k, uid };
    if let Err(e) = svc_report::post_event(kube, about, "Warning", "RefusedByRomana", msg, identity).await {
        tracing::warn!(policy = ?k, error = %e, "cannot post the Event");
        metrics.error("event");
    }
}

/// An Event on the Service a VIP write was for.
async fn service_event(
    kube: &kube::Client,
    intake: &Intake,
    k: &Key,
    (type_, reason, msg): (&str, &str, &str),
    identity: &str,
    metrics: &Metrics,
) {
    let uid = intake.desired.services.get(k).map(|s| s.uid.as_str()).unwrap_or("");
    let about = Regarding { api_version: "v1", kind: "Service", key: k, uid };
    if let Err(e) = svc_report::post_event(kube, about, type_, reason, msg, identity).await {
        tracing::warn!(service = ?k, error = %e, "cannot post the Event");
        metrics.error("event");
    }
}

/// Writes each Service's VIP outcome that differs from what it carries; what was written is
/// recorded in the desired picture at once (the watch confirms it), so it is not written twice.
async fn report(
    kube: &kube::Client,
    intake: &mut Intake,
    a: &Actual,
    refusals: &BTreeMap<Key, String>,
    metrics: &Metrics,
) {
    let foreign = foreign_tenants(&intake.desired, a);
    let reqs = vip_plan::requests(&intake.desired, &foreign);
    for r in vip_plan::reports(&intake.desired, &reqs, a, refusals) {
        match svc_report::patch(kube, &r).await {
            Ok(()) => {
                if let Some(s) = intake.desired.services.get_mut(&r.key) {
                    s.reported.status = r.status.clone();
                    if let Some(i) = r.ingress {
                        s.reported.ingress = i;
                    }
                }
            }
            Err(e) => {
                metrics.error("service");
                tracing::warn!(service = ?r.key, error = %e, "cannot write the VIP outcome on the Service");
            }
        }
    }
}
