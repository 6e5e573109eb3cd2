//! `GET /watch`: one revisioned, resumable stream of changes (newline-delimited JSON). With
//! `from=0` it first sends the current state (as puts) and a `synced` line with the revision to
//! resume from; with `from=N` it sends every change from revision N on, or 410 if N is compacted.
//! Only keys the caller may read are streamed (`watch_scope`): never `auth/`.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use futures_util::StreamExt;
use romana_api::query::WatchQuery;
use romana_api::rest::{WatchEvent, WatchKind};
use romana_auth::Principal;
use romana_store::{EventKind, KeyValue};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
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

fn line(s: &AppState, kind: WatchKind, kv: &KeyValue) -> String {
    let value = (kind == WatchKind::Put).then(|| {
        serde_json::from_slice::<serde_json::Value>(&kv.value)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&kv.value).into_owned()))
    });
    let ev = WatchEvent { revision: kv.mod_revision, kind, key: s.keys.relative(&kv.key).to_owned(), value };
    serde_json::to_string(&ev).expect("events serialize") + "\n"
}

/// A line that is not a change (`synced`, `error`): no key.
fn marker(revision: i64, kind: WatchKind, value: Option<serde_json::Value>) -> String {
    let ev = WatchEvent { revision, kind, key: String::new(), value };
    serde_json::to_string(&ev).expect("events serialize") + "\n"
}

async fn watch(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    query: Result<Query<WatchQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(format!("malformed query: {}", e.body_text())))?;
    let from = parse_from(q.from.as_deref())?;
    watch_scope::check(&who, &q.prefix).map_err(|e| match e {
        ScopeError::Malformed(_) => ApiError::bad_request(e.to_string()),
        ScopeError::Forbidden { .. } => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
    })?;
    let allowed = watch_scope::allowed(&who);
    let visible = {
        let s = s.clone();
        move |kv: &KeyValue| watch_scope::key_allowed(allowed, s.keys.relative(&kv.key))
    };
    let prefix = s.keys.under(&q.prefix);
    let mut first: Vec<String> = Vec::new();
    let from = if from == 0 {
        let (kvs, rev) = s.store.range(&prefix).await?;
        first.extend(kvs.iter().filter(|kv| visible(kv)).map(|kv| line(&s, WatchKind::Put, kv)));
        first.push(marker(rev, WatchKind::Synced, None));
        rev + 1
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
        from
    };
    let rx = s.store.watch(&prefix, from).await?;
    let state = s.clone();
    let open = s.metrics.stream_opened();
    let live = tokio_stream_from(rx).filter_map(move |batch| {
        let _open = &open;
        let out = match batch {
            Ok(events) => {
                let text: String = events
                    .iter()
                    .filter(|e| visible(&e.kv))
                    .inspect(|_| {
                        state.metrics.watch_events.inc();
                    })
                    .map(|e| {
                        line(
                            &state,
                            if e.kind == EventKind::Put { WatchKind::Put } else { WatchKind::Delete },
                            &e.kv,
                        )
                    })
                    .collect();
                (!text.is_empty()).then_some(Ok::<_, std::io::Error>(text))
            }
            Err(e) => Some(Ok(marker(0, WatchKind::Error, Some(serde_json::Value::String(e.to_string()))))),
        };
        std::future::ready(out)
    });
    let head = futures_util::stream::iter(first.into_iter().map(Ok::<_, std::io::Error>));
    let body = Body::from_stream(head.chain(live));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
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
