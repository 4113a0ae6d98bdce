//! The accept loop: plain TCP or TLS, HTTP/1.1 with upgrades, a cap on connections held at
//! once, and back-off when accepting fails (for example out of file descriptors).

use std::io::BufReader;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::TlsFiles;
use crate::metrics::Metrics;

/// One slot of the connection limit. A request carries a clone in its extensions, so a
/// WebSocket session keeps its slot after hyper hands the socket over.
#[derive(Clone)]
pub struct ConnectionPermit(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

/// How long a client may take over the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept: the usual cause (no file descriptors) needs time to clear.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert / SLUICE_TLS_CERT: cannot read {path}: {source}")]
    ReadCert { path: String, source: std::io::Error },
    #[error("--tls-cert / SLUICE_TLS_CERT: no PEM certificate in {path}")]
    NoCert { path: String },
    #[error("--tls-key / SLUICE_TLS_KEY: cannot read {path}: {source}")]
    ReadKey { path: String, source: std::io::Error },
    #[error("--tls-key / SLUICE_TLS_KEY: no PEM private key in {path}")]
    NoKey { path: String },
    #[error("--tls-cert / SLUICE_TLS_CERT: certificate and key do not form a usable TLS configuration: {0}")]
    Config(rustls::Error),
}

/// Pending connections the kernel may hold before accept. The usual default (128)
/// overflows under a reconnect storm and turns into SYN retries of a second or more;
/// the kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening socket with a backlog sized for connection bursts.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // A restarted gateway must not wait for the old one's connections to time out.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Loads the certificate chain and key into a TLS acceptor (HTTP/1.1 only: WebSocket
/// upgrades are an HTTP/1.1 mechanism).
pub fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let display = |p: &Path| p.display().to_string();
    let cert_file =
        std::fs::File::open(&files.cert).map_err(|source| TlsError::ReadCert { path: display(&files.cert), source })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(cert_file))
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::ReadCert { path: display(&files.cert), source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert { path: display(&files.cert) });
    }
    let key_file =
        std::fs::File::open(&files.key).map_err(|source| TlsError::ReadKey { path: display(&files.key), source })?;
    let key = rustls_pemfile::private_key(&mut BufReader::new(key_file))
        .map_err(|source| TlsError::ReadKey { path: display(&files.key), source })?
        .ok_or_else(|| TlsError::NoKey { path: display(&files.key) })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections until `shutdown`, serving each with `router`. Connection tasks are
/// spawned on `tracker` so shutdown can wait for them.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    max_connections: usize,
    metrics: Metrics,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(max_connections));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => ConnectionPermit(Arc::new(p)),
                Err(_) => return,
            },
        };
        let (stream, remote) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    metrics.accept_errors.inc();
                    tracing::warn!(error = %e, "accept failed; backing off");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Frames are batched before each write, so Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            match tls {
                None => serve_connection(stream, remote, router, permit, shutdown).await,
                Some(acceptor) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(stream, remote, router, permit, shutdown).await,
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                },
            }
        });
    }
}

async fn serve_connection<S>(
    stream: S,
    remote: SocketAddr,
    router: Router,
    permit: ConnectionPermit,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = router.map_request(move |mut request: axum::http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(remote));
        request.extensions_mut().insert(permit.clone());
        request
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%remote, error = %e, "HTTP connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
