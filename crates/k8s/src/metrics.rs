//! The controller's Prometheus metrics: objects seen per kind, writes per kind and result,
//! errors, the lag from a Kubernetes event to romanad's write, and whether this replica leads.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub kind: String,
    /// `ok`, `refused` (romanad said no: a bad object) or `error`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `watch`, `read` (romanad) or `event` (posting a Kubernetes Event).
    pub source: String,
}

/// The `kind` of `writes`: `plan::Write::kind`'s values.
pub const WRITE_KINDS: [&str; 6] = ["tenant", "segment", "host", "networkpolicy", "pod", "endpoint"];

/// The `source` of `errors`, as `Metrics::error` is called.
pub const ERROR_SOURCES: [&str; 5] = ["watch", "map", "read", "lease", "event"];

pub struct Metrics {
    pub registry: Registry,
    pub objects: Family<KindLabels, Gauge>,
    pub events: Family<KindLabels, Counter>,
    pub writes: Family<WriteLabels, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub lag: Histogram,
    pub leader: Gauge,
    pub resyncs: Counter,
    /// Plans computed and applied, and how many writes the last one had: a plan of 0 writes
    /// after a relist means romanad was already equal.
    pub plans: Counter,
    pub last_plan_writes: Gauge,
    /// Time to compute one plan from the whole picture.
    pub plan_seconds: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("romana_k8s");
        let m = Metrics {
            objects: Family::default(),
            events: Family::default(),
            writes: Family::default(),
            errors: Family::default(),
            lag: Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0]),
            leader: Gauge::default(),
            resyncs: Counter::default(),
            plans: Counter::default(),
            last_plan_writes: Gauge::default(),
            plan_seconds: Histogram::new([
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
            ]),
            registry: Registry::default(),
        };
        registry.register("objects", "Kubernetes objects known, by kind", m.objects.clone());
        registry.register("watch_events", "Watch events received, by kind", m.events.clone());
        registry.register("writes", "Writes to romanad, by kind and result", m.writes.clone());
        registry.register("errors", "Errors, by source", m.errors.clone());
        registry.register(
            "event_to_write_seconds",
            "From a Kubernetes watch event to romanad's answer to the write it caused",
            m.lag.clone(),
        );
        registry.register("leader", "1 while this replica holds the Lease", m.leader.clone());
        registry.register(
            "resyncs",
            "Full reads of romanad (start, relist, period, after errors)",
            m.resyncs.clone(),
        );
        registry.register("plans", "Reconcile plans applied", m.plans.clone());
        registry.register("last_plan_writes", "Writes in the last plan", m.last_plan_writes.clone());
        registry.register("plan_seconds", "Time to compute a plan", m.plan_seconds.clone());
        // Every series exists from the start at 0 (their label values are few and known): a
        // family with no series is left out of the text, and `rate()` needs a series before the
        // first event to see that event.
        for kind in crate::state::Kind::ALL {
            let k = KindLabels { kind: kind.as_str().into() };
            let _ = m.objects.get_or_create(&k);
            let _ = m.events.get_or_create(&k);
        }
        for kind in WRITE_KINDS {
            for result in ["ok", "refused", "error"] {
                let _ = m.writes.get_or_create(&WriteLabels { kind: kind.into(), result: result.into() });
            }
        }
        for source in ERROR_SOURCES {
            let _ = m.errors.get_or_create(&ErrorLabels { source: source.into() });
        }
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn write(&self, kind: &str, result: &str) {
        self.writes.get_or_create(&WriteLabels { kind: kind.into(), result: result.into() }).inc();
    }

    pub fn error(&self, source: &str) {
        self.errors.get_or_create(&ErrorLabels { source: source.into() }).inc();
    }

    pub fn encode(&self) -> String {
        let mut s = String::new();
        if prometheus_client::encoding::text::encode(&mut s, &self.registry).is_err() {
            s.clear();
        }
        s
    }
}
