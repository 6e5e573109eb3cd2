//! The follower's tests: its bookkeeping as data (events in, attempt and wait out), and the loop
//! against a scripted source.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::time::Duration;

use super::*;

const MS: Duration = Duration::from_millis(1);

/// What happens to a follower, in order.
#[derive(Debug, Clone, Copy)]
enum In {
    Listed(Revision),
    Opened,
    Seen(Revision),
    /// Failed (gone?) after a stream that lasted this many ms.
    Failed(bool, u64),
}

/// After each input: the next attempt, `synced`, and the wait a failure returned (ms).
fn check(inputs: &[In], expect: &[(Attempt, bool, Option<u64>)]) {
    let mut f = Follower::new(Backoff::new(MS * 100, MS * 1_000));
    let got: Vec<(Attempt, bool, Option<u64>)> = inputs
        .iter()
        .map(|i| {
            let wait = match *i {
                In::Listed(r) => {
                    f.listed(r);
                    None
                }
                In::Opened => {
                    f.opened();
                    None
                }
                In::Seen(r) => {
                    f.seen(r);
                    None
                }
                In::Failed(gone, lasted) => Some(f.failed(gone, MS * lasted as u32).as_millis() as u64),
            };
            (f.attempt(), f.synced(), wait)
        })
        .collect();
    assert_eq!(got, expect, "inputs {inputs:?}");
}

#[test]
fn resumes_after_the_last_revision_seen() {
    use Attempt::*;
    check(
        &[In::Listed(10), In::Opened, In::Seen(12), In::Seen(11), In::Failed(false, 0)],
        &[
            (Open(11), false, None),
            (Open(11), true, None),
            (Open(13), true, None),
            (Open(13), true, None),
            (Open(13), false, Some(100)),
        ],
    );
}

#[test]
fn gone_relists() {
    use Attempt::*;
    check(
        &[In::Listed(10), In::Opened, In::Seen(15), In::Failed(true, 0), In::Listed(40)],
        &[
            (Open(11), false, None),
            (Open(11), true, None),
            (Open(16), true, None),
            (List, false, Some(100)),
            (Open(41), false, None),
        ],
    );
}

#[test]
fn an_unknown_resume_point_relists() {
    // A list without a revision (romanad's REST list) and a stream that broke before saying one:
    // reopening from 0 would miss the deletes in between.
    use Attempt::*;
    check(
        &[In::Listed(0), In::Opened, In::Failed(false, 0)],
        &[(Open(0), false, None), (Open(0), true, None), (List, false, Some(100))],
    );
}

#[test]
fn backoff_doubles_to_the_cap_and_starts_over_after_progress() {
    use Attempt::*;
    check(
        &[
            In::Listed(1),
            In::Failed(false, 0),
            In::Failed(false, 0),
            In::Failed(false, 0),
            In::Failed(false, 0),
            In::Failed(false, 0),
            In::Seen(5),
            In::Failed(false, 0),
            In::Failed(false, 0),
            // A stream that lasted the cap was healthy.
            In::Failed(false, 1_000),
        ],
        &[
            (Open(2), false, None),
            (Open(2), false, Some(100)),
            (Open(2), false, Some(200)),
            (Open(2), false, Some(400)),
            (Open(2), false, Some(800)),
            (Open(2), false, Some(1_000)),
            (Open(6), false, None),
            (Open(6), false, Some(100)),
            (Open(6), false, Some(200)),
            (Open(6), false, Some(100)),
        ],
    );
}

#[test]
fn backoff_never_overflows() {
    let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    for _ in 0..100 {
        assert!(b.next_delay() <= Duration::from_secs(30));
    }
}

/// One scripted stream: its items in order, or the error its opening fails with.
type Scripted = Result<Vec<Result<Change<&'static str>, Fail>>, Fail>;

/// A source that plays a script: each `open` takes the next stream (or error), `list` counts.
#[derive(Default)]
struct Script {
    lists: Vec<Revision>,
    opens: Vec<Revision>,
    streams: VecDeque<Scripted>,
    list_at: Revision,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fail {
    Gone,
    Down,
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl WatchSource for Script {
    type Event = &'static str;
    type Error = Fail;
    type Stream = VecDeque<Result<Change<&'static str>, Fail>>;
    fn list(&mut self) -> BoxFut<'_, Result<Revision, Fail>> {
        self.lists.push(self.list_at);
        let at = self.list_at;
        Box::pin(async move { Ok(at) })
    }
    fn open(&mut self, from: Revision) -> BoxFut<'_, Result<Self::Stream, Fail>> {
        self.opens.push(from);
        let next = self.streams.pop_front().unwrap_or(Err(Fail::Down));
        Box::pin(async move { next.map(VecDeque::from) })
    }
    fn next<'a>(&'a mut self, stream: &'a mut Self::Stream) -> NextChange<'a, &'static str, Fail> {
        Box::pin(async move { stream.pop_front() })
    }
    fn is_gone(e: &Fail) -> bool {
        *e == Fail::Gone
    }
}

fn ch(revision: Revision, event: &'static str) -> Result<Change<&'static str>, Fail> {
    Ok(Change { revision, event: Some(event) })
}

/// Runs `follow` over the script until `stop_after` items were seen; returns them as text.
fn drive(script: &mut Script, stop_after: usize) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let mut seen = Vec::new();
    rt.block_on(follow(script, Backoff::new(MS, MS * 4), |f| {
        seen.push(match f {
            Followed::Synced { relisted } => format!("synced relisted={relisted}"),
            Followed::Event(e) => format!("event {e}"),
            Followed::Current => "current".into(),
            Followed::Lost { error, retry_in } => format!("lost {error} {}ms", retry_in.as_millis()),
        });
        seen.len() < stop_after
    }));
    seen
}

#[test]
fn follow_resumes_then_relists_on_gone() {
    let mut s = Script { list_at: 10, ..Script::default() };
    s.streams.push_back(Ok(vec![ch(11, "a"), ch(12, "b"), Err(Fail::Down)]));
    s.streams.push_back(Ok(vec![ch(13, "c"), Err(Fail::Gone)]));
    s.streams.push_back(Ok(vec![ch(51, "d")]));
    s.list_at = 10;
    let seen = drive(&mut s, 10);
    assert_eq!(
        seen[..9],
        [
            "synced relisted=true",
            "event a",
            "event b",
            "lost Down 1ms",
            "synced relisted=false",
            "event c",
            "lost Gone 1ms",
            "synced relisted=true",
            "event d",
        ]
    );
    // Listed at start and after the 410, resumed after b (13), reopened after the second list.
    assert_eq!(s.lists, [10, 10]);
    assert_eq!(s.opens, [11, 13, 11]);
}

#[test]
fn follow_backs_off_while_the_source_is_down() {
    let mut s = Script { list_at: 3, ..Script::default() };
    let seen = drive(&mut s, 4);
    assert_eq!(
        seen,
        [
            "lost opening the watch from revision 4: Down 1ms",
            "lost opening the watch from revision 4: Down 2ms",
            "lost opening the watch from revision 4: Down 4ms",
            "lost opening the watch from revision 4: Down 4ms",
        ]
    );
    assert_eq!(s.lists, [3], "an open that fails keeps the resume point: no new list");
}

#[test]
fn follow_with_a_prepared_follower_opens_without_listing() {
    let mut s = Script::default();
    s.streams.push_back(Ok(vec![ch(21, "a")]));
    let mut f = Follower::new(Backoff::new(MS, MS));
    f.listed(20);
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let mut seen = Vec::new();
    rt.block_on(follow_with(&mut s, f, |f| {
        seen.push(f);
        seen.len() < 2
    }));
    assert_eq!(seen, [Followed::Synced { relisted: false }, Followed::Event("a")]);
    assert_eq!((s.lists.len(), s.opens.clone()), (0, vec![21]));
}

/// A source without a listing of its own (`list` at 0: romanad's stream opened from 0 starts
/// with the state): its first progress line says the state is in, once per opening from 0; a
/// stream resumed from a revision never says it.
#[test]
fn a_stream_opened_from_zero_says_when_its_listing_is_in() {
    let progress = |revision| Ok(Change { revision, event: None });
    let mut s = Script { list_at: 0, ..Script::default() };
    s.streams.push_back(Ok(vec![
        ch(3, "a"),
        ch(5, "b"),
        progress(5),
        ch(6, "c"),
        progress(7),
        Err(Fail::Down),
    ]));
    s.streams.push_back(Ok(vec![ch(8, "d"), progress(9), Err(Fail::Gone)]));
    s.streams.push_back(Ok(vec![ch(9, "e"), progress(9)]));
    let seen = drive(&mut s, 14);
    assert_eq!(
        seen,
        [
            "synced relisted=true",
            "event a",
            "event b",
            "current",
            "event c",
            "lost Down 1ms",
            "synced relisted=false",
            "event d",
            "lost Gone 1ms",
            "synced relisted=true",
            "event e",
            "current",
            "lost the watch ended 1ms",
            "lost opening the watch from revision 10: Down 2ms",
        ]
    );
    assert_eq!(s.opens, [0, 8, 0, 10]);
}
