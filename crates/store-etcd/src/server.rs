//! `EtcdServer`: a throwaway etcd on 127.0.0.1 with ports chosen at run time and a temporary data
//! directory, killed and removed when dropped. For tests and benchmarks.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct EtcdServer {
    child: Child,
    dir: PathBuf,
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
        let (client, peer) = (free_port()?, free_port()?);
        let dir = std::env::temp_dir().join(format!("romana-etcd-{tag}-{}-{client}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.join("etcd.log"))?;
        let child = Command::new("etcd")
            .args(["--name", "romana-test", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &endpoint, "--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("romana-test={peer_url}")])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let server = EtcdServer { child, dir, endpoint };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", client)).is_ok() {
                std::thread::sleep(Duration::from_millis(300));
                return Ok(Some(server));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(std::io::Error::other(format!(
            "etcd did not start; see {}",
            server.dir.join("etcd.log").display()
        )))
    }

    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint.clone()]
    }

    /// Sends SIGSTOP / SIGCONT, to test an unresponsive store.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill").args([sig, &self.child.id().to_string()]).status();
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
