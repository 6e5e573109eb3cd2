//! This replica's private signing key on disk: one PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`,
//! as `openssl genpkey -algorithm ed25519` writes it), mode 0600, created on first start and
//! replaced atomically on rotation. The store only ever holds the public half. Knows nothing of
//! the store or HTTP.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::rand::SecureRandom;
use romana_auth::{SigningKey, b64_decode, b64_std_encode};

const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const END: &str = "-----END PRIVATE KEY-----";

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read the signing key {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write the signing key {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("the signing key {path} is not an Ed25519 PKCS#8 PEM file ({BEGIN} ... {END})")]
    Unreadable { path: PathBuf },
    #[error(
        "the signing key {path} has mode {mode:o}: others may read it; chmod 600 it (or give another file)"
    )]
    Insecure { path: PathBuf, mode: u32 },
}

/// PKCS#8 bytes as PEM (standard base64, 64 characters a line).
pub fn to_pem(pkcs8: &[u8]) -> String {
    let b64 = b64_std_encode(pkcs8);
    let mut out = String::from(BEGIN);
    out.push('\n');
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(END);
    out.push('\n');
    out
}

/// The PKCS#8 bytes of a PEM `PRIVATE KEY` block (`None` for anything else).
pub fn from_pem(text: &str) -> Option<Vec<u8>> {
    let body = text.trim().strip_prefix(BEGIN)?.strip_suffix(END)?;
    let b64: String = body
        .chars()
        .filter(|c| !c.is_whitespace())
        .take_while(|c| *c != '=')
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    b64_decode(&b64)
}

/// Reads the key at `path`, refusing a file that others may read.
pub fn read(path: &Path) -> Result<SigningKey, KeyFileError> {
    let meta = std::fs::metadata(path).map_err(|source| KeyFileError::Read { path: path.into(), source })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Insecure { path: path.into(), mode });
    }
    let text =
        std::fs::read_to_string(path).map_err(|source| KeyFileError::Read { path: path.into(), source })?;
    from_pem(&text)
        .and_then(|der| SigningKey::from_pkcs8(&der))
        .ok_or_else(|| KeyFileError::Unreadable { path: path.into() })
}

/// The key at `path`; on first start a new one, created there (0600). Two replicas sharing the
/// file race safely: the file appears whole or not at all, and the loser reads the winner's key.
pub fn load_or_create(path: &Path, rng: &dyn SecureRandom) -> Result<(SigningKey, bool), KeyFileError> {
    match read(path) {
        Err(KeyFileError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        other => return other.map(|k| (k, false)),
    }
    let key = SigningKey::generate(rng);
    let tmp = write_temp(path, &key)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(path)?;
            Ok((key, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path).map(|k| (k, false)),
        Err(source) => Err(KeyFileError::Write { path: path.into(), source }),
    }
}

/// Replaces the key at `path` with `key` (rotation): a reader sees the old file or the new one.
pub fn replace(path: &Path, key: &SigningKey) -> Result<(), KeyFileError> {
    let tmp = write_temp(path, key)?;
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        KeyFileError::Write { path: path.into(), source }
    })?;
    sync_dir(path)
}

/// Writes `key` to a new private file beside `path` and returns its name.
fn write_temp(path: &Path, key: &SigningKey) -> Result<PathBuf, KeyFileError> {
    let err = |source| KeyFileError::Write { path: path.into(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(name);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    // A leftover temporary file of an earlier run may have been made with other modes.
    f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    f.write_all(to_pem(key.pkcs8()).as_bytes()).and_then(|()| f.sync_all()).map_err(err)?;
    Ok(tmp)
}

fn sync_dir(path: &Path) -> Result<(), KeyFileError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| KeyFileError::Write { path: path.into(), source })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    /// Written by `openssl genpkey -algorithm ed25519` (PKCS#8 v1: no public key inside); its
    /// public key by `openssl pkey -pubout`.
    const OPENSSL_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIOh0Zn9eVVTKEJuEtqRkMd9lILWs2xvejT6PKCqBQI/7\n-----END PRIVATE KEY-----\n";
    const OPENSSL_PUBLIC: &str = "6851d2c79b47ad3c3b799cb90a079a9306ee23c4d890aebc53c27a25771d0d94";

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("romana-keyfile-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn pem_round_trip_and_openssl_keys() {
        let k = SigningKey::generate(&SystemRandom::new());
        let pem = to_pem(k.pkcs8());
        assert!(pem.lines().all(|l| l.len() <= 64), "{pem}");
        assert_eq!(from_pem(&pem).unwrap(), k.pkcs8());
        let o = SigningKey::from_pkcs8(&from_pem(OPENSSL_PEM).unwrap()).unwrap();
        let hex: String = o.public_key().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, OPENSSL_PUBLIC);
        for bad in ["", "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----", "MC4CAQAw"] {
            assert!(from_pem(bad).and_then(|d| SigningKey::from_pkcs8(&d)).is_none(), "{bad}");
        }
    }

    #[test]
    fn created_private_kept_replaced_and_refused_when_open() {
        let d = dir("life");
        let path = d.join("sub").join("signing-key.pem");
        let rng = SystemRandom::new();
        let (k1, created) = load_or_create(&path, &rng).unwrap();
        assert!(created);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (again, created) = load_or_create(&path, &rng).unwrap();
        assert_eq!((again.kid.as_str(), created), (k1.kid.as_str(), false), "the same key after a restart");
        let k2 = SigningKey::generate(&rng);
        replace(&path, &k2).unwrap();
        assert_eq!(read(&path).unwrap().kid, k2.kid);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temporary file left");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(&path, &rng).unwrap_err().to_string();
        assert!(e.contains("644") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not a key").unwrap();
        let e = load_or_create(&path, &rng).unwrap_err().to_string();
        assert!(e.contains("not an Ed25519 PKCS#8 PEM"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
