//! What the sandbox tests share: `romana` run against one sandbox (a romanad process and a state
//! directory of the test's own), a guard that runs `sandbox down` even when a test fails
//! half-way, and the namespace helpers.

use std::path::PathBuf;
use std::process::{Command, Output};

/// One sandbox of a test: romanad's URL and admin credentials, the state directory, the name.
pub struct Sandbox {
    pub url: String,
    pub creds: PathBuf,
    pub state: PathBuf,
    pub name: String,
}

impl Sandbox {
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
    let name = format!("rms-probe{}", std::process::id());
    let ok = Command::new("ip").args(["netns", "add", &name]).status().is_ok_and(|s| s.success());
    let _ = Command::new("ip").args(["netns", "del", &name]).status();
    ok
}
