//! The agent's counters, gauges and latency histograms, rendered in the Prometheus text format
//! (`GET /metrics` on the TCP metrics port and on the socket). Few enough that plain atomics are
//! clearer than a registry; every family is documented in docs/metrics.md (a test compares).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) shared by every agent histogram: from half a millisecond (a CNI DEL of
/// a gone link) to ten seconds (an ADD waiting for romanad).
pub const BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A latency histogram over `BUCKETS`; counts per bucket (not cumulative: rendering sums them).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Observes the time until the guard is dropped, on every path out of the caller.
    pub fn timer(&self) -> Timer<'_> {
        Timer(self, std::time::Instant::now())
    }

    fn render(&self, out: &mut String, name: &str) {
        let mut cumulative = 0;
        for (b, n) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// `Histogram::timer`'s guard.
pub struct Timer<'a>(&'a Histogram, std::time::Instant);

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.0.observe(self.1.elapsed());
    }
}

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
    pub cni_add_seconds: Histogram,
    pub cni_del_seconds: Histogram,
    pub firewall_syncs: AtomicU64,
    pub firewall_errors: AtomicU64,
    pub firewall_repairs: AtomicU64,
    /// Listings of the kernel's table (the repair check reads it only when nftables' generation
    /// moved behind the agent's back).
    pub firewall_reads: AtomicU64,
    pub firewall_rules: AtomicU64,
    pub firewall_elements: AtomicU64,
    /// Endpoints and policies the agent knows (as of its last compile), and the policies that
    /// apply to this host's endpoints or to the host (only these have chains and sets here).
    pub firewall_endpoints: AtomicU64,
    pub firewall_policies: AtomicU64,
    pub firewall_policies_active: AtomicU64,
    /// One policy pass (compile, apply the difference): the firewall's latency.
    pub firewall_sync_seconds: Histogram,
    /// One route pass (plan, from the kernel observed or as known, and apply).
    pub converge_seconds: Histogram,
    /// From a change of this host's route set seen on the watch to the kernel holding it.
    pub watch_lag_seconds: Histogram,
    /// Local endpoints the fast path hands packets to directly.
    pub fast_path_entries: AtomicU64,
    /// When the oldest route set change not yet in the kernel was seen on the watch.
    pending_change: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How a family's value is read.
enum Value<'a> {
    Counter(&'a AtomicU64),
    Gauge(&'a AtomicU64),
    Histogram(&'a Histogram),
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The watch brought a change of this host's route set at `now`; a change already waiting
    /// keeps its older time, so the lag is the oldest change's.
    pub fn route_change_seen(&self, now: std::time::Instant) {
        self.pending_change.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(now);
    }

    /// When the oldest route change not yet in the kernel was seen (the diagnosis's lag).
    pub fn pending_change(&self) -> Option<std::time::Instant> {
        *self.pending_change.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A route pass converged the kernel at `now`: the waiting change (if any) is in it.
    pub fn routes_converged(&self, now: std::time::Instant) {
        if let Some(seen) = self.pending_change.lock().unwrap_or_else(|e| e.into_inner()).take() {
            self.watch_lag_seconds.observe(now.saturating_duration_since(seen));
        }
    }

    fn families(&self) -> [(&'static str, &'static str, Value<'_>); 26] {
        use Value::{Counter as C, Gauge as G, Histogram as H};
        [
            (
                "romana_agent_fast_path_entries",
                "Local endpoints that packets from other hosts reach past the forwarding path.",
                G(&self.fast_path_entries),
            ),
            (
                "romana_agent_watch_events_total",
                "Route set changes seen on the watch.",
                C(&self.watch_events),
            ),
            (
                "romana_agent_watch_lag_seconds",
                "From a route set change seen on the watch to the kernel holding it.",
                H(&self.watch_lag_seconds),
            ),
            ("romana_agent_reconciles_total", "Route passes run.", C(&self.reconciles)),
            ("romana_agent_reconcile_errors_total", "Route passes that failed.", C(&self.reconcile_errors)),
            (
                "romana_agent_route_convergence_seconds",
                "One route pass: plan (from the kernel observed, or as last applied) and apply.",
                H(&self.converge_seconds),
            ),
            ("romana_agent_plan_steps_total", "Kernel route changes applied.", C(&self.steps_applied)),
            (
                "romana_agent_heartbeat_errors_total",
                "Heartbeats romanad did not take.",
                C(&self.heartbeat_errors),
            ),
            ("romana_agent_routes", "Routes in the host's current set.", G(&self.routes)),
            ("romana_agent_cni_add_total", "CNI ADD requests answered.", C(&self.cni_add)),
            ("romana_agent_cni_add_errors_total", "CNI ADD requests that failed.", C(&self.cni_add_errors)),
            ("romana_agent_cni_add_seconds", "Time to answer a CNI ADD.", H(&self.cni_add_seconds)),
            ("romana_agent_cni_del_total", "CNI DEL requests answered.", C(&self.cni_del)),
            ("romana_agent_cni_del_seconds", "Time to answer a CNI DEL.", H(&self.cni_del_seconds)),
            (
                "romana_agent_cni_check_failures_total",
                "CNI CHECKs that found a difference.",
                C(&self.cni_check_failures),
            ),
            ("romana_agent_gc_removed_total", "Leftover endpoints removed by CNI GC.", C(&self.gc_removed)),
            (
                "romana_agent_firewall_syncs_total",
                "Policy passes (compile, read the table if needed, apply the difference).",
                C(&self.firewall_syncs),
            ),
            ("romana_agent_firewall_errors_total", "Policy passes that failed.", C(&self.firewall_errors)),
            (
                "romana_agent_firewall_sync_seconds",
                "Time of one policy pass.",
                H(&self.firewall_sync_seconds),
            ),
            (
                "romana_agent_firewall_repairs_total",
                "Periodic checks that found the table changed behind the agent's back.",
                C(&self.firewall_repairs),
            ),
            (
                "romana_agent_firewall_reads_total",
                "Listings of the kernel's table (only when nftables' generation moved behind the agent).",
                C(&self.firewall_reads),
            ),
            ("romana_agent_firewall_rules", "Rules in the inet romana table.", G(&self.firewall_rules)),
            (
                "romana_agent_firewall_elements",
                "Set elements in the inet romana table.",
                G(&self.firewall_elements),
            ),
            (
                "romana_agent_firewall_endpoints",
                "Endpoints the agent compiled from (cluster-wide, as of its last compile).",
                G(&self.firewall_endpoints),
            ),
            (
                "romana_agent_firewall_policies",
                "Policies the agent compiled from (cluster-wide, as of its last compile).",
                G(&self.firewall_policies),
            ),
            (
                "romana_agent_firewall_policies_active",
                "Policies that apply to this host's endpoints or to the host (only these have chains and sets in the table), as of the agent's last compile.",
                G(&self.firewall_policies_active),
            ),
        ]
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, v) in self.families() {
            let kind = match v {
                Value::Counter(_) => "counter",
                Value::Gauge(_) => "gauge",
                Value::Histogram(_) => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            match v {
                Value::Counter(c) | Value::Gauge(c) => {
                    let _ = writeln!(out, "{name} {}", c.load(Ordering::Relaxed));
                }
                Value::Histogram(h) => h.render(&mut out, name),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rendered histogram lines for the given observations (milliseconds).
    fn check(observed_ms: &[u64], expect: &[&str]) {
        let h = Histogram::default();
        for ms in observed_ms {
            h.observe(Duration::from_millis(*ms));
        }
        let mut out = String::new();
        h.render(&mut out, "x");
        let lines: Vec<&str> = out
            .lines()
            .filter(|l| expect.iter().any(|e| l.split(' ').next() == e.split(' ').next()))
            .collect();
        assert_eq!(lines, expect);
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        check(&[], &["x_bucket{le=\"0.001\"} 0", "x_bucket{le=\"+Inf\"} 0", "x_sum 0", "x_count 0"]);
        check(
            &[1, 3, 3],
            &["x_bucket{le=\"0.001\"} 1", "x_bucket{le=\"0.005\"} 3", "x_sum 0.007", "x_count 3"],
        );
        // Past the largest bound: only +Inf and the count see it.
        check(&[20_000], &["x_bucket{le=\"10\"} 0", "x_bucket{le=\"+Inf\"} 1", "x_sum 20", "x_count 1"]);
    }

    #[test]
    fn every_family_has_help_and_type_once() {
        let text = Metrics::default().render();
        let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(names.len(), unique.len(), "{text}");
        assert_eq!(names.len(), text.lines().filter(|l| l.starts_with("# HELP ")).count());
    }
}
