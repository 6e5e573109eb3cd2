//! TLS for romanad: certificate files or a self-signed bootstrap (a CA and a server certificate
//! kept in the data directory), optional client certificates. The handshake itself is in `serve.rs` (with a timeout, per
//! connection). A plain-HTTP client gets no answer.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

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
