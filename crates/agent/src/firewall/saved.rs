//! The table an agent applied, saved for its successor (`machine::saved_table`): restored at
//! start when nothing was committed to nftables since, so that a restart does not read the
//! kernel's table back (3.5 s at 5,000 policies x 50,000 endpoints); saved once the passes have
//! been quiet for `QUIET`, off the runtime thread. A restore that does not hold (another boot,
//! namespace or generation; no file; a file of another format) costs nothing but the read the
//! agent would have done anyway.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use romana_agent::machine::saved_table::{Place, SavedTable, decode, encode};
use romana_agent::ports::Nftables;

use super::Firewall;

/// How long the passes must be quiet before the table is saved: any later commit makes a saved
/// table useless (its generation is gone), so saving in a burst of passes would be wasted.
const QUIET: Duration = Duration::from_millis(250);

/// `SO_NETNS_COOKIE` (Linux 5.14), asm-generic's value, which x86_64 and aarch64 use.
const SO_NETNS_COOKIE: libc::c_int = 71;

impl Firewall {
    /// Takes the saved table as the one in force when it still is. Runs before the first pass.
    pub(super) async fn restore(&self) {
        let Some(path) = self.saved_path.clone() else { return };
        let place = self.in_ns(|_| Ok(place())).await.ok().flatten();
        let _ = self.place.set(place.clone());
        let Some(place) = place else {
            tracing::debug!("no boot id or namespace cookie here: the firewall's table is not saved");
            return;
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the saved firewall table; reading the kernel's");
                return;
            }
        };
        let saved = match decode(&text) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "the saved firewall table is not readable; reading the kernel's");
                return;
            }
        };
        let generation_now = self.in_ns(|nft| Ok(nft.generation().ok())).await.ok().flatten();
        let saved_at = saved.generation;
        let mut state = self.pass.lock().await;
        match saved.usable(&place, generation_now) {
            Some((table, generation)) if state.known.is_none() => {
                tracing::info!(path = %path.display(), generation, "firewall table restored: nothing was committed since it was saved");
                state.known = Some(table);
                state.known_gen = Some(generation);
            }
            Some(_) => {}
            None => tracing::info!(
                saved_at,
                ?generation_now,
                "the saved firewall table is out of date (a commit since, or another boot); reading the kernel's"
            ),
        }
    }

    /// Saves the table in force whenever the passes have been quiet for `QUIET` (woken by
    /// `saved_wake`, which every pass that leaves a known table notifies).
    pub(super) async fn keep_saving(&self) {
        let Some(path) = self.saved_path.clone() else { return };
        let mut last_saved = None;
        loop {
            self.saved_wake.notified().await;
            // Debounce: every notification meanwhile restarts the wait.
            while tokio::time::timeout(QUIET, self.saved_wake.notified()).await.is_ok() {}
            let Some(Some(place)) = self.place.get().cloned() else { continue };
            let cloning = std::time::Instant::now();
            let known = {
                let state = self.pass.lock().await;
                // A pass that changed nothing left the generation, and the saved table, as it was.
                let unsaved = state.known_gen.filter(|g| last_saved != Some(*g));
                unsaved.and_then(|g| state.known.clone().map(|t| (t, g)))
            };
            let clone_ms = cloning.elapsed().as_secs_f64() * 1e3;
            let Some((table, generation)) = known else { continue };
            let path = path.clone();
            // At low priority on a thread of its own: pods starting meanwhile come first.
            let saving = super::confirm::off_runtime(true, move || {
                let t = std::time::Instant::now();
                let text = encode(&SavedTable { place, generation, table });
                let written = text.map(|t| write(&path, &t).map(|()| t.len())).transpose();
                (written, t.elapsed().as_secs_f64() * 1e3)
            });
            match saving.await {
                Ok((Ok(Some(bytes)), save_ms)) => {
                    last_saved = Some(generation);
                    tracing::debug!(generation, bytes, clone_ms, save_ms, "firewall table saved")
                }
                Ok((Ok(None), _)) => {
                    tracing::debug!("the firewall table holds what cannot be saved; not saved")
                }
                Ok((Err(e), _)) => tracing::warn!(error = %e, "cannot save the firewall table"),
                Err(e) => tracing::warn!(error = %e, "saving the firewall table failed"),
            }
        }
    }
}

/// Writes `text` to `path` whole (a new file renamed over the old one), readable by root only.
fn write(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".new");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(text.as_bytes())?;
    std::fs::rename(&tmp, path)
}

/// This boot and the calling thread's network namespace (`None`: either is unknown here).
fn place() -> Option<Place> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?.trim().to_owned();
    Some(Place { boot, netns: netns_cookie()? })
}

/// The cookie of the calling thread's network namespace.
#[allow(unsafe_code)]
fn netns_cookie() -> Option<u64> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: socket(2) with constant arguments; the descriptor is owned from here on.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` and `len` are valid for writes of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    (r == 0 && len as usize == std::mem::size_of::<u64>()).then_some(cookie)
}
