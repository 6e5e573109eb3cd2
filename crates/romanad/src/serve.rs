//! romanad's accept loop: HTTP/1 over TCP or TLS with a header-read timeout (which also ends
//! keep-alive connections idle between requests), a TLS handshake timeout, and caps on open
//! connections in all and per source address. Knows nothing of routes or the store.
//!
//! Why not `axum::serve`: it has none of these knobs, so requests whose headers never end held
//! their connections (and file descriptors) for as long as the client liked.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// The limits of the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time a client has to send a request's headers (from the first byte it is awaited, so it
    /// also bounds how long a keep-alive connection may sit idle).
    pub header_read: Duration,
    /// Time a client has to complete the TLS handshake.
    pub tls_handshake: Duration,
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Connections open at once from one address (IPv6: one /64).
    pub per_source: usize,
    /// Time given to open connections to finish after the shutdown signal.
    pub drain: Duration,
}

/// The source key of a connection: IPv4 as is, IPv6 by its /64 (one host usually holds one).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

/// Open connections per source; a `Slot` gives its count back when the connection ends.
#[derive(Debug, Default)]
struct PerSource(Mutex<HashMap<IpAddr, usize>>);

struct Slot {
    table: Arc<PerSource>,
    key: IpAddr,
    _global: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut t = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = t.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                t.remove(&self.key);
            }
        }
    }
}

impl PerSource {
    fn take(self: &Arc<Self>, ip: IpAddr, limit: usize, global: OwnedSemaphorePermit) -> Option<Slot> {
        let key = source_key(ip);
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = t.entry(key).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Slot { table: Arc::clone(self), key, _global: global })
    }
}

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown` completes, then lets open
/// connections finish for `limits.drain`. Handlers see the peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let global = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_source = Arc::new(PerSource::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for connections to end.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&global).try_acquire_owned() else {
            tracing::debug!(%peer, max = limits.max_connections, "connection refused: too many open connections");
            continue;
        };
        let Some(slot) = per_source.take(peer.ip(), limits.per_source, permit) else {
            tracing::debug!(%peer, max = limits.per_source, "connection refused: too many from this address");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, tls, stop) = (app.clone(), tls.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => connection(stream, peer, app, limits, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.tls_handshake, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => connection(s, peer, app, limits, stop).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain, global.acquire_many(all)).await.is_err() {
        tracing::info!(
            open = limits.max_connections - global.available_permits(),
            "connections still open at shutdown"
        );
    }
}

/// One HTTP/1 connection, ended gracefully when `stop` turns true.
async fn connection<S>(io: S, peer: SocketAddr, app: Router, limits: Limits, mut stop: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move { tower_service::Service::call(&mut app, req).await }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { stop.wait_for(|s| *s).await.is_ok() } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}
