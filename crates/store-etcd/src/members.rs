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
//! Clients ask for a leader (`require_leader`): a member that knows it has none answers "no
//! leader" at once instead of queueing the request until an election ends.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, KvClient, WatchClient};

use crate::{KV_MESSAGE_BYTES, WATCH_MESSAGE_BYTES};

/// The longest one bulk request (a range page of about 1 MiB, opening a watch)
/// may take on one member.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest one point request (a get, a transaction, the revision, a lease renewal) may take on
/// one member before the next member is asked (the last member tried gets `REQUEST_TIMEOUT` when
/// every other one was only slow). Far above a healthy commit (a few ms; 100 ms on a
/// loaded disk) and no longer than the cluster's election timeout (`ETCD_ELECTION_MS`), so a
/// write stuck on a member that forwards it to a dead leader is sent elsewhere by the time a new
/// leader exists.
pub const POINT_TIMEOUT: Duration = Duration::from_millis(300);
/// How long connecting to one member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// gRPC's status codes (the numbers are the protocol's).
const GRPC_CANCELLED: i32 = 1;
const GRPC_UNKNOWN: i32 = 2;
const GRPC_UNAVAILABLE: i32 = 14;

/// How long one attempt on one member may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deadline {
    /// Gets, transactions, the revision, lease calls: `POINT_TIMEOUT`.
    Point,
    /// Range pages, opening watches: `REQUEST_TIMEOUT`.
    Bulk,
}

impl Deadline {
    pub(crate) fn limit(self) -> Duration {
        match self {
            Deadline::Point => POINT_TIMEOUT,
            Deadline::Bulk => REQUEST_TIMEOUT,
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

    /// Runs `f` on the current member, then on the others in turn, each attempt bounded by
    /// `deadline` (the last one by `REQUEST_TIMEOUT` when the others were only slow), until one
    /// answers or fails for a reason
    /// another member would share.
    pub(crate) async fn call<T, F, Fut>(&self, deadline: Deadline, f: F) -> Result<T, CallError>
    where
        F: Fn(Member) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.members.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        // Whether every member tried so far only was slow (no refusal, no "no leader").
        let mut all_slow = true;
        for i in 0..n {
            let idx = (start + i) % n;
            // The last member tried gets the long limit when every other one was only slow (and
            // the only member of a one-member etcd always): a healthy but busy cluster (a bulk
            // fill, a loaded disk) is waited for, not failed, and a write is sent at most once
            // per member however slow the cluster is. When another member was down or had no
            // leader, a stuck last attempt is a member that has not noticed the leader's death:
            // the short limit stands.
            let long = i + 1 == n && all_slow;
            let limit = if long { REQUEST_TIMEOUT.max(deadline.limit()) } else { deadline.limit() };
            let m = self.members[idx].clone();
            let endpoint = m.endpoint.clone();
            let sent = Instant::now();
            let e = match tokio::time::timeout(limit, f(m)).await {
                Ok(Ok(v)) => {
                    self.current.store(idx, Ordering::Relaxed);
                    return Ok(v);
                }
                Ok(Err(e)) if !unreachable(&e) => return Err(CallError::Etcd(e)),
                Ok(Err(e)) => {
                    all_slow = false;
                    CallError::Etcd(e)
                }
                Err(_) => CallError::Timeout(endpoint.clone(), limit),
            };
            tracing::debug!(
                member = %endpoint,
                ms = sent.elapsed().as_millis() as u64,
                error = %e,
                "etcd call failed on one member; asking the next"
            );
            // The next call starts on the next member.
            let _ = self.current.compare_exchange(idx, (idx + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
            last = Some(e);
        }
        Err(last.unwrap_or(CallError::Timeout("no etcd member".into(), REQUEST_TIMEOUT)))
    }
}
