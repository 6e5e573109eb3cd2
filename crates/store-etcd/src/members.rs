//! Failover between etcd members. One etcd client per member (not etcd-client's balanced
//! channel, which keeps sending a share of requests to a dead member: thousands of 503s while one
//! member was down); calls go to the member that answered last and move to the next one when it
//! cannot be reached. Every call is bounded by `REQUEST_TIMEOUT`, so a member that hangs (or a
//! cluster without a leader) fails a call in bounded time instead of stalling its caller.
//!
//! A read is tried on each member in turn. A write moves on only when it never reached a member
//! (the connection was refused): once sent, a failed or timed-out write may still be applied, so
//! it is reported, not repeated (the caller's compare-and-swap tells on the next attempt).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, KvClient, WatchClient};

use crate::{KV_MESSAGE_BYTES, WATCH_MESSAGE_BYTES};

/// The longest one request to one member may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting to one member may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// gRPC's status codes (the numbers are the protocol's).
const GRPC_CANCELLED: i32 = 1;
const GRPC_UNKNOWN: i32 = 2;
const GRPC_UNAVAILABLE: i32 = 14;

#[derive(Clone)]
pub(crate) struct Member {
    pub(crate) endpoint: String,
    pub(crate) client: Client,
    pub(crate) kv: KvClient,
    pub(crate) watch: WatchClient,
}

/// Whether a call may go to the next member after it failed on one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads and watches: repeating them changes nothing.
    Always,
    /// Writes: only when the request never left this process.
    NotSent,
}

/// Why a call failed on every member it was tried on.
#[derive(Debug)]
pub(crate) enum CallError {
    /// etcd (or the connection to it) answered with an error.
    Etcd(etcd_client::Error),
    /// No answer within `REQUEST_TIMEOUT` from `endpoint`.
    Timeout(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Etcd(e) => write!(f, "{e}"),
            CallError::Timeout(endpoint) => {
                write!(f, "{endpoint} did not answer within {:.1} s", REQUEST_TIMEOUT.as_secs_f64())
            }
        }
    }
}

/// The member could not be reached (or cannot serve now): another one may. tonic reports a
/// connection reset as "unknown" with a transport or h2 error, and its own timeout as
/// "cancelled"; etcd itself says "unavailable" (no leader, stopping).
pub(crate) fn unreachable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => match i32::from(s.code()) {
            GRPC_UNAVAILABLE | GRPC_CANCELLED => true,
            GRPC_UNKNOWN => ["transport error", "h2 protocol error"].iter().any(|t| s.message().contains(t)),
            _ => false,
        },
        _ => false,
    }
}

/// The request never reached the member: the connection itself failed.
pub(crate) fn not_sent(e: &etcd_client::Error) -> bool {
    let text = format!("{e:?}");
    unreachable(e)
        && ["Connection refused", "tcp connect error", "error trying to connect"]
            .iter()
            .any(|s| text.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: i32, message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(tonic::Status::new(tonic::Code::from(code), message))
    }

    fn check(e: etcd_client::Error, unreach: bool, unsent: bool) {
        assert_eq!((unreachable(&e), not_sent(&e)), (unreach, unsent), "{e:?}");
    }

    #[test]
    fn which_failures_move_to_another_member() {
        check(status(14, "etcdserver: no leader"), true, false);
        check(
            status(14, "error trying to connect: tcp connect error: Connection refused (os error 111)"),
            true,
            true,
        );
        check(status(2, "transport error"), true, false);
        check(status(2, "h2 protocol error: error reading a body from connection"), true, false);
        check(status(1, "Timeout expired"), true, false);
        check(status(2, "something else"), false, false);
        check(status(9, "etcdserver: requested lease not found"), false, false);
        check(status(3, "etcdserver: too many operations in txn request"), false, false);
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

    /// Runs `f` on the current member, then on the others in turn while `retry` allows.
    pub(crate) async fn call<T, F, Fut>(&self, retry: Retry, f: F) -> Result<T, CallError>
    where
        F: Fn(Member) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.members.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            let m = self.members[idx].clone();
            let endpoint = m.endpoint.clone();
            let failed = match tokio::time::timeout(REQUEST_TIMEOUT, f(m)).await {
                Ok(Ok(v)) => {
                    self.current.store(idx, Ordering::Relaxed);
                    return Ok(v);
                }
                Ok(Err(e)) if !unreachable(&e) => return Err(CallError::Etcd(e)),
                Ok(Err(e)) => {
                    let again = retry == Retry::Always || not_sent(&e);
                    (CallError::Etcd(e), again)
                }
                Err(_) => (CallError::Timeout(endpoint), retry == Retry::Always),
            };
            // The next call starts on the next member, whether or not this one is repeated.
            let _ = self.current.compare_exchange(idx, (idx + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
            let (e, again) = failed;
            if !again {
                return Err(e);
            }
            last = Some(e);
        }
        Err(last.unwrap_or(CallError::Timeout("no etcd member".into())))
    }
}
