//! Leader election for singletons (the route manager's publisher) that hands over in about a
//! second after the leader is killed, below etcd's shortest lease (2 s with its default election
//! timeout; with a 3 s lease, hand-over took 3.0 s).
//!
//! The leader key holds the leader's instance name under a lease (so it vanishes eventually
//! whatever happens), and the leader rewrites it every `BEAT` (compare: still its own value),
//! which moves its revision. Every other replica notes the revision it sees and when it first saw
//! it; once it has not moved for `STALE`, the leader is taken to be dead and the replica takes
//! over in one compare-and-swap on that very revision, so of several replicas racing exactly one
//! wins, and a leader that was only slow loses its next rewrite and steps down. Writes made as
//! leader compare the key's value (`guard`), so a deposed leader changes nothing.
//! `decide` is pure (the time is an argument); `Election` does the store calls. On a store that
//! only one replica can use (embedded, memory) the leader keeps its key by the lease alone.

use std::time::{Duration, Instant};

use romana_store::{Cmp, Compare, KeyValue, LeaseId, Op, Revision, Store, Txn};

/// How often the leader rewrites its key.
pub(crate) const BEAT: Duration = Duration::from_millis(300);
/// How long the key may stay unchanged before the leader is taken to be dead.
pub(crate) const STALE: Duration = Duration::from_millis(1_000);
/// The lease under the key: the fallback that removes a dead leader's key.
const LEASE_TTL: i64 = 3;

/// What a replica does this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Leader: rewrite the key (compare: our value).
    Renew,
    /// Nobody leads: create the key (compare: absent).
    Campaign,
    /// The leader's key has not moved for `STALE`: replace it (compare: this revision).
    TakeOver(Revision),
    /// Someone else leads and is alive.
    Follow,
}

/// The key's revision as first seen, and when.
pub(crate) type Seen = Option<(Revision, Instant)>;

/// The step for replica `me` given the key as read (`None`: absent) and what it saw before.
/// Returns the step and what it has seen now.
pub(crate) fn decide(me: &str, key: Option<(&[u8], Revision)>, seen: Seen, now: Instant) -> (Step, Seen) {
    match key {
        None => (Step::Campaign, None),
        Some((value, _)) if value == me.as_bytes() => (Step::Renew, None),
        Some((_, rev)) => match seen {
            Some((r, since)) if r == rev => {
                let step = if now.saturating_duration_since(since) >= STALE {
                    Step::TakeOver(rev)
                } else {
                    Step::Follow
                };
                (step, seen)
            }
            _ => (Step::Follow, Some((rev, now))),
        },
    }
}

/// One replica's side of the election for the key `key`.
pub(crate) struct Election {
    key: String,
    me: String,
    lease: Option<LeaseId>,
    seen: Seen,
    renewals: u32,
}

impl Election {
    pub(crate) fn new(key: String, me: String) -> Election {
        Election { key, me, lease: None, seen: None, renewals: 0 }
    }

    /// The compare that makes a write take effect only while this replica leads.
    pub(crate) fn guard(&self) -> Compare {
        Compare::Value(self.key.clone(), Cmp::Equal, self.me.as_bytes().to_vec())
    }

    /// One round: read the key, decide, act. Returns whether this replica leads now.
    pub(crate) async fn round(&mut self, store: &dyn Store, now: Instant) -> bool {
        let Ok(kv) = store.get(&self.key).await else { return false };
        let key = kv.as_ref().map(|kv: &KeyValue| (kv.value.as_slice(), kv.mod_revision));
        let (step, seen) = decide(&self.me, key, self.seen, now);
        self.seen = seen;
        // One store, one replica (embedded, memory): nobody watches the key, so the lease alone
        // keeps it, without a write every beat.
        if step == Step::Renew && store.backend() != "etcd" {
            return self.lease(store, true).await.is_some();
        }
        let compare = match step {
            Step::Follow => return false,
            Step::Renew => self.guard(),
            Step::Campaign => Compare::absent(&self.key),
            Step::TakeOver(rev) => Compare::unchanged(&self.key, rev),
        };
        let Some(lease) = self.lease(store, step == Step::Renew).await else { return false };
        let put = Op::Put { key: self.key.clone(), value: self.me.as_bytes().to_vec(), lease };
        match store.txn(Txn::when(vec![compare], vec![put])).await {
            Ok(r) if r.succeeded => {
                if step != Step::Renew {
                    tracing::info!(key = %self.key, ?step, "leading");
                }
                true
            }
            _ => {
                if step == Step::Renew {
                    tracing::warn!(key = %self.key, "lost the lead");
                }
                false
            }
        }
    }

    /// This replica's lease, granted when it has none and kept alive about every second. Before
    /// a campaign or a take-over it is always checked: a leader stalled past the lease's TTL
    /// (a busy runtime: 5,000 watch streams syncing at once) finds its key gone with the lease,
    /// and campaigning with the dead lease failed every round, so the replica never led again and
    /// route sets were no longer published (docs/benchmarks.md, fan-out).
    async fn lease(&mut self, store: &dyn Store, leading: bool) -> Option<LeaseId> {
        if let Some(lease) = self.lease {
            self.renewals += 1;
            let due = !leading || self.renewals.is_multiple_of(3);
            if !due || store.lease_keepalive(lease).await.is_ok() {
                return Some(lease);
            }
        }
        self.lease = store.lease_grant(LEASE_TTL).await.ok();
        self.lease
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        key: Option<(&str, Revision)>,
        seen: Option<(Revision, u64)>,
        now_ms: u64,
        want: Step,
        want_seen: Option<(Revision, u64)>,
    ) {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let (step, got_seen) =
            decide("me", key.map(|(v, r)| (v.as_bytes(), r)), seen.map(|(r, ms)| (r, at(ms))), at(now_ms));
        assert_eq!(step, want, "{key:?} {seen:?} {now_ms}");
        assert_eq!(got_seen, want_seen.map(|(r, ms)| (r, at(ms))));
    }

    /// Whether `e` leads after each of `rounds` rounds, the store's leases as they are.
    async fn rounds(e: &mut Election, store: &romana_store::MemStore, n: usize) -> Vec<bool> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(e.round(store, Instant::now()).await);
        }
        out
    }

    /// A leader whose lease ended while it was stalled (here: revoked, which deletes the key as
    /// expiry does) leads again on its next rounds, on a fresh lease; before, it campaigned with
    /// the dead lease and failed every round.
    #[tokio::test]
    async fn leads_again_after_its_lease_ended() {
        let store = romana_store::MemStore::new();
        let mut e = Election::new("leader/x".into(), "me".into());
        assert_eq!(rounds(&mut e, &store, 2).await, [true, true]);
        let dead = e.lease.expect("a lease while leading");
        store.lease_revoke(dead).await.expect("revoked");
        assert_eq!(store.get("leader/x").await.expect("get"), None, "the key went with the lease");
        assert_eq!(rounds(&mut e, &store, 3).await, [true, true, true], "leads again at once");
        assert_ne!(e.lease, Some(dead), "on a fresh lease");
        let kv = store.get("leader/x").await.expect("get").expect("the key is back");
        assert_eq!(kv.value, b"me");
    }

    #[test]
    fn follows_a_live_leader_and_takes_over_from_a_still_one() {
        check(None, Some((4, 0)), 100, Step::Campaign, None);
        check(Some(("me", 9)), None, 0, Step::Renew, None);
        // Another leader: first sight, then unchanged for less than STALE, then for STALE.
        check(Some(("other", 9)), None, 0, Step::Follow, Some((9, 0)));
        check(Some(("other", 9)), Some((9, 0)), 999, Step::Follow, Some((9, 0)));
        check(Some(("other", 9)), Some((9, 0)), 1_000, Step::TakeOver(9), Some((9, 0)));
        // It moved: alive, and the clock starts again.
        check(Some(("other", 12)), Some((9, 0)), 1_500, Step::Follow, Some((12, 1_500)));
    }
}
