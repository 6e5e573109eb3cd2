//! Leader election's decision: given the Lease as read (or its absence), who this replica is and
//! the time, what to do. Pure; `leader.rs` does the Lease API calls with optimistic concurrency.

/// The Lease fields the decision reads. Times in microseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    pub holder: Option<String>,
    pub renew_us: Option<i64>,
    pub duration_s: i64,
    pub transitions: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it (replace with the read resourceVersion, so that of two
    /// replicas trying at once only one succeeds), counting a transition.
    Acquire { transitions: i32 },
    /// Someone else holds it until `expires_us`.
    Wait { holder: String, expires_us: i64 },
}

pub fn decide(lease: Option<&LeaseView>, me: &str, now_us: i64) -> Decision {
    let Some(l) = lease else { return Decision::Create };
    let holder = l.holder.as_deref().unwrap_or("");
    if holder == me {
        return Decision::Renew;
    }
    let next = if holder.is_empty() { l.transitions } else { l.transitions.saturating_add(1) };
    if holder.is_empty() {
        return Decision::Acquire { transitions: next };
    }
    let Some(renew) = l.renew_us else { return Decision::Acquire { transitions: next } };
    let expires_us = renew.saturating_add(l.duration_s.max(1).saturating_mul(1_000_000));
    if now_us >= expires_us {
        Decision::Acquire { transitions: next }
    } else {
        Decision::Wait { holder: holder.to_owned(), expires_us }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(lease: Option<(&str, Option<i64>, i64, i32)>, me: &str, now_s: i64, expect: Decision) {
        let view = lease.map(|(h, r, d, t)| LeaseView {
            holder: (!h.is_empty()).then(|| h.to_owned()),
            renew_us: r.map(|s| s * 1_000_000),
            duration_s: d,
            transitions: t,
        });
        assert_eq!(
            decide(view.as_ref(), me, now_s * 1_000_000),
            expect,
            "lease {lease:?} me {me} now {now_s}"
        );
    }

    #[test]
    fn decisions() {
        use Decision::*;
        let wait = |h: &str, e: i64| Wait { holder: h.into(), expires_us: e * 1_000_000 };
        check(None, "a", 100, Create);
        check(Some(("a", Some(90), 15, 0)), "a", 100, Renew);
        // Ours even when expired: renew (nobody took it).
        check(Some(("a", Some(10), 15, 0)), "a", 100, Renew);
        check(Some(("b", Some(90), 15, 3)), "a", 100, wait("b", 105));
        check(Some(("b", Some(90), 15, 3)), "a", 104, wait("b", 105));
        // Expiry is inclusive: at renew + duration it is free.
        check(Some(("b", Some(90), 15, 3)), "a", 105, Acquire { transitions: 4 });
        check(Some(("b", Some(90), 15, 3)), "a", 200, Acquire { transitions: 4 });
        // Released (empty holder): taken without counting a new transition.
        check(Some(("", Some(90), 15, 3)), "a", 91, Acquire { transitions: 3 });
        // Held but never renewed: free.
        check(Some(("b", None, 15, 0)), "a", 1, Acquire { transitions: 1 });
        // A zero duration counts as one second, never as "always expired".
        check(Some(("b", Some(100), 0, 0)), "a", 100, wait("b", 101));
    }
}
