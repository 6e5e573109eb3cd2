//! Prometheus metrics of romanad: requests by route and status, latency, IPAM and liveness
//! gauges, and the watch's open streams and events sent. Every family is documented in
//! docs/metrics.md (a test compares the two).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub addresses: Gauge,
    pub hosts: Gauge,
    pub revision: Gauge,
    pub hosts_alive: Gauge,
    pub hosts_dead: Gauge,
    /// `GET /watch` streams open now (agents, controllers, CLIs with `--watch`).
    pub watch_streams: Gauge,
    /// Changes sent on watch streams (one per key, summed over streams).
    pub watch_events: Counter,
    /// The consistency check's disagreements by kind, and addresses reclaimed by reason.
    pub disagreements: Family<KindLabels, Gauge>,
    pub reclaimed: Family<ReasonLabels, Counter>,
}

/// Counts a watch stream as open until dropped (the stream's body holds it).
#[derive(Debug)]
pub struct OpenStream(Gauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("romana");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0])
        });
        let (addresses, hosts, revision) = (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register("http_requests", "HTTP requests by route and status", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency", latency.clone());
        registry.register("ipam_allocated_addresses", "Addresses allocated", addresses.clone());
        registry.register("ipam_hosts", "Hosts known to the IPAM", hosts.clone());
        registry.register("store_revision", "Store revision this replica has applied", revision.clone());
        let (hosts_alive, hosts_dead, watch_streams) = (Gauge::default(), Gauge::default(), Gauge::default());
        let watch_events = Counter::default();
        registry.register("hosts_alive", "Hosts whose heartbeat lease is alive", hosts_alive.clone());
        registry.register(
            "hosts_dead",
            "Hosts that sent heartbeats once and whose lease lapsed (their routes are withdrawn)",
            hosts_dead.clone(),
        );
        registry.register("watch_streams", "Watch streams open", watch_streams.clone());
        registry.register("watch_events", "Changes sent on watch streams", watch_events.clone());
        let disagreements = Family::<KindLabels, Gauge>::default();
        let reclaimed = Family::<ReasonLabels, Counter>::default();
        // Every kind and reason served from the start, at zero, so a scrape sees the families.
        for kind in crate::consistency::Kind::ALL {
            disagreements.get_or_create(&KindLabels { kind: kind.as_str().to_owned() }).set(0);
        }
        for reason in ["dead-host", "leak"] {
            drop(reclaimed.get_or_create(&ReasonLabels { reason: reason.to_owned() }));
        }
        registry.register(
            "check_disagreements",
            "Consistency check disagreements by kind",
            Family::clone(&disagreements),
        );
        registry.register(
            "reclaimed_addresses",
            "Addresses released by reclaim, by reason",
            Family::clone(&reclaimed),
        );
        Metrics {
            registry,
            requests,
            latency,
            addresses,
            hosts,
            revision,
            hosts_alive,
            hosts_dead,
            watch_streams,
            watch_events,
            disagreements,
            reclaimed,
        }
    }

    /// A watch stream opened; it counts as open until the guard is dropped.
    pub fn stream_opened(&self) -> OpenStream {
        self.watch_streams.inc();
        OpenStream(self.watch_streams.clone())
    }

    /// Sets the disagreement gauges from the last consistency pass (`reclaim.rs`).
    pub fn set_disagreements(&self, counts: &std::collections::BTreeMap<&'static str, u64>) {
        for (kind, n) in counts {
            self.disagreements
                .get_or_create(&KindLabels { kind: kind.to_string() })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// An address released by reclaim (`reason`: `dead-host` or `leak`).
    pub fn reclaimed(&self, reason: &str) {
        self.reclaimed.get_or_create(&ReasonLabels { reason: reason.to_owned() }).inc();
    }

    /// Sets the gauges read at scrape time from the IPAM view and liveness.
    pub fn refresh(&self, ipam: &romana_ipam::Ipam, revision: i64, liveness: &crate::liveness::Liveness) {
        self.addresses.set(i64::try_from(ipam.address_count()).unwrap_or(i64::MAX));
        self.hosts.set(i64::try_from(ipam.hosts().len()).unwrap_or(i64::MAX));
        self.revision.set(revision);
        let dead = liveness.monitored.iter().filter(|h| !liveness.live.contains(*h)).count();
        self.hosts_alive.set(i64::try_from(liveness.live.len()).unwrap_or(i64::MAX));
        self.hosts_dead.set(i64::try_from(dead).unwrap_or(i64::MAX));
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
