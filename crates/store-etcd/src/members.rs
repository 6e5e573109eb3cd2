//! Failover between etcd members. One etcd client per member (not etcd-client's balanced
//! channel, which keeps sending a share of requests to a dead member: thousands of 503s while one
//! member was down); calls go to the member that answered last and move to the next one when it
//! cannot be reached, cannot serve (no leader, leader changed, proposal dropped) or does not answer
//! in time. Every attempt is bounded (`Deadline`), so a member that hangs (or one that has not yet
//! noticed that its leader died, and forwards the request into the void) fails one attempt in
//! bounded time instead of stalling its caller, and the next member is asked.
//!
//! Writes move on too, also after a timeout, when the write may have been applied: every
//! transaction Romana sends is either guarded by compare-and-swap (on a revision, a version or a
//! value), so applied once it fails its compare on the second attempt, or sets keys to fixed
//! values (applying it twice leaves the same keys). `tests/failover.rs` proves it on a real
//! cluster whose member applies a write and never answers. The caller then sees its compare fail
//! and re-reads, as after any conflict with another replica.
//!
//! Point requests and watch opens are hedged (`attempts.rs`): while one attempt waits, another
//! member is asked too, and the first answer wins; the others are dropped. That is one more
//! retry of the same kind as above, sent before the first one gave up.
//!
//! Clients ask for a leader (`require_leader`): a member that knows it has none answers "no
//! leader" at once instead of queueing the request until an election ends.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, KvClient, WatchClient};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::attempts::{Ended, Hedge, Next, Plan};
use crate::{KV_MESSAGE_BYTES, WATCH_MESSAGE_BYTES};

/// The longest one bulk request (a range page of about 1 MiB, opening a watch) may take on one
/// member.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest one point request (a get, a transaction, the revision, a lease renewal) may take on
/// one member before the next member is asked (the last member tried gets `REQUEST_TIMEOUT` when
/// every other one was only slow). Far above a healthy commit (a few ms; 100 ms on a
/// loaded disk) and no longer than the cluster's election timeout (`ETCD_ELECTION_MS`), so a
/// write stuck on a member that forwards it to a dead leader is sent elsewhere by the time a new
/// leader exists.
pub const POINT_TIMEOUT: Duration = Duration::from_millis(300);
/// How point requests hedge (`attempts.rs`; the first answer wins). After the etcd leader dies, a
/// request on a follower that has not noticed is lost, and waiting out its `POINT_TIMEOUT`
/// delayed the first write after the election by up to 300 ms. The next member is asked after
/// 150 ms (above a healthy commit on a loaded machine, tens of ms, so that few healthy writes are
/// sent twice); once a member refused or was down, the live ones are asked again every 75 ms
/// until 600 ms after the call began (an election is waited for; a point request's attempts each
/// end within `POINT_TIMEOUT`, so such a call ends within 900 ms).
pub(crate) const HEDGE: Hedge = Hedge {
    first: Duration::from_millis(150),
    pace: Duration::from_millis(75),
    until: Duration::from_millis(600),
};
/// How long connecting to one member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// gRPC's status codes (the numbers are the protocol's).
const GRPC_CANCELLED: i32 = 1;
const GRPC_UNKNOWN: i32 = 2;
const GRPC_UNAVAILABLE: i32 = 14;

/// How long one attempt on one member may take, and whether the call hedges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deadline {
    /// Gets, transactions, the revision, lease calls: `POINT_TIMEOUT`, hedged.
    Point,
    /// Opening a watch: `REQUEST_TIMEOUT` (a member that is starting or busy catching up answers
    /// late, and giving up on it sooner only made the replica retry later, after its backoff),
    /// hedged (after the leader's death an open that waited on a member that did not answer
    /// kept a replica refusing writes for 2 s).
    Watch,
    /// Range pages: `REQUEST_TIMEOUT`, not hedged (each about 1 MiB).
    Bulk,
}

impl Deadline {
    pub(crate) fn limit(self) -> Duration {
        match self {
            Deadline::Point => POINT_TIMEOUT,
            Deadline::Watch | Deadline::Bulk => REQUEST_TIMEOUT,
        }
    }

    pub(crate) fn hedge(self) -> Option<Hedge> {
        match self {
            Deadline::Point | Deadline::Watch => Some(HEDGE),
            Deadline::Bulk => None,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Member {
    pub(crate) endpoint: String,
    pub(crate) client: Client,
    pub(crate) kv: KvClient,
    pub(crate) watch: WatchClient,
}

/// Why a call failed on every member it was tried on.
#[derive(Debug)]
pub(crate) enum CallError {
    /// etcd (or the connection to it) answered with an error.
    Etcd(etcd_client::Error),
    /// No answer from `endpoint` within the attempt's limit.
    Timeout(String, Duration),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Etcd(e) => write!(f, "{e}"),
            CallError::Timeout(endpoint, limit) => {
                write!(f, "{endpoint} did not answer within {} ms", limit.as_millis())
            }
        }
    }
}

/// The member could not be reached (or cannot serve now): another one may. tonic reports a
/// connection reset as "unknown" with a transport or h2 error, and its own timeout as
/// "cancelled"; etcd itself says "unavailable" (no leader, leader changed, stopping, its own
/// request timeout) and "unknown: raft proposal dropped" when a follower without a leader drops
/// a write.
pub(crate) fn unreachable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => match i32::from(s.code()) {
            GRPC_UNAVAILABLE | GRPC_CANCELLED => true,
            GRPC_UNKNOWN => ["transport error", "h2 protocol error", "proposal dropped"]
                .iter()
                .any(|t| s.message().contains(t)),
            _ => false,
        },
        _ => false,
    }
}

/// The member could not be reached at all (as opposed to answering that it cannot serve now).
pub(crate) fn down(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            ["tcp connect error", "transport error", "h2 protocol error", "Connection refused"]
                .iter()
                .any(|t| s.message().contains(t))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: i32, message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(tonic::Code::from(code), message))
    }

    fn check(e: etcd_client::Error, moves_on: bool) {
        assert_eq!(unreachable(&e), moves_on, "{e:?}");
    }

    #[test]
    fn which_failures_mean_the_member_is_down() {
        let is_down = |e: etcd_client::Error, want: bool| assert_eq!(down(&e), want, "{e:?}");
        is_down(status(14, "tcp connect error: Connection refused (os error 111)"), true);
        is_down(status(2, "transport error"), true);
        is_down(status(2, "h2 protocol error: error reading a body from connection"), true);
        is_down(status(14, "etcdserver: no leader"), false);
        is_down(status(14, "etcdserver: leader changed"), false);
        is_down(status(1, "Timeout expired"), false);
    }

    #[test]
    fn which_failures_move_to_another_member() {
        check(status(14, "etcdserver: no leader"), true);
        check(status(14, "etcdserver: leader changed"), true);
        check(status(14, "etcdserver: request timed out, possibly due to previous leader failure"), true);
        check(status(2, "raft proposal dropped"), true);
        check(
            status(14, "error trying to connect: tcp connect error: Connection refused (os error 111)"),
            true,
        );
        check(status(2, "transport error"), true);
        check(status(2, "h2 protocol error: error reading a body from connection"), true);
        check(status(1, "Timeout expired"), true);
        check(status(2, "something else"), false);
        check(status(9, "etcdserver: requested lease not found"), false);
        check(status(3, "etcdserver: too many operations in txn request"), false);
        check(status(3, "etcdserver: duplicate key given in txn request"), false);
    }

    #[test]
    fn a_timeout_names_the_member_and_the_limit() {
        let e = CallError::Timeout("http://127.0.0.1:2379".into(), Deadline::Point.limit());
        assert_eq!(e.to_string(), "http://127.0.0.1:2379 did not answer within 300 ms");
    }
}

#[derive(Clone)]
pub(crate) struct Members {
    members: Arc<Vec<Member>>,
    current: Arc<AtomicUsize>,
}

impl Members {
    /// One client per endpoint; connecting is lazy, so a member that is down now is no error.
    pub(crate) async fn connect(endpoints: &[String]) -> Result<Members, etcd_client::Error> {
        let mut members = Vec::new();
        for endpoint in endpoints {
            let opts = etcd_client::ConnectOptions::new()
                .with_connect_timeout(CONNECT_TIMEOUT)
                .with_timeout(REQUEST_TIMEOUT)
                // A member without a leader says so at once (and cancels a watch on it after
                // three election timeouts without one) instead of holding requests.
                .with_require_leader(true)
                // A member that vanishes without closing its connections (a host lost) is noticed.
                .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
            let client = Client::connect([endpoint.as_str()], Some(opts)).await?;
            let kv = client.kv_client().max_decoding_message_size(KV_MESSAGE_BYTES);
            let watch = client.watch_client().max_decoding_message_size(WATCH_MESSAGE_BYTES);
            members.push(Member { endpoint: endpoint.clone(), client, kv, watch });
        }
        if members.is_empty() {
            return Err(etcd_client::Error::InvalidArgs("no etcd endpoints given".into()));
        }
        Ok(Members { members: Arc::new(members), current: Arc::new(AtomicUsize::new(0)) })
    }

    #[cfg(test)]
    pub(crate) fn first_kv(&self) -> KvClient {
        self.members[0].kv.clone()
    }

    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint.clone()).collect()
    }

    /// Runs `f` on the current member, then on the others, until one answers or fails for a
    /// reason another member would share; which member when, and each attempt's limit, follow
    /// `attempts::Plan` (point requests are hedged: another member is asked `HEDGE` after the
    /// last attempt while it is still waiting; the first answer wins).
    pub(crate) async fn call<T, F, Fut>(&self, deadline: Deadline, f: F) -> Result<T, CallError>
    where
        F: Fn(Member) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.members.len();
        let started = Instant::now();
        let mut plan = Plan::new(
            n,
            self.current.load(Ordering::Relaxed),
            deadline.limit(),
            REQUEST_TIMEOUT,
            deadline.hedge(),
        );
        let attempt = |idx: usize, limit: Duration| {
            let fut = f(self.members[idx].clone());
            async move { (idx, limit, Instant::now(), tokio::time::timeout(limit, fut).await) }
        };
        let mut pending = FuturesUnordered::new();
        let mut last = None;
        loop {
            let wake = loop {
                match plan.next(started.elapsed()) {
                    Next::Launch { member, limit } => {
                        if !pending.is_empty() {
                            tracing::debug!(member = %self.members[member].endpoint, "etcd call hedged");
                        }
                        pending.push(attempt(member, limit));
                    }
                    Next::Wait(at) => break at,
                    Next::GiveUp => {
                        return Err(
                            last.unwrap_or(CallError::Timeout("no etcd member".into(), REQUEST_TIMEOUT))
                        );
                    }
                }
            };
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until((started + at).into()).await,
                    None => std::future::pending().await,
                }
            };
            let (idx, limit, sent, r) = tokio::select! {
                Some(done) = pending.next() => done,
                () = sleep => continue,
            };
            let endpoint = &self.members[idx].endpoint;
            let (e, how) = match r {
                Ok(Ok(v)) => {
                    self.current.store(idx, Ordering::Relaxed);
                    return Ok(v);
                }
                Ok(Err(e)) if !unreachable(&e) => return Err(CallError::Etcd(e)),
                Ok(Err(e)) => {
                    let how = if down(&e) { Ended::Down } else { Ended::Refused };
                    (CallError::Etcd(e), how)
                }
                Err(_) => (CallError::Timeout(endpoint.clone(), limit), Ended::TimedOut),
            };
            tracing::debug!(
                member = %endpoint,
                ms = sent.elapsed().as_millis() as u64,
                error = %e,
                "etcd call failed on one member; asking another"
            );
            plan.ended(idx, how, started.elapsed());
            // The next call starts on the member after this one.
            let _ = self.current.compare_exchange(idx, (idx + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
            last = Some(e);
        }
    }
}
