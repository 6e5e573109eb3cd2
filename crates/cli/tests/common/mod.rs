//! What the sandbox tests and the failover benchmark share: a romanad process of their own with
//! a sandbox on it, `romana` run against that sandbox, a guard that runs `sandbox down` even when
//! a test fails half-way, and the namespace helpers.

use std::path::PathBuf;
use std::process::{Command, Output};

use romana_test_support::{Romanad, TempDir, sibling_bin};

/// One sandbox of a test: romanad's URL and admin credentials, the state directory, the name.
pub struct Sandbox {
    pub url: String,
    pub creds: PathBuf,
    pub state: PathBuf,
    pub name: String,
}

impl Sandbox {
    /// romanad (embedded store in `dir`) and a sandbox on it named `letter` and this process's
    /// id (to be brought up by the caller), once the agent and plugin it runs are found built
    /// beside `romana`. Bind both (`let (_romanad, sb) = ...`): the sandbox goes down first.
    pub fn on_new_romanad(dir: &TempDir, letter: &str) -> (Romanad, Sandbox) {
        for bin in ["romana-agent", "romana-cni"] {
            sibling_bin(env!("CARGO_BIN_EXE_romana"), bin);
        }
        let store = dir.path().join("store");
        let romanad_bin = sibling_bin(env!("CARGO_BIN_EXE_romana"), "romanad");
        let romanad = Romanad::start(&romanad_bin, &["--data-dir".into(), store.display().to_string()])
            .expect("romanad starts");
        let sb = Sandbox {
            url: romanad.url.clone(),
            creds: store.join("admin.credentials"),
            state: dir.path().join("state"),
            name: format!("{letter}{}", std::process::id() % 100_000),
        };
        (romanad, sb)
    }

    /// `romana ARGS` against this sandbox's romanad, without the sandbox flags (commands such as
    /// `vip` take none).
    pub fn plain(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_romana"))
            .args(args)
            .env("ROMANA_ENDPOINT", &self.url)
            .env("ROMANA_CREDENTIALS", &self.creds)
            .env_remove("ROMANA_CONFIG")
            .output()
            .unwrap()
    }

    /// `plain`, which must succeed (else panics with stderr): its stdout.
    pub fn plain_ok(&self, args: &[&str]) -> String {
        let out = self.plain(args);
        assert!(out.status.success(), "romana {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `romana ARGS --name NAME --state-dir STATE` against this sandbox's romanad.
    pub fn romana(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_romana"))
            .args(args)
            .args(["--name", &self.name, "--state-dir"])
            .arg(&self.state)
            .env("ROMANA_ENDPOINT", &self.url)
            .env("ROMANA_CREDENTIALS", &self.creds)
            .env_remove("ROMANA_CONFIG")
            .output()
            .unwrap()
    }

    /// `romana` that must succeed; its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.romana(args);
        assert!(
            out.status.success(),
            "romana {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.romana(&["sandbox", "down"]);
    }
}

/// Network namespaces whose names start with `prefix`.
pub fn namespaces(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Whether this process may create network namespaces (root and iproute2).
pub fn can_make_namespaces() -> bool {
    // One name per call: tests of one binary run in parallel, and a shared name made one of
    // them see the other's namespace and skip.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("rms-probe{}-{n}", std::process::id());
    let ok = Command::new("ip").args(["netns", "add", &name]).status().is_ok_and(|s| s.success());
    let _ = Command::new("ip").args(["netns", "del", &name]).status();
    ok
}

/// Runs `scripts/demo.sh ARGS` on this build's binaries (`ROMANA_DEMO_BIN`: no set-up, no
/// release build) and returns its output after checking it succeeded; `None` (the test skips,
/// saying why) without root or while another demo sandbox runs.
pub fn run_demo(romana: &str, args: &[&str]) -> Option<String> {
    if !can_make_namespaces() {
        eprintln!("SKIP: cannot create network namespaces (needs root and iproute2)");
        return None;
    }
    if !namespaces("rms-demo-").is_empty() {
        eprintln!("SKIP: a demo sandbox (rms-demo-*) is running on this machine");
        return None;
    }
    for bin in ["romanad", "romana-agent", "romana-cni"] {
        sibling_bin(romana, bin);
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new("bash")
        .arg(format!("{root}/scripts/demo.sh"))
        .args(args)
        .env("ROMANA_DEMO_BIN", PathBuf::from(romana).parent().unwrap())
        .env_remove("ROMANA_ENDPOINT")
        .env_remove("ROMANA_CREDENTIALS")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the demo failed:\n{text}");
    Some(text)
}
