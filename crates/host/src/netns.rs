//! Runs work inside a named network namespace (`/run/netns/NAME`): a dedicated thread enters it
//! with setns, so no other thread of the process ever changes namespace.

use std::fs::File;
use std::future::Future;

use nix::sched::{CloneFlags, setns};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {name:?} (/run/netns/{name}): {source}")]
    Open { name: String, source: std::io::Error },
    #[error("cannot enter network namespace {name:?}: {source}")]
    Enter { name: String, source: nix::Error },
    #[error("cannot start a runtime for network namespace {name:?}: {source}")]
    Runtime { name: String, source: std::io::Error },
    #[error("the thread working in network namespace {name:?} panicked")]
    Panicked { name: String },
}

/// Runs `work` to completion on a new thread inside namespace `name`, with its own
/// single-threaded runtime (netlink sockets opened there belong to that namespace).
pub fn in_netns<F, Fut, T>(name: &str, work: F) -> Result<T, NetnsError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let owned = name.to_owned();
    let handle = std::thread::spawn(move || {
        let name = owned;
        let file = File::open(format!("/run/netns/{name}"))
            .map_err(|source| NetnsError::Open { name: name.clone(), source })?;
        setns(&file, CloneFlags::CLONE_NEWNET)
            .map_err(|source| NetnsError::Enter { name: name.clone(), source })?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|source| NetnsError::Runtime { name: name.clone(), source })?;
        Ok(rt.block_on(work()))
    });
    handle.join().map_err(|_| NetnsError::Panicked { name: name.to_owned() })?
}
