//! When a call to etcd sends its next attempt, to which member, and how long that attempt may
//! take: the pure plan behind `Members::call` (no clock; times are offsets from the call's start).
//!
//! Why hedge: after the etcd leader dies, a request sent to a follower that has not yet noticed is
//! forwarded to the dead leader and lost; it can only time out. A request sent after the new
//! leader's election succeeds. Waiting for the lost one's whole limit (300 ms) before asking
//! again made the first successful write come up to 300 ms after the election; sending another
//! attempt to another member `hedge` after the last one (the first answer wins, the others are
//! dropped) brings it to about `hedge`. Safe for writes for the reason any retry is
//! (`members.rs`): every transaction is compare-and-swap or sets fixed values.
//!
//! Rules:
//! - First pass: every member once, starting at the one that answered last. The next attempt
//!   goes out when the one before failed (refused, no leader) or timed out, or `hedge.first`
//!   after the last launch while it is still waiting. At most one attempt in flight per member.
//! - The last attempt of the first pass waits `long` instead of `limit` when every attempt before
//!   it was only slow (none refused): a busy but healthy cluster is waited for, and each member
//!   got the write at most once.
//! - Second pass (only with `hedge`, and only once some member refused or had no leader): one
//!   more attempt every `hedge.pace`, to the members in turn, skipping those found down, until
//!   `hedge.until` after the call began: an election in progress is waited for, and the first
//!   attempt after it ends comes within one pace. With every member down there is no election
//!   to wait for: no second pass.
//! - Nothing in flight and nothing more allowed: the call fails with the last error.

use std::time::Duration;

/// How a call hedges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hedge {
    /// First pass: the next member is asked this long after the last one, if still waiting.
    pub(crate) first: Duration,
    /// Second pass: one attempt every `pace`...
    pub(crate) pace: Duration,
    /// ...until this long after the call began.
    pub(crate) until: Duration,
}

/// What the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Send an attempt to `member`, bounded by `limit`.
    Launch { member: usize, limit: Duration },
    /// Wait for an answer, or until this offset (then ask again).
    Wait(Option<Duration>),
    /// Nothing in flight and nothing more to try: fail.
    GiveUp,
}

/// How an attempt ended without an answer to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The member could not be reached (connection refused or reset): skipped in the second pass.
    Down,
    /// The member answered that it cannot serve now (no leader, leader changed).
    Refused,
    /// No answer within the attempt's limit.
    TimedOut,
}

#[derive(Debug, Clone)]
pub(crate) struct Plan {
    limit: Duration,
    long: Duration,
    hedge: Option<Hedge>,
    busy: Vec<usize>,
    down: Vec<bool>,
    next: usize,
    launched: usize,
    all_slow: bool,
    /// The next attempt may go out at this offset (`None`: only when one ends).
    launch_at: Option<Duration>,
}

impl Plan {
    /// A call over `n` members (at least one) starting at member `start`.
    pub(crate) fn new(n: usize, start: usize, limit: Duration, long: Duration, hedge: Option<Hedge>) -> Plan {
        let n = n.max(1);
        Plan {
            limit,
            long,
            hedge,
            busy: vec![0; n],
            down: vec![false; n],
            next: start % n,
            launched: 0,
            all_slow: true,
            launch_at: Some(Duration::ZERO),
        }
    }

    fn n(&self) -> usize {
        self.busy.len()
    }

    fn in_flight(&self) -> usize {
        self.busy.iter().sum()
    }

    /// The member the next attempt goes to, if one may be sent at `now`.
    fn candidate(&self, now: Duration) -> Option<usize> {
        let turn = (0..self.n()).map(|k| (self.next + k) % self.n());
        if self.launched < self.n() {
            return turn.clone().find(|&i| self.busy[i] == 0);
        }
        let hedge = self.hedge?;
        // Every member down (all of etcd): nothing to wait for, the call fails at once.
        if self.all_slow || now >= hedge.until || self.down.iter().all(|d| *d) {
            return None;
        }
        turn.clone().find(|&i| !self.down[i]).or_else(|| turn.clone().next())
    }

    /// The next thing to do at offset `now`.
    pub(crate) fn next(&mut self, now: Duration) -> Next {
        if let Some(member) = self.candidate(now) {
            match self.launch_at {
                Some(at) if now >= at => {
                    let first_pass = self.launched < self.n();
                    let last_of_pass = self.launched + 1 == self.n();
                    let limit =
                        if last_of_pass && self.all_slow { self.long.max(self.limit) } else { self.limit };
                    self.busy[member] += 1;
                    self.launched += 1;
                    self.next = (member + 1) % self.n();
                    self.launch_at = self
                        .hedge
                        .map(|h| now + if first_pass && self.launched < self.n() { h.first } else { h.pace });
                    return Next::Launch { member, limit };
                }
                Some(at) => return Next::Wait(Some(at)),
                None => {}
            }
        }
        if self.in_flight() == 0 { Next::GiveUp } else { Next::Wait(None) }
    }

    /// The attempt on `member` ended at offset `now` without an answer to return.
    pub(crate) fn ended(&mut self, member: usize, how: Ended, now: Duration) {
        self.busy[member] = self.busy[member].saturating_sub(1);
        self.down[member] = how == Ended::Down;
        if how != Ended::TimedOut {
            self.all_slow = false;
        }
        if self.launched < self.n() {
            // First pass: the next member at once (the second pass keeps its pace).
            self.launch_at = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_millis(300);
    const LONG: Duration = Duration::from_millis(2_000);
    const HEDGE: Hedge = Hedge {
        first: Duration::from_millis(150),
        pace: Duration::from_millis(75),
        until: Duration::from_millis(600),
    };

    /// A step of a call: at `ms`, either ask the plan (expecting `Next`) or report that the attempt
    /// on a member ended.
    enum S {
        Ask(u64, Next),
        End(u64, usize, Ended),
    }
    use S::{Ask, End};

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn go(member: usize, limit: Duration) -> Next {
        Next::Launch { member, limit }
    }

    fn wait(at: u64) -> Next {
        Next::Wait(Some(ms(at)))
    }

    fn check(n: usize, start: usize, hedge: Option<Hedge>, steps: &[S]) {
        let mut p = Plan::new(n, start, LIMIT, LONG, hedge);
        for (k, s) in steps.iter().enumerate() {
            match s {
                Ask(at, want) => assert_eq!(p.next(ms(*at)), *want, "step {k} at {at} ms: {p:?}"),
                End(at, m, how) => p.ended(*m, *how, ms(*at)),
            }
        }
    }

    #[test]
    fn without_hedging_members_are_tried_in_turn() {
        // Three members all slow: the last gets the long limit; then the call fails.
        check(
            3,
            1,
            None,
            &[
                Ask(0, go(1, LIMIT)),
                Ask(0, Next::Wait(None)),
                End(300, 1, Ended::TimedOut),
                Ask(300, go(2, LIMIT)),
                End(600, 2, Ended::TimedOut),
                Ask(600, go(0, LONG)),
                Ask(600, Next::Wait(None)),
                End(2_600, 0, Ended::TimedOut),
                Ask(2_600, Next::GiveUp),
            ],
        );
        // One is down: the short limit stands for the last; no second pass.
        check(
            3,
            0,
            None,
            &[
                Ask(0, go(0, LIMIT)),
                End(1, 0, Ended::Down),
                Ask(1, go(1, LIMIT)),
                End(301, 1, Ended::TimedOut),
                Ask(301, go(2, LIMIT)),
                End(302, 2, Ended::Refused),
                Ask(302, Next::GiveUp),
            ],
        );
        // A one-member etcd: one attempt, the long limit.
        check(1, 0, None, &[Ask(0, go(0, LONG)), End(2_000, 0, Ended::TimedOut), Ask(2_000, Next::GiveUp)]);
    }

    #[test]
    fn hedged_attempts_after_a_leader_dies() {
        // Member 0 (a follower that has not noticed) hangs; member 1 (the dead leader) is down;
        // member 2 is asked at once; then the two followers in turn, one every 75 ms (several
        // attempts on one member at once), never the dead one, until 600 ms.
        check(
            3,
            0,
            Some(HEDGE),
            &[
                Ask(0, go(0, LIMIT)),
                Ask(100, wait(150)),
                Ask(150, go(1, LIMIT)),
                End(151, 1, Ended::Down),
                Ask(151, go(2, LIMIT)),
                Ask(200, wait(226)),
                Ask(226, go(0, LIMIT)),
                Ask(301, go(2, LIMIT)),
                End(300, 0, Ended::TimedOut),
                Ask(376, go(0, LIMIT)),
                End(451, 2, Ended::TimedOut),
                Ask(451, go(2, LIMIT)),
                Ask(526, go(0, LIMIT)),
                // 601: past 600 ms, nothing more; the call waits for those in flight, then fails.
                Ask(601, Next::Wait(None)),
                End(526, 0, Ended::TimedOut),
                End(601, 2, Ended::TimedOut),
                End(676, 0, Ended::TimedOut),
                Ask(700, Next::Wait(None)),
                End(751, 2, Ended::TimedOut),
                Ask(751, Next::Wait(None)),
                End(826, 0, Ended::TimedOut),
                Ask(826, Next::GiveUp),
            ],
        );
    }

    #[test]
    fn a_busy_cluster_gets_each_write_once_per_member() {
        // Nobody refuses: three attempts 150 ms apart, the last with the long limit, no more.
        check(
            3,
            2,
            Some(HEDGE),
            &[
                Ask(0, go(2, LIMIT)),
                Ask(150, go(0, LIMIT)),
                Ask(300, go(1, LONG)),
                End(300, 2, Ended::TimedOut),
                End(450, 0, Ended::TimedOut),
                Ask(450, Next::Wait(None)),
                Ask(5_000, Next::Wait(None)),
                End(2_300, 1, Ended::TimedOut),
                Ask(2_300, Next::GiveUp),
            ],
        );
    }

    #[test]
    fn an_election_in_progress_is_waited_for() {
        // Every member says "no leader": a second pass, 75 ms apart, instead of failing within a
        // millisecond; the first attempt after the election answers.
        check(
            3,
            0,
            Some(HEDGE),
            &[
                Ask(0, go(0, LIMIT)),
                End(1, 0, Ended::Refused),
                Ask(1, go(1, LIMIT)),
                End(2, 1, Ended::Refused),
                Ask(2, go(2, LIMIT)),
                End(3, 2, Ended::Refused),
                Ask(3, wait(77)),
                Ask(77, go(0, LIMIT)),
                End(78, 0, Ended::Refused),
                Ask(78, wait(152)),
                Ask(152, go(1, LIMIT)),
            ],
        );
        // Every member down (all of etcd): no election to wait for; the call fails at once.
        check(
            3,
            0,
            Some(HEDGE),
            &[
                Ask(0, go(0, LIMIT)),
                End(0, 0, Ended::Down),
                Ask(0, go(1, LIMIT)),
                End(1, 1, Ended::Down),
                Ask(1, go(2, LIMIT)),
                End(1, 2, Ended::Down),
                Ask(1, Next::GiveUp),
            ],
        );
        // Two down, one without a leader: the live one is asked again, the others skipped.
        check(
            3,
            0,
            Some(HEDGE),
            &[
                Ask(0, go(0, LIMIT)),
                End(0, 0, Ended::Down),
                Ask(0, go(1, LIMIT)),
                End(1, 1, Ended::Refused),
                Ask(1, go(2, LIMIT)),
                End(1, 2, Ended::Down),
                Ask(76, go(1, LIMIT)),
                End(77, 1, Ended::Refused),
                Ask(151, go(1, LIMIT)),
            ],
        );
    }
}
