//! `shoal-publisher serve`: the release directory over HTTPS (hyper + rustls).
//!
//! [`run`] takes a bound listener, the TLS config and a shutdown future, mini-redis
//! style, so tests run it in-process on port 0. On shutdown it stops accepting, lets
//! in-flight responses finish for up to [`DRAIN_TIMEOUT`], then returns.

pub mod catalog;
mod files;
pub mod metrics;
pub mod range;
pub mod tls;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use files::FileServer;
pub use metrics::Metrics;

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight responses may run after shutdown was asked for.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection idle this long between requests is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `root` on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    root: &Path,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let server = Arc::new(FileServer::new(root, metrics.clone())?);
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        metrics.add_connection();
        let acceptor = acceptor.clone();
        let server = server.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = service_fn(move |req| {
                let server = server.clone();
                async move { Ok::<_, std::convert::Infallible>(server.handle(req).await) }
            });
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("in-flight responses did not finish in time; closing them");
        }
    }
    Ok(())
}
