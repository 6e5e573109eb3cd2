//! CNI ADD of a kubelet-started pod waits for the pod's record from the Kubernetes controller
//! (labels, named ports, segment), so that the pod is under the policies its labels select
//! before ADD answers: this decides, from one lookup's outcome and the time waited, whether to
//! go on, look again (after how long) or give up (with which CNI code and message). Pure: the
//! lookup and the sleeping are the caller's, time comes in as a value.

use std::time::Duration;

use romana_api::agent::{PodRef, code};
use romana_api::rest::PodInfo;

/// The first pause between lookups; it doubles up to `MAX_PAUSE`.
pub const FIRST_PAUSE: Duration = Duration::from_millis(20);
/// The longest pause: a record that appears is seen within this.
pub const MAX_PAUSE: Duration = Duration::from_millis(250);

/// What one `GET /pods/{namespace}/{name}` answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Found(PodInfo),
    /// 404: no record yet (or one of another host, which this agent may not read).
    Missing,
    /// romanad unreachable or busy; worth another try.
    Unavailable(String),
    /// romanad refused the request (403, 400): no retry helps.
    Refused(String),
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// The pod's record: allocate with its segment, register the endpoint with `pod` set.
    Ready(PodInfo),
    /// Look again after this pause; `why` is kept for the give-up message.
    Retry { after: Duration, why: String },
    /// Fail ADD with this CNI code and message; nothing was allocated.
    GiveUp { code: u32, msg: String },
}

/// The decision after lookup number `attempt` (from 0) answered `lookup`, `waited` after the
/// first, with `budget` the most ADD may wait (`--pod-wait-ms`). A give-up message says what the
/// last lookup saw.
pub fn next(pod: &PodRef, lookup: Lookup, attempt: u32, waited: Duration, budget: Duration) -> Next {
    let why = match lookup {
        Lookup::Refused(e) => {
            return Next::GiveUp {
                code: code::INVALID_CONFIG,
                msg: format!("romanad refused to show pod {}/{}'s record: {e}", pod.namespace, pod.name),
            };
        }
        // A record of a deleted pod of the same name (another uid) is not this pod's: its labels
        // may be anything. The controller replaces it soon.
        Lookup::Found(p) if !pod.uid.is_empty() && !p.uid.is_empty() && p.uid != pod.uid => {
            format!("the record is of pod uid {}, not {}", p.uid, pod.uid)
        }
        Lookup::Found(p) => return Next::Ready(p),
        Lookup::Missing => "no record".to_owned(),
        Lookup::Unavailable(e) => format!("romanad did not answer: {e}"),
    };
    if waited >= budget {
        return Next::GiveUp {
            code: code::TRY_AGAIN_LATER,
            msg: format!(
                "pod {}/{} has no usable record in romanad after {} ms ({why}); check that romana-k8s \
                 runs and reaches romanad",
                pod.namespace,
                pod.name,
                budget.as_millis()
            ),
        };
    }
    let pause = FIRST_PAUSE.saturating_mul(1 << attempt.min(10)).min(MAX_PAUSE);
    Next::Retry { after: pause.min(budget - waited), why }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str) -> PodRef {
        PodRef { namespace: "red".into(), name: "web-0".into(), uid: uid.into() }
    }

    fn record(uid: &str) -> PodInfo {
        PodInfo { namespace: "red".into(), name: "web-0".into(), uid: uid.into(), ..Default::default() }
    }

    /// (kubelet's uid, lookup, attempt, waited ms, budget ms) -> expected decision.
    fn check(uid: &str, lookup: Lookup, attempt: u32, waited: u64, budget: u64, expect: Next) {
        let ms = Duration::from_millis;
        let got = next(&pod(uid), lookup.clone(), attempt, ms(waited), ms(budget));
        assert_eq!(got, expect, "uid {uid:?}, {lookup:?}, attempt {attempt}, waited {waited}/{budget}");
    }

    fn retry(ms: u64, why: &str) -> Next {
        Next::Retry { after: Duration::from_millis(ms), why: why.into() }
    }

    fn gave_up(code: u32, contains: &str, got: Next) {
        match got {
            Next::GiveUp { code: c, msg } => {
                assert_eq!(c, code, "{msg}");
                assert!(msg.contains(contains), "{msg:?} should contain {contains:?}");
            }
            other => panic!("expected to give up, got {other:?}"),
        }
    }

    #[test]
    fn the_record_is_waited_for_bounded_and_must_be_this_pods() {
        // The record of this pod (or any, when either side has no uid) ends the wait.
        check("u1", Lookup::Found(record("u1")), 0, 0, 10_000, Next::Ready(record("u1")));
        check("", Lookup::Found(record("u1")), 3, 500, 10_000, Next::Ready(record("u1")));
        check("u1", Lookup::Found(record("")), 0, 0, 10_000, Next::Ready(record("")));
        // Found after the budget still counts: it is there.
        check("u1", Lookup::Found(record("u1")), 9, 20_000, 10_000, Next::Ready(record("u1")));
        // Missing, stale or unreachable: look again, with a pause doubling to its cap.
        check("u1", Lookup::Missing, 0, 0, 10_000, retry(20, "no record"));
        check("u1", Lookup::Missing, 1, 20, 10_000, retry(40, "no record"));
        check("u1", Lookup::Missing, 3, 300, 10_000, retry(160, "no record"));
        check("u1", Lookup::Missing, 4, 460, 10_000, retry(250, "no record"));
        check("u1", Lookup::Missing, 40, 5_000, 10_000, retry(250, "no record"));
        check(
            "u1",
            Lookup::Found(record("u0")),
            0,
            0,
            10_000,
            retry(20, "the record is of pod uid u0, not u1"),
        );
        check(
            "u1",
            Lookup::Unavailable("timeout".into()),
            0,
            0,
            10_000,
            retry(20, "romanad did not answer: timeout"),
        );
        // The last pause ends at the budget, not past it.
        check("u1", Lookup::Missing, 8, 9_900, 10_000, retry(100, "no record"));
        // A budget of 0: one look, then give up.
        gave_up(
            11,
            "after 0 ms (no record)",
            next(&pod("u1"), Lookup::Missing, 0, Duration::ZERO, Duration::ZERO),
        );
        // Past the budget: try again later, naming the pod, what was seen and what to check.
        let ms = Duration::from_millis;
        for (lookup, seen) in [
            (Lookup::Missing, "no record"),
            (Lookup::Found(record("u0")), "uid u0, not u1"),
            (Lookup::Unavailable("connection refused".into()), "connection refused"),
        ] {
            let got = next(&pod("u1"), lookup, 12, ms(10_000), ms(10_000));
            gave_up(11, seen, got.clone());
            gave_up(11, "pod red/web-0", got.clone());
            gave_up(11, "romana-k8s", got);
        }
        // Refused is no reason to wait.
        gave_up(7, "forbidden", next(&pod("u1"), Lookup::Refused("forbidden".into()), 0, ms(0), ms(10_000)));
    }
}
