//! The nftables adapter: reads our table (`nft -j list table inet romana`) and applies a
//! transaction (`nft -f -`, all or nothing). It runs Debian's `nft` in the calling thread's network
//! namespace (children inherit it), so `in_netns_path` selects the host. Only our table is ever
//! named: never `flush ruleset`, never another table. The policy crate builds and reads the text.

use std::io::Write;
use std::process::{Command, Stdio};

/// The only table we touch.
pub const TABLE_SPEC: [&str; 3] = ["table", "inet", "romana"];

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nft is not installed (Debian package nftables): {0}")]
    NotInstalled(std::io::Error),
    #[error("nft {what} failed: {stderr}")]
    Failed { what: String, stderr: String },
    #[error("nft {what}: {source}")]
    Io { what: String, source: std::io::Error },
}

fn nft_path() -> &'static str {
    // /usr/sbin may be missing from a service's PATH.
    ["/usr/sbin/nft", "/sbin/nft"].into_iter().find(|p| std::path::Path::new(p).exists()).unwrap_or("nft")
}

fn nft() -> Command {
    Command::new(nft_path())
}

fn spawn_err(e: std::io::Error, what: &str) -> NftError {
    if e.kind() == std::io::ErrorKind::NotFound {
        NftError::NotInstalled(e)
    } else {
        NftError::Io { what: what.to_owned(), source: e }
    }
}

/// Our table as nft's JSON, or `None` when it does not exist. With `background`, nft runs at
/// the lowest CPU priority (`nice -n 19`): listing a table of 30,000 elements costs nft about
/// 300 ms of CPU, which a periodic check should not take from the work it checks.
pub fn list_table(background: bool) -> Result<Option<String>, NftError> {
    let mut cmd = if background && std::path::Path::new("/usr/bin/nice").exists() {
        let mut c = Command::new("/usr/bin/nice");
        c.args(["-n", "19", nft_path()]);
        c
    } else {
        nft()
    };
    let out = cmd.arg("-j").arg("list").args(TABLE_SPEC).output().map_err(|e| spawn_err(e, "list"))?;
    if out.status.success() {
        return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if stderr.contains("No such file or directory") {
        return Ok(None);
    }
    Err(NftError::Failed { what: "list table inet romana".into(), stderr })
}

/// Applies `script` as one transaction: the kernel takes all of it or none. (No `--echo`: it
/// makes nft read the whole table first, 100 ms at 30,000 elements.)
pub fn apply(script: &str) -> Result<(), NftError> {
    let mut child = nft()
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_err(e, "-f"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let written = stdin.write_all(script.as_bytes());
    drop(stdin);
    let out = child.wait_with_output().map_err(|e| NftError::Io { what: "-f".into(), source: e })?;
    if let Err(e) = written {
        return Err(NftError::Io { what: "-f (writing the script)".into(), source: e });
    }
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // nft names the failing line of the script; keep the message short.
        let stderr: String = stderr.lines().take(6).collect::<Vec<_>>().join(" | ");
        Err(NftError::Failed { what: "-f (transaction)".into(), stderr })
    }
}
