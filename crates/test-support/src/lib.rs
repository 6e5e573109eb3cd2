//! Test fixtures: `TempDir` (removed on drop) and `Romanad` (a romanad process on 127.0.0.1 with a
//! port chosen at run time, killed on drop). Used by tests only.

pub mod prom;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("romana-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create a temporary directory");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running romanad.
#[derive(Debug)]
pub struct Romanad {
    child: Option<Child>,
    pub url: String,
    bin: PathBuf,
    args: Vec<String>,
    log: Option<PathBuf>,
}

impl Romanad {
    /// Starts `bin` with `args` plus `--listen 127.0.0.1:0` and waits for its ready line.
    pub fn start(bin: &Path, args: &[String]) -> std::io::Result<Romanad> {
        Romanad::start_logged(bin, args, None)
    }

    /// Like `start`, with romanad's log (stderr) going to `log`.
    pub fn start_logged(bin: &Path, args: &[String], log: Option<&Path>) -> std::io::Result<Romanad> {
        let mut r = Romanad {
            child: None,
            url: String::new(),
            bin: bin.to_owned(),
            args: args.to_vec(),
            log: log.map(Path::to_owned),
        };
        r.spawn("127.0.0.1:0")?;
        Ok(r)
    }

    fn spawn(&mut self, listen: &str) -> std::io::Result<()> {
        let mut child = Command::new(&self.bin)
            .args(&self.args)
            .args(["--listen", listen])
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(match &self.log {
                Some(p) => Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(p)?),
                None => Stdio::inherit(),
            })
            .spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(l)) = lines.next() {
                let _ = tx.send(l);
            }
            for _ in lines {}
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let line = rx
            .recv_timeout(deadline - Instant::now())
            .map_err(|_| std::io::Error::other("romanad did not become ready in 30 s"))?;
        let url = line
            .strip_prefix("romanad listening on ")
            .and_then(|r| r.split_whitespace().next())
            .ok_or_else(|| std::io::Error::other(format!("unexpected first line from romanad: {line}")))?;
        self.url = url.to_owned();
        self.child = Some(child);
        Ok(())
    }

    /// Kills the process with SIGKILL (no cleanup at all), as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the same command again on the same address.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill9();
        let listen = self.url.trim_start_matches("http://").to_owned();
        // The port was just freed; retry briefly if the kernel has not released it yet.
        let mut last = None;
        for _ in 0..50 {
            match self.spawn(&listen) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("restart failed")))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Romanad {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A network namespace made by a test (`ip netns add`), deleted on drop even when the test
/// fails. Name it with a unique prefix and the process id.
#[derive(Debug)]
pub struct Netns(pub String);

impl Netns {
    /// `None` when namespaces cannot be made here (not root, or no iproute2): callers skip.
    pub fn new(name: &str) -> Option<Netns> {
        let ok = Command::new("ip").args(["netns", "add", name]).status().is_ok_and(|s| s.success());
        ok.then(|| Netns(name.to_owned()))
    }

    /// Runs `ip -n NAME ARGS` (arguments split on whitespace); panics with ip's message on failure.
    pub fn ip(&self, args: &str) -> String {
        let out =
            Command::new("ip").args(["-n", &self.0]).args(args.split_whitespace()).output().expect("ip runs");
        assert!(out.status.success(), "ip -n {} {args}: {}", self.0, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Another binary of the workspace, next to `this` (a `CARGO_BIN_EXE_*` path): `cargo test
/// --workspace` builds every binary before any test runs.
pub fn sibling_bin(this: &str, name: &str) -> PathBuf {
    let p = Path::new(this).with_file_name(name);
    assert!(
        p.exists(),
        "{} is not built; run `cargo build --workspace` (or test with --workspace)",
        p.display()
    );
    p
}

/// Two hosts as namespaces `PREFIX-PID-a` and `-b` joined by a veth pair `eth0` with
/// 192.168.88.1/24 and .2/24 (inside the namespaces only). Both deleted by their guards.
#[derive(Debug)]
pub struct HostPair(pub Netns, pub Netns);

impl HostPair {
    pub fn new(prefix: &str) -> Option<HostPair> {
        let a = Netns::new(&format!("{prefix}-{}-a", std::process::id()))?;
        let b = Netns::new(&format!("{prefix}-{}-b", std::process::id()))?;
        a.ip(&format!("link add eth0 type veth peer name eth0 netns {}", b.0));
        a.ip("addr add 192.168.88.1/24 dev eth0");
        b.ip("addr add 192.168.88.2/24 dev eth0");
        a.ip("link set eth0 up");
        b.ip("link set eth0 up");
        Some(HostPair(a, b))
    }
}
