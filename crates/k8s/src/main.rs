//! `romana-k8s`: flags, the Kubernetes and romanad connections, the leader election, the
//! watchers and the reconcile loop, and the /metrics port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use romana_api::rest::Credentials;
use romana_k8s::{controller, leader, metrics, permissions, romanad, serve, watch};

/// Keeps romanad equal to a Kubernetes API server: namespaces are tenants, pods are pod records
/// (labels and named ports of their endpoints), nodes are hosts, NetworkPolicies are romanad's.
#[derive(Debug, Parser)]
#[command(name = "romana-k8s", version)]
struct Args {
    /// kubeconfig file; without it (and without KUBECONFIG) the in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// romanad's URL(s), comma separated; replaces the credentials file's endpoint.
    #[arg(long, env = "ROMANA_ENDPOINT")]
    endpoint: Option<String>,
    /// Credentials file of a `service`-role user (`romana user create romana-k8s --role service
    /// --credentials-out FILE`).
    #[arg(long, env = "ROMANA_CREDENTIALS", default_value = "/var/lib/romana/k8s.credentials")]
    credentials: PathBuf,
    /// Address of /metrics and /healthz.
    #[arg(long, default_value = "127.0.0.1:9301")]
    listen: SocketAddr,
    /// Node label whose value becomes the host's `rack` tag.
    #[arg(long, default_value = "romana.io/rack")]
    rack_label: String,
    /// Seconds after a pod's deletion from the API before its endpoint and address are released
    /// when CNI DEL never came (node lost).
    #[arg(long, default_value_t = 300)]
    pod_reclaim_grace: u64,
    /// Seconds between full reads of romanad (drift repair).
    #[arg(long, default_value_t = 60)]
    resync_interval: u64,
    #[arg(long, default_value = "romana-system")]
    lease_namespace: String,
    #[arg(long, default_value = "romana-k8s")]
    lease_name: String,
    /// Seconds a leader's Lease lasts without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// This replica's name in the Lease [default: $POD_NAME, else the host name].
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Print the Kubernetes API calls this controller makes (JSON) and exit.
    #[arg(long)]
    print_permissions: bool,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("romana-k8s-{}", std::process::id()))
}

async fn kube_client(path: Option<&PathBuf>) -> Result<kube::Client> {
    let config = match path {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("reading kubeconfig {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using kubeconfig {}", p.display()))?
        }
        None => kube::Config::incluster().context("no --kubeconfig or KUBECONFIG, and not in a cluster")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.print_permissions {
        println!("{}", permissions::json());
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    romana_client::ensure_crypto();

    let text = std::fs::read_to_string(&args.credentials)
        .with_context(|| format!("reading credentials {}", args.credentials.display()))?;
    let creds: Credentials = serde_json::from_str(&text)
        .with_context(|| format!("parsing credentials {}", args.credentials.display()))?;
    let endpoints = args
        .endpoint
        .as_ref()
        .map(|e| e.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect::<Vec<_>>());
    let romanad = romanad::Romanad::connect(creds, endpoints).await.context("logging in to romanad")?;
    let kube = kube_client(args.kubeconfig.as_ref()).await?;

    let metrics = Arc::new(metrics::Metrics::default());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    tokio::spawn(axum::serve(listener, serve::router(metrics.clone())).into_future());
    println!("romana-k8s listening on http://{addr}");

    let identity = args.identity.clone().filter(|s| !s.is_empty()).unwrap_or_else(hostname);
    let (leader_tx, leader_rx) = tokio::sync::watch::channel(false);
    let election = leader::Election {
        namespace: args.lease_namespace.clone(),
        name: args.lease_name.clone(),
        identity: identity.clone(),
        duration: Duration::from_secs(args.lease_duration.max(1)),
    };
    tracing::info!(%identity, lease = %format!("{}/{}", election.namespace, election.name), "starting");
    tokio::spawn(leader::run(
        kube::Api::<Lease>::namespaced(kube.clone(), &args.lease_namespace),
        election,
        leader_tx,
        metrics.clone(),
    ));
    let (tx, rx) = tokio::sync::mpsc::channel(4096);
    watch::spawn_all(&kube, args.rack_label.clone(), tx, metrics.clone());
    let settings = controller::Settings {
        grace: Duration::from_secs(args.pod_reclaim_grace),
        resync: Duration::from_secs(args.resync_interval.max(1)),
        identity,
    };
    tokio::select! {
        () = controller::run(rx, romanad, kube, leader_rx, metrics, settings) => {}
        r = tokio::signal::ctrl_c() => r.context("waiting for a signal")?,
    }
    Ok(())
}
