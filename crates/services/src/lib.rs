//! romanad's services: Root, Tenant, Topology, IPAM, Policy and Watch as REST handlers over the
//! pure cores, with one store transaction per change. `router` assembles the services an
//! instance runs; `start` loads the IPAM replica and registers the instance with Root.
//!
//! Knows nothing about sockets or processes (the `romanad` binary does) or the kernel.

pub mod auth;
pub mod auth_state;
pub mod authenticate;
pub mod background;
pub mod check_api;
pub mod check_tracker;
pub mod consistency;
pub mod consistency_kernel;
pub mod consistency_reports;
pub mod endpoints;
pub mod error;
pub mod extract;
pub mod hash_pool;
pub mod ipam_api;
pub(crate) mod ipam_catch_up;
pub(crate) mod ipam_feed;
pub mod ipam_sync;
pub mod ipam_view;
pub(crate) mod ipam_writes;
pub mod jitter;
pub mod key_file;
pub mod keys;
pub(crate) mod leader;
pub mod legacy_openstack;
pub mod liveness;
pub mod liveness_api;
pub mod login_limit;
pub mod managed_hosts;
pub mod metrics;
pub mod netpols;
pub mod openapi;
pub mod ops;
pub mod pod_join;
pub mod pods;
pub mod policies;
pub mod policy_store;
pub mod reach;
pub mod reach_api;
pub mod reclaim;
pub mod registration;
pub mod rest_routes;
pub mod root;
pub mod route_cache;
pub mod route_manager;
pub mod route_sets;
pub mod scope;
pub mod service_error;
pub mod state;
pub mod tenant_store;
pub mod tenants;
pub mod ui;
pub mod vips;
pub mod vips_assign;
pub mod vips_checks;
pub mod vips_leader;
pub mod watch;
pub mod watch_filter;
pub mod watch_hub;
pub mod watch_scope;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use romana_api::topology::TopologyRequest;
use romana_store::Store;

pub use state::AppState;

/// Every service romanad can run.
pub const ALL_SERVICES: &[&str] = &["root", "auth", "tenant", "topology", "ipam", "policy", "watch"];

/// Largest request body accepted (a big topology file fits).
pub const BODY_LIMIT: usize = 4 << 20;

/// Options for one romanad instance.
#[derive(Debug, Clone)]
pub struct Options {
    pub prefix: String,
    pub services: Vec<String>,
    pub instance: String,
    pub url: String,
    pub initial_topology: Option<TopologyRequest>,
    /// Check tokens on every route (secure by default); off only for tests and trusted setups.
    pub auth: bool,
    /// Where the first admin's credentials go (with the CA's PEM when TLS is on).
    pub credentials: Option<std::path::PathBuf>,
    pub ca_pem: Option<String>,
    /// Seconds an access token lives.
    pub access_ttl: u64,
    /// Seconds a host stays alive without a heartbeat (its routes are withdrawn after).
    pub liveness_ttl: i64,
    /// This replica's private signing key (PKCS#8 PEM, 0600; created when absent). `None`: a key
    /// in memory only, new at every start (in-process servers of tests and benchmarks).
    pub signing_key: Option<std::path::PathBuf>,
    /// How long a dead host's endpoints and an allocation without endpoint wait before reclaim.
    pub graces: consistency::Graces,
}

/// Every service on a memory store, served on 127.0.0.1 at a port chosen at run time: romanad
/// inside the calling process, for tests and benchmarks. With `credentials`, authentication is on
/// and the first admin's credentials are written there; without, it is off. Returns the URL.
#[cfg(feature = "test-util")]
pub async fn serve_loopback(
    instance: &str,
    initial_topology: Option<TopologyRequest>,
    credentials: Option<std::path::PathBuf>,
) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let opts = Options {
        prefix: "/romana/".into(),
        services: ALL_SERVICES.iter().map(|s| s.to_string()).collect(),
        instance: instance.into(),
        url: url.clone(),
        initial_topology,
        auth: credentials.is_some(),
        credentials,
        ca_pem: None,
        access_ttl: 900,
        liveness_ttl: 2,
        signing_key: None,
        graces: consistency::Graces::default(),
    };
    let store = Arc::new(romana_store::MemStore::new());
    let state = start(store, &opts).await.map_err(|e| std::io::Error::other(e.message))?;
    tokio::spawn(
        axum::serve(listener, router(state).into_make_service_with_connect_info::<std::net::SocketAddr>())
            .into_future(),
    );
    Ok(url)
}

/// Loads the IPAM replica and builds the shared state.
pub async fn start(store: Arc<dyn Store>, opts: &Options) -> error::ApiResult<AppState> {
    let keys = keys::Keys::new(&opts.prefix);
    let ipam = ipam_sync::IpamHandle::start(
        Arc::clone(&store),
        keys.clone(),
        opts.initial_topology.clone(),
        Arc::new(jitter::SplitMix::from_os()),
    )
    .await?;
    let creds = opts.credentials.clone().map(|p| (p, opts.url.clone(), opts.ca_pem.clone()));
    let auth = auth::AuthState::start(
        Arc::clone(&store),
        &keys,
        opts.auth,
        opts.access_ttl,
        creds,
        opts.signing_key.clone(),
    )
    .await?;
    let liveness = Arc::new(std::sync::RwLock::new(route_manager::Liveness::new(opts.liveness_ttl)));
    if opts.services.iter().any(|s| s == "topology") {
        route_manager::spawn(
            Arc::clone(&store),
            keys.clone(),
            ipam.clone(),
            Arc::clone(&liveness),
            opts.instance.clone(),
        );
    }
    registration::spawn_registration(
        Arc::clone(&store),
        keys.clone(),
        opts.services.clone(),
        opts.instance.clone(),
        opts.url.clone(),
    );
    let state = AppState {
        watch_hub: watch_hub::Hub::new(Arc::clone(&store), keys.clone()),
        check: Arc::new(check_tracker::Tracker::new(opts.graces)),
        store,
        keys,
        ipam,
        metrics: Arc::new(metrics::Metrics::new()),
        auth,
        liveness,
        services: Arc::new(opts.services.clone()),
        instance: Arc::new(opts.instance.clone()),
        url: Arc::new(opts.url.clone()),
    };
    if opts.services.iter().any(|s| s == "topology") {
        reclaim::spawn(state.clone());
    }
    Ok(state)
}

/// The HTTP router for the services this instance runs.
pub fn router(state: AppState) -> Router {
    let on = |s: &str| state.services.iter().any(|x| x == s);
    let mut app = Router::new().merge(ops::routes()).merge(ui::routes());
    if on("root") {
        app = app.merge(root::routes());
    }
    if on("auth") {
        app = app.merge(auth::routes());
    }
    if on("tenant") {
        app = app.merge(tenants::routes());
    }
    if on("topology") {
        app = app
            .merge(ipam_api::topology_routes())
            .merge(liveness_api::routes())
            .merge(endpoints::routes())
            .merge(reach_api::routes())
            .merge(vips::routes())
            .merge(check_api::routes())
            .merge(pods::routes());
    }
    if on("ipam") {
        app = app.merge(ipam_api::ipam_routes());
    }
    if on("policy") {
        app = app.merge(policies::routes()).merge(netpols::routes());
    }
    if on("watch") {
        app = app.merge(watch::routes());
    }
    app.route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .fallback(ops::fallback)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(axum::middleware::from_fn(ops::json_errors))
        // Inside `observe`, so the tokenless legacy calls are logged and counted like any other.
        .layer(axum::middleware::from_fn_with_state(state.clone(), legacy_openstack::allowance))
        .layer(axum::middleware::from_fn_with_state(state.clone(), ops::observe))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
