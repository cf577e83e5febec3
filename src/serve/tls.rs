//! TLS for both front ends (rustls with the ring provider): the certificate chain and private key
//! from PEM files; REST through a listener that completes each handshake before handing the
//! connection to the HTTP server, gRPC through tonic's own TLS.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

use crate::error::UsageError;

/// A certificate chain and its private key, as PEM.
#[derive(Clone)]
pub struct TlsPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

/// The rustls configuration of the REST server (HTTP/1.1).
pub fn rest_config(pem: &TlsPem) -> Result<Arc<ServerConfig>, UsageError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem.cert)
        .collect::<Result<_, _>>()
        .map_err(|e| UsageError(format!("--tls-cert: not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(UsageError("--tls-cert: no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&pem.key)
        .map_err(|e| UsageError(format!("--tls-key: not a PEM private key: {e}")))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| UsageError(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| UsageError(format!("--tls-cert/--tls-key do not make a pair: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Handshakes in progress at once; connections past this wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;

/// Accepts TCP connections and completes their TLS handshakes concurrently, each bounded in
/// time, so a client that connects and sends nothing holds up no one else.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    pending: tokio::task::JoinSet<Option<(TlsStream<TcpStream>, std::net::SocketAddr)>>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> Self {
        TlsListener {
            tcp,
            acceptor,
            pending: tokio::task::JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                conn = self.tcp.accept(), if self.pending.len() < MAX_HANDSHAKES => match conn {
                    Ok((stream, addr)) => {
                        let acceptor = self.acceptor.clone();
                        self.pending.spawn(async move {
                            match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => Some((tls, addr)),
                                Ok(Err(e)) => {
                                    super::log(&format!("TLS handshake with {addr} failed: {e}"));
                                    None
                                }
                                Err(_) => {
                                    super::log(&format!("TLS handshake with {addr} timed out"));
                                    None
                                }
                            }
                        });
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                },
                Some(done) = self.pending.join_next(), if !self.pending.is_empty() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
