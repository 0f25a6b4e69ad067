//! Operations: `/healthz`, `/readyz` and Prometheus `/metrics`, served on a listener of
//! their own (`[ops] listen`, plain HTTP), never next to the API that clients reach.
//!
//! [`Telemetry`] owns every metric (prometheus-client types, so encoding is the crate's
//! OpenMetrics text, not ours). The API routers count requests by route and status through
//! `count_requests`; refusals are counted by the error code that
//! [`crate::api`] attaches to each error response; the store is timed per operation by
//! `store::Metered`; MDM lookups, issuance and open connections are counted where
//! they happen. Labels take only bounded values: route templates (never a raw path), status
//! codes, error codes, operation names.
//!
//! - `/healthz`: 200 while the process serves; nothing else is asked.
//! - `/readyz`: 200 when the store answers, the issuing key signs and the MDM client is
//!   configured; 503 with the failing check named otherwise, so a load balancer stops
//!   sending requests to a replica whose database is gone.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::server::limits::Metrics;
use crate::service::Ca;

/// Labels of `devicetrust_requests`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    /// The route template, such as `/api/v1/admin/devices/{udid}`, or `unmatched`.
    pub(crate) endpoint: String,
    /// The HTTP status.
    pub(crate) status: u16,
}

/// A label set of one value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct CodeLabels {
    /// The contract's error code.
    pub(crate) code: &'static str,
}

/// A label set of one value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct KindLabels {
    /// `enroll` or `renew`.
    pub(crate) kind: &'static str,
}

/// A label set of one value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    /// `managed`, `not_managed` or `unavailable`.
    pub(crate) outcome: &'static str,
}

/// A label set of one value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct OperationLabels {
    /// The store operation (`enroll`, `renew`, `authenticate`, ...).
    pub(crate) operation: &'static str,
}

/// The error code of an error response, attached by the API for [`count_requests`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct RefusalCode(pub(crate) &'static str);

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets from 0.5 ms to about 16 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric of one CA process.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) refusals: Family<CodeLabels, Counter>,
    pub(crate) issued: Family<KindLabels, Counter>,
    pub(crate) mdm_lookups: Family<OutcomeLabels, Counter>,
    pub(crate) mdm_seconds: Histogram,
    pub(crate) store_seconds: HistogramFamily<OperationLabels>,
    pub(crate) open_connections: Gauge,
}

impl Telemetry {
    /// The metrics, with the counters of `metrics` (what the limits shed) registered too.
    pub(crate) fn new(metrics: &Metrics) -> Self {
        let mut registry = Registry::with_prefix("devicetrust");
        let requests = Family::default();
        registry.register("requests", "HTTP requests answered, by route and status", requests.clone());
        let refusals = Family::default();
        registry.register("refusals", "Error responses, by the contract's error code", refusals.clone());
        let issued = Family::default();
        registry.register("certificates_issued", "Certificates issued, by enroll or renew", issued.clone());
        let mdm_lookups = Family::default();
        registry.register("mdm_lookups", "MDM lookups, by outcome", mdm_lookups.clone());
        let mdm_seconds = latency_histogram();
        registry.register("mdm_lookup_seconds", "How long MDM lookups took", mdm_seconds.clone());
        let store_seconds: HistogramFamily<OperationLabels> = Family::new_with_constructor(latency_histogram);
        registry.register("store_operation_seconds", "How long store operations took", store_seconds.clone());
        let open_connections = Gauge::default();
        registry.register("open_connections", "Open client connections", open_connections.clone());
        metrics.register(&mut registry);
        Self {
            registry,
            requests,
            refusals,
            issued,
            mdm_lookups,
            mdm_seconds,
            store_seconds,
            open_connections,
        }
    }

    /// Times a store operation.
    pub(crate) fn time_store(&self, operation: &'static str, started: Instant) {
        self.store_seconds
            .get_or_create(&OperationLabels { operation })
            .observe(started.elapsed().as_secs_f64());
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Counts a request of an API router by its route template and status, and its refusal by
/// error code. Layered onto every router (`route_layer` would skip the fallbacks).
pub(crate) async fn count_requests(State(ca): State<Arc<Ca>>, request: Request, next: Next) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let telemetry = ca.telemetry();
    telemetry.requests.get_or_create(&RequestLabels { endpoint, status: response.status().as_u16() }).inc();
    if let Some(RefusalCode(code)) = response.extensions().get::<RefusalCode>() {
        telemetry.refusals.get_or_create(&CodeLabels { code }).inc();
    }
    response
}

/// The operations listener's routes.
pub fn router(ca: Arc<Ca>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ca)
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// What `/readyz` checked: `ok`, or what failed.
#[derive(Debug, Serialize)]
struct Readiness {
    ready: bool,
    store: String,
    signing_key: String,
    mdm: String,
}

async fn readyz(State(ca): State<Arc<Ca>>) -> Response {
    let store = match ca.store_ping().await {
        Ok(()) => "ok".to_owned(),
        Err(e) => {
            tracing::warn!(error = &e as &dyn std::error::Error, "readiness: the store does not answer");
            format!("failed: {e}")
        }
    };
    let signing_key = match ca.authority().sign_raw(b"devicetrust-ca readiness") {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("failed: {e}"),
    };
    let mdm = ca.mdm_description();
    let ready = store == "ok" && signing_key == "ok" && mdm.starts_with("ok");
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(Readiness { ready, store, signing_key, mdm })).into_response()
}

async fn metrics(State(ca): State<Arc<Ca>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        ca.telemetry().encode(),
    )
        .into_response()
}
