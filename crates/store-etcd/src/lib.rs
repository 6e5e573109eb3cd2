//! The etcd v3 backend: multi-node and HA deployments keep Romana's state in etcd. Maps the store
//! API one to one onto etcd's KV, Watch and Lease services.
//!
//! Bulk reads are paged: gRPC refuses a response over the client's decoding limit, so one range
//! over a big prefix (100,000 addresses are about 15 MB) would fail for good. `range` reads pages
//! of about `PAGE_BYTES`, every page at the first page's revision, so the result is still one
//! consistent snapshot.

mod attempts;
#[cfg(any(test, feature = "test-util"))]
pub mod cluster;
#[cfg(any(test, feature = "test-util"))]
pub mod election_log;
mod members;

pub use members::{POINT_TIMEOUT, REQUEST_TIMEOUT};
#[cfg(any(test, feature = "test-util"))]
pub mod server;

use etcd_client::{
    Compare as EtcdCompare, CompareOp, DeleteOptions, GetOptions, PutOptions, TxnOp, TxnOpResponse,
    WatchOptions,
};
use members::{CallError, Deadline, Members};
use romana_store::{
    BoxFut, Cmp, Compare, Event, EventKind, KeyValue, LeaseId, Op, Result, Revision, Store, StoreError, Txn,
    TxnResult, WatchStream,
};

/// A range page aims at this many bytes of keys and values (far below any decoding limit).
const PAGE_BYTES: usize = 1 << 20;
/// Keys asked for in the first page of a range, before the page size adapts to the values seen.
const FIRST_PAGE_KEYS: i64 = 100;
/// At most this many keys per page, however small the values.
const MAX_PAGE_KEYS: i64 = 10_000;
/// KV responses decode up to this size (gRPC's default is 4 MiB): the second line of defence, as
/// range pages stay near `PAGE_BYTES` plus one value (etcd accepts values up to 1.5 MiB by default).
pub const KV_MESSAGE_BYTES: usize = 16 << 20;
/// Watch responses decode up to this size: a watch that catches up gets up to 1,000 revisions in
/// one response (etcd 3.4 batches them so), which at large blocks is tens of MiB.
pub const WATCH_MESSAGE_BYTES: usize = 64 << 20;
/// etcd's `--heartbeat-interval` (ms) that Romana's deployment uses and its tests run with
/// (docs/operations.md): a few times a LAN round trip, as etcd's tuning guide asks.
pub const ETCD_HEARTBEAT_MS: u32 = 50;
/// etcd's `--election-timeout` (ms) to go with it (etcd's default is 1,000). After the leader
/// dies, followers notice within one to two of these, and nothing commits meanwhile: this sets
/// the floor of the pause a leader's death causes. Six heartbeats, so a follower waits through
/// five lost or late ones before it campaigns.
pub const ETCD_ELECTION_MS: u32 = 300;
/// etcd's `--pre-vote` that Romana's deployment uses and its tests run with (etcd 3.4's default
/// is off). Without it, a follower that campaigns while the other survivor still counts the dead
/// leader's lease is ignored, yet it has already raised its term and voted for itself: the other
/// one's campaign then fails too (a split vote), and the election takes a second timeout (1.5 s
/// once in ten leader kills). With it, a campaign first asks whether it could win, without
/// raising the term, and the other survivor wins at its own timeout. It also keeps a member that
/// rejoins from deposing a working leader.
pub const ETCD_PRE_VOTE: bool = true;
/// How long `connect` waits for a member to answer.
pub const CONNECT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// A range restarts from scratch this often when etcd compacts its revision between two pages.
const RANGE_ATTEMPTS: usize = 5;

#[derive(Clone)]
pub struct EtcdStore {
    members: Members,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("endpoints", &self.members.endpoints()).finish()
    }
}

fn unavailable(e: CallError) -> StoreError {
    StoreError::Unavailable(format!("etcd: {e}"))
}

/// Why a range page failed, as far as paging cares.
enum PageError {
    /// The response was over the client's decoding limit: ask for fewer keys.
    TooLarge(String),
    /// The pinned revision was compacted between two pages: start again.
    Compacted(String),
    Other(StoreError),
}

fn page_error(e: CallError) -> PageError {
    let text = e.to_string();
    if text.contains("message length too large") {
        PageError::TooLarge(text)
    } else if text.contains("required revision has been compacted") {
        PageError::Compacted(text)
    } else {
        PageError::Other(unavailable(e))
    }
}

/// The end of the key range holding every key that starts with `prefix` (etcd's rule: the prefix
/// with its last byte below 0xff incremented; `\0`, "to the end", when there is none).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Keys to ask for in the next page so that it holds about `PAGE_BYTES`, from the last page's
/// `keys` and `bytes`.
fn next_page_keys(keys: usize, bytes: usize) -> i64 {
    let per_key = bytes / keys.max(1) + 1;
    i64::try_from(PAGE_BYTES / per_key).unwrap_or(MAX_PAGE_KEYS).clamp(1, MAX_PAGE_KEYS)
}

fn kv(k: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(k.key()).into_owned(),
        value: k.value().to_vec(),
        create_revision: k.create_revision(),
        mod_revision: k.mod_revision(),
        version: k.version(),
        lease: k.lease(),
    }
}

fn compare(c: &Compare) -> EtcdCompare {
    let op = |c: Cmp| match c {
        Cmp::Equal => CompareOp::Equal,
        Cmp::NotEqual => CompareOp::NotEqual,
        Cmp::Less => CompareOp::Less,
        Cmp::Greater => CompareOp::Greater,
    };
    match c {
        Compare::CreateRevision(k, c, r) => EtcdCompare::create_revision(k.as_str(), op(*c), *r),
        Compare::ModRevision(k, c, r) => EtcdCompare::mod_revision(k.as_str(), op(*c), *r),
        Compare::Version(k, c, v) => EtcdCompare::version(k.as_str(), op(*c), *v),
        Compare::Value(k, c, v) => EtcdCompare::value(k.as_str(), op(*c), v.clone()),
    }
}

fn txn_op(o: &Op) -> TxnOp {
    match o {
        Op::Put { key, value, lease } => {
            let opts = (*lease != 0).then(|| PutOptions::new().with_lease(*lease));
            TxnOp::put(key.as_str(), value.clone(), opts)
        }
        Op::Delete { key } => TxnOp::delete(key.as_str(), None),
        Op::DeletePrefix { prefix } => {
            TxnOp::delete(prefix.as_str(), Some(DeleteOptions::new().with_prefix()))
        }
        Op::Get { key } => TxnOp::get(key.as_str(), None),
        Op::Range { prefix } => TxnOp::get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
    }
}

impl EtcdStore {
    /// Connects to the endpoints (`http://127.0.0.1:2379`, ...) and fails over between them
    /// (`members.rs`): give it every member. Succeeds when any member answers, waiting up to
    /// `CONNECT_WAIT` for one to.
    pub async fn connect(endpoints: &[String]) -> Result<EtcdStore> {
        let members = Members::connect(endpoints).await.map_err(|e| unavailable(CallError::Etcd(e)))?;
        let store = EtcdStore { members };
        // A cluster that is starting (or electing) answers within a few seconds: wait for it
        // rather than fail a replica's start.
        let deadline = std::time::Instant::now() + CONNECT_WAIT;
        loop {
            match store.revision().await {
                Ok(_) => return Ok(store),
                Err(e) if std::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            }
        }
    }

    /// `range`, with `between_pages(revision)` awaited before each page after the first (tests
    /// compact the store there).
    async fn range_with<F, Fut>(
        &self,
        prefix: &str,
        mut between_pages: F,
    ) -> Result<(Vec<KeyValue>, Revision)>
    where
        F: FnMut(Revision) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let mut last = String::new();
        for _ in 0..RANGE_ATTEMPTS {
            match self.range_pages(prefix, &mut between_pages).await {
                Ok(read) => return Ok(read),
                Err(PageError::Compacted(e)) => last = e,
                Err(PageError::TooLarge(e)) => {
                    return Err(StoreError::Unavailable(format!(
                        "etcd: one key under {prefix:?} is over the {KV_MESSAGE_BYTES}-byte response limit: {e}"
                    )));
                }
                Err(PageError::Other(e)) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(format!(
            "etcd: range over {prefix:?} kept being compacted between pages ({RANGE_ATTEMPTS} attempts): {last}"
        )))
    }

    /// Every key under `prefix`, read in pages all at the revision of the first page.
    async fn range_pages<F, Fut>(
        &self,
        prefix: &str,
        between_pages: &mut F,
    ) -> std::result::Result<(Vec<KeyValue>, Revision), PageError>
    where
        F: FnMut(Revision) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        // etcd refuses an empty key; "\0" is the first key there is.
        let mut start: Vec<u8> = if prefix.is_empty() { vec![0] } else { prefix.as_bytes().to_vec() };
        let end = prefix_end(prefix.as_bytes());
        let mut out = Vec::new();
        let mut revision: Revision = 0;
        let mut limit = FIRST_PAGE_KEYS;
        loop {
            let opts = GetOptions::new().with_range(end.clone()).with_limit(limit).with_revision(revision);
            let read = self.members.call(Deadline::Bulk, |m| {
                let (start, opts) = (start.clone(), opts.clone());
                async move { m.kv.clone().get(start, Some(opts)).await }
            });
            let mut page = match read.await {
                Ok(page) => page,
                Err(e) => match page_error(e) {
                    PageError::TooLarge(_) if limit > 1 => {
                        limit = (limit / 2).max(1);
                        continue;
                    }
                    other => return Err(other),
                },
            };
            if revision == 0 {
                revision = page.header().map_or(0, |h| h.revision());
            }
            let kvs = page.take_kvs();
            let bytes: usize = kvs.iter().map(|k| k.key().len() + k.value().len()).sum();
            out.extend(kvs.iter().map(kv));
            let Some(last) = kvs.last() else { return Ok((out, revision)) };
            if !page.more() {
                return Ok((out, revision));
            }
            // The next page starts just after the last key read.
            start = last.key().to_vec();
            start.push(0);
            limit = next_page_keys(kvs.len(), bytes);
            between_pages(revision).await;
        }
    }
}

impl Store for EtcdStore {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFut<'a, Result<Option<KeyValue>>> {
        Box::pin(async move {
            let r = self
                .members
                .call(Deadline::Point, |m| async move { m.kv.clone().get(key, None).await })
                .await
                .map_err(unavailable)?;
            Ok(r.kvs().first().map(kv))
        })
    }

    fn range<'a>(&'a self, prefix: &'a str) -> BoxFut<'a, Result<(Vec<KeyValue>, Revision)>> {
        Box::pin(self.range_with(prefix, |_| std::future::ready(())))
    }

    fn txn(&self, txn: Txn) -> BoxFut<'_, Result<TxnResult>> {
        Box::pin(async move {
            let t = etcd_client::Txn::new()
                .when(txn.compare.iter().map(compare).collect::<Vec<_>>())
                .and_then(txn.success.iter().map(txn_op).collect::<Vec<_>>())
                .or_else(txn.failure.iter().map(txn_op).collect::<Vec<_>>());
            // Moves to another member when one fails or does not answer in time, even though
            // the write may have been applied there: our transactions are compare-and-swap or set
            // fixed values, so a second attempt never applies a change twice (`members.rs`).
            let r = self.members.call(Deadline::Point, |m| {
                let t = t.clone();
                async move { m.kv.clone().txn(t).await }
            });
            let r = r.await.map_err(|e| {
                let text = e.to_string();
                if text.contains("requested lease not found") {
                    StoreError::LeaseNotFound(0)
                } else {
                    unavailable(e)
                }
            })?;
            let reads = r
                .op_responses()
                .into_iter()
                .filter_map(|o| match o {
                    TxnOpResponse::Get(g) => Some(g.kvs().iter().map(kv).collect()),
                    _ => None,
                })
                .collect();
            Ok(TxnResult {
                succeeded: r.succeeded(),
                revision: r.header().map_or(0, |h| h.revision()),
                reads,
            })
        })
    }

    fn watch<'a>(&'a self, prefix: &'a str, from: Revision) -> BoxFut<'a, Result<WatchStream>> {
        Box::pin(async move {
            let mut opts = WatchOptions::new().with_prefix();
            if from > 0 {
                opts = opts.with_start_revision(from);
            }
            let mut stream = self
                .members
                .call(Deadline::Watch, |m| {
                    let opts = opts.clone();
                    async move { m.watch.clone().watch(prefix, Some(opts)).await }
                })
                .await
                .map_err(unavailable)?;
            // Bounded: a reader that stops reading stops this task reading etcd (back-pressure).
            let (tx, rx) = tokio::sync::mpsc::channel(romana_store::WATCH_QUEUE);
            tokio::spawn(async move {
                loop {
                    let msg = tokio::select! {
                        m = stream.message() => m,
                        () = tx.closed() => return,
                    };
                    match msg {
                        Ok(Some(resp)) => {
                            if resp.compact_revision() > 0 {
                                let _ = tx
                                    .send(Err(StoreError::Compacted {
                                        requested: from,
                                        oldest: resp.compact_revision(),
                                    }))
                                    .await;
                                return;
                            }
                            if resp.canceled() {
                                let _ = tx
                                    .send(Err(StoreError::Unavailable(format!(
                                        "etcd cancelled the watch: {}",
                                        resp.cancel_reason()
                                    ))))
                                    .await;
                                return;
                            }
                            let events: Vec<Event> = resp
                                .events()
                                .iter()
                                .filter_map(|e| {
                                    let k = kv(e.kv()?);
                                    let kind = match e.event_type() {
                                        etcd_client::EventType::Put => EventKind::Put,
                                        etcd_client::EventType::Delete => EventKind::Delete,
                                    };
                                    Some(Event { kind, kv: k })
                                })
                                .collect();
                            // Split by revision so that consumers see one batch per change, as with the other backends.
                            let mut batch: Vec<Event> = Vec::new();
                            for e in events {
                                if batch.last().is_some_and(|l| l.kv.mod_revision != e.kv.mod_revision) {
                                    let _ = tx.send(Ok(std::mem::take(&mut batch))).await;
                                }
                                batch.push(e);
                            }
                            if !batch.is_empty() && tx.send(Ok(batch)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {
                            let _ =
                                tx.send(Err(StoreError::Unavailable("etcd closed the watch".into()))).await;
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(unavailable(CallError::Etcd(e)))).await;
                            return;
                        }
                    }
                }
            });
            Ok(rx)
        })
    }

    fn lease_grant(&self, ttl_secs: i64) -> BoxFut<'_, Result<LeaseId>> {
        Box::pin(async move {
            if ttl_secs <= 0 {
                return Err(StoreError::Invalid(format!("lease TTL must be positive, got {ttl_secs}")));
            }
            let r = self
                .members
                .call(Deadline::Point, |m| async move { m.client.lease_client().grant(ttl_secs, None).await })
                .await
                .map_err(unavailable)?;
            Ok(r.id())
        })
    }

    fn lease_keepalive(&self, lease: LeaseId) -> BoxFut<'_, Result<i64>> {
        Box::pin(async move {
            let not_found = |e: CallError| {
                if e.to_string().contains("not found") {
                    StoreError::LeaseNotFound(lease)
                } else {
                    unavailable(e)
                }
            };
            let ttl = self
                .members
                .call(Deadline::Point, |m| async move {
                    let (mut keeper, mut stream) = m.client.lease_client().keep_alive(lease).await?;
                    keeper.keep_alive().await?;
                    Ok(stream.message().await?.map_or(0, |r| r.ttl()))
                })
                .await
                .map_err(not_found)?;
            if ttl > 0 { Ok(ttl) } else { Err(StoreError::LeaseNotFound(lease)) }
        })
    }

    fn lease_revoke(&self, lease: LeaseId) -> BoxFut<'_, Result<()>> {
        Box::pin(async move {
            match self
                .members
                .call(Deadline::Point, |m| async move { m.client.lease_client().revoke(lease).await })
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if e.to_string().contains("lease not found") => Ok(()),
                Err(e) => Err(unavailable(e)),
            }
        })
    }

    fn revision(&self) -> BoxFut<'_, Result<Revision>> {
        Box::pin(async move {
            let r = self
                .members
                .call(Deadline::Point, |m| async move {
                    m.kv.clone().get("\0", Some(GetOptions::new().with_count_only())).await
                })
                .await
                .map_err(unavailable)?;
            Ok(r.header().map_or(0, |h| h.revision()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// etcd compacts the revision a range is pinned to between two of its pages: the range starts
    /// again at a newer revision and still returns every key once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn range_starts_again_when_compacted_between_pages() {
        let etcd = server::EtcdServer::start("compact-range")
            .expect("etcd starts")
            .expect("etcd is installed (scripts/setup.sh)");
        let store = EtcdStore::connect(&etcd.endpoints()).await.expect("connect");
        // 300 keys of 10 KiB: pages of about 100 keys.
        for chunk in (0..300).collect::<Vec<u32>>().chunks(100) {
            let ops = chunk.iter().map(|i| Op::put(format!("/c/k{i:03}"), vec![b'x'; 10 * 1024])).collect();
            store.txn(Txn::when(vec![], ops)).await.expect("fill");
        }
        let compacted = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        let pinned = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (kvs, rev) = store
            .range_with("/c/", |revision| {
                let (kv, compacted, pinned) = (store.members.first_kv(), compacted.clone(), pinned.clone());
                async move {
                    pinned.lock().expect("lock").push(revision);
                    if compacted.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                        // Another change, then compact up to it: the pinned revision is gone.
                        let mut kv = kv;
                        let put = kv.put("/other", "x", None).await.expect("put");
                        let at = put.header().expect("header").revision();
                        kv.compact(at, None).await.expect("compact");
                        compacted.store(at, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            })
            .await
            .expect("the range starts again after the compaction");
        let at = compacted.load(std::sync::atomic::Ordering::SeqCst);
        let pinned = pinned.lock().expect("lock").clone();
        assert!(pinned[0] < at, "the first attempt was pinned below the compaction ({pinned:?}, {at})");
        assert!(rev >= at, "the range read again at {rev}, at or after the compaction at {at}");
        assert_eq!(kvs.len(), 300, "every key once");
        let keys: Vec<String> = (0..300).map(|i| format!("/c/k{i:03}")).collect();
        assert_eq!(kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(), keys);
    }

    #[test]
    fn prefix_end_follows_etcd() {
        assert_eq!(prefix_end(b"/romana/"), b"/romana0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn pages_aim_at_page_bytes() {
        // 1,000 keys of 10 KiB: about 100 keys make a page.
        assert_eq!(next_page_keys(1_000, 10_240_000), i64::try_from(PAGE_BYTES / 10_241).expect("small"));
        // Tiny values: capped.
        assert_eq!(next_page_keys(1_000, 1_000), MAX_PAGE_KEYS);
        // One huge value: one key at a time, never zero.
        assert_eq!(next_page_keys(1, 8 << 20), 1);
        assert_eq!(next_page_keys(0, 0), MAX_PAGE_KEYS);
    }
}
