//! When the route loop reads this host's route set and converges the kernel to it. While the set
//! is not followed on romanad's watch (`--no-watch`, before the watch syncs, after it is lost),
//! at every tick, as before. While it is followed, when the watch says the set changed (or
//! resynced, or a read failed), with a read every `ROUTES_REREAD` and a converge that reads the
//! kernel every `KERNEL_RECHECK` as safety nets; a converge asked for (`reconverge`) at the next
//! tick. A read answered with another stamp than the last notice's (a replica that has not
//! applied the change yet) is read again at the next tick, at most `LAGGED_REREADS` times.
//! Reading every tick meant, at 5,000 policies x 50,000 endpoints, a 300 KB set computed by
//! romanad under the IPAM's lock and 4,000 kernel routes dumped and compared, twice a second per
//! agent and for nothing: most of romanad's CPU between changes, and pod starts beside it slowed
//! (issue 22). Pure: time comes in with the tick.

use std::time::{Duration, Instant};

/// How often a followed set is read anyway (the watch could have missed nothing, but a bug or a
/// store restore could leave an agent with an old set: bounded to this).
pub const ROUTES_REREAD: Duration = Duration::from_secs(30);

/// How often the kernel is read and converged to the known set without a read of the set
/// (someone deleted a route of ours: put back within this).
pub const KERNEL_RECHECK: Duration = Duration::from_secs(5);

/// How many reads in a row a notice's stamp may be answered with another stamp (a replica that
/// has not yet applied the change the notice is of) before the loop stops reading for it: the
/// set is read again at each tick meanwhile (500 ms), not left stale until `ROUTES_REREAD`.
pub const LAGGED_REREADS: u32 = 20;

/// What a tick does besides the heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Read the set (a converge follows the read).
    Read,
    /// Converge the kernel to the set known, as the core knows the kernel.
    Converge,
    /// Converge the kernel to the set known, observing the kernel.
    Recheck,
    Nothing,
}

#[derive(Debug, Clone)]
pub struct RouteLoop {
    /// The set is followed on the watch (synced, not lost since).
    followed: bool,
    /// A read is due at the next tick.
    due: bool,
    /// A converge is due at the next tick (the gateway's addresses changed, an apply failed).
    converge_due: bool,
    read_at: Option<Instant>,
    converged_at: Option<Instant>,
    /// `converged_at` before the last read (which counts as a converge when it brings a set).
    before_read: Option<Instant>,
    /// The stamp the last notice named, until a read is answered with it.
    wanted: Option<String>,
    /// Reads answered with another stamp since that notice.
    lagged: u32,
}

impl Default for RouteLoop {
    fn default() -> RouteLoop {
        RouteLoop {
            followed: false,
            due: true,
            converge_due: false,
            read_at: None,
            converged_at: None,
            before_read: None,
            wanted: None,
            lagged: 0,
        }
    }
}

impl RouteLoop {
    pub fn tick(&mut self, now: Instant) -> Next {
        let since = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t));
        if !self.followed || self.due || since(self.read_at).is_none_or(|d| d >= ROUTES_REREAD) {
            self.due = false;
            self.read_at = Some(now);
            self.before_read = self.converged_at;
            self.converged_at = Some(now);
            return Next::Read;
        }
        if since(self.converged_at).is_none_or(|d| d >= KERNEL_RECHECK) {
            self.converge_due = false;
            self.converged_at = Some(now);
            return Next::Recheck;
        }
        if self.converge_due {
            self.converge_due = false;
            return Next::Converge;
        }
        Next::Nothing
    }

    /// A read failed: read at the next tick. (A watch event for this host's key is `notice`.)
    pub fn changed(&mut self) {
        self.due = true;
    }

    /// What the kernel should hold changed without a read (the VIPs on the gateway), or an apply
    /// failed: converge at the next tick (a recheck due then does it).
    pub fn reconverge(&mut self) {
        self.converge_due = true;
    }

    /// A converge is under way (after a read, or a tick's): one asked for is done by it.
    pub fn converging(&mut self) {
        self.converge_due = false;
    }

    /// The watch said the set changed, to the set of `stamp` (`None`: the notice names none, or
    /// was deleted): read at the next tick, and again while the answers name another stamp.
    pub fn notice(&mut self, stamp: Option<String>) {
        self.due = true;
        self.wanted = stamp;
        self.lagged = 0;
    }

    /// A read was answered (a set, or 304) with the set of `stamp`. Another stamp than the last
    /// notice's: the answering replica lags (or the watch does) and the read is due again at
    /// the next tick, at most `LAGGED_REREADS` times for one notice. Returns whether it lagged.
    /// An answer naming no stamp (a header lost on the way) compares nothing and leaves the
    /// notice's stamp to the next answer.
    pub fn answered(&mut self, stamp: Option<&str>) -> bool {
        let (Some(wanted), Some(stamp)) = (&self.wanted, stamp) else {
            return false;
        };
        if wanted == stamp {
            // The answer is of the notice's set: a read the notice made due (while this one was
            // in flight) would bring it again.
            self.wanted = None;
            self.due = false;
            return false;
        }
        self.lagged += 1;
        if self.lagged <= LAGGED_REREADS {
            self.due = true;
        } else {
            self.wanted = None;
        }
        true
    }

    /// The watch (re)synced: followed from here; what came before is read once.
    pub fn synced(&mut self) {
        self.followed = true;
        self.due = true;
        self.wanted = None;
    }

    /// The watch broke: every tick reads until it syncs again.
    pub fn lost(&mut self) {
        self.followed = false;
        self.wanted = None;
    }

    /// The read found the routes held (romanad answered 304): what converge to run (`Read` is
    /// never answered). Not followed, reads are the only converges (the kernel, the gateway's
    /// addresses and the fast path are checked on each: `Recheck`); followed, the recheck keeps
    /// its schedule, as if the read had not happened, and only a converge asked for runs.
    pub fn unchanged(&mut self) -> Next {
        if !self.followed {
            return Next::Recheck;
        }
        self.converged_at = self.before_read;
        // A converge asked for (a VIP changed) is still owed.
        if self.converge_due { Next::Converge } else { Next::Nothing }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ticks (ms since the start) with what happens before each, against what each tick does.
    fn check(steps: &[(u64, &str, Next)]) {
        let (start, mut l) = (Instant::now(), RouteLoop::default());
        for (at, before, want) in steps {
            match *before {
                "synced" => l.synced(),
                "changed" => l.changed(),
                "lost" => l.lost(),
                "reconverge" => l.reconverge(),
                "converging" => l.converging(),
                "reconverge, then unchanged" => {
                    l.reconverge();
                    assert_eq!(l.unchanged(), Next::Converge, "a 304 does the converge asked for");
                    l.converging();
                }
                "unchanged, followed" => {
                    assert_eq!(l.unchanged(), Next::Nothing, "a 304 converges nothing while followed")
                }
                "unchanged, not followed" => {
                    assert_eq!(l.unchanged(), Next::Recheck, "a 304 converges while not followed")
                }
                _ => {}
            }
            let got = l.tick(start + Duration::from_millis(*at));
            assert_eq!(got, *want, "tick at {at} ms after {before:?}");
        }
    }

    /// A notice's stamp answered with another (a lagging replica): read again at each tick,
    /// until a read names it or `LAGGED_REREADS` reads did not; a later notice starts over.
    #[test]
    fn a_set_answered_by_a_lagging_replica_is_read_again() {
        let (start, mut l) = (Instant::now(), RouteLoop::default());
        let mut at = 0;
        let mut tick = |l: &mut RouteLoop| {
            at += 500;
            l.tick(start + Duration::from_millis(at))
        };
        l.synced();
        assert_eq!(tick(&mut l), Next::Read);
        assert!(!l.answered(Some("a")), "no notice named a stamp yet");
        assert_eq!(tick(&mut l), Next::Nothing);
        l.notice(Some("b".into()));
        assert_eq!(tick(&mut l), Next::Read);
        assert!(l.answered(Some("a")), "the replica still serves a");
        assert_eq!(tick(&mut l), Next::Read, "read again at the next tick");
        assert!(!l.answered(Some("b")), "caught up");
        assert_eq!(tick(&mut l), Next::Nothing);
        // A later read (the safety net) compares nothing once caught up.
        assert!(!l.answered(Some("a")));
        // A replica that never catches up: LAGGED_REREADS reads again, then the loop waits.
        l.notice(Some("c".into()));
        for n in 0..=LAGGED_REREADS {
            assert_eq!(tick(&mut l), Next::Read, "read {n}");
            assert!(l.answered(Some("b")));
        }
        assert_eq!(tick(&mut l), Next::Nothing, "given up until the next notice or reread");
        // An answer without a stamp compares nothing: no read again, and the notice's stamp
        // waits for the next answer.
        l.notice(Some("d".into()));
        assert_eq!(tick(&mut l), Next::Read);
        assert!(!l.answered(None));
        assert_eq!(tick(&mut l), Next::Nothing);
        assert!(l.answered(Some("c")), "still compared with d");
        assert_eq!(tick(&mut l), Next::Read);
        assert!(!l.answered(Some("d")));
        // A notice while a read is in flight, answered with the notice's stamp: no second read.
        l.notice(Some("e".into()));
        assert!(!l.answered(Some("e")));
        assert_eq!(tick(&mut l), Next::Nothing);
        // A notice without a stamp: nothing to wait for.
        l.notice(None);
        assert_eq!(tick(&mut l), Next::Read);
        assert!(!l.answered(Some("x")));
        // The watch resyncing forgets the notice (its read follows anyway).
        l.notice(Some("f".into()));
        l.synced();
        assert_eq!(tick(&mut l), Next::Read);
        assert!(!l.answered(Some("x")));
    }

    #[test]
    fn unfollowed_sets_are_read_every_tick() {
        check(&[(0, "", Next::Read), (500, "", Next::Read), (1_000, "", Next::Read)]);
    }

    #[test]
    fn followed_sets_are_read_when_they_change_and_as_a_safety_net() {
        use Next::*;
        check(&[
            (0, "synced", Read),
            (500, "", Nothing),
            (4_500, "", Nothing),
            (5_000, "", Recheck),
            (5_500, "changed", Read),
            (6_000, "", Nothing),
            (10_500, "", Recheck),
            (30_000, "", Recheck),
            (35_500, "", Read),
            (36_000, "lost", Read),
            (36_500, "", Read),
            (37_000, "synced", Read),
            (37_500, "", Nothing),
        ]);
    }

    /// A converge asked for runs at the next tick, once, and leaves the recheck on schedule (it
    /// need not observe); a read at that tick keeps it owed until a converge starts (the core
    /// says `converging`), and a 304 then converges.
    #[test]
    fn a_converge_asked_for_runs_at_the_next_tick() {
        use Next::*;
        check(&[
            (0, "synced", Read),
            (1_000, "reconverge", Converge),
            (1_500, "", Nothing),
            (5_000, "reconverge", Recheck),
            (5_500, "", Nothing),
            (9_500, "", Nothing),
            (10_000, "", Recheck),
            (10_500, "lost", Read),
            (11_000, "reconverge", Read),
            (11_500, "synced", Read),
            (12_000, "", Converge),
            (12_500, "reconverge, then unchanged", Nothing),
            (13_000, "changed", Read),
            (13_500, "converging", Nothing),
        ]);
    }

    /// A read answered 304 does not push the recheck back while followed (the read at 4,000
    /// brought nothing: the kernel is checked at 5,000 as planned after the converge at 0).
    #[test]
    fn an_unchanged_read_keeps_the_recheck_on_schedule() {
        use Next::*;
        check(&[
            (0, "synced", Read),
            (4_000, "changed", Read),
            (4_500, "unchanged, followed", Nothing),
            (5_000, "", Recheck),
            (9_500, "", Nothing),
            (10_000, "", Recheck),
            // A read that brings a set counts as a converge.
            (12_000, "changed", Read),
            (16_500, "", Nothing),
            (17_000, "", Recheck),
            (17_500, "lost", Read),
            (18_000, "unchanged, not followed", Read),
        ]);
    }
}
