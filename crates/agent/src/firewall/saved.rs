//! The table an agent applied, saved for its successor (`machine::saved_table`): restored at
//! start, so that a restart does not read the kernel's table back (3.5 s at 5,000 policies x
//! 50,000 endpoints): as it is when nothing was committed since (nftables' generation unchanged);
//! after its structure is checked (one read without elements) when someone else committed, its
//! elements then verified by the repair check's first read, after the first pass. Saved once the
//! passes have been quiet for `QUIET`, off the runtime thread, and removed by `SaveGuard` before
//! any commit of ours: a saved table on disk is always the one our last commit left. A restore
//! that does not hold costs nothing but the read the agent would have done anyway.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use romana_agent::machine::saved_table::{Place, Restore, SavedTable, decode, encode, same_structure};
use romana_agent::ports::Nftables;
use romana_host::nft::Nft;

use super::Firewall;

/// How long the passes must be quiet before the table is saved: the next commit of ours removes a
/// saved table, so saving in a burst of passes would be wasted.
const QUIET: Duration = Duration::from_millis(250);

/// `SO_NETNS_COOKIE` (Linux 5.14), asm-generic's value, which x86_64 and aarch64 use.
const SO_NETNS_COOKIE: libc::c_int = 71;

impl Firewall {
    /// Once the saved table was looked at (at most once; every pass waits for it first).
    pub(super) async fn restored(&self) {
        self.restored.get_or_init(|| self.restore()).await;
    }

    /// Takes the saved table as the one in force when it still is.
    async fn restore(&self) {
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
        let (table, generation) = match saved.restore(&place, generation_now) {
            Restore::Exact(table, generation) => (table, Some(generation)),
            Restore::CheckStructure(table) => {
                let read = self.in_ns(|_| Nft::read_structure().map_err(Into::into)).await;
                match read.map(|t| t.map(crate::firewall_read::observed)) {
                    Ok(Some(read)) if same_structure(&table, &read) => (table, None),
                    Ok(_) => {
                        tracing::info!(
                            saved_at,
                            ?generation_now,
                            "the romana table is not the one saved; reading it"
                        );
                        return;
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "cannot read the romana table's structure; reading it whole");
                        return;
                    }
                }
            }
            Restore::Read => {
                tracing::info!(
                    "the saved firewall table is of another boot or namespace; reading the kernel's"
                );
                return;
            }
        };
        let mut state = self.pass.lock().await;
        if state.known.is_some() {
            return;
        }
        match generation {
            Some(g) => {
                tracing::info!(path = %path.display(), generation = g, "firewall table restored: nothing was committed since it was saved")
            }
            None => tracing::info!(
                path = %path.display(), saved_at, ?generation_now,
                "firewall table restored: its structure is the one saved; the repair check reads its elements after the first pass"
            ),
        }
        state.known = Some(table);
        state.known_gen = generation;
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
                // The commits so far: one more before the file is in place makes it stale.
                let commits = self.nft.1.commits();
                unsaved.and_then(|g| state.known.clone().map(|t| (t, g, commits)))
            };
            let clone_ms = cloning.elapsed().as_secs_f64() * 1e3;
            let Some((table, generation, commits)) = known else { continue };
            let (path, nft) = (path.clone(), self.nft.clone());
            // At low priority on a thread of its own: pods starting meanwhile come first.
            let saving = super::confirm::off_runtime(true, move || {
                let t = std::time::Instant::now();
                let text = encode(&SavedTable { place, generation, table });
                let saved = match text {
                    None => Saved::Unsavable,
                    Some(text) => match nft.1.install(&path, &text, commits) {
                        Ok(true) => Saved::Bytes(text.len()),
                        Ok(false) => Saved::Overtaken,
                        Err(e) => Saved::Failed(e),
                    },
                };
                (saved, t.elapsed().as_secs_f64() * 1e3)
            });
            match saving.await {
                Ok((Saved::Bytes(bytes), save_ms)) => {
                    last_saved = Some(generation);
                    tracing::debug!(generation, bytes, clone_ms, save_ms, "firewall table saved")
                }
                Ok((Saved::Unsavable, _)) => {
                    tracing::debug!("the firewall table holds what cannot be saved; not saved")
                }
                // A pass committed while the file was written: the next quiet moment saves.
                Ok((Saved::Overtaken, _)) => tracing::debug!("a commit overtook the save; dropped"),
                Ok((Saved::Failed(e), _)) => tracing::warn!(error = %e, "cannot save the firewall table"),
                Err(e) => tracing::warn!(error = %e, "saving the firewall table failed"),
            }
        }
    }
}

/// How a save ended.
enum Saved {
    Bytes(usize),
    Unsavable,
    Overtaken,
    Failed(std::io::Error),
}

/// Keeps the saved table true: every commit of ours removes it first (`before_commit`), and a
/// save puts its file in place only when no commit came since the table was taken (`install`).
/// So a saved table on disk is the one our last commit left, whatever the order of a pass and a
/// save, and whenever the agent dies.
#[derive(Debug, Default)]
pub(super) struct SaveGuard {
    path: Option<PathBuf>,
    state: Mutex<GuardState>,
}

#[derive(Debug, Default)]
struct GuardState {
    commits: u64,
    /// The file may be on disk (the previous agent's, at first).
    on_disk: bool,
}

impl SaveGuard {
    pub(super) fn new(path: Option<PathBuf>) -> SaveGuard {
        SaveGuard { path, state: Mutex::new(GuardState { commits: 0, on_disk: true }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GuardState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Before any commit to our table: the saved one stops being the table in force.
    pub(super) fn before_commit(&self) {
        let mut g = self.lock();
        g.commits += 1;
        if g.on_disk {
            if let Some(p) = &self.path {
                match std::fs::remove_file(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    // The commit waits for nothing: a file that stays is refused at the next start
                    // only if its generation moved, so say it loudly.
                    Err(e) => {
                        tracing::warn!(path = %p.display(), error = %e, "cannot remove the saved firewall table")
                    }
                }
            }
            g.on_disk = false;
        }
    }

    pub(super) fn commits(&self) -> u64 {
        self.lock().commits
    }

    /// Writes `text` to `path` whole (a new file renamed over the old one, root's only), unless a
    /// commit came after the table was taken (`commits` then): `false`.
    fn install(&self, path: &Path, text: &str, commits: u64) -> std::io::Result<bool> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut tmp = PathBuf::from(path);
        tmp.as_mut_os_string().push(".new");
        let mut f =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        let mut g = self.lock();
        if g.commits != commits {
            drop(g);
            let _ = std::fs::remove_file(&tmp);
            return Ok(false);
        }
        std::fs::rename(&tmp, path)?;
        g.on_disk = true;
        Ok(true)
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_commit_removes_the_saved_table_and_a_save_it_overtook_is_dropped() {
        let dir = std::env::temp_dir().join(format!("romana-save-guard-{}", std::process::id()));
        let path = dir.join("agent.firewall-table");
        let guard = SaveGuard::new(Some(path.clone()));
        // A save with no commit since its table was taken is put in place, root's only.
        let taken = guard.commits();
        assert!(guard.install(&path, "one", taken).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // A commit removes it before it is made.
        guard.before_commit();
        assert!(!path.exists());
        // A save whose table was taken before a commit is dropped, with its temporary file.
        let taken = guard.commits();
        guard.before_commit();
        assert!(!guard.install(&path, "stale", taken).unwrap());
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "no temporary file left");
        // The previous agent's file is removed by this agent's first commit.
        std::fs::write(&path, "previous").unwrap();
        let fresh = SaveGuard::new(Some(path.clone()));
        fresh.before_commit();
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
