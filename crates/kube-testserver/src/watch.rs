//! Watch streams: chunked JSON lines `{"type": ..., "object": ...}` from the store's history,
//! with selector filtering, bookmarks, `timeoutSeconds` and 410 `ERROR` events for compacted
//! resourceVersions. Knows nothing of routing.

use crate::resources::RESOURCES;
use crate::selector::{FieldSelector, LabelSelector};
use crate::shared::Shared;
use crate::status::ApiError;
use crate::store::{Event, EventType, Obj};
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What a watch asks for, parsed from the query string.
#[derive(Debug)]
pub struct WatchRequest {
    pub res: usize,
    pub ns: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// None, "" and "0" mean: synthetic ADDED events for the current state first.
    pub resource_version: Option<String>,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    /// `sendInitialEvents=true`: the initial ADDED events end with a BOOKMARK annotated
    /// `k8s.io/initial-events-end`.
    pub send_initial_events: bool,
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("JSON values serialise");
    v.push(b'\n');
    Bytes::from(v)
}

fn bookmark(res: usize, rv: u64, initial_end: bool) -> Bytes {
    let t = &RESOURCES[res];
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line("BOOKMARK", &json!({"kind": t.kind, "apiVersion": t.api_version(), "metadata": meta}))
}

impl WatchRequest {
    fn selected(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// The event as this watcher sees it: a change that moves an object into the selection is
    /// ADDED, out of it DELETED (as the real server's filtered watches report).
    fn translate(&self, e: &Event) -> Option<Bytes> {
        let now = self.selected(&e.object);
        let before = e.prev.as_ref().is_some_and(|p| self.selected(p));
        let kind = match (e.kind, before, now) {
            (EventType::Added, _, true) => "ADDED",
            (EventType::Deleted, true, _) => "DELETED",
            (EventType::Modified, true, true) => "MODIFIED",
            (EventType::Modified, false, true) => "ADDED",
            (EventType::Modified, true, false) => "DELETED",
            _ => return None,
        };
        Some(line(kind, &e.object))
    }
}

/// Starts the stream: answers 200 at once, then events until the timeout, a compaction, or
/// the client going away.
pub fn start(shared: Arc<Shared>, req: WatchRequest) -> Response {
    let (tx, mut rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(run(shared, req, tx));
    let stream =
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok::<_, Infallible>)));
    let mut resp = Body::from_stream(stream).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

async fn run(shared: Arc<Shared>, req: WatchRequest, tx: mpsc::Sender<Bytes>) {
    let mut changes = shared.changes.subscribe();
    let epoch = changes.borrow_and_update().1;
    let rv_param = req.resource_version.as_deref().unwrap_or("");
    // `sendInitialEvents` starts from the current state even when a version is given (the
    // state is "not older than" it).
    let (initial, mut pos): (Vec<Obj>, u64) =
        if rv_param.is_empty() || rv_param == "0" || req.send_initial_events {
            let page = {
                let store = shared.store.lock().expect("store lock is never poisoned");
                store.list(req.res, req.ns.as_deref(), None, None, None, |o| req.selected(o))
            };
            match page {
                Ok(p) => (p.items, p.rv),
                Err(e) => {
                    let _ = tx.send(line("ERROR", &e.to_status())).await;
                    return;
                }
            }
        } else {
            match rv_param.parse::<u64>() {
                Ok(rv) => (Vec::new(), rv),
                Err(_) => {
                    let e = ApiError::bad_request(format!("invalid resourceVersion {rv_param:?}"));
                    let _ = tx.send(line("ERROR", &e.to_status())).await;
                    return;
                }
            }
        };
    for obj in &initial {
        if tx.send(line("ADDED", obj)).await.is_err() {
            return;
        }
    }
    if req.send_initial_events && req.bookmarks && tx.send(bookmark(req.res, pos, true)).await.is_err() {
        return;
    }
    let deadline = req.timeout.map(|t| Instant::now() + t);
    let interval = shared.bookmark_interval;
    let mut next_bookmark = Instant::now() + interval;
    loop {
        let read = {
            let store = shared.store.lock().expect("store lock is never poisoned");
            store.events_after(req.res, req.ns.as_deref(), pos).map(|evs| (evs, store.rv()))
        };
        match read {
            Err(e) => {
                let _ = tx.send(line("ERROR", &e.to_status())).await;
                return;
            }
            Ok((events, rv)) => {
                for e in &events {
                    if let Some(l) = req.translate(e)
                        && tx.send(l).await.is_err()
                    {
                        return;
                    }
                }
                pos = rv;
            }
        }
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() || changes.borrow_and_update().1 != epoch {
                    return;
                }
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)) => {
                // The real server sends a last bookmark before closing a timed-out watch, so a
                // client resumes from the newest version.
                if req.bookmarks {
                    let _ = tx.send(bookmark(req.res, pos, false)).await;
                }
                return;
            }
            _ = tokio::time::sleep_until(next_bookmark), if req.bookmarks => {
                if tx.send(bookmark(req.res, pos, false)).await.is_err() {
                    return;
                }
                next_bookmark = Instant::now() + interval;
            }
            _ = tx.closed() => return,
        }
    }
}
