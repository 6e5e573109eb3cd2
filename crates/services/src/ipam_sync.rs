//! The IPAM replica: the one task (the actor) that changes the IPAM, and the handle services use.
//!
//! Every replica loads the IPAM from the store, then follows the store's watch (`ipam_feed.rs`).
//! Changes go through one actor task per replica: it decides with the pure core (`ipam_view.rs`),
//! writes the result in one store transaction guarded by compare-and-swap on the touched keys
//! (`ipam_writes.rs`), and rolls back and refreshes on a conflict with another replica.
//! Concurrent allocations are batched into one transaction (one log sync on the embedded store,
//! one round trip on etcd). While the watch is lost, every command is answered at once with
//! `Unavailable` naming the cause. Knows nothing of HTTP.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Instant;

use romana_api::topology::TopologyRequest;
use romana_ipam::spec::{HostSpec, TopologySpec};
use romana_ipam::{AllocRequest, Allocation, HostPlacement, Ipam, Released, ReleasedAddress, TopologyChange};
use romana_model::{Cidr, HostName};
use romana_store::{Compare, Event, Op, Revision, Store, Txn};
use tokio::sync::{mpsc, oneshot};

use crate::ipam_catch_up::{self as catch_up, Step};
use crate::ipam_feed::{self, Feed};
pub use crate::ipam_view::Synced;
use crate::jitter::Jitter;
use crate::keys::Keys;
use crate::service_error::{ServiceError, ServiceResult};

/// Allocations batched into one transaction.
const MAX_BATCH: usize = 32;
/// The longest a read the actor makes before deciding may take: with the store down, a write is
/// refused within it.
const STORE_CALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) type Reply<T> = oneshot::Sender<ServiceResult<T>>;
/// An allocation waiting in a batch: the request, a pinned address, a request token, its shape,
/// the reply (every address it got, the one named as asked first).
pub(crate) type PendingAlloc = (AllocRequest, Option<IpAddr>, Option<String>, Shape, Reply<Vec<Allocation>>);

/// What an allocation takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// One address (`Ipam::allocate`, or the pinned one).
    One,
    /// One of each family (`Ipam::allocate_stack`).
    Stack,
    /// One of this family, named as a stack names it (`Ipam::allocate_family`).
    Family(romana_model::Family),
}

#[derive(Debug)]
pub(crate) enum Command {
    Allocate {
        req: AllocRequest,
        ip: Option<IpAddr>,
        token: Option<String>,
        shape: Shape,
        reply: Reply<Vec<Allocation>>,
    },
    Release {
        key: String,
        reply: Reply<Released>,
    },
    AddHost {
        spec: HostSpec,
        reply: Reply<HostPlacement>,
    },
    RemoveHost {
        name: HostName,
        reply: Reply<Vec<ReleasedAddress>>,
    },
    Tags {
        name: HostName,
        tags: BTreeMap<String, String>,
        reply: Reply<()>,
    },
    Blackout {
        cidr: Cidr,
        add: bool,
        reply: Reply<()>,
    },
    Topology {
        request: TopologyRequest,
        spec: TopologySpec,
        reply: Reply<TopologyChange>,
    },
    Ping {
        reply: Reply<Revision>,
    },
}

impl Command {
    /// Whether the command decides from the replica's copy (all but the readiness ping).
    fn decides(&self) -> bool {
        !matches!(self, Command::Ping { .. })
    }

    /// Whether its caller stopped waiting for the answer.
    fn abandoned(&self) -> bool {
        match self {
            Command::Allocate { reply, .. } => reply.is_closed(),
            Command::Release { reply, .. } => reply.is_closed(),
            Command::AddHost { reply, .. } => reply.is_closed(),
            Command::RemoveHost { reply, .. } => reply.is_closed(),
            Command::Tags { reply, .. } => reply.is_closed(),
            Command::Blackout { reply, .. } => reply.is_closed(),
            Command::Topology { reply, .. } => reply.is_closed(),
            Command::Ping { reply } => reply.is_closed(),
        }
    }

    /// Answers the command with `e` without doing anything (the replica cannot serve it now).
    fn refuse(self, e: ServiceError) {
        match self {
            Command::Allocate { reply, .. } => drop(reply.send(Err(e))),
            Command::Release { reply, .. } => drop(reply.send(Err(e))),
            Command::AddHost { reply, .. } => drop(reply.send(Err(e))),
            Command::RemoveHost { reply, .. } => drop(reply.send(Err(e))),
            Command::Tags { reply, .. } => drop(reply.send(Err(e))),
            Command::Blackout { reply, .. } => drop(reply.send(Err(e))),
            Command::Topology { reply, .. } => drop(reply.send(Err(e))),
            Command::Ping { reply } => drop(reply.send(Err(e))),
        }
    }
}

/// The handle services use.
#[derive(Debug, Clone)]
pub struct IpamHandle {
    /// Each command with the moment it was sent (the batch log's `queued_ms`).
    tx: mpsc::Sender<(Instant, Command)>,
    view: Arc<RwLock<Synced>>,
    /// Signalled after every batch of store events applied to the replica (so after every
    /// change, local or another replica's): the route manager recomputes on it.
    changed: Arc<tokio::sync::Notify>,
    /// When the last change (an allocation, a release, a host...) was sent or answered, not a
    /// readiness ping: background work waits for a burst of them to end (`since_last_command`).
    last_command: Arc<std::sync::Mutex<Option<Instant>>>,
}

pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("records serialize")
}

pub(crate) fn read_lock(l: &RwLock<Synced>) -> RwLockReadGuard<'_, Synced> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

impl IpamHandle {
    /// Loads the IPAM from the store (seeding `initial` as the topology if there is none) and
    /// starts the actor, which spreads its retries with `jitter`.
    pub async fn start(
        store: Arc<dyn Store>,
        keys: Keys,
        initial: Option<TopologyRequest>,
        jitter: Arc<dyn Jitter>,
    ) -> ServiceResult<IpamHandle> {
        if let Some(req) = initial {
            let spec = req.to_spec().map_err(|p| ServiceError::invalid("invalid initial topology", p.0))?;
            Ipam::new(spec)?;
            let key = keys.topology();
            store.txn(Txn::when(vec![Compare::absent(&key)], vec![Op::put(&key, encode(&req))])).await?;
        }
        let synced = ipam_feed::load(&*store, &keys).await?;
        let (feed_tx, feed_rx) = mpsc::unbounded_channel();
        ipam_feed::spawn(Arc::clone(&store), keys.clone(), synced.revision, feed_tx);
        let view = Arc::new(RwLock::new(synced));
        let (tx, rx) = mpsc::channel(4096);
        let changed = Arc::new(tokio::sync::Notify::new());
        let actor = Actor { store, keys, view: Arc::clone(&view), changed: Arc::clone(&changed), jitter };
        tokio::spawn(actor.run(rx, feed_rx));
        Ok(IpamHandle { tx, view, changed, last_command: Arc::default() })
    }

    /// Waits until the replica has applied a change since the last wait returned (changes in
    /// between coalesce into one wake-up). One waiter per replica: the route manager.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    pub fn read<R>(&self, f: impl FnOnce(&Synced) -> R) -> R {
        f(&read_lock(&self.view))
    }

    /// How long since this replica's last IPAM change was sent or answered (`None`: none yet;
    /// readiness pings do not count). The consistency check starts its pass once allocations
    /// have paused (`reclaim.rs`). Per replica: changes served by another replica do not count.
    pub fn since_last_command(&self) -> Option<std::time::Duration> {
        self.last_command.lock().unwrap_or_else(|p| p.into_inner()).map(|t| t.elapsed())
    }

    fn touch(&self) {
        *self.last_command.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// A change: sent and answered, each moment counted as the last command's (with a backed-up
    /// actor the answer can come long after the send).
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> ServiceResult<T> {
        self.touch();
        let answer = self.send(make).await;
        self.touch();
        answer
    }

    async fn send<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> ServiceResult<T> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((Instant::now(), make(tx)))
            .await
            .map_err(|_| ServiceError::Unavailable("IPAM is shutting down".into()))?;
        rx.await.map_err(|_| ServiceError::Unavailable("IPAM stopped before answering".into()))?
    }

    pub async fn allocate(
        &self,
        req: AllocRequest,
        ip: Option<IpAddr>,
        token: Option<String>,
    ) -> ServiceResult<Allocation> {
        let all = self.call(|reply| Command::Allocate { req, ip, token, shape: Shape::One, reply }).await?;
        all.into_iter().next().ok_or_else(|| ServiceError::Unavailable("the IPAM answered no address".into()))
    }

    /// The address of one family of an endpoint (`ip` pinning it), named as a dual-stack
    /// allocation names it: `<name>#v6` for IPv6 when the host also draws IPv4 for the tenant.
    pub async fn allocate_family(
        &self,
        req: AllocRequest,
        family: romana_model::Family,
        ip: Option<IpAddr>,
        token: Option<String>,
    ) -> ServiceResult<Allocation> {
        let shape = Shape::Family(family);
        let all = self.call(|reply| Command::Allocate { req, ip, token, shape, reply }).await?;
        all.into_iter().next().ok_or_else(|| ServiceError::Unavailable("the IPAM answered no address".into()))
    }

    /// One address of each family the host draws from for the tenant, both or neither, in one
    /// transaction (the IPv6 one of a dual-stack endpoint named `<name>#v6`).
    pub async fn allocate_stack(&self, req: AllocRequest) -> ServiceResult<Vec<Allocation>> {
        self.call(|reply| Command::Allocate { req, ip: None, token: None, shape: Shape::Stack, reply }).await
    }
    pub async fn release(&self, key: String) -> ServiceResult<Released> {
        self.call(|reply| Command::Release { key, reply }).await
    }
    pub async fn add_host(&self, spec: HostSpec) -> ServiceResult<HostPlacement> {
        self.call(|reply| Command::AddHost { spec, reply }).await
    }
    pub async fn remove_host(&self, name: HostName) -> ServiceResult<Vec<ReleasedAddress>> {
        self.call(|reply| Command::RemoveHost { name, reply }).await
    }
    pub async fn set_tags(&self, name: HostName, tags: BTreeMap<String, String>) -> ServiceResult<()> {
        self.call(|reply| Command::Tags { name, tags, reply }).await
    }
    pub async fn blackout(&self, cidr: Cidr, add: bool) -> ServiceResult<()> {
        self.call(|reply| Command::Blackout { cidr, add, reply }).await
    }
    pub async fn update_topology(&self, request: TopologyRequest) -> ServiceResult<TopologyChange> {
        let spec = request.to_spec().map_err(|p| ServiceError::invalid("invalid topology", p.0))?;
        self.call(|reply| Command::Topology { request, spec, reply }).await
    }

    /// Whether the replica serves changes now: its revision, or 503 saying why not (reloading
    /// after a lost watch, or stopped). A `Ping` through the actor, so it also shows it is not stuck.
    pub async fn ready(&self) -> ServiceResult<Revision> {
        // Not a change: a load balancer's probes every 500 ms must not hold the check off.
        self.send(|reply| Command::Ping { reply }).await
    }
}

/// Why the replica refuses commands: its watch was lost at `started` and it has not followed
/// the store again since. Pure; the time is an argument.
#[derive(Debug, Clone)]
struct Outage {
    cause: String,
    started: Instant,
    attempts: u32,
    last: String,
}

impl Outage {
    fn refusal(&self, now: Instant) -> ServiceError {
        ServiceError::Unavailable(format!(
            "the IPAM replica is reloading from the store after: {} (for {:.1} s, attempt {}, last error: \
             {}); nothing was changed, try again",
            self.cause,
            now.saturating_duration_since(self.started).as_secs_f64(),
            self.attempts,
            self.last
        ))
    }
}

/// The actor's side of the feed: the channel, the outage it reported, and whether it ended.
struct FeedState {
    rx: mpsc::UnboundedReceiver<Feed>,
    outage: Option<Outage>,
    ended: bool,
}

/// A store call bounded by `STORE_CALL_LIMIT`, its failure as `Unavailable` naming `what`.
pub(crate) async fn store_call<T>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, romana_store::StoreError>>,
) -> ServiceResult<T> {
    match tokio::time::timeout(STORE_CALL_LIMIT, call).await {
        Ok(r) => {
            r.map_err(|e| ServiceError::Unavailable(format!("{what}: {e}; nothing was changed, try again")))
        }
        Err(_) => Err(ServiceError::Unavailable(format!(
            "{what}: the store did not answer within {:.1} s; nothing was changed, try again",
            STORE_CALL_LIMIT.as_secs_f64()
        ))),
    }
}

pub(crate) struct Actor {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) keys: Keys,
    pub(crate) view: Arc<RwLock<Synced>>,
    pub(crate) changed: Arc<tokio::sync::Notify>,
    pub(crate) jitter: Arc<dyn Jitter>,
}

impl Actor {
    pub(crate) fn write(&self) -> std::sync::RwLockWriteGuard<'_, Synced> {
        self.view.write().unwrap_or_else(|p| p.into_inner())
    }

    async fn run(self, mut rx: mpsc::Receiver<(Instant, Command)>, feed: mpsc::UnboundedReceiver<Feed>) {
        let mut feed = FeedState { rx: feed, outage: None, ended: false };
        loop {
            tokio::select! {
                cmd = rx.recv() => {
                    let Some((sent, cmd)) = cmd else { return };
                    if let Some(o) = &feed.outage {
                        cmd.refuse(o.refusal(Instant::now()));
                        continue;
                    }
                    let taken = Instant::now();
                    let mut batch = vec![cmd];
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok((_, c)) => batch.push(c),
                            Err(_) => break,
                        }
                    }
                    // Decide only from a copy at least as new as anything acknowledged anywhere.
                    let mut fenced = false;
                    if batch.iter().any(Command::decides) {
                        match self.catch_up(&mut feed).await {
                            Ok(f) => fenced = f,
                            Err(e) => {
                                for cmd in batch {
                                    cmd.refuse(e.clone());
                                }
                                continue;
                            }
                        }
                    }
                    // A caller that gave up (its request timed out) was told it failed: doing
                    // its change now would contradict that.
                    batch.retain(|c| !c.abandoned());
                    let (caught_up, commands) = (Instant::now(), batch.len());
                    self.handle(batch).await;
                    // Where a command's time went (docs/benchmarks.md, issue 22: the allocation
                    // tail): `RUST_LOG=romana_services::ipam_sync=debug`.
                    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
                    tracing::debug!(
                        commands,
                        queued_ms = ms(taken - sent),
                        catch_up_ms = ms(caught_up - taken),
                        fenced,
                        handle_ms = ms(caught_up.elapsed()),
                        "ipam batch"
                    );
                }
                item = feed.rx.recv(), if !feed.ended => self.on_feed(&mut feed, item),
            }
        }
    }

    /// Applies what the feed sent: changes, a reload, the watch lost or back.
    fn on_feed(&self, feed: &mut FeedState, item: Option<Feed>) {
        match item {
            Some(Feed::Events(events)) => self.apply_events(&events),
            Some(Feed::Loaded(synced)) => {
                let (revision, addresses) = (synced.revision, synced.ipam.address_count());
                *self.write() = *synced;
                self.changed.notify_one();
                tracing::info!(revision, addresses, "IPAM replica reloaded");
            }
            Some(Feed::Synced) => {
                if let Some(o) = feed.outage.take() {
                    tracing::info!(
                        seconds = o.started.elapsed().as_secs_f64(),
                        attempts = o.attempts,
                        "IPAM replica follows the store again"
                    );
                }
            }
            Some(Feed::Lost(error)) => match &mut feed.outage {
                Some(o) => {
                    o.attempts += 1;
                    tracing::warn!(%error, attempt = o.attempts, "cannot reload the IPAM replica from the store");
                    o.last = error;
                }
                None => {
                    tracing::warn!(%error, "store watch ended; reloading the IPAM replica");
                    feed.outage = Some(Outage {
                        cause: error.clone(),
                        started: Instant::now(),
                        attempts: 1,
                        last: error,
                    });
                }
            },
            None => {
                // The follower only stops when this actor is gone; nothing more will come.
                let e = "the store feed stopped".to_owned();
                feed.outage.get_or_insert(Outage {
                    cause: e.clone(),
                    started: Instant::now(),
                    attempts: 1,
                    last: e,
                });
                feed.ended = true;
            }
        }
    }

    /// Waits until the copy has reached the store's current revision (`ipam_catch_up.rs`),
    /// applying the feed meanwhile; refuses when the store does not answer, the watch is lost or
    /// the copy does not catch up in time. Says whether it had to write the fence.
    async fn catch_up(&self, feed: &mut FeedState) -> ServiceResult<bool> {
        let started = Instant::now();
        let mut target = store_call("reading the store's revision", self.store.revision()).await?;
        let mut fenced = false;
        loop {
            if let Some(o) = &feed.outage {
                return Err(o.refusal(Instant::now()));
            }
            let copy = read_lock(&self.view).revision;
            match catch_up::step(copy, target, started.elapsed(), fenced) {
                Step::Ready => return Ok(fenced),
                Step::GiveUp => return Err(ServiceError::Unavailable(catch_up::lag_message(copy, target))),
                Step::Fence => {
                    let put = Txn::when(vec![], vec![Op::put(self.keys.under("fence"), Vec::new())]);
                    target = store_call("writing the catch-up fence", self.store.txn(put)).await?.revision;
                    fenced = true;
                }
                Step::Wait(at_most) => {
                    if feed.ended {
                        tokio::time::sleep(at_most).await;
                        continue;
                    }
                    tokio::select! {
                        item = feed.rx.recv() => self.on_feed(feed, item),
                        () = tokio::time::sleep(at_most) => {}
                    }
                }
            }
        }
    }

    fn apply_events(&self, events: &[Event]) {
        {
            let mut s = self.write();
            for e in events {
                s.apply(&self.keys, e.kind, &e.kv);
            }
        }
        self.changed.notify_one();
    }

    async fn handle(&self, batch: Vec<Command>) {
        let mut allocs = Vec::new();
        for cmd in batch {
            match cmd {
                // A dual-stack allocation writes twice the keys of a single one: it goes in a
                // transaction of its own, so a batch stays within etcd's 128 operations.
                Command::Allocate { req, ip, token, shape: Shape::Stack, reply } => {
                    if !allocs.is_empty() {
                        self.allocate(std::mem::take(&mut allocs)).await;
                    }
                    self.allocate(vec![(req, ip, token, Shape::Stack, reply)]).await;
                }
                Command::Allocate { req, ip, token, shape, reply } => {
                    allocs.push((req, ip, token, shape, reply))
                }
                other => {
                    if !allocs.is_empty() {
                        self.allocate(std::mem::take(&mut allocs)).await;
                    }
                    self.one(other).await;
                }
            }
        }
        if !allocs.is_empty() {
            self.allocate(allocs).await;
        }
    }

    async fn one(&self, cmd: Command) {
        match cmd {
            Command::Allocate { .. } => unreachable!("allocations are batched"),
            Command::Release { key, reply } => {
                let _ = reply.send(self.release(&key).await);
            }
            Command::AddHost { spec, reply } => {
                let _ = reply.send(self.add_host(spec).await);
            }
            Command::RemoveHost { name, reply } => {
                let _ = reply.send(self.remove_host(&name).await);
            }
            Command::Tags { name, tags, reply } => {
                let _ = reply.send(self.tags(&name, tags).await);
            }
            Command::Blackout { cidr, add, reply } => {
                let _ = reply.send(self.blackout(cidr, add).await);
            }
            Command::Topology { request, spec, reply } => {
                let _ = reply.send(self.topology(request, spec).await);
            }
            Command::Ping { reply } => {
                let _ = reply.send(Ok(read_lock(&self.view).revision));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn check(attempts: u32, after: Duration, want: &[&str]) {
        let started = Instant::now();
        let o =
            Outage { cause: "the watch ended".into(), started, attempts, last: "connection refused".into() };
        let e = o.refusal(started + after);
        let ServiceError::Unavailable(text) = &e else { panic!("unavailable: {e:?}") };
        for w in want {
            assert!(text.contains(w), "{w:?} in {text}");
        }
    }

    /// Readiness pings do not count as commands (a probe every 500 ms would hold the
    /// consistency check off); a change does, sent or refused.
    #[tokio::test]
    async fn only_changes_count_as_the_last_command() {
        let store: Arc<dyn Store> = Arc::new(romana_store::MemStore::new());
        let topology: TopologyRequest = serde_json::from_str(
            r#"{"networks":[{"name":"n","cidr":"10.20.0.0/16","block_mask":28}],
                "topologies":[{"networks":["n"],"map":[{"groups":[]}]}]}"#,
        )
        .expect("topology");
        let jitter = Arc::new(crate::jitter::SplitMix::new(1));
        let h = IpamHandle::start(store, Keys::new("/t"), Some(topology), jitter).await.expect("start");
        assert_eq!(h.since_last_command(), None, "nothing yet");
        h.ready().await.expect("ready");
        h.ready().await.expect("ready");
        assert_eq!(h.since_last_command(), None, "pings are not commands");
        // A release of what is not allocated is refused, and still a command.
        let _ = h.release("nobody".into()).await;
        assert!(h.since_last_command().is_some_and(|d| d < Duration::from_secs(5)));
    }

    #[test]
    fn a_refusal_says_why_since_when_and_that_nothing_changed() {
        check(
            1,
            Duration::from_millis(300),
            &["reloading", "after: the watch ended", "for 0.3 s", "attempt 1"],
        );
        check(
            7,
            Duration::from_secs(12),
            &["for 12.0 s", "attempt 7", "last error: connection refused", "nothing was changed, try again"],
        );
    }
}
