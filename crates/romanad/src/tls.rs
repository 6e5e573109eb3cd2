//! TLS for romanad: certificate files or a self-signed bootstrap (a CA and a server certificate
//! kept in the data directory), optional client certificates, and `--tls-issue` (a CA kept in a
//! directory and server certificates it signs, for installs: deploy/kubernetes/bootstrap.sh,
//! docs/systemd.md). The handshake itself is in `serve.rs` (with a timeout, per connection). A
//! plain-HTTP client gets no answer.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// PEM texts of the server certificate chain and key, and of the CA clients should trust.
#[derive(Debug, Clone)]
pub struct Material {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: Option<String>,
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::fs::PermissionsExt;
    let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(path)?;
    // `mode` applies only on create; an existing file is made private too.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// Loads `DIR/tls/*`, or creates a CA and a server certificate for `names` there.
pub fn self_signed(dir: &Path, names: &[String]) -> Result<Material> {
    let tls = dir.join("tls");
    let (ca_p, cert_p, key_p) = (tls.join("ca.pem"), tls.join("server.pem"), tls.join("server.key"));
    if ca_p.exists() && cert_p.exists() && key_p.exists() {
        return Ok(Material {
            cert_pem: std::fs::read_to_string(&cert_p)?,
            key_pem: std::fs::read_to_string(&key_p)?,
            ca_pem: Some(std::fs::read_to_string(&ca_p)?),
        });
    }
    std::fs::create_dir_all(&tls).with_context(|| format!("creating {}", tls.display()))?;
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "romanad bootstrap CA");
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, "romanad");
    let cert = params.signed_by(&key, &ca)?;
    let m = Material { cert_pem: cert.pem(), key_pem: key.serialize_pem(), ca_pem: Some(ca.pem()) };
    write_private(&key_p, &m.key_pem)?;
    std::fs::write(&cert_p, &m.cert_pem)?;
    std::fs::write(&ca_p, ca.pem())?;
    Ok(m)
}

/// A rustls server configuration; with `client_ca`, clients must present a certificate it signed.
pub fn server_config(m: &Material, client_ca: Option<&str>) -> Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(m.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("server certificate")?;
    let key = PrivateKeyDer::from_pem_slice(m.key_pem.as_bytes()).context("server key")?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c.context("client CA")?)?;
            }
            builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?,
            )
        }
        None => builder.with_no_client_auth(),
    };
    Ok(builder.with_single_cert(chain, key)?)
}

/// The issuing CA's name, made from its key. A certificate names its issuer, so a kept CA is
/// rebuilt from its key and this name to sign again (rcgen cannot read a certificate back
/// without x509-parser); and two installs' CAs differ by name, so a client given the wrong one
/// is told the issuer is unknown rather than that a signature is bad.
fn ca_name(key: &rcgen::KeyPair) -> String {
    // An uncompressed EC point: a format byte, then the key's bits.
    let raw = key.public_key_raw();
    let id: String = raw.iter().skip(1).take(8).map(|b| format!("{b:02x}")).collect();
    format!("romana CA {id}")
}

fn ca_params(key: &rcgen::KeyPair) -> Result<rcgen::CertificateParams> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.distinguished_name.push(rcgen::DnType::CommonName, ca_name(key));
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    Ok(p)
}

/// A new CA: its certificate and private key (PEM).
pub fn new_ca() -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate()?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params(&key)?, key)?;
    Ok((ca.pem(), ca.key().serialize_pem()))
}

/// The names a certificate is for, checked: each a DNS name or an IP address, at least one.
fn server_names(names: &[String]) -> Result<Vec<ServerName<'static>>> {
    anyhow::ensure!(
        !names.is_empty(),
        "no names for the certificate: give --tls-name (DNS names or IP addresses)"
    );
    names
        .iter()
        .map(|n| {
            ServerName::try_from(n.clone())
                .map_err(|_| anyhow::anyhow!("--tls-name {n:?} is neither a DNS name nor an IP address"))
        })
        .collect()
}

/// A server certificate and its new key (PEM) for `names`, signed by the CA whose key is
/// `ca_key_pem` (a CA made by `new_ca`).
pub fn server_cert(ca_key_pem: &str, names: &[String]) -> Result<(String, String)> {
    server_names(names)?;
    let ca_key = rcgen::KeyPair::from_pem(ca_key_pem).context("the CA key")?;
    let issuer = rcgen::Issuer::new(ca_params(&ca_key)?, ca_key);
    let key = rcgen::KeyPair::generate()?;
    // rcgen makes an IP address SAN of a name that parses as one, a DNS name SAN otherwise.
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(rcgen::DnType::CommonName, names[0].as_str());
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Checks, as a client trusting only `ca_pem` would at `now`, that `cert_pem` is valid for every
/// one of `names`.
pub fn verify(ca_pem: &str, cert_pem: &str, names: &[String], now: UnixTime) -> Result<()> {
    use rustls::client::danger::ServerCertVerifier;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.context("the CA certificate")?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("the server certificate")?;
    let (leaf, rest) = chain.split_first().context("the server certificate file holds no certificate")?;
    for (text, name) in names.iter().zip(server_names(names)?) {
        verifier.verify_server_cert(leaf, rest, &name, &[], now).map_err(|e| {
            anyhow::anyhow!("the issued certificate does not verify for {text:?} against the CA: {e}")
        })?;
    }
    Ok(())
}

/// What `issue_into` did.
#[derive(Debug)]
pub struct Issued {
    pub ca_created: bool,
    pub names: Vec<String>,
}

/// `romanad --tls-issue DIR`: a CA in DIR/ca.pem and DIR/ca.key (made when both are absent,
/// kept otherwise), and a new server certificate DIR/server.pem with its key DIR/server.key for
/// `names`, checked against the CA before it replaces the old pair.
pub fn issue_into(dir: &Path, names: &[String], now: UnixTime) -> Result<Issued> {
    server_names(names)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_p, ca_key_p) = (dir.join("ca.pem"), dir.join("ca.key"));
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let (ca_pem, ca_key, ca_created) = match (ca_p.exists(), ca_key_p.exists()) {
        (true, true) => (read(&ca_p)?, read(&ca_key_p)?, false),
        (false, false) => {
            let (pem, key) = new_ca()?;
            write_private(&ca_key_p, &key).with_context(|| format!("writing {}", ca_key_p.display()))?;
            std::fs::write(&ca_p, &pem).with_context(|| format!("writing {}", ca_p.display()))?;
            (pem, key, true)
        }
        (has_pem, _) => anyhow::bail!(
            "{} has {} but not {}: give both (a CA made by romanad --tls-issue) or neither",
            dir.display(),
            if has_pem { "ca.pem" } else { "ca.key" },
            if has_pem { "ca.key" } else { "ca.pem" }
        ),
    };
    let (cert, key) = server_cert(&ca_key, names)?;
    verify(&ca_pem, &cert, names, now).with_context(|| {
        format!(
            "{} is not the CA of {} (a CA not made by romanad --tls-issue?)",
            ca_p.display(),
            ca_key_p.display()
        )
    })?;
    // New files beside the old, then renamed over them: a reader never sees half a file.
    let (cert_p, key_p) = (dir.join("server.pem"), dir.join("server.key"));
    let (cert_new, key_new) = (dir.join(".server.pem.new"), dir.join(".server.key.new"));
    write_private(&key_new, &key).with_context(|| format!("writing {}", key_new.display()))?;
    std::fs::write(&cert_new, &cert).with_context(|| format!("writing {}", cert_new.display()))?;
    std::fs::rename(&key_new, &key_p).with_context(|| format!("replacing {}", key_p.display()))?;
    std::fs::rename(&cert_new, &cert_p).with_context(|| format!("replacing {}", cert_p.display()))?;
    Ok(Issued { ca_created, names: names.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issues for `names` from a new CA and checks the result against `check_names` with the CA
    /// `trusted` (this CA, or another's): Ok, or the error's text.
    fn check(names: &[&str], check_names: &[&str], other_ca: bool) -> Result<(), String> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let (ca, ca_key) = new_ca().map_err(|e| e.to_string())?;
        let (cert, _) = server_cert(&ca_key, &names).map_err(|e| e.to_string())?;
        let trusted = if other_ca { new_ca().map_err(|e| e.to_string())?.0 } else { ca };
        let wanted: Vec<String> = check_names.iter().map(|n| (*n).to_owned()).collect();
        verify(&trusted, &cert, &wanted, UnixTime::now()).map_err(|e| e.to_string())
    }

    /// Names issued for, names checked, checked with another CA, the error wanted (None: valid).
    type Case<'a> = (&'a [&'a str], &'a [&'a str], bool, Option<&'a str>);

    #[test]
    fn issued_certificates_verify_for_their_names_only() {
        let svc = ["romanad", "romanad.romana-system.svc", "127.0.0.1", "10.96.0.10", "fd00::10"];
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (&svc, &svc, false, None),
            (&svc, &["10.96.0.11"], false, Some("not valid for name")),
            (&svc, &["romanad.other.svc"], false, Some("not valid for name")),
            (&svc, &["romanad"], true, Some("UnknownIssuer")),
            (&["bad name"], &["romanad"], false, Some("neither a DNS name nor an IP address")),
            (&[], &["romanad"], false, Some("no names for the certificate")),
        ];
        for (names, wanted, other, err) in cases {
            let got = check(names, wanted, *other);
            match err {
                None => assert_eq!(got, Ok(()), "{names:?} for {wanted:?}"),
                Some(e) => assert!(
                    got.as_ref().is_err_and(|g| g.contains(e)),
                    "{names:?} for {wanted:?} (another CA: {other}): want an error with {e:?}, got {got:?}"
                ),
            }
        }
    }

    #[test]
    fn a_kept_ca_signs_again_and_a_half_ca_is_refused() {
        let dir = std::env::temp_dir().join(format!("romanad-tls-issue-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let names = vec!["romanad".to_owned(), "127.0.0.1".to_owned()];
        let first = issue_into(&dir, &names, UnixTime::now()).expect("first issue");
        let ca = std::fs::read_to_string(dir.join("ca.pem")).expect("ca.pem");
        let second = issue_into(&dir, &["romanad.example".to_owned()], UnixTime::now()).expect("second");
        assert!(first.ca_created && !second.ca_created, "the CA is made once, then kept");
        assert_eq!(
            std::fs::read_to_string(dir.join("ca.pem")).expect("ca.pem"),
            ca,
            "the CA is kept as it was"
        );
        let cert = std::fs::read_to_string(dir.join("server.pem")).expect("server.pem");
        verify(&ca, &cert, &["romanad.example".to_owned()], UnixTime::now()).expect("the new certificate");
        // A CA certificate that is not the key's (someone else's CA dropped in): refused, and the
        // certificate in place is left alone.
        std::fs::write(dir.join("ca.pem"), new_ca().expect("a CA").0).expect("write");
        let err = issue_into(&dir, &names, UnixTime::now()).expect_err("a foreign ca.pem");
        assert!(format!("{err:#}").contains("is not the CA of"), "{err:#}");
        assert_eq!(std::fs::read_to_string(dir.join("server.pem")).expect("server.pem"), cert);
        std::fs::remove_file(dir.join("ca.key")).expect("rm");
        let err = issue_into(&dir, &names, UnixTime::now()).expect_err("ca.pem without ca.key");
        assert!(err.to_string().contains("has ca.pem but not ca.key"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
