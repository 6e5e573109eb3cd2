//! `GET /watch`: one revisioned, resumable stream of changes (newline-delimited JSON). With
//! `from=0` it first sends the current state (as puts) and a `synced` line with the revision to
//! resume from; with `from=N` it sends every change from revision N on, or 410 if N is compacted.
//! Only keys the caller may read are streamed (`watch_scope`): never `auth/`. `prefix` may be
//! given several times (an agent follows its 7 prefixes on one stream); each is checked as a
//! single one is (`watch_filter`). Streams are served from the replica's one shared store watch
//! (`watch_hub`), or from a store watch of their own when they start before what it remembers.

use std::task::Poll;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use futures_util::StreamExt;
use romana_api::rest::{WatchEvent, WatchKind};
use romana_auth::Principal;
use romana_store::{EventKind, KeyValue};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::watch_filter::{self, Filter, QueryError};
use crate::watch_hub::{self, Subscription};
use crate::watch_scope::{self, ScopeError};

/// The revision to start from: 0 (current state first) or a revision, at most `i64::MAX`.
fn parse_from(text: Option<&str>) -> ApiResult<i64> {
    let Some(text) = text else { return Ok(0) };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(format!(
            "from: {text:?} is not a revision (0 for the current state first)"
        )));
    }
    text.parse::<i64>().map_err(|_| {
        ApiError::bad_request(format!(
            "from: {text} is past the largest revision a store can have ({})",
            i64::MAX
        ))
    })
}

/// A line that is not a change (`synced`, `error`): no key.
fn marker(revision: i64, kind: WatchKind, value: Option<serde_json::Value>) -> Bytes {
    let ev = WatchEvent::with_value(revision, kind, String::new(), value.as_ref());
    Bytes::from(serde_json::to_string(&ev).expect("events serialize") + "\n")
}

fn error_line(why: String) -> Bytes {
    marker(0, WatchKind::Error, Some(serde_json::Value::String(why)))
}

type Chunk = Result<Bytes, std::io::Error>;

async fn watch(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(pairs) =
        query.map_err(|e| ApiError::bad_request(format!("malformed query: {}", e.body_text())))?;
    let req = watch_filter::parse(&who, &pairs).map_err(|e| match e {
        QueryError::BadRequest(m) => ApiError::bad_request(format!("malformed query: {m}")),
        QueryError::Scope(e @ ScopeError::Malformed(_)) => ApiError::bad_request(e.to_string()),
        QueryError::Scope(e @ ScopeError::Forbidden { .. }) => {
            ApiError::new(StatusCode::FORBIDDEN, e.to_string())
        }
    })?;
    let from = parse_from(req.from.as_deref())?;
    let allowed = watch_scope::allowed(&who);
    let mut head: Vec<Bytes> = Vec::new();
    let filter = if from == 0 {
        // Each prefix is listed on its own (a store pages a big range; a transaction cannot),
        // so each has its own revision: the stream sends each prefix's changes after its list,
        // and `synced` names the oldest list, from which a resume misses nothing.
        let mut prefixes = Vec::with_capacity(req.prefixes.len());
        let mut synced = i64::MAX;
        for p in &req.prefixes {
            let (kvs, rev) = s.store.range(&s.keys.under(p)).await?;
            head.extend(
                kvs.iter()
                    .filter(|kv| watch_scope::key_allowed(allowed, s.keys.relative(&kv.key)))
                    .map(|kv| watch_hub::line(&s.keys, WatchKind::Put, kv).bytes),
            );
            prefixes.push((p.clone(), rev + 1));
            synced = synced.min(rev);
        }
        head.push(marker(synced, WatchKind::Synced, None));
        Filter { prefixes, allowed }
    } else {
        // A client resumes from at most the revision after the last it saw; a later one was never
        // handed out by this store (a typo, or a store that was replaced): say so rather than wait.
        let current = s.store.revision().await?;
        if from > current + 1 {
            return Err(ApiError::bad_request(format!(
                "from: {from} is past the store's next revision ({}); watch with from=0 to start over",
                current + 1
            )));
        }
        Filter::from(&req.prefixes, from, allowed)
    };
    let live = match s.watch_hub.subscribe(filter.clone()) {
        Some(sub) => from_hub(&s, sub).boxed(),
        None => from_store(&s, &req.prefixes, filter).await?.boxed(),
    };
    let body = Body::from_stream(futures_util::stream::iter(head.into_iter().map(Ok)).chain(live));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// The stream's lines from the shared watch; when the hub ends it, an `error` line saying why.
fn from_hub(s: &AppState, sub: Subscription) -> impl futures_util::Stream<Item = Chunk> + Send + use<> {
    let Subscription { replay, mut rx, cut } = sub;
    let mut cut = Some(cut);
    let open = s.metrics.stream_opened();
    let metrics = s.metrics.clone();
    metrics.watch_events.inc_by(replay.len() as u64);
    let live = futures_util::stream::poll_fn(move |cx| {
        let _open = &open;
        match rx.poll_recv(cx) {
            Poll::Ready(Some(lines)) => {
                metrics.watch_events.inc_by(lines.len() as u64);
                Poll::Ready(Some(Ok(join(lines))))
            }
            Poll::Ready(None) => Poll::Ready(cut.take().map(|mut c| {
                Ok(error_line(c.try_recv().unwrap_or_else(|_| "the replica's shared watch ended".to_owned())))
            })),
            Poll::Pending => Poll::Pending,
        }
    });
    futures_util::stream::iter(replay.into_iter().map(Ok)).chain(live)
}

/// One chunk of a batch's lines (no copy for the usual single line).
fn join(mut lines: Vec<Bytes>) -> Bytes {
    if lines.len() == 1 {
        return lines.pop().unwrap_or_default();
    }
    Bytes::from(lines.concat())
}

/// The stream's lines from a store watch of its own, for a start older than the hub's memory
/// (or before the hub runs): one watch on what the prefixes have in common, filtered.
async fn from_store(
    s: &AppState,
    prefixes: &[String],
    filter: Filter,
) -> ApiResult<impl futures_util::Stream<Item = Chunk> + Send + use<>> {
    let rx = s.store.watch(&s.keys.under(&watch_filter::common_prefix(prefixes)), filter.first()).await?;
    let state = s.clone();
    let open = s.metrics.stream_opened();
    Ok(tokio_stream_from(rx).filter_map(move |batch| {
        let _open = &open;
        let out = match batch {
            Ok(events) => {
                let lines: Vec<Bytes> = events
                    .iter()
                    .filter(|e| filter.wants(state.keys.relative(&e.kv.key), e.kv.mod_revision))
                    .map(|e| {
                        let kind = if e.kind == EventKind::Put { WatchKind::Put } else { WatchKind::Delete };
                        line_of(&state, kind, &e.kv)
                    })
                    .collect();
                state.metrics.watch_events.inc_by(lines.len() as u64);
                (!lines.is_empty()).then(|| Ok(join(lines)))
            }
            Err(e) => Some(Ok(error_line(e.to_string()))),
        };
        std::future::ready(out)
    }))
}

fn line_of(s: &AppState, kind: WatchKind, kv: &KeyValue) -> Bytes {
    watch_hub::line(&s.keys, kind, kv).bytes
}

fn tokio_stream_from(
    mut rx: romana_store::WatchStream,
) -> impl futures_util::Stream<Item = Result<Vec<romana_store::Event>, romana_store::StoreError>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/watch", get(watch))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn from_values() {
        for (text, expect) in [
            (None, Ok(0)),
            (Some("0"), Ok(0)),
            (Some("42"), Ok(42)),
            (Some("9223372036854775807"), Ok(i64::MAX)),
            (Some("9223372036854775808"), Err("past the largest revision")),
            (Some("18446744073709551615"), Err("past the largest revision")),
            (Some("-1"), Err("is not a revision")),
            (Some("99999999999999999999999999999999999999999"), Err("past the largest revision")),
            (Some("abc"), Err("is not a revision")),
            (Some("+1"), Err("is not a revision")),
            (Some(""), Err("is not a revision")),
        ] {
            let got = parse_from(text).map_err(|e| {
                assert_eq!(e.status, StatusCode::BAD_REQUEST);
                e.message
            });
            match (got, expect) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{text:?}"),
                (Err(m), Err(needle)) => assert!(m.contains(needle), "{text:?}: {m}"),
                (got, _) => panic!("{text:?}: {got:?}"),
            }
        }
    }
}
