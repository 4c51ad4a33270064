//! A node's admin endpoint, on a listener of its own (keep it on a private interface): the
//! status as Geo's JSON, Prometheus metrics, and a health check.
//!
//! - `GET /status`: the latest [`NodeStatus`](crate::status::NodeStatus) as JSON;
//! - `GET /metrics`: Geo's gauges plus the node's counters, Prometheus' text format;
//! - `GET /health`: `200 {"healthy":true}` or `503 {"healthy":false}`, with the reason only
//!   for a request that carries the token;
//! - `POST /graphql` (feature `graphql`): the registries API ([`crate::graphql`]).
//!
//! `/health` answers without a token, so that a load balancer or an orchestrator can probe it;
//! it says nothing but healthy or not. Every other request needs `Authorization: Bearer <admin
//! token>` (compared in constant time), checked before anything is read; Prometheus sends it with `authorization: {credentials: ...}` in its
//! scrape config. The endpoints serve the snapshot the status collector keeps, so a scrape costs
//! no database work.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::auth::Secret;
use crate::status::{StatusCollector, StatusGauges};
use crate::telemetry::{self, Metrics};
use prometheus_client::encoding::prometheus_text;

/// Where the admin endpoint listens and the token it requires.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// The address (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// The bearer token every request must carry (redacted in `Debug`).
    pub token: Secret,
}

#[derive(Clone)]
struct AdminState {
    token: Secret,
    status: StatusCollector,
    metrics: Metrics,
}

/// The admin router over a node's status collector and metrics.
pub fn router(token: Secret, status: StatusCollector, metrics: Metrics) -> axum::Router {
    router_with(token, status, metrics, axum::Router::new())
}

/// [`router`] with more routes (GraphQL), behind the same token.
pub fn router_with(
    token: Secret,
    status: StatusCollector,
    metrics: Metrics,
    extra: axum::Router,
) -> axum::Router {
    let state = AdminState {
        token,
        status,
        metrics,
    };
    let guarded = axum::Router::new()
        .route("/status", get(status_json))
        .route("/metrics", get(prometheus))
        .with_state(state.clone())
        .merge(extra)
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    axum::Router::new()
        .route("/health", get(health))
        .with_state(state)
        .merge(guarded)
}

/// Serves the admin router on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Whether `headers` carry the admin token.
fn authorized(state: &AdminState, headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| state.token.matches(token))
}

async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    if authorized(&state, request.headers()) {
        return next.run(request).await;
    }
    tracing::warn!(path = %request.uri().path(), "refused an admin request without a valid token");
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({"message": "a valid admin token is required"})),
    )
        .into_response()
}

fn not_collected() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"message": "the status has not been collected yet"})),
    )
        .into_response()
}

async fn status_json(State(state): State<AdminState>) -> Response {
    match state.status.latest() {
        Some(s) => Json(s.to_json()).into_response(),
        None => not_collected(),
    }
}

async fn health(State(state): State<AdminState>, headers: axum::http::HeaderMap) -> Response {
    let detailed = authorized(&state, &headers);
    match state.status.latest() {
        Some(s) if s.healthy() => Json(json!({"healthy": true})).into_response(),
        Some(s) if detailed => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"healthy": false, "status_message": s.status_message, "last_successful_status_check_at": s.collected_at})),
        )
            .into_response(),
        Some(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"healthy": false})),
        )
            .into_response(),
        None if detailed => not_collected(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"healthy": false})),
        )
            .into_response(),
    }
}

async fn prometheus(State(state): State<AdminState>) -> Response {
    let name = state.status.name().to_owned();
    // Geo labels every metric with the node's name and URL; no URL label rather than a wrong one.
    let mut labels = vec![("name", name.as_str())];
    if let Some(url) = state.status.url() {
        labels.push(("url", url));
    }
    let mut registry = telemetry::labelled_registry(&labels);
    if let Some(s) = state.status.latest() {
        registry.register_collector(Box::new(StatusGauges(s)));
    }
    state.metrics.register(&mut registry);
    let mut out = String::new();
    if let Err(e) = prometheus_text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "could not render the metrics");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], out).into_response()
}
