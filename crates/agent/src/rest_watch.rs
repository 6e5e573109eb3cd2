//! romanad's `GET /watch` as a source for the store's watch follower: opens from a revision
//! (0: the current state first, ended by a `synced` line with the revision to resume from),
//! reads its lines, and says "gone" for HTTP 410 (the revision was compacted). Knows nothing
//! about what the keys mean.

use std::sync::Arc;

use romana_api::rest::{WatchEvent, WatchKind};
use romana_client::{Client, ClientError};
use romana_store::follow::{Change, NextChange, WatchSource};
use romana_store::{BoxFut, Revision};

/// Follows `prefix` with whichever client `client` gives at each attempt (the agent logs in
/// again when its token expires).
pub struct RestWatch<C> {
    pub prefix: String,
    pub client: C,
}

impl<C> std::fmt::Debug for RestWatch<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestWatch").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl<C: Fn() -> Arc<Client> + Send> WatchSource for RestWatch<C> {
    type Event = WatchEvent;
    type Error = ClientError;
    type Stream = tokio::sync::mpsc::Receiver<Result<WatchEvent, ClientError>>;

    /// Nothing to list here: the stream opened from 0 starts with the current state, and the
    /// consumer re-reads what it keeps on `Synced { relisted: true }`.
    fn list(&mut self) -> BoxFut<'_, Result<Revision, ClientError>> {
        Box::pin(async { Ok(0) })
    }

    fn open(&mut self, from: Revision) -> BoxFut<'_, Result<Self::Stream, ClientError>> {
        let client = (self.client)();
        let prefix = self.prefix.clone();
        Box::pin(async move { client.watch(&prefix, from).await })
    }

    fn next<'a>(&'a mut self, stream: &'a mut Self::Stream) -> NextChange<'a, WatchEvent, ClientError> {
        Box::pin(async move { stream.recv().await.map(|r| r.and_then(change)) })
    }

    fn is_gone(e: &ClientError) -> bool {
        e.status() == Some(410)
    }
}

/// A line of the stream as a change: `synced` only moves the revision; `error` ends the stream.
fn change(ev: WatchEvent) -> Result<Change<WatchEvent>, ClientError> {
    match ev.kind {
        WatchKind::Synced => Ok(Change { revision: ev.revision, event: None }),
        WatchKind::Error => Err(ClientError::Decode {
            url: "watch".into(),
            detail: format!("the stream failed: {}", ev.value.map(|v| v.to_string()).unwrap_or_default()),
        }),
        WatchKind::Put | WatchKind::Delete => Ok(Change { revision: ev.revision, event: Some(ev) }),
    }
}
