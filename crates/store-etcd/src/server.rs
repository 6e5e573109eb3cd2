//! `EtcdServer`: a throwaway etcd on 127.0.0.1 with ports chosen at run time and a temporary data
//! directory, killed and removed when dropped. For tests and benchmarks.

use std::net::TcpListener;
use std::path::PathBuf;
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

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl EtcdServer {
    /// Starts `etcd` (Debian's etcd-server) and waits until it answers; `None` if it is not installed.
    pub fn start(tag: &str) -> std::io::Result<Option<EtcdServer>> {
        if Command::new("etcd").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err()
        {
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
        let endpoint = &self.endpoint;
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("etcd.log"))?;
        let child = Command::new("etcd")
            .args(["--name", "romana-test", "--data-dir"])
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", endpoint, "--advertise-client-urls", endpoint])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("romana-test={peer_url}")])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.client_port)).is_ok() {
                std::thread::sleep(Duration::from_millis(300));
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(std::io::Error::other(format!("etcd did not start; see {}", self.dir.join("etcd.log").display())))
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
