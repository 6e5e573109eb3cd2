//! The IPAM replica's read barrier: before it decides anything, the actor waits until its copy
//! of the store has reached the store's current revision, so no replica answers from state older
//! than what another replica has already acknowledged (a `DELETE /address` right after a
//! `POST /address` on another replica finds the address; a `POST /hosts` right after a
//! `POST /topology` elsewhere sees the topology).
//!
//! The store's revision counts every change, also to keys outside this replica's prefix (another
//! user of the same etcd), which the watch never delivers. So when the copy has not reached the
//! revision after a short wait, the actor writes a fence key under its prefix and waits for the
//! watch to bring that write back: the watch delivers in revision order, so everything before
//! the fence has then been applied. `step` is the pure decision; the actor (`ipam_sync.rs`) does
//! the waiting and the I/O.

use std::time::Duration;

use romana_store::Revision;

/// How long the copy may lag before the fence is written (the watch of a busy etcd on one
/// network delivers within a few milliseconds).
pub(crate) const FENCE_AFTER: Duration = Duration::from_millis(50);
/// The longest catch-up in all: past it the command is refused with 503, nothing changed.
pub(crate) const CATCH_UP_LIMIT: Duration = Duration::from_secs(2);

/// What the actor does next while catching up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The copy has reached the target: decide.
    Ready,
    /// Write the fence and make its revision the target.
    Fence,
    /// Wait for the feed, at most this long.
    Wait(Duration),
    /// The copy did not catch up in time: refuse.
    GiveUp,
}

/// The next step, from the copy's revision, the target, the time waited so far and whether the
/// fence was written.
pub(crate) fn step(copy: Revision, target: Revision, waited: Duration, fenced: bool) -> Step {
    if copy >= target {
        Step::Ready
    } else if waited >= CATCH_UP_LIMIT {
        Step::GiveUp
    } else if !fenced && waited >= FENCE_AFTER {
        Step::Fence
    } else if fenced {
        Step::Wait(CATCH_UP_LIMIT - waited)
    } else {
        Step::Wait(FENCE_AFTER - waited)
    }
}

/// The refusal when the copy did not catch up.
pub(crate) fn lag_message(copy: Revision, target: Revision) -> String {
    format!(
        "the IPAM replica's copy of the store is at revision {copy} and did not reach the store's revision \
         {target} within {:.1} s; nothing was changed, try again",
        CATCH_UP_LIMIT.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(copy: Revision, target: Revision, waited_ms: u64, fenced: bool, want: Step) {
        assert_eq!(
            step(copy, target, Duration::from_millis(waited_ms), fenced),
            want,
            "{copy} {target} {waited_ms} {fenced}"
        );
    }

    #[test]
    fn catches_up_fences_then_gives_up() {
        check(10, 10, 0, false, Step::Ready);
        check(11, 10, 5_000, true, Step::Ready);
        check(9, 10, 0, false, Step::Wait(FENCE_AFTER));
        check(9, 10, 20, false, Step::Wait(FENCE_AFTER - Duration::from_millis(20)));
        check(9, 10, 50, false, Step::Fence);
        check(9, 12, 50, true, Step::Wait(CATCH_UP_LIMIT - Duration::from_millis(50)));
        check(9, 12, 2_000, true, Step::GiveUp);
        check(9, 10, 2_000, false, Step::GiveUp);
    }

    #[test]
    fn the_refusal_names_both_revisions() {
        let m = lag_message(7, 12);
        assert!(
            m.contains("revision 7") && m.contains("revision 12") && m.contains("nothing was changed"),
            "{m}"
        );
    }
}
