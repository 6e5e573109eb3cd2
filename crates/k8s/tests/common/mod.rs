//! What the controller's integration tests and benchmarks share: romanad in the test process
//! (memory store, authentication on) with a `service` user for the controller, the test
//! Kubernetes API server, kubectl against it, and the controller binary as a process (killed on
//! drop).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use romana_api::rest::{Credentials, UserRequest};
use romana_client::Client;
use romana_kube_testserver::ApiServer;
use romana_test_support::TempDir;

pub const FLAT: &str = r#"{"networks":[{"name":"pods","cidr":"10.20.0.0/16","block_mask":28}],"topologies":[{"networks":["pods"],"map":[{"groups":[]}]}]}"#;

pub struct Env {
    pub dir: TempDir,
    pub api: ApiServer,
    pub kubeconfig: PathBuf,
    pub admin: Arc<Client>,
    /// The admin's credentials file.
    pub admin_creds: PathBuf,
    /// The controller's credentials (a `service` user).
    pub creds: PathBuf,
    pub url: String,
}

impl Env {
    /// romanad inside the test process.
    pub async fn start(tag: &str) -> Env {
        Env::start_with(tag, FLAT).await
    }

    /// romanad inside the test process, starting with `topology` (JSON).
    pub async fn start_with(tag: &str, topology: &str) -> Env {
        let dir = TempDir::new(tag);
        let admin_creds = dir.path().join("admin.credentials");
        let url = romana_services::serve_loopback(
            tag,
            Some(serde_json::from_str(topology).expect("topology")),
            Some(admin_creds.clone()),
        )
        .await
        .expect("romanad starts");
        Env::finish(dir, &url, &admin_creds).await
    }

    /// A romanad started by the caller (`url`, its admin credentials file).
    pub async fn with_romanad(tag: &str, url: &str, admin_creds: &Path) -> Env {
        Env::finish(TempDir::new(tag), url, admin_creds).await
    }

    async fn finish(dir: TempDir, url: &str, admin_creds: &Path) -> Env {
        let url = url.to_owned();
        let text = std::fs::read_to_string(admin_creds).expect("admin credentials");
        let admin = Client::from_credentials(&serde_json::from_str(&text).expect("credentials parse"))
            .await
            .expect("admin login");
        let admin = Arc::new(admin);
        let admin_creds = admin_creds.to_owned();
        let password = "k8s-controller-password-1".to_owned();
        let user = UserRequest {
            name: "romana-k8s".into(),
            password: password.clone(),
            roles: vec!["service".into()],
            tenants: vec![],
            hosts: vec![],
        };
        admin.create_user(&user).await.expect("service user");
        let creds = dir.path().join("k8s.credentials");
        let c = Credentials { endpoint: url.clone(), username: user.name, password, ca: None };
        std::fs::write(&creds, serde_json::to_string(&c).expect("serializes")).expect("write credentials");
        let api = ApiServer::start().expect("API server starts");
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        let env = Env { dir, api, kubeconfig, admin, admin_creds, creds, url };
        env.kubectl_f("create", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: romana-system\n");
        env
    }

    /// Runs kubectl against the test API server; panics with its output when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_in(args, None)
    }

    /// `kubectl ARGS -f -` with `yaml` on standard input.
    pub fn kubectl_f(&self, verb: &str, yaml: &str) -> String {
        self.kubectl_in(&[verb, "--validate=false", "-f", "-"], Some(yaml))
    }

    fn kubectl_in(&self, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let mut input = child.stdin.take().expect("piped stdin");
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).expect("write kubectl input");
        }
        drop(input);
        let out = child.wait_with_output().expect("kubectl finishes");
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn controller(&self, identity: &str, extra: &[&str]) -> Controller {
        Controller::start(self, identity, extra)
    }
}

/// The controller binary, killed (SIGKILL) on drop.
pub struct Controller {
    child: Option<Child>,
    pub metrics_url: String,
    pub log: PathBuf,
    pub identity: String,
}

impl Controller {
    pub fn start(env: &Env, identity: &str, extra: &[&str]) -> Controller {
        let log = env.dir.path().join(format!("{identity}.log"));
        Controller::spawn(env, identity, &log, extra, "info")
    }

    /// The controller with the tests' short lease and resync interval unless `extra` names
    /// them (the benchmarks' own), its log in `log` at level `log_level` (or RUST_LOG's).
    pub fn spawn(env: &Env, identity: &str, log: &Path, extra: &[&str], log_level: &str) -> Controller {
        let log = log.to_owned();
        let mut args = vec!["--listen", "127.0.0.1:0", "--identity", identity];
        for (flag, value) in [("--lease-duration", "2"), ("--resync-interval", "2")] {
            if !extra.contains(&flag) {
                args.extend([flag, value]);
            }
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_romana-k8s"))
            .arg("--kubeconfig")
            .arg(&env.kubeconfig)
            .arg("--credentials")
            .arg(&env.creds)
            .args(args)
            .args(extra)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| log_level.into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log file")))
            .spawn()
            .expect("romana-k8s starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
            panic!("romana-k8s did not start: {}", std::fs::read_to_string(&log).unwrap_or_default())
        });
        let url = line.strip_prefix("romana-k8s listening on ").expect("ready line").trim().to_owned();
        Controller { child: Some(child), metrics_url: url, log, identity: identity.to_owned() }
    }

    /// The process's id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn metrics(&self) -> String {
        match romana_client::http().get(format!("{}/metrics", self.metrics_url)).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The value of a metric line (`name{labels}` exactly as printed), if present.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    pub async fn leads(&self) -> bool {
        self.metric("romana_k8s_leader").await == Some(1.0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- romana-k8s {} log ---\n{}", self.identity, self.log_text());
        }
    }
}

/// Polls `f` until it returns `Some`, for at most `secs` seconds (a liveness bound, not a
/// measurement); panics naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
