//! Dialling: a TCP connection, and the TLS handshake when TLS is on, made the same
//! way for the first connection and each reconnection.

use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{ClientError, TlsOptions};

/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The reading half of a connection, plain or TLS.
pub(super) type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a connection, plain or TLS.
pub(super) type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Where to connect, and how: made once, used for the first connection and each reconnection.
pub(super) struct Dialer {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Dialer {
    pub(super) async fn new(
        host: &str,
        port: u16,
        tls: Option<&TlsOptions>,
    ) -> Result<Dialer, ClientError> {
        let addr = format!("{host}:{port}");
        let failed = |e: crate::tls::TlsError| ClientError::Tls {
            addr: addr.clone(),
            reason: e.to_string(),
        };
        let tls = match tls {
            None => None,
            Some(t) => {
                let name = crate::tls::server_name(t.server_name.as_deref().unwrap_or(host))
                    .map_err(failed)?;
                // Reading the system's certificate store is file I/O: off the runtime.
                let ca = t.ca.clone();
                let connector =
                    tokio::task::spawn_blocking(move || crate::tls::connector(ca.as_deref()))
                        .await
                        .map_err(|e| ClientError::Tls {
                            addr: addr.clone(),
                            reason: e.to_string(),
                        })?
                        .map_err(failed)?;
                Some((connector, name))
            }
        };
        Ok(Dialer {
            host: host.to_string(),
            port,
            tls,
        })
    }

    pub(super) fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// A new connection, TLS handshake done when TLS is on.
    pub(super) async fn dial(&self) -> Result<(Reader, Writer), ClientError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| ClientError::Connect {
                addr: self.addr(),
                reason: e.to_string(),
                kind: e.kind(),
            })?;
        let _ = stream.set_nodelay(true);
        let Some((connector, name)) = &self.tls else {
            let (rd, wr) = stream.into_split();
            return Ok((Box::new(rd), Box::new(wr)));
        };
        let tls_failed = |reason: String| ClientError::Tls {
            addr: self.addr(),
            reason,
        };
        let tls = tokio::time::timeout(
            TLS_HANDSHAKE_TIMEOUT,
            connector.connect(name.clone(), stream),
        )
        .await
        .map_err(|_| tls_failed("the handshake timed out".into()))?
        .map_err(|e| tls_failed(crate::tls::handshake_failure(&e)))?;
        let (rd, wr) = tokio::io::split(tls);
        Ok((Box::new(rd), Box::new(wr)))
    }
}
