//! Owner-only file modes for a data directory: directories 0700, files 0600, whatever the umask.
//! Knows nothing about what the files hold; it covers every entry, whatever its name.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The mode of a directory only its owner may enter.
pub const DIR_MODE: u32 = 0o700;
/// The mode of a file only its owner may read or write.
pub const FILE_MODE: u32 = 0o600;

/// An entry whose mode was narrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tightened {
    pub path: PathBuf,
    /// Permission bits before (e.g. 0o644).
    pub was: u32,
    pub now: u32,
}

fn io_err(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Creates `dir` (and missing parents, all 0700) if needed, then narrows `dir` and everything
/// under it to owner-only modes. Symbolic links are left alone (their targets are not ours).
/// Returns what was narrowed, so that the caller can log it.
pub fn make_private(dir: &Path) -> io::Result<Vec<Tightened>> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| io_err("creating", dir, e))?;
    let mut out = Vec::new();
    tighten(dir, &mut out)?;
    Ok(out)
}

fn tighten(path: &Path, out: &mut Vec<Tightened>) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| io_err("reading the mode of", path, e))?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Ok(());
    }
    let was = meta.permissions().mode() & 0o7777;
    // Directories keep only the owner's bits; files lose execute too.
    let allowed = if kind.is_dir() { DIR_MODE } else { FILE_MODE };
    let now = was & allowed;
    if now != was {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(now))
            .map_err(|e| io_err("narrowing the mode of", path, e))?;
        out.push(Tightened { path: path.to_owned(), was, now });
    }
    if kind.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| io_err("listing", path, e))? {
            let entry = entry.map_err(|e| io_err("listing", path, e))?;
            tighten(&entry.path(), out)?;
        }
    }
    Ok(())
}

/// Opens `path` with `opts`, created 0600; an existing file with a looser mode is narrowed.
pub(crate) fn open(path: &Path, opts: &mut OpenOptions) -> io::Result<File> {
    let f = opts.mode(FILE_MODE).open(path).map_err(|e| io_err("opening", path, e))?;
    let mode = f.metadata()?.permissions().mode() & 0o7777;
    if mode & !FILE_MODE != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(mode & FILE_MODE))
            .map_err(|e| io_err("narrowing the mode of", path, e))?;
    }
    Ok(f)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn narrows_every_entry_and_reports_it() {
        let dir = std::env::temp_dir().join(format!("romana-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tls")).unwrap();
        std::fs::write(dir.join("store.log"), b"x").unwrap();
        std::fs::write(dir.join("tls/server.pem"), b"x").unwrap();
        std::fs::write(dir.join("signing.key"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.join("link")).unwrap();
        for (p, m) in [("", 0o755), ("tls", 0o775), ("store.log", 0o644), ("tls/server.pem", 0o666)] {
            std::fs::set_permissions(dir.join(p), std::fs::Permissions::from_mode(m)).unwrap();
        }
        std::fs::set_permissions(dir.join("signing.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let done = make_private(&dir).unwrap();
        let mut names: Vec<_> =
            done.iter().map(|t| (t.path.strip_prefix(&dir).unwrap().to_owned(), t.was)).collect();
        names.sort();
        let expect: Vec<(PathBuf, u32)> = vec![
            (PathBuf::from(""), 0o755),
            (PathBuf::from("store.log"), 0o644),
            (PathBuf::from("tls"), 0o775),
            (PathBuf::from("tls/server.pem"), 0o666),
        ];
        assert_eq!(names, expect, "every loose entry narrowed once, the 0600 key left alone");
        for (p, m) in [
            ("", 0o700),
            ("tls", 0o700),
            ("store.log", 0o600),
            ("tls/server.pem", 0o600),
            ("signing.key", 0o600),
        ] {
            assert_eq!(mode(&dir.join(p)), m, "{p}");
        }
        assert!(make_private(&dir).unwrap().is_empty(), "a second pass changes nothing");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
