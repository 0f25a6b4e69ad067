//! The listeners (with [`tls`], the server configuration and client-certificate verifier, and
//! [`limits`], the connection caps and budgets): accept loop, connection caps, TLS handshakes, HTTP/1.1 connections,
//! graceful shutdown.
//!
//! The caller owns the sockets and the shutdown signal ([`serve`] takes a bound
//! `TcpListener` and a future), so tests bind port 0 on 127.0.0.1 and stop the server by
//! completing the future. Each accepted connection is first counted against the caps of
//! `[limits]` (in all and per client address; over either, it is closed at once, before
//! the TLS handshake) and then gets its own task: the TLS handshake (bounded by
//! `handshake_timeout_secs`), then hyper's HTTP/1.1 connection driving the axum router,
//! with a read buffer of [`MAX_BUFFER`] (a request line and headers beyond it get 431) and
//! `header_read_timeout_secs` for headers, which is also how long an idle keep-alive
//! connection lives. The verified client certificate, if the peer sent one, and the peer's
//! address are attached to every request on that connection (`PresentedCertificate`,
//! [`ClientAddress`]).
//!
//! From three quarters of `max_connections` on, every connection is told to close once it
//! is idle: idle keep-alive connections close at once and busy ones after their request,
//! which makes room for new clients without cutting off a request in flight.
//!
//! On shutdown: stop accepting, let every connection finish the request in flight (idle
//! keep-alive connections and unfinished handshakes are closed at once; a connection that
//! finished its handshake but has not sent a whole request yet lasts until its header read
//! timeout), wait at most the configured grace period, then close the store.

pub mod limits;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::api::{self, ClientAddress};
use crate::server::limits::{ConnectionPermit, Connections};
use crate::service::{Ca, PresentedCertificate};

/// hyper's read buffer per connection. The contract's largest header is a bearer token or a
/// `Content-Length`; 16 KiB holds every request line and header a client needs, and bounds
/// what a connection that never finishes its headers can make the CA hold.
pub const MAX_BUFFER: usize = 16 * 1024;
/// Connections the operations listener takes at once (scrapers and probes are few).
const OPS_MAX_CONNECTIONS: u32 = 64;
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
    /// The verify endpoint, the relying-party endpoints and the CRL, on the cert-auth
    /// domain's own address.
    pub cert_auth: Option<TcpListener>,
    /// Plain HTTP: OCSP, the CRL and the JWKS only (`[http]`).
    pub http: Option<TcpListener>,
    /// TLS, for relying parties only: the check, the JWKS, OCSP and the CRL
    /// (`[relying_party] listen`).
    pub relying_party: Option<TcpListener>,
    /// Plain HTTP, for operations only: `/healthz`, `/readyz`, `/metrics` (`[ops] listen`).
    /// Its connections have a cap of their own, so that a flood at the API cannot keep the
    /// monitoring out.
    pub ops: Option<TcpListener>,
}

/// Serves every endpoint on `listener` until `shutdown` completes, then drains and closes
/// the store.
pub async fn serve(
    listener: TcpListener,
    ca: Arc<Ca>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    serve_listeners(
        Listeners { main: listener, cert_auth: None, http: None, relying_party: None, ops: None },
        ca,
        shutdown,
    )
    .await
}

/// Like [`serve`], with an optional second listener for the cert-auth domain.
pub async fn serve_listeners(
    listeners: Listeners,
    ca: Arc<Ca>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let main_addr = listeners.main.local_addr().map_err(ServeError::LocalAddr)?;
    let connections = Connections::new(ca.limits());
    let timeouts = Timeouts {
        handshake: Duration::from_secs(ca.limits().handshake_timeout_secs),
        header_read: Duration::from_secs(ca.limits().header_read_timeout_secs),
    };
    let main = Endpoint {
        acceptor: Some(TlsAcceptor::from(ca.tls_main())),
        router: api::router(ca.clone()),
        connections: connections.clone(),
        timeouts,
    };
    // Each optional listener: its TLS (none for plain HTTP), its routes, its log line.
    let endpoint = |listener: Option<&TcpListener>,
                    acceptor: Option<Arc<rustls::ServerConfig>>,
                    router: fn(Arc<Ca>) -> Router,
                    what: &str|
     -> Result<Option<Endpoint>, ServeError> {
        let Some(listener) = listener else { return Ok(None) };
        let addr = listener.local_addr().map_err(ServeError::LocalAddr)?;
        tracing::info!(%addr, "serving {what}");
        Ok(Some(Endpoint {
            acceptor: acceptor.map(TlsAcceptor::from),
            router: router(ca.clone()),
            connections: connections.clone(),
            timeouts,
        }))
    };
    let cert_auth = endpoint(
        listeners.cert_auth.as_ref(),
        Some(ca.tls_cert_auth()),
        api::cert_auth_router,
        "the cert-auth domain",
    )?;
    let http = endpoint(
        listeners.http.as_ref(),
        None,
        api::http_router,
        "ocsp, the crl and the jwks over plain http",
    )?;
    let relying_party = endpoint(
        listeners.relying_party.as_ref(),
        Some(ca.tls_main()),
        api::relying_party_router,
        "relying parties",
    )?;
    let ops_connections = Connections::new(&crate::config::LimitSettings {
        max_connections: OPS_MAX_CONNECTIONS,
        max_connections_per_address: OPS_MAX_CONNECTIONS,
        ..ca.limits().clone()
    });
    let ops = match listeners.ops.as_ref() {
        Some(listener) => {
            let addr = listener.local_addr().map_err(ServeError::LocalAddr)?;
            tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
            Some(Endpoint {
                acceptor: None,
                router: crate::ops::router(ca.clone()),
                connections: ops_connections.clone(),
                timeouts,
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

    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (accepted, endpoint) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listeners.main.accept() => (accepted, &main),
            (accepted, endpoint) = accept_optional(listeners.cert_auth.as_ref(), cert_auth.as_ref()) => (accepted, endpoint),
            (accepted, endpoint) = accept_optional(listeners.http.as_ref(), http.as_ref()) => (accepted, endpoint),
            (accepted, endpoint) = accept_optional(listeners.relying_party.as_ref(), relying_party.as_ref()) => (accepted, endpoint),
            (accepted, endpoint) = accept_optional(listeners.ops.as_ref(), ops.as_ref()) => (accepted, endpoint),
        };
        match accepted {
            Ok((stream, peer)) => match endpoint.connections.open(peer.ip()) {
                Ok(permit) => {
                    let endpoint = endpoint.clone();
                    let open = OpenConnection::new(ca.telemetry().open_connections.clone());
                    tokio::spawn(async move {
                        endpoint.connection(stream, peer, permit).await;
                        drop(open);
                    });
                }
                Err(refused) => {
                    // Closed before the handshake: a flood of connections costs the CA an
                    // accept and a close each, and never a descriptor for long.
                    ca.metrics().connections_refused.inc();
                    tracing::debug!(%peer, ?refused, "connection cap reached; closing the connection");
                    drop(stream);
                }
            },
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
    connections.begin_shutdown();
    ops_connections.begin_shutdown();
    if tokio::time::timeout(ca.shutdown_grace(), connections.all_closed()).await.is_err() {
        tracing::warn!("requests still in flight after the grace period; closing anyway");
    }
    ca.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// One open connection in `devicetrust_open_connections`, until dropped (also when its
/// task panics).
struct OpenConnection(prometheus_client::metrics::gauge::Gauge);

impl OpenConnection {
    fn new(gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Accepts on an optional listener; never completes without one.
async fn accept_optional<'a>(
    listener: Option<&TcpListener>,
    endpoint: Option<&'a Endpoint>,
) -> (std::io::Result<(TcpStream, SocketAddr)>, &'a Endpoint) {
    match (listener, endpoint) {
        (Some(listener), Some(endpoint)) => (listener.accept().await, endpoint),
        _ => std::future::pending().await,
    }
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    handshake: Duration,
    header_read: Duration,
}

#[derive(Clone)]
struct Endpoint {
    /// `None` for the plain-HTTP listener.
    acceptor: Option<TlsAcceptor>,
    router: Router,
    connections: Arc<Connections>,
    timeouts: Timeouts,
}

impl Endpoint {
    async fn connection(self, stream: TcpStream, peer: SocketAddr, permit: ConnectionPermit) {
        // The permit is this connection's place under the caps until the task ends.
        let _permit = permit;
        let mut shutdown = self.connections.shutdown_signal();
        let close_idle = self.connections.close_idle_signal();
        // Small request/response exchanges: don't let Nagle hold back the last segment.
        let _ = stream.set_nodelay(true);
        let Some(acceptor) = self.acceptor.clone() else {
            self.serve(stream, None, peer, close_idle).await;
            return;
        };
        let handshake = tokio::time::timeout(self.timeouts.handshake, acceptor.accept(stream));
        let tls = tokio::select! {
            result = handshake => match result {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "tls handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "tls handshake timed out");
                    return;
                }
            },
            _ = shutdown.wait_for(|stopping| *stopping) => return,
        };
        let presented = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| PresentedCertificate::from_der(leaf.as_ref()));
        self.serve(tls, presented, peer, close_idle).await;
    }

    /// HTTP/1.1 on an established connection (TLS or not) until it closes.
    async fn serve<I>(
        self,
        io: I,
        presented: Option<PresentedCertificate>,
        peer: SocketAddr,
        mut close_idle: tokio::sync::watch::Receiver<u64>,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let router = self.router;
        let client = ClientAddress(peer.ip());
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            if let Some(presented) = &presented {
                request.extensions_mut().insert(presented.clone());
            }
            request.extensions_mut().insert(client);
            router.clone().oneshot(request)
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.timeouts.header_read)
            .max_buf_size(MAX_BUFFER)
            .keep_alive(true)
            .serve_connection(TokioIo::new(io), service);
        let mut connection = std::pin::pin!(connection);
        let mut closing = false;
        let result = loop {
            tokio::select! {
                result = connection.as_mut() => break result,
                changed = close_idle.changed(), if !closing => {
                    // Under pressure or at shutdown: an idle connection closes now, a busy
                    // one once its response is written.
                    closing = true;
                    if changed.is_ok() {
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}
