//! The listeners: accept loop, TLS handshakes, HTTP/1.1 connections, graceful shutdown.
//!
//! The caller owns the sockets and the shutdown signal ([`serve`] takes a bound
//! `TcpListener` and a future), so tests bind port 0 on 127.0.0.1 and stop the server by
//! completing the future. Each accepted connection gets its own task: the TLS handshake
//! (bounded by [`HANDSHAKE_TIMEOUT`]), then hyper's HTTP/1.1 connection driving the axum
//! router. The verified client certificate, if the peer sent one, is attached to every
//! request on that connection as a [`PresentedCertificate`] extension.
//!
//! On shutdown: stop accepting, let every connection finish the request in flight (idle
//! keep-alive connections are closed at once), wait at most the configured grace period,
//! then close the store.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::api;
use crate::service::{Ca, PresentedCertificate};

/// Longest a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How often quiet devices are dropped from the rate limiter.
const RATE_LIMITER_PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A listener's local address could not be read.
    #[error("cannot read the listener's address")]
    LocalAddr(#[source] std::io::Error),
}

/// The sockets to serve.
#[derive(Debug)]
pub struct Listeners {
    /// Every endpoint.
    pub main: TcpListener,
    /// The verify endpoint and the CRL only, on the cert-auth domain's own address.
    pub cert_auth: Option<TcpListener>,
}

/// Serves every endpoint on `listener` until `shutdown` completes, then drains and closes
/// the store.
pub async fn serve(
    listener: TcpListener,
    ca: Arc<Ca>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    serve_listeners(Listeners { main: listener, cert_auth: None }, ca, shutdown).await
}

/// Like [`serve`], with an optional second listener for the cert-auth domain.
pub async fn serve_listeners(
    listeners: Listeners,
    ca: Arc<Ca>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let main_addr = listeners.main.local_addr().map_err(ServeError::LocalAddr)?;
    let main = Endpoint { acceptor: TlsAcceptor::from(ca.tls_main()), router: api::router(ca.clone()) };
    let cert_auth = match &listeners.cert_auth {
        Some(listener) => {
            let addr = listener.local_addr().map_err(ServeError::LocalAddr)?;
            tracing::info!(%addr, "serving the cert-auth domain");
            Some(Endpoint {
                acceptor: TlsAcceptor::from(ca.tls_cert_auth()),
                router: api::cert_auth_router(ca.clone()),
            })
        }
        None => None,
    };
    tracing::info!(addr = %main_addr, "serving");

    let pruner = {
        let ca = ca.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(RATE_LIMITER_PRUNE_INTERVAL);
            loop {
                interval.tick().await;
                ca.prune_rate_limiter();
            }
        })
    };

    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let second = async {
            match &listeners.cert_auth {
                Some(listener) => listener.accept().await,
                None => std::future::pending().await,
            }
        };
        let (accepted, endpoint) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listeners.main.accept() => (accepted, &main),
            accepted = second => match &cert_auth {
                Some(endpoint) => (accepted, endpoint),
                None => continue,
            },
        };
        match accepted {
            Ok((stream, peer)) => {
                let endpoint = endpoint.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move { endpoint.connection(stream, peer, watcher).await });
            }
            Err(e) => {
                // Usually out of file descriptors; back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    tracing::info!("shutting down: finishing requests in flight");
    drop(listeners);
    pruner.abort();
    if tokio::time::timeout(ca.shutdown_grace(), graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still in flight after the grace period; closing anyway");
    }
    ca.close().await;
    tracing::info!("stopped");
    Ok(())
}

#[derive(Clone)]
struct Endpoint {
    acceptor: TlsAcceptor,
    router: Router,
}

impl Endpoint {
    async fn connection(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        // Small request/response exchanges: don't let Nagle hold back the last segment.
        let _ = stream.set_nodelay(true);
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "tls handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "tls handshake timed out");
                return;
            }
        };
        let presented = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| PresentedCertificate::from_der(leaf.as_ref()));
        let router = self.router;
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            if let Some(presented) = &presented {
                request.extensions_mut().insert(presented.clone());
            }
            router.clone().oneshot(request)
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true)
            .serve_connection(TokioIo::new(tls), service);
        if let Err(e) = watcher.watch(connection).await {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}
