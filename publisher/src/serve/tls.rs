//! TLS for the origin server: a certificate the vendor supplies, or a self-signed one.
//!
//! A self-signed certificate and its key are kept in a directory of their own (never in
//! the release directory, which is public) and reused across restarts, so clients that
//! pinned it keep working. Its SHA-256 fingerprint is printed for pinning.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use shoal_protocol::Digest;

use crate::error::{Error, Result};

/// A loaded server certificate chain and key.
pub struct ServerCert {
    /// Certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Private key.
    pub key: PrivateKeyDer<'static>,
    /// Where the leaf certificate's PEM file is.
    pub cert_path: PathBuf,
}

impl ServerCert {
    /// SHA-256 of the leaf certificate's DER.
    pub fn fingerprint(&self) -> Digest {
        Digest::of(self.chain.first().map(|c| c.as_ref()).unwrap_or_default())
    }

    /// A rustls server config for HTTP/1.1.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let mut cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| {
                Error::other(
                    format!("the certificate and key do not work together: {e}"),
                    "check that --key is the private key of --cert",
                )
            })?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// Loads PEM files given with `--cert` and `--key`.
pub fn load(cert: &Path, key: &Path) -> Result<ServerCert> {
    let bad = |what: &Path, e: String| {
        Error::other(
            format!("{}: {e}", what.display()),
            "--cert takes a PEM certificate chain, --key a PEM private key",
        )
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, e.to_string()))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(cert, "no certificate found".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e.to_string()))?;
    Ok(ServerCert {
        chain,
        key: key_der,
        cert_path: cert.to_owned(),
    })
}

/// Loads the self-signed certificate in `dir`, creating it (for `names`) if absent.
pub fn self_signed(dir: &Path, names: &[String]) -> Result<ServerCert> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if !cert_path.exists() || !key_path.exists() {
        std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        let ck = rcgen::generate_simple_self_signed(names.to_vec())
            .map_err(|e| Error::other(format!("generating a self-signed certificate: {e}"), ""))?;
        crate::fsutil::write_atomic(&cert_path, ck.cert.pem().as_bytes())?;
        crate::fsutil::write_atomic_mode(
            &key_path,
            ck.signing_key.serialize_pem().as_bytes(),
            0o600,
        )?;
    }
    load(&cert_path, &key_path)
}

/// Where a self-signed certificate is kept by default: the user's state directory.
pub fn default_self_signed_dir() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("shoal-publisher").join("self-signed")
}
