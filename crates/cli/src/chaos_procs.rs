//! `romana chaos`: the processes of its own control plane, started, killed with SIGKILL and
//! restarted on the same ports and data: etcd members (Debian's etcd-server) and romanad
//! replicas, all on 127.0.0.1 with ports chosen at run time. Here rather than in the test
//! fixtures (`romana-test-support`, `romana-store-etcd`'s `test-util`), so that the operator's
//! `romana` links no test code. Every process is killed when its guard is dropped.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// etcd's `--heartbeat-interval` and `--election-timeout` (ms) and `--pre-vote`: the values
/// docs/operations.md recommends and the tests' harness uses (`romana_store_etcd::{ETCD_HEARTBEAT_MS,
/// ETCD_ELECTION_MS, ETCD_PRE_VOTE}`; a unit test holds them equal).
pub const ETCD_HEARTBEAT_MS: u32 = 50;
pub const ETCD_ELECTION_MS: u32 = 300;
pub const ETCD_PRE_VOTE: bool = true;

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts connections on `port`; `what` names the process and its log.
fn wait_port(port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not accept connections on port {port} within 20 s")
}

fn stop(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// An etcd cluster of `n` members, data and logs under `dir/etcd-<i>`.
#[derive(Debug)]
pub struct Etcd {
    dir: PathBuf,
    /// Client and peer port of each member.
    ports: Vec<(u16, u16)>,
    /// `None` while a member is stopped.
    children: Vec<Option<Child>>,
}

impl Etcd {
    /// Starts the members and waits until each accepts connections.
    pub fn start(dir: &Path, n: usize) -> Result<Etcd> {
        let installed =
            Command::new("etcd").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
        if installed.is_err() {
            bail!("etcd is not installed (Debian's etcd-server; scripts/setup.sh installs it)");
        }
        let mut ports = Vec::new();
        for _ in 0..n {
            ports.push((free_port()?, free_port()?));
        }
        let mut etcd = Etcd { dir: dir.to_owned(), ports, children: (0..n).map(|_| None).collect() };
        for i in 0..n {
            etcd.spawn(i)?;
        }
        for i in 0..n {
            wait_port(etcd.ports[i].0, &format!("etcd member {i} (log {})", etcd.log(i).display()))?;
        }
        Ok(etcd)
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.join(format!("etcd-{i}.log"))
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let data = self.dir.join(format!("etcd-{i}"));
        std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        let initial: Vec<String> =
            self.ports.iter().enumerate().map(|(k, (_, p))| format!("m{k}=http://127.0.0.1:{p}")).collect();
        let (client, peer) = self.ports[i];
        let (client_url, peer_url) =
            (format!("http://127.0.0.1:{client}"), format!("http://127.0.0.1:{peer}"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log(i))?;
        let token = format!("romana-chaos-{}", self.ports[0].0);
        let child = Command::new("etcd")
            .args(["--name", &format!("m{i}"), "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &initial.join(","), "--initial-cluster-token", &token])
            .args(["--heartbeat-interval", &ETCD_HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ETCD_ELECTION_MS.to_string()])
            .arg(format!("--pre-vote={ETCD_PRE_VOTE}"))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd")?;
        self.children[i] = Some(child);
        Ok(())
    }

    /// Every member's client URL, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.ports.iter().map(|(c, _)| format!("http://127.0.0.1:{c}")).collect()
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children.get(i)?.as_ref().map(Child::id)
    }

    /// SIGKILL of member `i`; its data stays.
    pub fn kill9(&mut self, i: usize) {
        if let Some(c) = self.children.get_mut(i) {
            stop(c);
        }
    }

    /// Member `i` again, on its data and ports (it rejoins the cluster).
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.kill9(i);
        self.spawn(i)?;
        wait_port(self.ports[i].0, &format!("etcd member {i} (log {})", self.log(i).display()))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for c in &mut self.children {
            stop(c);
        }
    }
}

/// A romanad replica: `bin` with `args` and `--listen`, its log (stderr) appended to `log`.
#[derive(Debug)]
pub struct Replica {
    child: Option<Child>,
    pub url: String,
    bin: PathBuf,
    args: Vec<String>,
    log: PathBuf,
}

impl Replica {
    /// Starts it on 127.0.0.1 (a port of the kernel's choice) and waits for its ready line.
    pub fn start(bin: &Path, args: &[String], log: &Path) -> Result<Replica> {
        let mut r = Replica {
            child: None,
            url: String::new(),
            bin: bin.to_owned(),
            args: args.to_vec(),
            log: log.to_owned(),
        };
        r.spawn("127.0.0.1:0")?;
        Ok(r)
    }

    fn spawn(&mut self, listen: &str) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut child = Command::new(&self.bin)
            .args(&self.args)
            .args(["--listen", listen])
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let stdout = child.stdout.take().context("romanad's stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        let mut child = Some(child);
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                stop(&mut child);
                bail!("romanad did not print its ready line within 30 s (log {})", self.log.display());
            }
        };
        let Some(url) = line.strip_prefix("romanad listening on ").and_then(|r| r.split_whitespace().next())
        else {
            stop(&mut child);
            bail!("unexpected first line from romanad: {line}");
        };
        self.url = url.to_owned();
        self.child = child;
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        stop(&mut self.child);
    }

    /// The same command again on the same address (retrying briefly while the port is freed).
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        let listen = self.url.trim_start_matches("http://").to_owned();
        let mut last = None;
        for _ in 0..50 {
            match self.spawn(&listen) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("restart failed")))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill9();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn etcd_runs_with_the_settings_the_tests_use() {
        assert_eq!(
            (super::ETCD_HEARTBEAT_MS, super::ETCD_ELECTION_MS, super::ETCD_PRE_VOTE),
            (
                romana_store_etcd::ETCD_HEARTBEAT_MS,
                romana_store_etcd::ETCD_ELECTION_MS,
                romana_store_etcd::ETCD_PRE_VOTE
            )
        );
    }
}
