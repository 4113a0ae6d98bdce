//! The accept loop: plain TCP or TLS (reloadable), HTTP/1.1 with upgrades, a bound on
//! connections not yet upgraded and on the time they may take to send their request, and
//! back-off when accepting fails (for example out of file descriptors).

use std::io::BufReader;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::metrics::Metrics;

/// Aborts the HTTP connection a request came on, from the handler that serves it: an event
/// stream whose client stopped reading cannot be sent an end of stream (the socket is
/// full), so its connection is dropped instead. Every request carries one.
#[derive(Clone, Default)]
pub struct Abort(pub CancellationToken);

/// How long a client may take over the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept: the usual cause (no file descriptors) needs time to clear.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The PEM files `--tls-cert` and `--tls-key` name: read at start-up and again on SIGHUP.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

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

/// The TLS configuration in use. `reload` re-reads the certificate and key (on SIGHUP), so
/// a renewed certificate is served without a restart; connections already open keep the
/// one they were accepted with.
#[derive(Clone)]
pub struct Tls {
    files: TlsFiles,
    acceptor: Arc<RwLock<TlsAcceptor>>,
}

impl Tls {
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        Ok(Tls { files: files.clone(), acceptor: Arc::new(RwLock::new(tls_acceptor(files)?)) })
    }

    /// Re-reads the files; on any error the configuration in use is kept.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = tls_acceptor(&self.files)?;
        *self.acceptor.write() = fresh;
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.read().clone()
    }
}

/// Loads the certificate chain and key into a TLS acceptor (HTTP/1.1 only: WebSocket
/// upgrades are an HTTP/1.1 mechanism).
fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
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

/// How one listener treats the connections it accepts.
#[derive(Clone)]
pub struct Listening {
    pub tls: Option<Tls>,
    /// Connections accepted and not (yet) upgraded to a session, at once: silent or slow
    /// clients hold one each until `header_timeout` closes them, so they can delay new
    /// connections but never lock sessions or health checks out for longer.
    pub max_pending: usize,
    /// How long a connection may take to send a complete request head, from when it is
    /// accepted or from its previous response (keep-alive).
    pub header_timeout: Duration,
    pub metrics: Metrics,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

/// Accepts connections until shutdown, serving each with `router`. Connection tasks are
/// spawned on the tracker so shutdown can wait for them. A connection holds one of the
/// `max_pending` slots only until it upgrades: sessions are limited where they are made
/// (see [`crate::session::ws`]), so a full house of clients still leaves room for health checks.
pub async fn serve(listener: TcpListener, router: Router, how: Listening) {
    let pending = Arc::new(Semaphore::new(how.max_pending));
    loop {
        let slot = tokio::select! {
            _ = how.shutdown.cancelled() => return,
            slot = pending.clone().acquire_owned() => match slot {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, remote) = tokio::select! {
            _ = how.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    how.metrics.accept_errors.inc();
                    tracing::warn!(error = %e, "accept failed; backing off");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Frames are batched before each write, so Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let how = how.clone();
        how.tracker.clone().spawn(async move {
            let _slot = slot;
            match &how.tls {
                None => serve_connection(stream, remote, router, &how).await,
                Some(tls) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(stream, remote, router, &how).await,
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => {
                        how.metrics.request_timeouts.inc();
                        tracing::debug!(%remote, "TLS handshake timed out")
                    }
                },
            }
        });
    }
}

async fn serve_connection<S>(stream: S, remote: SocketAddr, router: Router, how: &Listening)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // An event stream whose client stopped reading ends its connection with this: hyper
    // has no write timeout of its own.
    let abort = Abort::default();
    let aborted = abort.0.clone();
    let service = router.map_request(move |mut request: axum::http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(remote));
        request.extensions_mut().insert(abort.clone());
        request
    });
    let connection = hyper::server::conn::http1::Builder::new()
        // hyper enforces the header timeout only with a timer to measure it by.
        .timer(TokioTimer::new())
        .header_read_timeout(how.header_timeout)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                if e.is_timeout() {
                    // Routine for scanners and attacker-driven: counted, not logged loudly.
                    how.metrics.request_timeouts.inc();
                    tracing::debug!(%remote, "no complete request head in time; closed");
                } else {
                    tracing::debug!(%remote, error = %e, "HTTP connection ended with an error");
                }
            }
        }
        _ = aborted.cancelled() => tracing::debug!(%remote, "connection dropped: its event stream stopped reading"),
        _ = how.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            // An event stream ends when its session has sent its close; then the connection.
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = aborted.cancelled() => {}
            }
        }
    }
}
