//! The web view (`GET /ui`, docs/ui.md): three static files compiled into the binary, served
//! without a token (they hold no data) under a strict Content-Security-Policy. The page itself
//! logs in through `POST /auth/login` and reads everything through the normal authenticated
//! API, so the UI adds no route that reveals or changes anything.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::AppState;

const INDEX: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const STYLE: &str = include_str!("../ui/style.css");

/// Scripts and styles only from this origin (no inline script or style, no eval), data only
/// from this origin, no frames, no forms posted anywhere, no plugins.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            // A new romanad may serve a new page: always ask (the files are small).
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/ui/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/ui/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No inline script, no inline handler, no inline style, nothing from another origin:
    /// what the CSP refuses would break the page, so the files must not need it.
    #[test]
    fn the_page_needs_nothing_the_policy_refuses() {
        for (needle, why) in [
            ("<script>", "inline script"),
            (" onclick=", "inline handler"),
            (" onload=", "inline handler"),
            (" style=", "inline style"),
            ("<style", "inline style"),
            ("http://", "another origin"),
            ("https://", "another origin"),
            ("//cdn", "a CDN"),
        ] {
            assert!(!INDEX.contains(needle), "index.html has {why} ({needle})");
        }
        assert!(INDEX.contains(r#"<script src="/ui/app.js"></script>"#));
        for (needle, why) in [
            ("innerHTML", "HTML from data (use textContent)"),
            ("outerHTML", "HTML from data"),
            ("insertAdjacentHTML", "HTML from data"),
            ("eval(", "eval"),
            ("new Function", "eval"),
            ("document.cookie", "a cookie"),
            ("localStorage", "storage that outlives the tab"),
            ("http://", "another origin"),
            ("https://", "another origin"),
        ] {
            assert!(!APP_JS.contains(needle), "app.js uses {why} ({needle})");
        }
    }
}
