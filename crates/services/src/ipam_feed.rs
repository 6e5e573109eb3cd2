//! The IPAM replica's feed: the store's watch under the prefix as a
//! `romana_store::follow::WatchSource`, followed by the shared follower (resume from the revision
//! after the last one seen, capped backoff; a full reload only past a compaction). Its `list` is the full load: it sends the loaded view
//! to the actor through the same channel as the changes, so the actor sees them in order. Knows
//! nothing of HTTP or of what the actor does with the view.

use std::sync::Arc;
use std::time::Duration;

use romana_store::follow::{Backoff, Change, Followed, Follower, NextChange, WatchSource, follow_with};
use romana_store::{BoxFut, Event, Revision, Store, StoreError, WatchStream};
use tokio::sync::mpsc;

use crate::ipam_view::Synced;
use crate::keys::Keys;

/// First and longest wait between attempts to follow the store again. The first is short: when
/// one etcd member dies the watch reopens on another at once, and the replica refuses changes
/// until it has.
const RETRY: (Duration, Duration) = (Duration::from_millis(20), Duration::from_secs(2));

/// What the actor hears from the feed, in the order it happened.
#[derive(Debug)]
pub(crate) enum Feed {
    /// The whole state, read again after the watch was lost.
    Loaded(Box<Synced>),
    /// One revision's changes.
    Events(Vec<Event>),
    /// The watch is in place again: the replica serves.
    Synced,
    /// The watch or the load failed; the follower tries again after a pause.
    Lost(String),
}

/// Everything under the prefix as one view, at the revision the read saw.
pub(crate) async fn load(store: &dyn Store, keys: &Keys) -> Result<Synced, StoreError> {
    let (kvs, rev) = store.range(keys.root()).await?;
    Ok(Synced::loaded(keys, &kvs, rev))
}

struct StoreFeed {
    store: Arc<dyn Store>,
    keys: Keys,
    tx: mpsc::UnboundedSender<Feed>,
}

impl WatchSource for StoreFeed {
    type Event = Vec<Event>;
    type Error = StoreError;
    type Stream = WatchStream;

    fn list(&mut self) -> BoxFut<'_, Result<Revision, StoreError>> {
        Box::pin(async move {
            let synced = load(&*self.store, &self.keys).await?;
            let rev = synced.revision;
            // A closed channel means the actor is gone; the follower stops at its next event.
            let _ = self.tx.send(Feed::Loaded(Box::new(synced)));
            Ok(rev)
        })
    }

    fn open(&mut self, from: Revision) -> BoxFut<'_, Result<WatchStream, StoreError>> {
        // From 1 when the load saw an empty store (revision 0): every change is then new.
        Box::pin(async move { self.store.watch(self.keys.root(), from.max(1)).await })
    }

    fn next<'a>(&'a mut self, stream: &'a mut WatchStream) -> NextChange<'a, Vec<Event>, StoreError> {
        Box::pin(async move {
            let batch = stream.recv().await?;
            Some(batch.map(|events| Change {
                revision: events.iter().map(|e| e.kv.mod_revision).max().unwrap_or(0),
                event: Some(events),
            }))
        })
    }

    /// Only a compacted revision reads the whole state again; any other loss (an etcd member
    /// died, etcd restarted) resumes from the revision after the last one applied, on whichever
    /// member answers, so a replica serves again within a retry instead of a full reload (seconds
    /// at 100,000 addresses). What a failed write's local rollback undid that etcd did apply
    /// comes back on the watch like any other change.
    fn is_gone(e: &StoreError) -> bool {
        matches!(e, StoreError::Compacted { .. })
    }
}

/// Follows the store from just after the initial load at `loaded_at`, sending what happens to
/// the actor until it is gone.
pub(crate) fn spawn(store: Arc<dyn Store>, keys: Keys, loaded_at: Revision, tx: mpsc::UnboundedSender<Feed>) {
    let mut follower = Follower::new(Backoff::new(RETRY.0, RETRY.1));
    follower.listed(loaded_at);
    tokio::spawn(async move {
        let on = {
            let tx = tx.clone();
            move |f: Followed<Vec<Event>>| {
                let item = match f {
                    // The feed opens from the load's revision, never from 0.
                    Followed::Current => return true,
                    Followed::Synced { .. } => Feed::Synced,
                    Followed::Event(events) => Feed::Events(events),
                    Followed::Lost { error, .. } => Feed::Lost(error),
                };
                tx.send(item).is_ok()
            }
        };
        let mut source = StoreFeed { store, keys, tx };
        follow_with(&mut source, follower, on).await;
    });
}
