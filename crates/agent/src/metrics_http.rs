//! The agent's scrape port: `/metrics` (Prometheus text) and `/healthz` on TCP
//! (`--metrics-listen`, default 127.0.0.1:9602), for Prometheus, which cannot reach the root-only
//! CNI socket. Serves nothing else: the CNI API stays on the socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::shared::Shared;

/// The address used when `--metrics-listen` is not given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9602";

/// Where to listen: `None` for `off`; `explicit` says whether a bind failure is fatal.
#[derive(Debug, PartialEq, Eq)]
pub struct Listen {
    pub addr: Option<SocketAddr>,
    pub explicit: bool,
}

/// Parses `--metrics-listen` (absent: the default, not fatal when its port is taken).
pub fn parse(flag: Option<&str>) -> Result<Listen, String> {
    let (text, explicit) = match flag {
        None => (DEFAULT_LISTEN, false),
        Some(t) => (t.trim(), true),
    };
    if text == "off" {
        return Ok(Listen { addr: None, explicit });
    }
    let addr = text.parse().map_err(|_| {
        format!("--metrics-listen {text:?} is not an address such as 127.0.0.1:9602 (or off)")
    })?;
    Ok(Listen { addr: Some(addr), explicit })
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    if let Some(d) = &s.deliver {
        s.metrics.fast_path_entries.store(d.entries() as u64, Ordering::Relaxed);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render())
}

pub fn router(s: Arc<Shared>) -> Router {
    Router::new().route("/metrics", get(metrics)).route("/healthz", get(|| async { "ok\n" })).with_state(s)
}

/// Binds and serves in the background. Several agents on one machine (sandboxes, tests) would
/// all want the default port: only an address the operator chose must bind.
pub async fn serve(flag: Option<&str>, s: Arc<Shared>) -> anyhow::Result<()> {
    let listen = parse(flag).map_err(anyhow::Error::msg)?;
    let Some(addr) = listen.addr else { return Ok(()) };
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => {
            let bound = l.local_addr().unwrap_or(addr);
            tracing::info!(addr = %bound, "metrics listening");
            tokio::spawn(axum::serve(l, router(s)).into_future());
            Ok(())
        }
        Err(e) if !listen.explicit => {
            tracing::warn!(%addr, error = %e, "no metrics port; choose one with --metrics-listen (or off)");
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("binding --metrics-listen {addr}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(flag: Option<&str>, expect: Result<(Option<&str>, bool), &str>) {
        let got = parse(flag).map(|l| (l.addr.map(|a| a.to_string()), l.explicit));
        match (got, expect) {
            (Ok((a, e)), Ok((want, explicit))) => assert_eq!((a.as_deref(), e), (want, explicit), "{flag:?}"),
            (Err(m), Err(needle)) => assert!(m.contains(needle), "{flag:?}: {m}"),
            (got, _) => panic!("{flag:?}: {got:?}"),
        }
    }

    #[test]
    fn flag_values() {
        check(None, Ok((Some("127.0.0.1:9602"), false)));
        check(Some("0.0.0.0:9700"), Ok((Some("0.0.0.0:9700"), true)));
        check(Some("[::1]:0"), Ok((Some("[::1]:0"), true)));
        check(Some("off"), Ok((None, true)));
        check(Some("9602"), Err("\"9602\" is not an address"));
        check(Some("localhost:9602"), Err("or off"));
    }
}
