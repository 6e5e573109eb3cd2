//! `romanad`: parses flags, opens the store, runs the chosen services, and prints one line when it
//! is ready: `romanad listening on http://ADDR (store: ...)`.

mod serve;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use romana_store::{EmbeddedStore, Store};
use romana_store_etcd::EtcdStore;

#[derive(Parser, Debug)]
#[command(
    name = "romanad",
    version,
    about = "Romana control plane: root, tenant, topology, IPAM, policy and watch services"
)]
struct Flags {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9600", env = "ROMANAD_LISTEN")]
    listen: SocketAddr,
    /// Directory of the embedded store (the default backend).
    #[arg(long, default_value = "/var/lib/romana", env = "ROMANAD_DATA_DIR")]
    data_dir: PathBuf,
    /// Use etcd instead of the embedded store: http://HOST:PORT[,...]
    #[arg(long, value_delimiter = ',', env = "ROMANAD_ETCD_ENDPOINTS")]
    etcd_endpoints: Vec<String>,
    /// Key prefix in the store.
    #[arg(long, default_value = "/romana/", env = "ROMANAD_PREFIX")]
    prefix: String,
    /// Services to run (root, tenant, topology, ipam, policy, watch); all by default.
    #[arg(long, value_delimiter = ',', env = "ROMANAD_SERVICES")]
    services: Vec<String>,
    /// Topology to start with when the store has none (later changes: POST /topology, a merge).
    #[arg(long, env = "ROMANAD_INITIAL_TOPOLOGY")]
    initial_topology: Option<PathBuf>,
    /// URL other components should use for this instance (default: http://LISTEN).
    #[arg(long, env = "ROMANAD_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// Check tokens on every route (on); `off` only where the network itself is trusted.
    #[arg(long, value_enum, default_value_t = Switch::On, env = "ROMANAD_AUTH")]
    auth: Switch,
    /// Seconds a host stays alive without a heartbeat from its agent; then its routes are withdrawn.
    #[arg(long, default_value_t = 2, env = "ROMANAD_HOST_LIVENESS_TTL")]
    host_liveness_ttl: i64,
    /// Seconds a host may stay dead before its endpoints' addresses are released (reclaim).
    #[arg(long, default_value_t = 600, env = "ROMANAD_DEAD_HOST_GRACE")]
    dead_host_grace: u64,
    /// Seconds an address may stay allocated with no endpoint (a CNI DEL that never came)
    /// before it is released.
    #[arg(long, default_value_t = 600, env = "ROMANAD_LEAK_GRACE")]
    leak_grace: u64,
    /// This replica's private token-signing key (Ed25519 PKCS#8 PEM, mode 0600; created when absent).
    /// Only its public key goes to the store. Default: DATA_DIR/signing-key.pem.
    #[arg(long, env = "ROMANAD_SIGNING_KEY")]
    signing_key: Option<PathBuf>,
    /// Lifetime of access tokens, in seconds.
    #[arg(long, default_value_t = 900, env = "ROMANAD_ACCESS_TOKEN_TTL")]
    access_token_ttl: u64,
    /// Serve HTTPS with this certificate chain (PEM) ...
    #[arg(long, env = "ROMANAD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// ... and this private key (PEM).
    #[arg(long, env = "ROMANAD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve HTTPS with a CA and certificate created in DATA_DIR/tls (for sandboxes and first steps).
    #[arg(long, env = "ROMANAD_TLS_SELF_SIGNED", conflicts_with = "tls_cert")]
    tls_self_signed: bool,
    /// The CA (PEM) that signed --tls-cert; written into admin.credentials so that `romana`
    /// trusts romanad.
    #[arg(long, env = "ROMANAD_TLS_CA", requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Issue a server certificate into DIR for the --tls-name names, then exit: DIR/server.pem
    /// and server.key, signed by the CA DIR/ca.pem + ca.key (made when absent, kept otherwise).
    #[arg(long, value_name = "DIR")]
    tls_issue: Option<PathBuf>,
    /// A name (DNS name or IP address) the issued certificate is valid for (repeatable).
    #[arg(long = "tls-name", value_name = "NAME", value_delimiter = ',', requires = "tls_issue")]
    tls_names: Vec<String>,
    /// Require client certificates signed by this CA (PEM), e.g. for agents.
    #[arg(long, env = "ROMANAD_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Milliseconds a client has to send a request's headers; also how long a keep-alive
    /// connection may sit idle between requests.
    #[arg(long, default_value_t = 10_000, env = "ROMANAD_HEADER_READ_TIMEOUT_MS")]
    header_read_timeout_ms: u64,
    /// Connections open at once (lowered to fit the open-file limit); more are closed at once.
    #[arg(long, default_value_t = 4096, env = "ROMANAD_MAX_CONNECTIONS")]
    max_connections: usize,
    /// Connections open at once from one address (IPv6: one /64).
    #[arg(long, default_value_t = 256, env = "ROMANAD_MAX_CONNECTIONS_PER_SOURCE")]
    max_connections_per_source: usize,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "ROMANAD_LOG_FORMAT")]
    log_format: LogFormat,
    /// Make a damaged embedded store openable, then exit: copies DATA_DIR/store.log beside it
    /// and cuts it to the intact records before the damage (see docs/operations.md).
    #[arg(long, conflicts_with = "etcd_endpoints")]
    recover_store: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Switch {
    On,
    Off,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

/// Keeps glibc from raising its mmap threshold after a large buffer is freed (argon2 uses ~19 MiB
/// per password check): otherwise such buffers later come from the heap and stay resident, and
/// resident memory stops following the state.
/// Makes the data directory private (0700): it holds the embedded store (password hashes), the
/// admin's credentials and this replica's signing key, and the store's files are made with the
/// process's umask.
fn private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mode =
        std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (mode 700)", dir.display()))?;
        tracing::info!(dir = %dir.display(), was = format!("{:o}", mode & 0o777), "made the data directory private (mode 700)");
    }
    Ok(())
}

/// Raises the open-file limit to its hard limit and returns the connection cap that fits in it
/// (64 descriptors kept for the store, etcd clients, logs and the listener), so that a full
/// table of connections makes romanad refuse new ones rather than fail its own file opens.
#[allow(unsafe_code)]
fn fit_connections(wanted: usize) -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return wanted;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    };
    let fits = usize::try_from(soft).unwrap_or(usize::MAX).saturating_sub(64).max(1);
    if fits < wanted {
        tracing::warn!(
            wanted,
            open_files = soft,
            cap = fits,
            "connection cap lowered to fit the open-file limit"
        );
    }
    wanted.min(fits)
}

#[cfg(target_env = "gnu")]
#[allow(unsafe_code)]
fn fix_malloc_thresholds() {
    // SAFETY: mallopt only sets allocator parameters; called once at start, before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 * 1024 * 1024);
    }
}

#[cfg(not(target_env = "gnu"))]
fn fix_malloc_thresholds() {}

/// Everything romanad creates (store, credentials, keys, certificates) is for its owner only,
/// whatever umask it was started with.
#[allow(unsafe_code)]
fn owner_only_files() {
    // SAFETY: umask only sets this process's file creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates the data directory 0700 and narrows whatever is in it to owner-only, saying so.
fn private_data_dir(dir: &std::path::Path) -> Result<()> {
    let narrowed = romana_store::private::make_private(dir)
        .with_context(|| format!("making the data directory {} owner-only", dir.display()))?;
    for t in narrowed {
        tracing::warn!(path = %t.path.display(), was = format!("{:o}", t.was), now = format!("{:o}", t.now),
            "narrowed a data directory entry to owner-only access");
    }
    Ok(())
}

/// `--recover-store`: one explicit repair, reported, then exit.
fn recover_store(dir: &std::path::Path) -> Result<()> {
    let r = EmbeddedStore::recover(dir)
        .with_context(|| format!("recovering the embedded store in {}", dir.display()))?;
    match (&r.problem, &r.backup) {
        (None, _) => println!("{}: intact ({} bytes), nothing changed", r.log.display(), r.kept_bytes),
        (Some(problem), backup) => {
            let backup = backup.as_ref().map_or_else(|| "-".to_owned(), |b| b.display().to_string());
            println!(
                "{}: {problem}; kept {} bytes, cut {} bytes ({} intact records after the damage given up); the whole file was saved as {backup}",
                r.log.display(),
                r.kept_bytes,
                r.dropped_bytes,
                r.intact_after
            );
            tracing::warn!(log = %r.log.display(), %problem, kept = r.kept_bytes, cut = r.dropped_bytes,
                intact_after = r.intact_after, %backup, "recovered the embedded store");
        }
    }
    Ok(())
}

/// `--tls-issue DIR`: one certificate issued, reported, then exit.
fn issue_tls(dir: &std::path::Path, names: &[String]) -> Result<()> {
    let done = tls::issue_into(dir, names, rustls_pki_types::UnixTime::now())?;
    let ca = if done.ca_created { "created" } else { "kept" };
    println!(
        "{ca} the CA {d}/ca.pem (its key {d}/ca.key stays with you; clients need only ca.pem)",
        d = dir.display()
    );
    println!("issued {}/server.pem and server.key for {}", dir.display(), done.names.join(", "));
    Ok(())
}

fn main() -> Result<()> {
    owner_only_files();
    fix_malloc_thresholds();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run())
}

async fn run() -> Result<()> {
    let flags = Flags::parse();
    init_logs(flags.log_format);
    if let Some(dir) = &flags.tls_issue {
        return issue_tls(dir, &flags.tls_names);
    }
    private_data_dir(&flags.data_dir)?;
    if flags.recover_store {
        return recover_store(&flags.data_dir);
    }
    let services: Vec<String> = if flags.services.is_empty() {
        romana_services::ALL_SERVICES.iter().map(|s| s.to_string()).collect()
    } else {
        for s in &flags.services {
            anyhow::ensure!(
                romana_services::ALL_SERVICES.contains(&s.as_str()),
                "unknown service {s:?}; choose from {}",
                romana_services::ALL_SERVICES.join(", ")
            );
        }
        flags.services.clone()
    };
    let initial_topology = match &flags.initial_topology {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?)
        }
        None => None,
    };
    private_dir(&flags.data_dir)?;
    let (store, store_text): (Arc<dyn Store>, String) = if flags.etcd_endpoints.is_empty() {
        let s = EmbeddedStore::open(&flags.data_dir)
            .await
            .with_context(|| format!("opening the embedded store in {}", flags.data_dir.display()))?;
        (Arc::new(s), format!("embedded {}", flags.data_dir.display()))
    } else {
        let s = EtcdStore::connect(&flags.etcd_endpoints).await.context("connecting to etcd")?;
        (Arc::new(s), format!("etcd {}", flags.etcd_endpoints.join(",")))
    };
    let listener = tokio::net::TcpListener::bind(flags.listen)
        .await
        .with_context(|| format!("listening on {}", flags.listen))?;
    let addr = listener.local_addr()?;
    let tls = if flags.tls_self_signed {
        let names = vec!["localhost".to_owned(), addr.ip().to_string()];
        Some(tls::self_signed(&flags.data_dir, &names)?)
    } else if let (Some(c), Some(k)) = (&flags.tls_cert, &flags.tls_key) {
        Some(tls::Material {
            cert_pem: std::fs::read_to_string(c).with_context(|| format!("reading {}", c.display()))?,
            key_pem: std::fs::read_to_string(k).with_context(|| format!("reading {}", k.display()))?,
            ca_pem: match &flags.tls_ca {
                Some(p) => {
                    Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
                }
                None => None,
            },
        })
    } else {
        None
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = flags.advertise_url.clone().unwrap_or_else(|| format!("{scheme}://{addr}"));
    let opts = romana_services::Options {
        prefix: flags.prefix.clone(),
        services,
        instance: format!("{}-{}", std::process::id(), addr.port()),
        url: url.clone(),
        initial_topology,
        auth: flags.auth == Switch::On,
        access_ttl: flags.access_token_ttl,
        liveness_ttl: flags.host_liveness_ttl,
        graces: romana_services::consistency::Graces {
            leak_ms: flags.leak_grace.saturating_mul(1000),
            dead_ms: flags.dead_host_grace.saturating_mul(1000),
        },
        credentials: Some(flags.data_dir.join("admin.credentials")),
        signing_key: Some(
            flags.signing_key.clone().unwrap_or_else(|| flags.data_dir.join("signing-key.pem")),
        ),
        ca_pem: tls.as_ref().and_then(|t| t.ca_pem.clone()),
    };
    let state = romana_services::start(store, &opts)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {:?}", e.message, e.details))?;
    let app = romana_services::router(state);
    println!("romanad listening on {url} (store: {store_text})");
    tracing::info!(%url, store = %store_text, auth = flags.auth == Switch::On, "romanad ready");
    let acceptor = match tls {
        Some(m) => {
            let client_ca = match &flags.tls_client_ca {
                Some(p) => {
                    Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
                }
                None => None,
            };
            let config = tls::server_config(&m, client_ca.as_deref())?;
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
        }
        None => None,
    };
    let limits = serve::Limits {
        header_read: std::time::Duration::from_millis(flags.header_read_timeout_ms.max(1)),
        tls_handshake: std::time::Duration::from_secs(5),
        max_connections: fit_connections(flags.max_connections.max(1)),
        per_source: flags.max_connections_per_source.max(1),
        drain: std::time::Duration::from_secs(10),
    };
    // Handlers see the peer's address (logins lock per source address).
    serve::serve(listener, acceptor, app, limits, shutdown_signal()).await;
    Ok(())
}
