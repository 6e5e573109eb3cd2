//! Simulated agents for the fan-out benchmark: each follows romanad's watch exactly as
//! `romana-agent` does (`romana_agent::rest_watch::SharedWatch`: one stream for every prefix the
//! agent follows, under the store's follower, with its own service-user token bound to its
//! host; or, for comparison, one `RestWatch` stream per prefix as agents did before), and
//! records when each key's latest change reached it. Also the observer: the admin following the
//! same prefixes, which tells what changed in a round and at which revision.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use romana_agent::rest_watch::{RestWatch, SharedWatch};
use romana_client::Client;
use romana_store::follow::{Backoff, Followed, follow};

/// The prefixes a real agent follows besides its own `routes/<host>` (`firewall.rs`: endpoints,
/// policies, NetworkPolicies, tenants, segments; `vip.rs`: VIPs).
pub const AGENT_PREFIXES: [&str; 6] =
    ["endpoints/", "policies/", "netpols/", "tenants/", "segments/", "vips/"];

/// What reached one watcher: per key, when its latest change arrived and at which revision.
#[derive(Debug, Default)]
pub struct Seen {
    keys: Mutex<HashMap<String, (Instant, i64)>>,
}

impl Seen {
    fn record(&self, key: String, revision: i64, at: Instant) {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (at, revision));
    }

    /// When `key` arrived at `revision` or later, if it has.
    pub fn arrived(&self, key: &str, revision: i64) -> Option<Instant> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.get(key).filter(|(_, r)| *r >= revision).map(|(t, _)| *t)
    }

    /// Keys whose latest change arrived at or after `since`, with their revision.
    pub fn changed_since(&self, since: Instant) -> Vec<(String, i64)> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter().filter(|(_, (t, _))| *t >= since).map(|(k, (_, r))| (k.clone(), *r)).collect()
    }

    /// The latest arrival of anything.
    pub fn last_arrival(&self) -> Option<Instant> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.values().map(|(t, _)| *t).max()
    }
}

/// One watcher: its prefixes and what reached it.
#[derive(Debug)]
pub struct Watcher {
    pub prefixes: Vec<String>,
    pub seen: Arc<Seen>,
}

impl Watcher {
    /// Whether a change of `key` is streamed to this watcher.
    pub fn follows(&self, key: &str) -> bool {
        self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }
}

/// Watchers following romanad, each stream in its own task.
pub struct Fleet {
    pub watchers: Vec<Watcher>,
    synced: Arc<AtomicUsize>,
    lost: Arc<AtomicUsize>,
    /// Why streams broke: the first 100 characters of each error, counted.
    why: Arc<Mutex<HashMap<String, usize>>>,
    streams: usize,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// Starts one watcher per `(client, prefixes)`: one stream for all of its prefixes, as the
    /// agent opens it (`shared`), or one stream per prefix.
    pub fn spawn(members: Vec<(Arc<Client>, Vec<String>)>, shared: bool) -> Fleet {
        let synced = Arc::new(AtomicUsize::new(0));
        let lost = Arc::new(AtomicUsize::new(0));
        let why: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let mut watchers = Vec::new();
        let mut tasks = Vec::new();
        let mut streams = 0;
        for (client, prefixes) in members {
            let seen = Arc::new(Seen::default());
            let groups: Vec<Vec<String>> = if shared {
                vec![prefixes.clone()]
            } else {
                prefixes.iter().map(|p| vec![p.clone()]).collect()
            };
            for group in groups {
                streams += 1;
                let (client, seen, synced, lost, why) =
                    (client.clone(), seen.clone(), synced.clone(), lost.clone(), why.clone());
                let mut was_synced = false;
                let on = move |f: Followed<romana_api::rest::WatchEvent>| {
                    match f {
                        Followed::Event(ev) => seen.record(ev.key, ev.revision, Instant::now()),
                        Followed::Synced { .. } => {
                            if !was_synced {
                                was_synced = true;
                                synced.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Followed::Current => {}
                        Followed::Lost { error, .. } => {
                            lost.fetch_add(1, Ordering::Relaxed);
                            let reason: String = error.chars().take(100).collect();
                            *why.lock().unwrap_or_else(|p| p.into_inner()).entry(reason).or_default() += 1;
                        }
                    }
                    true
                };
                // The agent's backoff (`main.rs`).
                let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
                let get = move || client.clone();
                tasks.push(if shared {
                    let mut w = SharedWatch::new();
                    let refs: Vec<&str> = group.iter().map(String::as_str).collect();
                    w.add(&refs, on);
                    tokio::spawn(w.run(get, backoff))
                } else {
                    tokio::spawn(async move {
                        let mut source = RestWatch { prefixes: group, client: get };
                        let mut on = on;
                        follow(&mut source, backoff, &mut on).await;
                    })
                });
            }
            watchers.push(Watcher { prefixes, seen });
        }
        Fleet { watchers, synced, lost, why, streams, tasks }
    }

    /// Waits until every stream has synced once; false after `limit`.
    pub async fn all_synced(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.synced.load(Ordering::Relaxed) < self.streams {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    pub fn streams(&self) -> usize {
        self.streams
    }

    pub fn synced(&self) -> usize {
        self.synced.load(Ordering::Relaxed)
    }

    /// The most frequent reasons streams broke, with their counts.
    pub fn reasons(&self) -> Vec<(usize, String)> {
        let why = self.why.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<(usize, String)> = why.iter().map(|(k, n)| (*n, k.clone())).collect();
        v.sort_by(|a, b| b.cmp(a));
        v.truncate(3);
        v
    }

    /// Streams that broke (each reconnects by itself, as the agent's do).
    pub fn lost(&self) -> usize {
        self.lost.load(Ordering::Relaxed)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What one round measured: per watcher that should have the change, how long after `t0` its
/// last expected key arrived; and who did not get it within the limit.
#[derive(Debug, Default)]
pub struct Delivery {
    pub latencies: Vec<Duration>,
    pub missing: usize,
    /// When the observer saw the last of the round's changes (the route manager's publication
    /// for a block), after `t0`.
    pub published: Duration,
    pub keys: usize,
}

/// Waits until the observer has been quiet for `quiet` (the round's changes are all written),
/// then until every watcher has each changed key it follows, up to `limit`.
pub async fn deliver(
    fleet: &Fleet,
    observer: &Seen,
    t0: Instant,
    quiet: Duration,
    limit: Duration,
) -> Delivery {
    loop {
        tokio::time::sleep(quiet / 4).await;
        match observer.last_arrival().filter(|t| *t >= t0) {
            Some(t) if t.elapsed() >= quiet => break,
            // Nothing seen in 5 s: the caller counts the round as unseen (a block round always
            // changes its rack's route sets, a policy or label round every agent's view).
            None if t0.elapsed() >= quiet * 5 => break,
            _ if t0.elapsed() > limit => break,
            _ => {}
        }
    }
    let changed = observer.changed_since(t0);
    let published = observer.last_arrival().map_or(Duration::ZERO, |t| t.saturating_duration_since(t0));
    let deadline = Instant::now() + limit;
    let mut latencies = Vec::new();
    let mut missing = 0;
    for w in &fleet.watchers {
        let mine: Vec<&(String, i64)> = changed.iter().filter(|(k, _)| w.follows(k)).collect();
        if mine.is_empty() {
            continue;
        }
        let last = loop {
            let arrivals: Option<Vec<Instant>> = mine.iter().map(|(k, r)| w.seen.arrived(k, *r)).collect();
            match arrivals {
                Some(a) => break a.into_iter().max(),
                None if Instant::now() > deadline => break None,
                None => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        match last {
            Some(t) => latencies.push(t.saturating_duration_since(t0)),
            None => missing += 1,
        }
    }
    Delivery { latencies, missing, published, keys: changed.len() }
}
