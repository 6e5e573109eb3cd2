//! Where romanad is: `--endpoint`, else `ROMANA_ENDPOINT`, else the config file (`--config`,
//! `~/.romana.yaml`, `/etc/romana/cli.yaml`), else http://127.0.0.1:9600.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// One URL or several, comma separated (replicas to fail over between).
    #[serde(default, alias = "RootURL", alias = "root_url")]
    pub endpoint: Option<String>,
    #[serde(default, alias = "Format")]
    pub output: Option<String>,
}

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
