//! The self-diagnosis's adapter: reads what the pure `romana_agent::diagnose` compares (the
//! forwarding sysctls, links, addresses and routes in the host's namespace, our nftables table
//! against the last transaction's) and what the agent holds, serves `GET /v1/diagnose` on the
//! local socket, and keeps the compact report that each heartbeat carries to romanad.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use romana_agent::diagnose::{self, Expect, FastPath, Finding, Seen};
use romana_api::diagnose::Diagnosis;
use romana_dataplane::HostState;

use crate::shared::Shared;

/// The sysctls a Romana host needs on (IPv6's only where the kernel has it).
const FORWARDING: [&str; 1] = ["/proc/sys/net/ipv4/ip_forward"];

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The sysctls and the routes, read on one thread inside the host's namespace (`/proc/sys/net`
/// shows the reader's namespace).
async fn read_kernel(s: &Shared) -> (Vec<(String, Result<String, String>)>, Result<HostState, String>) {
    let ns = s.host_ns.clone();
    let read = tokio::task::spawn_blocking(move || {
        romana_host::in_netns_path(ns.as_deref(), || async {
            let sysctls = FORWARDING
                .iter()
                .map(|k| ((*k).to_owned(), std::fs::read_to_string(k).map_err(|e| e.to_string())))
                .collect::<Vec<_>>();
            let kernel = match romana_host::Kernel::connect() {
                Ok(k) => k.observe().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            (sysctls, kernel)
        })
    })
    .await;
    match read {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => (vec![], Err(format!("entering the host's namespace: {e}"))),
        Err(e) => (vec![], Err(format!("namespace thread: {e}"))),
    }
}

/// One diagnosis now.
pub async fn run(s: &Shared) -> Vec<Finding> {
    let (forwarding, kernel) = read_kernel(s).await;
    let (known_table, table) = match &s.firewall {
        Some(fw) => {
            let (known, kernel) = fw.tables().await;
            (known, kernel)
        }
        None => (None, None),
    };
    let now = Instant::now();
    let e = {
        let core = s.core();
        Expect {
            host: s.host.clone(),
            desired: core.desired.as_deref().cloned(),
            policy: core.policy,
            firewall_loaded: core.inputs.loaded,
            known_table,
            fast_path: s.deliver.as_ref().map(|d| FastPath { blockers: d.blockers() }),
            contact_age_ms: s
                .last_contact
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .map(|t| ms(now.saturating_duration_since(t))),
            contact_budget_ms: ms(s.contact_budget),
            pending_change_ms: s.metrics.pending_change().map(|t| ms(now.saturating_duration_since(t))),
            auth_refusals: s.auth_refusals.load(Ordering::Relaxed),
        }
    };
    diagnose::diagnose(&e, &Seen { forwarding, kernel, table })
}

fn epoch_ms() -> u64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    ms(d)
}

/// `GET /v1/diagnose`: a fresh diagnosis (and the heartbeat's report updated with it).
pub async fn handler(State(s): State<Arc<Shared>>) -> Json<Diagnosis> {
    let found = run(&s).await;
    let at_ms = epoch_ms();
    *s.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(diagnose::report(&found, at_ms));
    Json(Diagnosis {
        host: s.host.clone(),
        counts: diagnose::counts(&found),
        findings: found.iter().map(Finding::info).collect(),
        routes_revision: s.routes_revision.load(Ordering::Relaxed),
        at_ms,
    })
}

/// Diagnoses every `every` and keeps the report for the heartbeats (a diagnosis lists the
/// nftables table only when its generation moved, so this costs little while nothing drifts).
pub async fn keep_reporting(s: Arc<Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let found = run(&s).await;
        for f in &found {
            tracing::debug!(kind = f.kind.as_str(), what = %f.what, "diagnosis");
        }
        *s.report.lock().unwrap_or_else(|e| e.into_inner()) = Some(diagnose::report(&found, epoch_ms()));
    }
}
