//! `romana-kube-testserver`: the test API server as a process; prints `listening on URL` once
//! ready and runs until killed.

use anyhow::Context;
use clap::Parser;
use romana_kube_testserver::{ApiServer, Options};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(about = "A Kubernetes API server for tests (plain HTTP, in memory)")]
struct Flags {
    /// Address to listen on; port 0 picks one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write a kubeconfig pointing at the server here.
    #[arg(long)]
    kubeconfig_out: Option<PathBuf>,
    /// Require `Authorization: Bearer TOKEN` on every request.
    #[arg(long)]
    token: Option<String>,
    /// Keep the state in this file across restarts (loaded at start, written after each change).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Seconds between BOOKMARK events on watches that allow them.
    #[arg(long, default_value_t = 1)]
    bookmark_interval_secs: u64,
}

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let opts = Options {
        listen: flags.listen,
        token: flags.token,
        state_file: flags.state,
        bookmark_interval: std::time::Duration::from_secs(flags.bookmark_interval_secs.max(1)),
        ..Options::default()
    };
    let server = ApiServer::start_with(opts).with_context(|| format!("starting on {}", flags.listen))?;
    if let Some(p) = &flags.kubeconfig_out {
        server.write_kubeconfig(p).with_context(|| format!("writing the kubeconfig {}", p.display()))?;
    }
    let mut out = std::io::stdout();
    writeln!(out, "listening on {}", server.url())?;
    out.flush()?;
    loop {
        std::thread::park();
    }
}
