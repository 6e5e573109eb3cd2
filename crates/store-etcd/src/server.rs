//! `EtcdServer`: a throwaway etcd on 127.0.0.1 with ports chosen at run time and a temporary data
//! directory, killed and removed when dropped. For tests and benchmarks.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct EtcdServer {
    /// `None` while stopped (`kill9`).
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    pub endpoint: String,
}

/// One etcd process's name and ports.
pub(crate) struct Member<'a> {
    pub(crate) name: &'a str,
    pub(crate) client_port: u16,
    pub(crate) peer_port: u16,
}

impl Member<'_> {
    /// Starts etcd as this member of `initial_cluster` (`name=peer-url,...`), data in `dir/data`,
    /// log appended to `dir/etcd.log`.
    pub(crate) fn spawn(&self, dir: &Path, initial_cluster: &str, token: &str) -> std::io::Result<Child> {
        let endpoint = format!("http://127.0.0.1:{}", self.client_port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("etcd.log"))?;
        Command::new("etcd")
            .args(["--name", self.name, "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", initial_cluster, "--initial-cluster-token", token])
            // The election settings a deployment should use (docs/operations.md).
            .args(["--heartbeat-interval", &crate::ETCD_HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &crate::ETCD_ELECTION_MS.to_string()])
            .arg(format!("--pre-vote={}", crate::ETCD_PRE_VOTE))
            // JSON lines with times to the millisecond (`election_log.rs` reads the elections).
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            // Measuring other settings without a rebuild (etcd takes a flag's last value):
            // `ROMANA_TEST_ETCD_FLAGS="--election-timeout 500"`.
            .args(std::env::var("ROMANA_TEST_ETCD_FLAGS").unwrap_or_default().split_whitespace())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
    }
}

/// Waits until something accepts connections on `port` (its log is in `dir`).
pub(crate) fn wait_port(port: u16, dir: &Path) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            std::thread::sleep(Duration::from_millis(300));
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(std::io::Error::other(format!("etcd did not start; see {}", dir.join("etcd.log").display())))
}

/// Whether Debian's etcd is installed.
pub(crate) fn installed() -> bool {
    Command::new("etcd").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

pub(crate) fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdServer {
    /// Starts `etcd` (Debian's etcd-server) and waits until it answers; `None` if it is not installed.
    pub fn start(tag: &str) -> std::io::Result<Option<EtcdServer>> {
        if !installed() {
            return Ok(None);
        }
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let dir =
            std::env::temp_dir().join(format!("romana-etcd-{tag}-{}-{client_port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let mut server = EtcdServer { child: None, dir, client_port, peer_port, endpoint };
        server.spawn()?;
        Ok(Some(server))
    }

    /// Runs etcd on this server's data directory and ports, and waits until it accepts connections.
    fn spawn(&mut self) -> std::io::Result<()> {
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let member = Member { name: "romana-test", client_port: self.client_port, peer_port: self.peer_port };
        self.child = Some(member.spawn(&self.dir, &format!("romana-test={peer_url}"), "romana-test")?);
        wait_port(self.client_port, &self.dir)
    }

    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint.clone()]
    }

    /// Sends SIGSTOP / SIGCONT, to test an unresponsive store.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args([sig, &c.id().to_string()]).status();
        }
    }

    /// Kills etcd with SIGKILL, as a crash would; its data directory stays.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd again on the same data directory and ports (after `kill9`, or killing it first).
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill9();
        self.spawn()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
