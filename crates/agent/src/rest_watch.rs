//! romanad's `GET /watch` as a source for the store's watch follower: opens from a revision
//! (0: the current state first, ended by a `synced` line with the revision to resume from),
//! reads its lines, and says "gone" for HTTP 410 (the revision was compacted). One stream may
//! follow several prefixes; `SharedWatch` hands each of its consumers (routes, firewall, VIPs)
//! what falls under its own prefixes, so an agent holds one stream, not one per prefix. Knows
//! nothing about what the keys mean.

use std::sync::Arc;

use romana_api::rest::{WatchEvent, WatchKind};
use romana_client::{Client, ClientError};
use romana_store::follow::{Backoff, Change, Followed, NextChange, WatchSource, follow};
use romana_store::{BoxFut, Revision};

/// Follows `prefixes` on one stream with whichever client `client` gives at each attempt (the
/// agent logs in again when its token expires).
pub struct RestWatch<C> {
    pub prefixes: Vec<String>,
    pub client: C,
}

impl<C> RestWatch<C> {
    /// One prefix.
    pub fn new(prefix: impl Into<String>, client: C) -> RestWatch<C> {
        RestWatch { prefixes: vec![prefix.into()], client }
    }
}

impl<C> std::fmt::Debug for RestWatch<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestWatch").field("prefixes", &self.prefixes).finish_non_exhaustive()
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
        let prefixes = self.prefixes.clone();
        Box::pin(async move { client.watch_prefixes(&prefixes, from).await })
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

/// What a consumer of a shared stream is handed: every `Synced` and `Lost` of the stream, and
/// the events under its prefixes. It returns `false` when it is gone.
pub type Consumer = Box<dyn FnMut(Followed<WatchEvent>) -> bool + Send>;

/// One watch stream for several consumers, each following its own prefixes: the stream follows
/// their union, resumes and relists as one follower (one revision to resume from), and every
/// consumer sees the stream's state changes as if the stream were its own.
#[derive(Default)]
pub struct SharedWatch {
    consumers: Vec<(Vec<String>, Consumer)>,
}

impl std::fmt::Debug for SharedWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefixes: Vec<&Vec<String>> = self.consumers.iter().map(|(p, _)| p).collect();
        f.debug_struct("SharedWatch").field("consumers", &prefixes).finish()
    }
}

impl SharedWatch {
    pub fn new() -> SharedWatch {
        SharedWatch::default()
    }

    /// Adds a consumer of the changes under `prefixes`.
    pub fn add(
        &mut self,
        prefixes: &[&str],
        on: impl FnMut(Followed<WatchEvent>) -> bool + Send + 'static,
    ) -> &mut SharedWatch {
        self.consumers.push((prefixes.iter().map(|p| (*p).to_owned()).collect(), Box::new(on)));
        self
    }

    /// Every consumer's prefixes, as the stream asks for them.
    pub fn prefixes(&self) -> Vec<String> {
        let mut all: Vec<String> = self.consumers.iter().flat_map(|(p, _)| p.iter().cloned()).collect();
        all.sort();
        all.dedup();
        all
    }

    /// Hands one item of the stream to the consumers it concerns; drops those that are gone.
    /// `false` when none is left.
    pub fn dispatch(&mut self, f: Followed<WatchEvent>) -> bool {
        fn wants(f: &Followed<WatchEvent>, prefixes: &[String]) -> bool {
            match f {
                Followed::Event(ev) => prefixes.iter().any(|p| ev.key.starts_with(p.as_str())),
                Followed::Synced { .. } | Followed::Current | Followed::Lost { .. } => true,
            }
        }
        // The last consumer concerned takes the item itself, the others a copy: an event's value
        // is a tree, and a stream's first listing is tens of thousands of them, most for one
        // consumer.
        let last = self.consumers.iter().rposition(|(prefixes, _)| wants(&f, prefixes));
        let mut item = Some(f);
        let mut i = 0;
        self.consumers.retain_mut(|(prefixes, on)| {
            i += 1;
            let Some(f) = item.as_ref().filter(|f| wants(f, prefixes)) else { return true };
            let f = if last == Some(i - 1) { item.take() } else { Some(f.clone()) };
            f.is_none_or(on)
        });
        !self.consumers.is_empty()
    }

    /// Follows the stream until every consumer is gone (nothing to follow: returns at once).
    pub async fn run<C: Fn() -> Arc<Client> + Send>(mut self, client: C, backoff: Backoff) {
        if self.consumers.is_empty() {
            return;
        }
        let mut source = RestWatch { prefixes: self.prefixes(), client };
        follow(&mut source, backoff, |f| self.dispatch(f)).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    fn ev(key: &str) -> Followed<WatchEvent> {
        Followed::Event(WatchEvent { revision: 1, kind: WatchKind::Put, key: key.into(), value: None })
    }

    /// Each item of the stream, and what each consumer (by name) was handed of it.
    #[test]
    fn each_consumer_gets_its_prefixes_and_every_state_change() {
        let log = Arc::new(Mutex::new(Vec::<String>::new()));
        let rec = |name: &'static str, keep: bool| {
            let log = log.clone();
            move |f: Followed<WatchEvent>| {
                let what = match f {
                    Followed::Event(e) => e.key,
                    Followed::Synced { relisted } => format!("synced {relisted}"),
                    Followed::Current => "current".into(),
                    Followed::Lost { .. } => "lost".into(),
                };
                log.lock().unwrap().push(format!("{name}: {what}"));
                keep
            }
        };
        let mut w = SharedWatch::new();
        w.add(&["routes/h1"], rec("routes", true))
            .add(&["endpoints/", "tenants/"], rec("firewall", true))
            .add(&["vips/"], rec("vips", false));
        assert_eq!(w.prefixes(), ["endpoints/", "routes/h1", "tenants/", "vips/"]);
        for (item, want) in [
            (
                Followed::Synced { relisted: true },
                &["routes: synced true", "firewall: synced true", "vips: synced true"][..],
            ),
            (ev("tenants/red"), &["firewall: tenants/red"]),
            (Followed::Current, &["routes: current", "firewall: current"]),
            (ev("routes/h1"), &["routes: routes/h1"]),
            (ev("policies/p"), &[]),
            // The VIP consumer said it was gone after its first item: it gets nothing more.
            (ev("vips/1.2.3.4"), &[]),
            (
                Followed::Lost { error: "down".into(), retry_in: Duration::ZERO },
                &["routes: lost", "firewall: lost"],
            ),
        ] {
            log.lock().unwrap().clear();
            assert!(w.dispatch(item));
            assert_eq!(*log.lock().unwrap(), want);
        }
        let mut last = SharedWatch::new();
        last.add(&["x/"], |_| false);
        assert!(!last.dispatch(Followed::Synced { relisted: false }), "no consumer left");
    }
}
