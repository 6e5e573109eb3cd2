//! The agent's BIRD adapter: renders this host's include file from romanad's topology and fabric
//! view (`romana_fabric`, pure), writes it atomically only when it changed and asks BIRD to
//! reload it (`birdc configure`). It never touches the rest of BIRD's configuration. BIRD absent,
//! not running or refusing the file: logged once per kind of trouble, retried each pass, and the
//! agent carries on (routes and policies do not depend on it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use romana_fabric::{BirdStep, Fabric, Options, decide};

use crate::ctx::Ctx;

/// Where BIRD is and how to render for it (from the agent's flags).
#[derive(Debug, Clone)]
pub struct BirdConfig {
    /// The include file the operator's bird.conf includes; the agent owns it.
    pub path: PathBuf,
    /// `birdc`.
    pub birdc: PathBuf,
    /// BIRD's control socket (`birdc -s`), when not the default.
    pub socket: Option<PathBuf>,
    pub options: Options,
    pub interval: Duration,
}

/// What the last pass ran into: each new kind is logged once (at warn), repeats are not.
#[derive(Debug, Default)]
struct Trouble(Option<String>);

impl Trouble {
    fn report(&mut self, what: String) {
        if self.0.as_deref() != Some(&what) {
            tracing::warn!("bird: {what} (retrying quietly; the agent carries on)");
            self.0 = Some(what);
        }
    }

    fn clear(&mut self) {
        if self.0.take().is_some() {
            tracing::info!("bird: configured again");
        }
    }
}

/// Renders and applies on every interval, forever.
pub async fn run(ctx: Arc<Ctx>, cfg: BirdConfig) {
    let mut configured: Option<String> = None;
    let mut trouble = Trouble::default();
    let mut tick = tokio::time::interval(cfg.interval);
    loop {
        tick.tick().await;
        match render(&ctx, &cfg).await {
            Ok(text) => {
                let c = cfg.clone();
                let last = configured.clone();
                let done = tokio::task::spawn_blocking(move || apply(&c, &text, last.as_deref()))
                    .await
                    .unwrap_or_else(|e| Err(format!("the apply task failed: {e}")));
                match done {
                    Ok(Some(text)) => {
                        configured = Some(text);
                        trouble.clear();
                    }
                    Ok(None) => trouble.clear(),
                    Err(e) => trouble.report(e),
                }
            }
            Err(e) => trouble.report(e),
        }
    }
}

async fn render(ctx: &Ctx, cfg: &BirdConfig) -> Result<String, String> {
    let client = ctx.client();
    let topology = client.topology().await.map_err(|e| format!("cannot read the topology: {e}"))?;
    let view = client.fabric().await.map_err(|e| format!("cannot read the fabric view: {e}"))?;
    let fabric = Fabric::new(&topology, &view).map_err(|e| e.to_string())?;
    let vips = ctx.vips.lock().unwrap_or_else(|e| e.into_inner()).clone();
    romana_fabric::render_host_with(&fabric, &ctx.host, cfg.options, &vips).map_err(|e| e.to_string())
}

/// One decision and its I/O. `Ok(Some(text))`: BIRD now runs `text`; `Ok(None)`: nothing to do.
fn apply(cfg: &BirdConfig, text: &str, configured: Option<&str>) -> Result<Option<String>, String> {
    let on_disk = std::fs::read_to_string(&cfg.path).ok();
    match decide(text, on_disk.as_deref(), configured) {
        BirdStep::Nothing => return Ok(None),
        BirdStep::WriteAndConfigure => {
            write_atomically(&cfg.path, text)
                .map_err(|e| format!("cannot write {}: {e}", cfg.path.display()))?;
            tracing::info!(path = %cfg.path.display(), "bird: wrote the include file");
        }
        BirdStep::Configure => {}
    }
    configure(cfg)?;
    tracing::info!("bird: configuration reloaded");
    Ok(Some(text.to_owned()))
}

/// A temporary file beside the target, renamed over it: BIRD never reads half a file.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// `birdc configure`: BIRD re-reads its whole configuration (ours is an include of it) and
/// restarts only the protocols whose configuration changed.
fn configure(cfg: &BirdConfig) -> Result<(), String> {
    let mut cmd = Command::new(&cfg.birdc);
    if let Some(s) = &cfg.socket {
        cmd.arg("-s").arg(s);
    }
    let out =
        cmd.arg("configure").output().map_err(|e| format!("cannot run {}: {e}", cfg.birdc.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    configure_result(out.status.success(), &text)
}

/// Whether birdc's answer to `configure` says BIRD took the configuration.
fn configure_result(exited_ok: bool, text: &str) -> Result<(), String> {
    let took = text.contains("Reconfigured") || text.contains("Reconfiguration in progress");
    let queued = text.contains("Reconfiguration already in progress");
    if exited_ok && (took || queued) {
        Ok(())
    } else {
        Err(format!("birdc configure: {}", text.trim().replace('\n', " / ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn birdc_answers() {
        let check =
            |ok, text: &str, want: bool| assert_eq!(configure_result(ok, text).is_ok(), want, "{text}");
        check(
            true,
            "BIRD 2.0.12 ready.\nReading configuration from /etc/bird/bird.conf\nReconfigured\n",
            true,
        );
        check(true, "Reading configuration from x\nReconfiguration in progress\n", true);
        check(true, "Reconfiguration already in progress, queueing new config\n", true);
        check(
            true,
            "Reading configuration from x\n/etc/bird/romana.conf:3:1 syntax error, unexpected CF_SYM_UNDEFINED\n",
            false,
        );
        check(
            false,
            "Unable to connect to server control socket (/run/bird/bird.ctl): No such file or directory\n",
            false,
        );
    }

    #[test]
    fn write_is_atomic_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("romana-bird-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("romana.conf");
        write_atomically(&path, "one").expect("writes");
        write_atomically(&path, "two").expect("rewrites");
        assert_eq!(std::fs::read_to_string(&path).expect("reads"), "two");
        assert_eq!(std::fs::read_dir(&dir).expect("lists").count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
