//! The agent's counters and gauges, rendered in the Prometheus text format on `GET /metrics` of its
//! socket. Few enough that plain atomics are clearer than a registry.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub reconciles: AtomicU64,
    pub reconcile_errors: AtomicU64,
    pub steps_applied: AtomicU64,
    pub heartbeat_errors: AtomicU64,
    pub watch_events: AtomicU64,
    pub routes: AtomicU64,
    pub cni_add: AtomicU64,
    pub cni_add_errors: AtomicU64,
    pub cni_del: AtomicU64,
    pub cni_check_failures: AtomicU64,
    pub gc_removed: AtomicU64,
    /// Sum of ADD latencies in microseconds (with `cni_add`, the mean).
    pub cni_add_micros: AtomicU64,
    pub firewall_syncs: AtomicU64,
    pub firewall_errors: AtomicU64,
    pub firewall_repairs: AtomicU64,
    /// Listings of the kernel's table (the repair check reads it only when nftables' generation
    /// moved behind the agent's back).
    pub firewall_reads: AtomicU64,
    pub firewall_rules: AtomicU64,
    pub firewall_elements: AtomicU64,
    pub firewall_sync_micros: AtomicU64,
    /// Local endpoints the fast path hands packets to directly.
    pub fast_path_entries: AtomicU64,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let rows: [(&str, &str, &str, &AtomicU64); 20] = [
            (
                "romana_agent_fast_path_entries",
                "gauge",
                "Local endpoints that packets from other hosts reach past the forwarding path.",
                &self.fast_path_entries,
            ),
            (
                "romana_agent_watch_events_total",
                "counter",
                "Route set changes seen on the watch.",
                &self.watch_events,
            ),
            ("romana_agent_reconciles_total", "counter", "Reconcile passes run.", &self.reconciles),
            (
                "romana_agent_reconcile_errors_total",
                "counter",
                "Reconcile passes that failed.",
                &self.reconcile_errors,
            ),
            ("romana_agent_plan_steps_total", "counter", "Kernel changes applied.", &self.steps_applied),
            (
                "romana_agent_heartbeat_errors_total",
                "counter",
                "Heartbeats romanad did not take.",
                &self.heartbeat_errors,
            ),
            ("romana_agent_routes", "gauge", "Routes in the host's current set.", &self.routes),
            ("romana_agent_cni_add_total", "counter", "CNI ADD requests answered.", &self.cni_add),
            (
                "romana_agent_cni_add_errors_total",
                "counter",
                "CNI ADD requests that failed.",
                &self.cni_add_errors,
            ),
            ("romana_agent_cni_del_total", "counter", "CNI DEL requests answered.", &self.cni_del),
            (
                "romana_agent_cni_check_failures_total",
                "counter",
                "CNI CHECKs that found a difference.",
                &self.cni_check_failures,
            ),
            (
                "romana_agent_gc_removed_total",
                "counter",
                "Leftover endpoints removed by GC.",
                &self.gc_removed,
            ),
            (
                "romana_agent_cni_add_seconds_sum",
                "counter",
                "Total time spent in CNI ADD.",
                &self.cni_add_micros,
            ),
            (
                "romana_agent_firewall_syncs_total",
                "counter",
                "Firewall passes (compile, read the table, apply the difference).",
                &self.firewall_syncs,
            ),
            (
                "romana_agent_firewall_errors_total",
                "counter",
                "Firewall passes that failed.",
                &self.firewall_errors,
            ),
            (
                "romana_agent_firewall_repairs_total",
                "counter",
                "Periodic passes that found the table changed behind the agent's back.",
                &self.firewall_repairs,
            ),
            (
                "romana_agent_firewall_reads_total",
                "counter",
                "Listings of the kernel's table (only when nftables' generation moved behind the agent).",
                &self.firewall_reads,
            ),
            ("romana_agent_firewall_rules", "gauge", "Rules in the inet romana table.", &self.firewall_rules),
            (
                "romana_agent_firewall_elements",
                "gauge",
                "Set elements in the inet romana table.",
                &self.firewall_elements,
            ),
            (
                "romana_agent_firewall_sync_seconds_sum",
                "counter",
                "Total time spent in firewall passes.",
                &self.firewall_sync_micros,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, v) in rows {
            let v = v.load(Ordering::Relaxed);
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            if name.ends_with("_seconds_sum") {
                let _ = writeln!(out, "{name} {}", v as f64 / 1e6);
            } else {
                let _ = writeln!(out, "{name} {v}");
            }
        }
        out
    }
}
