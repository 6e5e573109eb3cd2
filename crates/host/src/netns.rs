//! Runs work inside a network namespace (`/run/netns/NAME`, or any namespace file such as
//! `/proc/PID/ns/net` that a container runtime hands the CNI): a dedicated thread enters it with
//! setns, so no other thread of the process ever changes namespace.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {path}: {source}")]
    Open { path: String, source: std::io::Error },
    #[error("cannot enter network namespace {path}: {source}")]
    Enter { path: String, source: nix::Error },
    #[error("cannot start a runtime for network namespace {path}: {source}")]
    Runtime { path: String, source: std::io::Error },
    #[error("the thread working in network namespace {path} panicked")]
    Panicked { path: String },
}

/// The file of a named namespace made by `ip netns add`.
pub fn named(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Runs `work` to completion on a new thread inside namespace `name`, with its own
/// single-threaded runtime (netlink sockets opened there belong to that namespace).
pub fn in_netns<F, Fut, T>(name: &str, work: F) -> Result<T, NetnsError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    in_netns_path(Some(&named(name)), work)
}

/// As `in_netns`, for a namespace file path; `None` stays in the caller's namespace (still on a
/// thread of its own, so callers need not care whether they are inside a runtime).
pub fn in_netns_path<F, Fut, T>(path: Option<&Path>, work: F) -> Result<T, NetnsError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let owned = path.map(Path::to_path_buf);
    let shown = owned.as_ref().map_or_else(|| "(own)".to_owned(), |p| p.display().to_string());
    let handle = std::thread::spawn(move || {
        let shown = owned.as_ref().map_or_else(|| "(own)".to_owned(), |p| p.display().to_string());
        if let Some(path) = &owned {
            let file = File::open(path).map_err(|source| NetnsError::Open { path: shown.clone(), source })?;
            setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|source| NetnsError::Enter { path: shown.clone(), source })?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|source| NetnsError::Runtime { path: shown.clone(), source })?;
        Ok(rt.block_on(work()))
    });
    handle.join().map_err(|_| NetnsError::Panicked { path: shown })?
}
