//! The primary's HTTP API (axum). Every route authenticates the request before it reads
//! anything; object paths come from the model's stored key, never from the URL.
//!
//! - `GET /geo/v1/events?after=<id>&limit=<n>` (or `?ids=1,2,3` for gaps): events in id order,
//!   with the latest id;
//! - `GET /geo/v1/replicables/<name>?after_id=<id>&limit=<n>`: model ids, for the backfill;
//! - `GET /geo/v1/retrieve/<name>/<id>`: the object's bytes, with `Content-Length`, its key, and
//!   its SHA-256 when the primary has verified it;
//! - `GET /geo/v1/retrieve/<name>?ids=1,2,3`: several small objects in one response, each an
//!   [`ObjectFrame`] line followed by its bytes (larger ones are marked to be fetched alone);
//! - `POST /geo/v1/cursor`: a secondary reports how far it has read (for pruning).

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::auth::SecretsKey;
use super::auth::{AuthError, RequestScope, parse_authorization, verify};
use super::nodes::{KnownNode, NodeError, find_by_access_key};
use super::wire::{
    AUTH_CLOCK_SKEW, AUTH_FAILED, BATCH_CONTENT_TYPE, ChecksumsPage, CursorReport, EventsPage,
    FILE_NOT_FOUND, FrameStatus, HEADER_OBJECT_KEY, HEADER_SHA256, IdsPage, MAX_BATCH, MAX_PAGE,
    NODE_DISABLED, ObjectFrame, write_frame,
};
use crate::db::Database;
use crate::events::{DbEventSource, EventSource, record_secondary_cursor};
use crate::events::{DbModelIdSource, ListedVersions, ModelIdSource};
use crate::replicator::{ReplicatorDescriptor, ReplicatorSet, model_checksums, model_versions};
use crate::storage::{BlobStore, LocalStore, Opened};
use crate::strategy;
use crate::strategy::blob::serve::{self, READ_GROUP, ServeError, Served};
use crate::strategy::blob::{Answer, Frame};

/// How long a node looked up for authentication is remembered (a disabled node is refused at
/// most this long after it was disabled).
pub(crate) const NODE_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

type NodeCache = std::sync::Arc<
    std::sync::Mutex<std::collections::HashMap<String, (KnownNode, std::time::Instant)>>,
>;

/// What the API serves from: the primary's database, replicators and object store.
#[derive(Debug, Clone)]
pub struct PrimaryApi<S = LocalStore> {
    db: Database,
    set: ReplicatorSet,
    store: S,
    nodes: NodeCache,
    secrets_key: Option<SecretsKey>,
}

impl<S: BlobStore> PrimaryApi<S> {
    /// The API over the primary's database, replicators and object store.
    pub fn new(db: &Database, set: &ReplicatorSet, store: S) -> Self {
        PrimaryApi {
            db: db.clone(),
            set: set.clone(),
            store,
            nodes: NodeCache::default(),
            secrets_key: None,
        }
    }

    /// Opens the nodes' sealed secrets with `key` (see [`super::nodes`]).
    pub fn with_secrets_key(mut self, key: Option<SecretsKey>) -> Self {
        self.secrets_key = key;
        self
    }

    /// The axum router (mount it in your own server, or use [`serve`]).
    pub fn router(self) -> axum::Router {
        axum::Router::new()
            .route("/geo/v1/events", get(events::<S>))
            .route("/geo/v1/replicables/{name}", get(replicables::<S>))
            .route("/geo/v1/retrieve/{name}/{id}", get(retrieve::<S>))
            .route("/geo/v1/retrieve/{name}", get(retrieve_many::<S>))
            .route("/geo/v1/checksums/{name}", get(checksums::<S>))
            .route("/geo/v1/cursor", post(cursor::<S>))
            .with_state(self)
    }
}

/// Serves the API on `listener` (TCP_NODELAY set on every connection: small responses would
/// otherwise wait ~40 ms for delayed ACKs) until `shutdown` is cancelled.
pub async fn serve<S: BlobStore>(
    listener: tokio::net::TcpListener,
    api: PrimaryApi<S>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, api.router())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// An API error: a status and a JSON body (`message`, and `geo_code` for a missing object).
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    geo_code: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            geo_code: None,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    geo_code: Option<&'static str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            message: &self.message,
            geo_code: self.geo_code,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        // A misconfiguration of this primary (no key, another key): said here, not to the
        // secondary.
        tracing::error!(error = %e, "cannot read a node's credentials");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl From<crate::DbError> for ApiError {
    fn from(e: crate::DbError) -> Self {
        tracing::error!(error = %e, "database error while serving a secondary");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Authenticates the request for `scope` before anything else is read.
async fn authenticate<S: BlobStore>(
    api: &PrimaryApi<S>,
    headers: &HeaderMap,
    scope: &RequestScope,
) -> Result<KnownNode, ApiError> {
    let refuse = |e: AuthError, node: Option<&str>| {
        // The reason and the node's name only: never the token or a secret.
        tracing::warn!(reason = %e, node, "refused a request");
        // Classified for the secondary's operator (the client reads `geo_code`).
        let (status, code) = match e {
            AuthError::UnknownNode if node.is_some() => (StatusCode::FORBIDDEN, NODE_DISABLED),
            AuthError::Time => (StatusCode::UNAUTHORIZED, AUTH_CLOCK_SKEW),
            _ => (StatusCode::UNAUTHORIZED, AUTH_FAILED),
        };
        ApiError {
            status,
            message: e.to_string(),
            geo_code: Some(code),
        }
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let presented = parse_authorization(value).map_err(|e| refuse(e, None))?;
    let cached = api.nodes.lock().ok().and_then(|c| {
        c.get(&presented.access_key)
            .filter(|(_, at)| at.elapsed() < NODE_CACHE_TTL)
            .map(|(n, _)| n.clone())
    });
    let node = match cached {
        Some(node) => node,
        None => {
            let node = find_by_access_key(&api.db, &presented.access_key, api.secrets_key.as_ref())
                .await?
                .ok_or_else(|| refuse(AuthError::UnknownNode, None))?;
            if let Ok(mut cache) = api.nodes.lock() {
                cache.insert(
                    presented.access_key.clone(),
                    (node.clone(), std::time::Instant::now()),
                );
            }
            node
        }
    };
    if !node.enabled {
        return Err(refuse(AuthError::UnknownNode, Some(&node.name)));
    }
    verify(&presented, &node.secret, scope, unix_now()).map_err(|e| refuse(e, Some(&node.name)))?;
    Ok(node)
}

/// `1,2,3` → ids, at most [`MAX_PAGE`] of them.
fn parse_ids(list: &str) -> Result<Vec<i64>, ApiError> {
    let ids: Vec<i64> = list
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "ids must be comma-separated integers",
            )
        })?;
    if ids.len() > MAX_PAGE {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "too many ids"));
    }
    Ok(ids)
}

fn descriptor<S: BlobStore>(
    api: &PrimaryApi<S>,
    name: &str,
) -> Result<&'static ReplicatorDescriptor, ApiError> {
    api.set.get(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown replicable `{name}`"),
        )
    })
}

/// Authenticates a request for `name`'s ids or checksums, then finds the replicable.
async fn listing_scope<S: BlobStore>(
    api: &PrimaryApi<S>,
    headers: &HeaderMap,
    name: &str,
) -> Result<&'static ReplicatorDescriptor, ApiError> {
    let scope = RequestScope::Replicables {
        replicable_name: name.to_owned(),
    };
    authenticate(api, headers, &scope).await?;
    descriptor(api, name)
}

/// A replicable the blob routes serve: unknown, or of another strategy, is 404.
fn blob_descriptor<S: BlobStore>(
    api: &PrimaryApi<S>,
    name: &str,
) -> Result<&'static ReplicatorDescriptor, ApiError> {
    let d = descriptor(api, name)?;
    if !strategy::is_blob(d) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "`{name}` is replicated by the {} strategy, not served as blobs",
                d.strategy.as_str()
            ),
        ));
    }
    Ok(d)
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: i64,
    limit: Option<usize>,
    /// Comma-separated ids (gap lookups).
    ids: Option<String>,
}

async fn events<S: BlobStore>(
    State(api): State<PrimaryApi<S>>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Json<EventsPage>, ApiError> {
    authenticate(&api, &headers, &RequestScope::Events).await?;
    let source = DbEventSource::new(&api.db);
    let failed = |e: crate::events::SourceError| {
        tracing::error!(error = %e, "reading the event log");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    };
    let events = match q.ids {
        Some(ids) => {
            let ids = parse_ids(&ids)?;
            source.events_by_ids(&ids).await.map_err(failed)?
        }
        None => source
            .events_after(q.after, q.limit.unwrap_or(1000).clamp(1, MAX_PAGE))
            .await
            .map_err(failed)?,
    };
    let (latest_id, latest_at) = source.latest_event().await.map_err(failed)?;
    Ok(Json(EventsPage {
        events,
        latest_id,
        latest_at,
    }))
}

#[derive(Debug, Deserialize)]
struct IdsQuery {
    #[serde(default)]
    after_id: i64,
    /// The highest id wanted (with `versions`).
    until_id: Option<i64>,
    limit: Option<usize>,
    /// Add the page's digest and unverified ids.
    #[serde(default)]
    digest: bool,
    /// Add each record's key and verified checksum.
    #[serde(default)]
    versions: bool,
}

async fn replicables<S: BlobStore>(
    State(api): State<PrimaryApi<S>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<IdsQuery>,
) -> Result<Json<IdsPage>, ApiError> {
    let d = listing_scope(&api, &headers, &name).await?;
    let limit = q.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let failed = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "listing model ids");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    };
    if !q.digest && !q.versions {
        let ids = DbModelIdSource::new(&api.db)
            .model_ids_after(d, q.after_id, limit)
            .await
            .map_err(|e| failed(&e))?;
        return Ok(Json(IdsPage {
            ids,
            ..IdsPage::default()
        }));
    }
    let versions = model_versions(&api.db, d, q.after_id, q.until_id, limit)
        .await
        .map_err(|e| failed(&e))?;
    let mut page = IdsPage {
        ids: versions.iter().map(|v| v.id).collect(),
        ..IdsPage::default()
    };
    if q.digest {
        let listed = ListedVersions::of(&versions);
        page.digest = Some(hex::encode(listed.digest));
        page.unverified = listed.unverified;
    }
    if q.versions {
        page.versions = Some(
            versions
                .into_iter()
                .map(|v| (v.key, v.sha256.map(hex::encode)))
                .collect(),
        );
    }
    Ok(Json(page))
}

async fn retrieve<S: BlobStore>(
    State(api): State<PrimaryApi<S>>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    authenticate(
        &api,
        &headers,
        &RequestScope::Retrieve {
            replicable_name: name.clone(),
            replicable_id: id,
        },
    )
    .await?;
    let d = blob_descriptor(&api, &name)?;
    // One line per object served (after authentication): operators and the crash suite count
    // transfers per object with it.
    tracing::debug!(replicable = d.replicable_name, id, "serving an object");
    let missing_file = || ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!("{} #{id} file not found", d.model_type),
        geo_code: Some(FILE_NOT_FOUND),
    };
    let (key, sha256, opened) = match serve::one(&api.db, &api.store, d, id).await {
        Ok(Served::Object { key, sha256, body }) => (key, sha256, body),
        Ok(Served::FileMissing) => return Err(missing_file()),
        Ok(Served::RecordMissing) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("{name} {id} not found"),
            ));
        }
        Err(ServeError::Db(e)) => return Err(e.into()),
        Err(e) => {
            tracing::error!(replicable = %name, id, error = %e, "serving an object");
            let message = match e {
                ServeError::UnsafeKey(_) => "the object key on the primary is not a safe path",
                _ => "internal error",
            };
            return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message));
        }
    };
    let (body, size) = match opened {
        Opened::Whole(bytes) => {
            let size = bytes.len() as u64;
            (Body::from(bytes), size)
        }
        Opened::Stream(stream, size) => (Body::from_stream(stream), size),
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(header::CONTENT_LENGTH, size.into());
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = header::HeaderValue::from_str(key.as_str()) {
        h.insert(HEADER_OBJECT_KEY, v);
    }
    if let Some(sum) = sha256
        && let Ok(v) = header::HeaderValue::from_str(&hex::encode(sum))
    {
        h.insert(HEADER_SHA256, v);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct RetrieveManyQuery {
    /// Comma-separated model ids.
    ids: String,
}

async fn retrieve_many<S: BlobStore>(
    State(api): State<PrimaryApi<S>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<RetrieveManyQuery>,
) -> Result<Response, ApiError> {
    authenticate(&api, &headers, &RequestScope::retrieve_many(&name, &q.ids)).await?;
    let d = blob_descriptor(&api, &name)?;
    let ids = parse_ids(&q.ids)?;
    if ids.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_BATCH} objects per request"),
        ));
    }
    let plan = serve::resolve(&api.db, d, &ids).await?;
    let groups: Vec<Vec<_>> = plan.chunks(READ_GROUP).map(<[_]>::to_vec).collect();
    let store = api.store.clone();
    let replicable = d.replicable_name;
    let body = futures_util::StreamExt::then(futures_util::stream::iter(groups), move |group| {
        let store = store.clone();
        async move {
            let frames = serve::read_group(&store, replicable, group).await;
            Ok::<_, std::io::Error>(encode_frames(frames))
        }
    });
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(BATCH_CONTENT_TYPE),
    );
    Ok(response)
}

/// Frames on the wire: a JSON line each, followed by the object's bytes when inline.
fn encode_frames(frames: Vec<Frame>) -> bytes::Bytes {
    let mut out = Vec::new();
    for Frame { id, answer } in frames {
        let mut frame = ObjectFrame {
            id,
            status: FrameStatus::Ok,
            key: None,
            size: None,
            sha256: None,
        };
        let mut data = None;
        match answer {
            Answer::Object {
                key,
                sha256,
                data: bytes,
            } => {
                frame.key = Some(key.as_str().to_owned());
                frame.size = Some(bytes.len() as u64);
                frame.sha256 = sha256.map(hex::encode);
                data = Some(bytes);
            }
            Answer::Separately { size } => {
                frame.status = FrameStatus::Separately;
                frame.size = size;
            }
            Answer::FileMissing => frame.status = FrameStatus::FileMissing,
            Answer::RecordMissing => frame.status = FrameStatus::RecordMissing,
            Answer::Error | Answer::Malformed(_) => frame.status = FrameStatus::Error,
        }
        write_frame(&mut out, &frame, data.as_deref());
    }
    bytes::Bytes::from(out)
}

#[derive(Debug, Deserialize)]
struct ChecksumsQuery {
    /// Comma-separated model ids.
    ids: String,
}

async fn checksums<S: BlobStore>(
    State(api): State<PrimaryApi<S>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<ChecksumsQuery>,
) -> Result<Json<ChecksumsPage>, ApiError> {
    let d = listing_scope(&api, &headers, &name).await?;
    let ids = parse_ids(&q.ids)?;
    let rows = model_checksums(&api.db, d, &ids).await?;
    Ok(Json(ChecksumsPage {
        checksums: rows
            .into_iter()
            .map(|(id, sum)| (id, sum.filter(|s| s.len() == 32).map(hex::encode)))
            .collect(),
    }))
}

async fn cursor<S: BlobStore>(
    State(api): State<PrimaryApi<S>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let node = authenticate(&api, &headers, &RequestScope::Status).await?;
    // Parsed only after authentication.
    let report: CursorReport = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid cursor report: {e}"),
        )
    })?;
    record_secondary_cursor(&api.db, &node.name, report.last_event_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
