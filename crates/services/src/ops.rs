//! Operations endpoints (health, readiness, metrics, the OpenAPI document) and the middleware
//! every request passes: metrics, a timeout, our JSON body for unknown routes and methods, and
//! the JSON error body for the errors axum's extractors answer in plain text.

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::ApiError;
use crate::metrics::{RequestLabels, RouteLabels};
use crate::state::AppState;

/// Requests taking longer answer 503 (the store is the usual cause).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

async fn healthz() -> &'static str {
    "ok\n"
}

/// 200 only when requests can be served: the IPAM replica is loaded and its task answers (not
/// reloading after a lost watch), and the store answers. Otherwise 503 with a JSON body saying why.
async fn readyz(State(s): State<AppState>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), s.ipam.ready()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return ApiError::unavailable(format!("IPAM replica not ready: {}", ApiError::from(e).message))
                .into_response();
        }
        Err(_) => return ApiError::unavailable("IPAM replica did not answer within 2 s").into_response(),
    }
    match tokio::time::timeout(Duration::from_secs(2), s.store.revision()).await {
        Ok(Ok(rev)) => (StatusCode::OK, format!("ok revision {rev}\n")).into_response(),
        Ok(Err(e)) => ApiError::unavailable(format!("store not ready: {e}")).into_response(),
        Err(_) => ApiError::unavailable("store did not answer within 2 s").into_response(),
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    s.ipam.read(|v| {
        s.metrics.refresh(&v.ipam, v.revision, &s.liveness.read().unwrap_or_else(|e| e.into_inner()))
    });
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &s.metrics.registry).is_err() {
        return ApiError::internal("metrics encoding failed").into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out)
        .into_response()
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::openapi().to_pretty_json().unwrap_or_default(),
    )
        .into_response()
}

pub async fn fallback() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: "no such route; see /openapi.json".into(),
        details: vec!["no_route".into()],
    }
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route; see /openapi.json")
}

/// Largest plain-text error body kept as the message (axum's rejections are one line).
const PLAIN_ERROR_LIMIT: usize = 4096;

/// Gives every error romanad answers the documented JSON body: axum's own rejections (413 of the
/// body limit, 400 of a path segment that is not UTF-8, a malformed query) are plain text, and
/// handlers that take raw bytes or typed paths get them before our code runs. The text becomes
/// the message, the status stays, and headers such as `Retry-After` and `Allow` are kept.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, PLAIN_ERROR_LIMIT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_ascii_lowercase()
    } else {
        text
    };
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let shaped = ApiError::new(status, message).into_response();
    let (new_parts, new_body) = shaped.into_parts();
    parts.headers.extend(new_parts.headers);
    Response::from_parts(parts, new_body)
}

/// The method as a metrics label: the standard methods by name, anything else "other". A label
/// taken from the request as sent would make a new series for every invented method token, kept
/// for the life of the process (an anonymous client could grow memory and /metrics without end).
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Counts and times each request by its route template (never the raw path: unmatched requests
/// count as "unmatched"); answers 503 past the timeout.
pub async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = method_label(req.method()).to_owned();
    let start = Instant::now();
    let streaming = route == "/watch";
    let resp = if streaming {
        next.run(req).await
    } else {
        match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
            Ok(r) => r,
            Err(_) => {
                ApiError::unavailable(format!("request timed out after {} s", REQUEST_TIMEOUT.as_secs()))
                    .into_response()
            }
        }
    };
    let status = resp.status().as_u16();
    s.metrics.requests.get_or_create(&RequestLabels { method, route: route.clone(), status }).inc();
    s.metrics.latency.get_or_create(&RouteLabels { route }).observe(start.elapsed().as_secs_f64());
    resp
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}
