//! `GET /watch`: one revisioned, resumable stream of changes (newline-delimited JSON). With
//! `from=0` it first sends the current state (as puts) and a `synced` line with the revision to
//! resume from; with `from=N` it sends every change from revision N on, or 410 if N is compacted.

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use romana_api::rest::WatchEvent;
use romana_store::{EventKind, KeyValue};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
struct WatchQuery {
    #[serde(default)]
    from: i64,
    /// Below the store prefix, e.g. `ipam/`, `policies/`; empty for everything.
    #[serde(default)]
    prefix: String,
}

fn line(s: &AppState, kind: &str, kv: &KeyValue) -> String {
    let value = (kind == "put").then(|| {
        serde_json::from_slice::<serde_json::Value>(&kv.value)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&kv.value).into_owned()))
    });
    let ev = WatchEvent {
        revision: kv.mod_revision,
        kind: kind.into(),
        key: s.keys.relative(&kv.key).to_owned(),
        value,
    };
    serde_json::to_string(&ev).expect("events serialize") + "\n"
}

async fn watch(State(s): State<AppState>, Query(q): Query<WatchQuery>) -> ApiResult<Response> {
    if q.from < 0 || q.prefix.contains("..") {
        return Err(ApiError::bad_request("from must be a revision (0 for the current state first)"));
    }
    let prefix = format!("{}{}", s.keys.root(), q.prefix);
    let mut first: Vec<String> = Vec::new();
    let from = if q.from == 0 {
        let (kvs, rev) = s.store.range(&prefix).await?;
        first.extend(kvs.iter().map(|kv| line(&s, "put", kv)));
        first.push(format!("{{\"revision\":{rev},\"kind\":\"synced\",\"key\":\"\"}}\n"));
        rev + 1
    } else {
        q.from
    };
    let rx = s.store.watch(&prefix, from).await?;
    let state = s.clone();
    let live = tokio_stream_from(rx).map(move |batch| match batch {
        Ok(events) => Ok::<_, std::io::Error>(
            events
                .iter()
                .map(|e| line(&state, if e.kind == EventKind::Put { "put" } else { "delete" }, &e.kv))
                .collect::<String>(),
        ),
        Err(e) => Ok(format!(
            "{{\"revision\":0,\"kind\":\"error\",\"key\":\"\",\"value\":{}}}\n",
            serde_json::Value::String(e.to_string())
        )),
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
