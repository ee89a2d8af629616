//! serweb's listener: the accept loop for HTTP and HTTPS, and the rustls configuration (0.23 on
//! ring, as ser's own TLS) from a PEM certificate chain and key.
//!
//! Each connection has its own task: a TLS handshake has [`HANDSHAKE_LIMIT`] to finish and
//! every request head [`HEAD_LIMIT`] to arrive, so a slow or stuck client holds only its own
//! task; at most [`MAX_CONNECTIONS`] are served at once (the next accept waits for one to
//! end). HTTP/1.1 only (ALPN `http/1.1`). hyper serves the connection; axum's own `serve`
//! is not used because it sets no limit on the time a request head may take.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::ConnectInfo;
use axum::Router;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
pub const HEAD_LIMIT: Duration = Duration::from_secs(10);
pub const MAX_CONNECTIONS: usize = 512;

/// The server configuration from PEM files. ring's provider, as ser's TLS: rustls 0.23.48
/// deprecated it for lacking post-quantum key exchange (aws-lc-rs has it, but needs cmake and
/// does not cross-build as easily); see ser's src/tls.rs.
#[allow(deprecated)]
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("certificates in {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate in {}", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("private key in {}", key.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("certificate and key")?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves `router` on `listener`, over TLS when `tls` is given, until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait a little, go on.
                eprintln!("serweb: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                Some(a) => {
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(HANDSHAKE_LIMIT, a.accept(tcp)).await
                    {
                        connection(stream, peer, router).await;
                    }
                }
                None => connection(tcp, peer, router).await,
            }
        });
    }
}

async fn connection<S>(stream: S, peer: SocketAddr, router: Router)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    // The client's address for the handlers, as axum's plain listener gives it.
    let svc = hyper_util::service::TowerToHyperService::new(
        router.layer(axum::Extension(ConnectInfo(peer))),
    );
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_LIMIT)
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}
