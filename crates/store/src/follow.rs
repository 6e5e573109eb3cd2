//! A watch follower, generic over where the changes come from (`WatchSource`: the store's own
//! watch, romanad's `GET /watch`): it resumes from the revision after the last one seen, lists
//! the whole state again when the source says that revision is gone (compacted: HTTP 410) or the
//! resume point is unknown, and waits with an exponential, capped backoff between attempts. The
//! bookkeeping (`Follower`) is pure; `follow` is the thin loop around it. Knows nothing about
//! what the keys mean.

use std::time::{Duration, Instant};

use crate::{BoxFut, Revision};

/// Exponential backoff with a cap: `base`, `2·base`, `4·base`... up to `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap: cap.max(base), failures: 0 }
    }

    /// The wait before the next attempt; each call doubles the following one (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.failures = self.failures.saturating_add(1);
        self.base.saturating_mul(factor).min(self.cap)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// What the follower does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Read the whole state (the resume point is unknown or gone), then open from what it says.
    List,
    /// Open the stream from this revision (0: the source's own start).
    Open(Revision),
}

/// The follower's bookkeeping, without I/O: where to resume, whether a list is due, whether
/// the stream is in place (`synced`), and the backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follower {
    /// The next revision to ask for; 0 while unknown.
    next: Revision,
    listed: bool,
    synced: bool,
    backoff: Backoff,
}

impl Follower {
    pub fn new(backoff: Backoff) -> Follower {
        Follower { next: 0, listed: false, synced: false, backoff }
    }

    pub fn attempt(&self) -> Attempt {
        if self.listed { Attempt::Open(self.next) } else { Attempt::List }
    }

    /// The list read the state at `at` (0: the list gave no revision; the stream will).
    pub fn listed(&mut self, at: Revision) {
        self.listed = true;
        self.next = if at > 0 { at + 1 } else { 0 };
    }

    /// The stream is open: from now on the consumer sees every change.
    pub fn opened(&mut self) {
        self.synced = true;
    }

    /// A change at `revision` arrived (or the source said it is at `revision`).
    pub fn seen(&mut self, revision: Revision) {
        if revision >= self.next {
            self.next = revision + 1;
        }
        self.backoff.reset();
    }

    /// The list or the stream failed after `lasted`; `gone`: the source no longer has the
    /// revision asked for. Returns how long to wait. A stream that lasted at least the cap was
    /// healthy: the backoff starts over.
    pub fn failed(&mut self, gone: bool, lasted: Duration) -> Duration {
        self.synced = false;
        // Resuming from an unknown point would miss deletes: list again instead.
        if gone || self.next == 0 {
            self.listed = false;
            self.next = 0;
        }
        if lasted >= self.backoff.cap {
            self.backoff.reset();
        }
        self.backoff.next_delay()
    }

    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn resume_from(&self) -> Revision {
        self.next
    }
}

/// One item of a stream: a change at a revision (`event: None`: only progress, e.g. romanad's
/// `synced` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<E> {
    pub revision: Revision,
    pub event: Option<E>,
}

/// What `WatchSource::next` returns: the next change, an error, or `None` when the stream ended.
pub type NextChange<'a, E, Er> = BoxFut<'a, Option<Result<Change<E>, Er>>>;

/// Where changes come from. `list` reads the whole state (handing it to the consumer itself, or
/// leaving that to the consumer on `Followed::Synced { relisted: true }`) and returns its
/// revision (0 when it has none: the stream opened from 0 starts with the state).
pub trait WatchSource: Send {
    type Event: Send;
    type Error: std::fmt::Display + Send;
    type Stream: Send;
    fn list(&mut self) -> BoxFut<'_, Result<Revision, Self::Error>>;
    fn open(&mut self, from: Revision) -> BoxFut<'_, Result<Self::Stream, Self::Error>>;
    /// The next change; `None` when the stream ended.
    fn next<'a>(&'a mut self, stream: &'a mut Self::Stream) -> NextChange<'a, Self::Event, Self::Error>;
    /// The source no longer has the revision asked for (compacted; HTTP 410).
    fn is_gone(e: &Self::Error) -> bool;
}

/// What the consumer is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed<E> {
    /// The stream is in place; `relisted`: the state was listed again first (deletes may have
    /// been missed: the consumer re-reads what it keeps).
    Synced {
        relisted: bool,
    },
    Event(E),
    /// A stream opened from revision 0 (whose source has no listing of its own, `WatchSource::
    /// list`) has delivered the whole state it started with, as events: its first progress line
    /// (romanad's `synced`). A consumer that started empty now holds the state.
    Current,
    /// The stream or the list failed; the next attempt comes after `retry_in`.
    Lost {
        error: String,
        retry_in: Duration,
    },
}

/// Follows `source` until `on` returns `false` (the consumer is gone), listing first.
pub async fn follow<S: WatchSource>(
    source: &mut S,
    backoff: Backoff,
    on: impl FnMut(Followed<S::Event>) -> bool,
) {
    follow_with(source, Follower::new(backoff), on).await
}

/// `follow` from a follower the caller prepared, e.g. one that already `listed` at the revision
/// of a load done before (the first attempt then opens from there).
pub async fn follow_with<S: WatchSource>(
    source: &mut S,
    mut f: Follower,
    mut on: impl FnMut(Followed<S::Event>) -> bool,
) {
    loop {
        let started = Instant::now();
        let (error, gone) = match run_once(source, &mut f, &mut on).await {
            Some(r) => r,
            None => return,
        };
        let retry_in = f.failed(gone, started.elapsed());
        if !on(Followed::Lost { error, retry_in }) {
            return;
        }
        tokio::time::sleep(retry_in).await;
    }
}

/// One attempt: list if due, open, forward changes. `None`: the consumer is gone; otherwise
/// why it ended and whether the revision was gone.
async fn run_once<S: WatchSource>(
    source: &mut S,
    f: &mut Follower,
    on: &mut impl FnMut(Followed<S::Event>) -> bool,
) -> Option<(String, bool)> {
    let relisted = f.attempt() == Attempt::List;
    if relisted {
        match source.list().await {
            Ok(at) => f.listed(at),
            Err(e) => return Some((format!("listing: {e}"), S::is_gone(&e))),
        }
    }
    let from = f.resume_from();
    let mut stream = match source.open(from).await {
        Ok(s) => s,
        Err(e) => return Some((format!("opening the watch from revision {from}: {e}"), S::is_gone(&e))),
    };
    f.opened();
    if !on(Followed::Synced { relisted }) {
        return None;
    }
    // Opened from 0, the stream starts with the state; its first progress line ends it.
    let mut listing = from == 0;
    loop {
        match source.next(&mut stream).await {
            Some(Ok(c)) => {
                f.seen(c.revision);
                let told = match c.event {
                    Some(ev) => on(Followed::Event(ev)),
                    None if std::mem::take(&mut listing) => on(Followed::Current),
                    None => true,
                };
                if !told {
                    return None;
                }
            }
            Some(Err(e)) => return Some((e.to_string(), S::is_gone(&e))),
            None => return Some(("the watch ended".to_owned(), false)),
        }
    }
}

#[cfg(test)]
mod tests;
