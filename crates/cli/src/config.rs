//! Where romanad is: `--endpoint`, else `ROMANA_ENDPOINT`, else the config file (`--config`,
//! `~/.romana.yaml`, `/etc/romana/cli.yaml`), else http://127.0.0.1:9600.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// One URL or several, comma separated (replicas to fail over between).
    #[serde(default, alias = "RootURL", alias = "root_url", skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, alias = "Format", skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Written by `romana login`: exchanged for an access token on each run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// A file romanad wrote (`DATA_DIR/admin.credentials`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<PathBuf>,
    /// The CA that signed romanad's certificate (PEM file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// Where `romana login` writes: the explicit config file, else ~/.romana.yaml.
pub fn login_path(explicit: Option<&Path>) -> Option<PathBuf> {
    explicit
        .map(Path::to_owned)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".romana.yaml")))
}

/// The credentials file romanad writes on first start, where a local CLI finds it.
pub const DEFAULT_CREDENTIALS: &str = "/var/lib/romana/admin.credentials";

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:9600";

fn candidates(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_owned()];
    }
    let mut v = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        v.push(PathBuf::from(home).join(".romana.yaml"));
    }
    v.push(PathBuf::from("/etc/romana/cli.yaml"));
    v
}

pub fn load(explicit: Option<&Path>) -> Result<FileConfig> {
    for p in candidates(explicit) {
        match std::fs::read_to_string(&p) {
            Ok(text) => {
                return serde_saphyr::from_str(&text)
                    .with_context(|| format!("reading config {}", p.display()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => continue,
            Err(e) => return Err(e).with_context(|| format!("reading config {}", p.display())),
        }
    }
    Ok(FileConfig::default())
}

/// The endpoints to use, in order of precedence.
pub fn endpoints(flag: Option<&str>, file: &FileConfig) -> Vec<String> {
    let chosen = flag
        .map(str::to_owned)
        .or_else(|| file.endpoint.clone())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
    chosen.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
}
