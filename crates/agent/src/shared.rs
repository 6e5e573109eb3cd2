//! What the reconcile loop and the socket handlers share: the context (`Ctx`), the host's
//! namespace and gateway addresses, liveness for CNI STATUS, the firewall and the fast path.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ctx::Ctx;

#[derive(Debug)]
pub struct Shared {
    pub ctx: Arc<Ctx>,
    /// The host's namespace file (`None`: the agent's own).
    pub host_ns: Option<PathBuf>,
    pub gateways: Vec<IpAddr>,
    /// When romanad last answered the reconcile loop.
    pub last_contact: Mutex<Option<Instant>>,
    /// The gateway link is in place (the first reconcile succeeded).
    pub gateway_ready: AtomicBool,
    /// How long romanad may be silent before STATUS says the plugin is not available.
    pub contact_budget: Duration,
    /// Policy enforcement (`None` with `--no-policy`).
    pub firewall: Option<Arc<crate::firewall::Firewall>>,
    /// How long CNI ADD of a kubelet-started pod waits for the pod's record (`--pod-wait-ms`).
    pub pod_wait: Duration,
    /// The fast path, where the kernel runs it.
    pub deliver: Option<Arc<crate::fastpath::Deliver>>,
    /// The revision of the route set last read from romanad (the diagnosis shows it).
    pub routes_revision: AtomicI64,
    /// The `ETag` of the route set last read: sent back with the next read, which romanad
    /// answers without the set (304) while its routes are the same.
    pub routes_etag: Mutex<Option<String>>,
    /// Heartbeats refused with 401 in a row.
    pub auth_refusals: AtomicU64,
    /// The last diagnosis's report, sent with each heartbeat (`diagnose_host.rs`).
    pub report: Mutex<Option<romana_api::diagnose::HostReport>>,
}

impl std::ops::Deref for Shared {
    type Target = Ctx;
    fn deref(&self) -> &Ctx {
        &self.ctx
    }
}
