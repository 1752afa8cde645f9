//! TLS material: reading PEM certificates and keys, and building the rustls
//! configurations behind the server's acceptor and the client's connector.
//!
//! Both sides use ring as the one crypto provider and rustls's safe defaults
//! (TLS 1.2 and 1.3). The client verifies the server against the system's
//! roots, or only against the CA file it was given, and checks the name it
//! dialled; no option turns verification off. Frames are the same over TLS as
//! over TCP: this module only makes the byte stream.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// What can go wrong while loading TLS material.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {what} {path}: {reason}")]
    Pem {
        /// "certificate", "private key" or "CA certificate".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// rustls refused the material (a key that does not match its certificate, …).
    #[error("TLS setup failed: {0}")]
    Rejected(String),
    /// No root certificates to verify a server against.
    #[error("no CA certificates found in {0}; pass a CA file")]
    NoRoots(String),
    /// The host cannot be a TLS server name.
    #[error("{0:?} is not a valid TLS server name")]
    BadName(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn rejected(e: rustls::Error) -> TlsError {
    TlsError::Rejected(e.to_string())
}

fn pem_error(what: &'static str, path: &Path, e: rustls_pki_types::pem::Error) -> TlsError {
    let reason = match e {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => format!("no {what} in it (PEM expected)"),
        other => other.to_string(),
    };
    TlsError::Pem {
        what,
        path: path.to_path_buf(),
        reason,
    }
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, path, e))?;
    if certs.is_empty() {
        return Err(pem_error(
            what,
            path,
            rustls_pki_types::pem::Error::NoItemsFound,
        ));
    }
    Ok(certs)
}

/// The server side: the chain in `cert` (leaf first) and its private key in `key`.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let chain = certificates("certificate", cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error("private key", key, e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rejected)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(rejected)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The client side: verifies servers against the certificates in `ca`, or against
/// the system's roots when `ca` is `None`. Reads files: call it off the runtime.
pub fn connector(ca: Option<&Path>) -> Result<TlsConnector, TlsError> {
    match ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(certificates("CA certificate", path)?);
            if added == 0 {
                return Err(TlsError::NoRoots(path.display().to_string()));
            }
            Ok(TlsConnector::from(client_config(roots)?))
        }
        None => {
            // The system store is hundreds of files: read it once per process, not per client.
            static SYSTEM: OnceLock<Result<Arc<rustls::ClientConfig>, TlsError>> = OnceLock::new();
            let config = SYSTEM.get_or_init(|| {
                let mut roots = RootCertStore::empty();
                // Unreadable entries in the system store are skipped, as every TLS client does.
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                if roots.is_empty() {
                    return Err(TlsError::NoRoots("the system certificate store".into()));
                }
                client_config(roots)
            });
            config.clone().map(TlsConnector::from)
        }
    }
}

fn client_config(roots: RootCertStore) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rejected)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name a client checks the server's certificate against: a DNS name or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_string()).map_err(|_| TlsError::BadName(host.to_string()))
}

/// Why a client's handshake failed, in words: the rustls error inside the I/O error
/// when there is one ("invalid peer certificate: certificate expired: …").
pub fn handshake_failure(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(r @ rustls::Error::InvalidMessage(_)) => {
            format!("{r} (does the server speak TLS?)")
        }
        Some(
            r @ rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature,
            ),
        ) => format!(
            "{r}: the certificate is not from a trusted CA (is `ca` the CA that issued it?)"
        ),
        Some(r) => r.to_string(),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the server closed the connection during the handshake".into()
        }
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_accept_dns_names_and_addresses() {
        assert!(server_name("localhost").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("::1").is_ok());
        assert!(matches!(
            server_name("not a name"),
            Err(TlsError::BadName(_))
        ));
    }

    #[test]
    fn missing_files_are_named_in_the_error() {
        let err = acceptor(
            Path::new("/no/such/cert.pem"),
            Path::new("/no/such/key.pem"),
        )
        .err()
        .unwrap();
        let text = err.to_string();
        assert!(text.contains("certificate /no/such/cert.pem"), "{text}");
    }

    #[test]
    fn a_file_without_pem_blocks_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = connector(Some(&path)).err().unwrap();
        assert!(err.to_string().contains("no CA certificate in it"), "{err}");
    }
}
