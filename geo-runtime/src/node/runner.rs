//! [`Node`]: everything a node of either role runs, started from a configuration and stopped
//! with [`NodeHandle::shutdown`], which lets in-flight work finish (a sync round, a cursor batch)
//! and leaves anything interrupted recoverable (rows in `started` are swept, batches are
//! transactions).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admin::{self, AdminConfig};
use super::auth::Secret;
use super::client::{ClientError, PrimaryClient};
use super::jobs;
use super::server::{PrimaryApi, serve};
use crate::db::dialect::now;
use crate::db::{self, Database, NodeRole};
use crate::error::MigrateError;
use crate::events::{CursorConfig, EventCursor};
use crate::registry::Registry;
use crate::replicator::ReplicatorSet;
use crate::status::StatusCollector;
use crate::storage::{BlobStore, LocalStore, StorageError};
use crate::telemetry::Metrics;
use crate::worker::sync::{BlobSync, SyncConfig};
use crate::worker::verify::{
    PrimaryVerification, SecondaryVerification, SecondaryVerifyConfig, VerifyConfig,
};

/// A primary: serves its objects and events.
#[derive(Debug, Clone)]
pub struct PrimaryConfig {
    /// This node's name (in its status and metrics labels).
    pub name: String,
    /// Where the API listens (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Root of the object store.
    pub storage_root: PathBuf,
    /// How often events below every secondary's cursor are pruned (Geo: 5 min).
    pub prune_interval: Duration,
    /// Checksumming of the primary's objects.
    pub verification: VerifyConfig,
    /// The admin endpoint (status, metrics), when wanted.
    pub admin: Option<AdminConfig>,
    /// How often the status is collected (Geo: once a minute).
    pub status_interval: Duration,
    /// The key the secondaries' secrets are sealed with in `geo_nodes`; secrets still in clear
    /// are sealed when the primary starts. Without it they are stored in clear (a warning
    /// says so at start).
    pub secrets_key: Option<crate::node::SecretsKey>,
    /// This node's external URL, the `url` label of its metrics (default: `http://` and the
    /// address the node API listens on).
    pub url: Option<String>,
}

impl PrimaryConfig {
    /// A primary listening on `listen` with objects under `storage_root`.
    pub fn new(listen: SocketAddr, storage_root: impl Into<PathBuf>) -> Self {
        PrimaryConfig {
            name: "primary".to_owned(),
            listen,
            storage_root: storage_root.into(),
            prune_interval: Duration::from_secs(300),
            verification: VerifyConfig::default(),
            admin: None,
            status_interval: Duration::from_secs(60),
            secrets_key: None,
            url: None,
        }
    }
}

/// A secondary: follows a primary.
#[derive(Debug, Clone)]
pub struct SecondaryConfig {
    /// This node's name (as registered on the primary).
    pub name: String,
    /// The primary's URL.
    pub primary_url: String,
    /// This node's own external URL, the `url` label of its metrics (none when unset).
    pub url: Option<String>,
    /// This node's access key.
    pub access_key: String,
    /// This node's secret (redacted in `Debug`).
    pub secret: Secret,
    /// Root of the local object store.
    pub storage_root: PathBuf,
    /// Blob sync tuning.
    pub sync: SyncConfig,
    /// Event cursor tuning.
    pub cursor: CursorConfig,
    /// A download that receives nothing for this long fails.
    pub idle_timeout: Duration,
    /// Pause between consistency passes (Geo: a pass a minute).
    pub consistency_interval: Duration,
    /// How often rows stuck in `started` are swept.
    pub sweep_interval: Duration,
    /// A sync running longer than this is failed by the sweeper (Geo: 8 h).
    pub sync_timeout: Duration,
    /// The longest time between two reports of the cursor's position to the primary (for
    /// pruning and the primary's status) while it stays put.
    pub report_interval: Duration,
    /// The shortest time between two reports: a cursor that moved is reported this promptly.
    pub report_min_interval: Duration,
    /// Re-verification of the local copies on this node's own schedule.
    pub verification: SecondaryVerifyConfig,
    /// The admin endpoint (status, metrics), when wanted.
    pub admin: Option<AdminConfig>,
    /// How often the status is collected (Geo: once a minute).
    pub status_interval: Duration,
    /// The node is unhealthy when its event cursor has not stepped for this long while the
    /// primary has newer events ([`crate::status::CURSOR_STALL`] by default).
    pub cursor_stall: Duration,
}

impl SecondaryConfig {
    /// A secondary with Geo's defaults.
    pub fn new(
        name: &str,
        primary_url: &str,
        access_key: &str,
        secret: Secret,
        storage_root: impl Into<PathBuf>,
    ) -> Self {
        SecondaryConfig {
            name: name.to_owned(),
            primary_url: primary_url.to_owned(),
            url: None,
            access_key: access_key.to_owned(),
            secret,
            storage_root: storage_root.into(),
            sync: SyncConfig::default(),
            cursor: CursorConfig::default(),
            idle_timeout: Duration::from_secs(60),
            consistency_interval: Duration::from_secs(60),
            sweep_interval: Duration::from_secs(600),
            sync_timeout: Duration::from_secs(8 * 3600),
            report_interval: Duration::from_secs(60),
            report_min_interval: Duration::from_secs(1),
            verification: SecondaryVerifyConfig::default(),
            admin: None,
            status_interval: Duration::from_secs(60),
            cursor_stall: crate::status::CURSOR_STALL,
        }
    }
}

/// What a node is.
// Built once per node: a boxed variant would only burden every caller.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum NodeConfig {
    /// A primary.
    Primary(PrimaryConfig),
    /// A secondary.
    Secondary(SecondaryConfig),
}

/// A node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeStartError {
    /// Migrations failed.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    /// The listener could not be bound (checked before anything is changed).
    #[error("cannot listen on {addr} (`{key}`): {source}")]
    Listen {
        /// The configuration key that named the address (`listen`, `admin_listen`).
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The client of the primary could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The object store could not be prepared.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The tracking database failed.
    #[error(transparent)]
    Db(#[from] crate::DbError),
    /// The GraphQL schema could not be built from the replicators.
    #[error("building the GraphQL schema: {0}")]
    Graphql(String),
    /// The secondaries' secrets could not be sealed.
    #[error(transparent)]
    Nodes(#[from] crate::node::nodes::NodeError),
    /// The primary's store cannot serve objects (checked before anything is changed).
    #[error("the primary cannot serve objects from storage_root {0}")]
    Store(String),
}

/// Starts nodes.
#[derive(Debug)]
pub struct Node;

/// A running node.
#[derive(Debug)]
pub struct NodeHandle {
    cancel: CancellationToken,
    tracker: TaskTracker,
    local_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    status: StatusCollector,
    metrics: Metrics,
}

impl NodeHandle {
    /// The API's address (primary).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The admin endpoint's address, when configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The node's status collector (its latest snapshot, or a fresh one on demand).
    pub fn status(&self) -> &StatusCollector {
        &self.status
    }

    /// The node's counters and histograms.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Cancelled when the node stops.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops every worker, letting in-flight work finish, and waits for them.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Starts the status collection every `interval` and, when configured, the admin endpoint.
/// Binds `addr` (named by configuration `key`).
async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, NodeStartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| NodeStartError::Listen { key, addr, source })
}

/// The admin endpoint's listener, bound before a node changes anything, with its token.
async fn bind_admin(
    admin: Option<AdminConfig>,
) -> Result<Option<(TcpListener, Secret)>, NodeStartError> {
    match admin {
        Some(a) => Ok(Some((bind("admin_listen", a.listen).await?, a.token))),
        None => Ok(None),
    }
}

async fn start_status(
    tracker: &TaskTracker,
    cancel: &CancellationToken,
    status: &StatusCollector,
    metrics: &Metrics,
    admin: Option<(TcpListener, Secret)>,
    interval: Duration,
    extra: axum::Router,
) -> Result<Option<SocketAddr>, NodeStartError> {
    jobs::spawn_all(
        tracker,
        cancel,
        vec![jobs::status_collection(status.clone(), interval)],
    );
    let Some((listener, token)) = admin else {
        return Ok(None);
    };
    let addr = listener.local_addr().ok();
    let router = admin::router_with(token, status.clone(), metrics.clone(), extra);
    let shutdown = cancel.clone();
    tracker.spawn(async move {
        if let Err(e) = admin::serve(listener, router, shutdown).await {
            tracing::error!(error = %e, "the admin endpoint stopped");
        }
    });
    Ok(addr)
}

/// Routes the admin endpoint adds with the enabled features: `/graphql` with `graphql`.
#[cfg_attr(not(feature = "graphql"), allow(unused_variables))]
fn admin_routes(
    db: &Database,
    role: NodeRole,
    set: &ReplicatorSet,
    name: &str,
) -> Result<axum::Router, NodeStartError> {
    #[cfg(feature = "graphql")]
    {
        crate::graphql::schema(db, role, set, name)
            .map(crate::graphql::router)
            .map_err(|e| NodeStartError::Graphql(e.to_string()))
    }
    #[cfg(not(feature = "graphql"))]
    {
        Ok(axum::Router::new())
    }
}

impl Node {
    /// Applies the role's migrations to `db` and starts every worker of the role, with objects
    /// on the local file system under the configured `storage_root`.
    pub async fn start(
        config: NodeConfig,
        db: &Database,
        set: &ReplicatorSet,
    ) -> Result<NodeHandle, NodeStartError> {
        match config {
            NodeConfig::Primary(c) => {
                let store = LocalStore::new(&c.storage_root);
                Self::start_primary(c, db, set, store).await
            }
            NodeConfig::Secondary(c) => {
                let store = LocalStore::new(&c.storage_root);
                Self::start_secondary(c, db, set, store).await
            }
        }
    }

    /// Starts a primary serving from any [`BlobStore`] (`storage_root` is not used).
    pub async fn start_primary<S: BlobStore>(
        c: PrimaryConfig,
        db: &Database,
        set: &ReplicatorSet,
        store: S,
    ) -> Result<NodeHandle, NodeStartError> {
        // Before anything changes: a primary with no objects to serve would fail every sync, and
        // a port in use would stop the start halfway.
        store.usable().await.map_err(NodeStartError::Store)?;
        let listener = bind("listen", c.listen).await?;
        let admin_listener = bind_admin(c.admin.clone()).await?;
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        db::migrate(db, NodeRole::Primary, set).await?;
        match &c.secrets_key {
            Some(key) => {
                let sealed = crate::node::nodes::seal_clear_secrets(db, key).await?;
                if sealed > 0 {
                    tracing::info!(nodes = sealed, "sealed the node secrets stored in clear");
                }
            }
            None => {
                let clear = crate::node::nodes::clear_secret_count(db).await?;
                if clear > 0 {
                    tracing::warn!(
                        nodes = clear,
                        "node secrets are stored in clear in geo_nodes; configure secrets_key to encrypt them"
                    );
                }
            }
        }
        let local_addr = listener.local_addr().ok();
        let api = PrimaryApi::new(db, set, store.clone()).with_secrets_key(c.secrets_key.clone());
        let shutdown = cancel.clone();
        tracker.spawn(async move {
            if let Err(e) = serve(listener, api, shutdown).await {
                tracing::error!(error = %e, "the primary API stopped");
            }
        });
        let metrics = Metrics::new();
        let verification = PrimaryVerification::new(db, set, store.clone(), c.verification.clone())
            .with_metrics(metrics.clone());
        let mut jobs = Vec::from(jobs::primary_verification(verification));
        jobs.push(jobs::event_pruning(db, c.prune_interval));
        jobs::spawn_all(&tracker, &cancel, jobs);
        let url = c
            .url
            .clone()
            .or_else(|| local_addr.map(|a| format!("http://{a}")));
        let mut status =
            StatusCollector::new(db, NodeRole::Primary, set, &c.name).with_store(store);
        if let Some(url) = url {
            status = status.with_url(&url);
        }
        let admin_addr = start_status(
            &tracker,
            &cancel,
            &status,
            &metrics,
            admin_listener,
            c.status_interval,
            admin_routes(db, NodeRole::Primary, set, &c.name)?,
        )
        .await?;
        tracing::info!(addr = ?local_addr, admin = ?admin_addr, "primary started");
        Ok(NodeHandle {
            cancel,
            tracker,
            local_addr,
            admin_addr,
            status,
            metrics,
        })
    }

    /// Starts a secondary syncing into any [`BlobStore`] (`storage_root` is not used).
    pub async fn start_secondary<S: BlobStore>(
        c: SecondaryConfig,
        db: &Database,
        set: &ReplicatorSet,
        store: S,
    ) -> Result<NodeHandle, NodeStartError> {
        // Before anything changes: a port in use would stop the start halfway.
        let admin_listener = bind_admin(c.admin.clone()).await?;
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        db::migrate(db, NodeRole::Secondary, set).await?;
        recover_after_stop(db, set, &store).await?;
        let client = PrimaryClient::new(
            &c.primary_url,
            &c.access_key,
            c.secret.clone(),
            c.idle_timeout,
        )?;
        let holder = format!(
            "{}:{}:{:08x}",
            c.name,
            std::process::id(),
            fastrand::u32(..)
        );

        let metrics = Metrics::new();
        let cursor = EventCursor::new(db, set, client.clone(), c.cursor.clone(), holder)
            .with_metrics(metrics.clone());
        // The start position first, then the first consistency pass: no record created in
        // between is missed by both.
        match cursor.initialize().await {
            Ok(position) => tracing::info!(position, "event cursor position"),
            Err(e) => {
                tracing::warn!(error = %e, "could not fix the cursor's start position yet; the next consistency pass covers what it misses")
            }
        }
        let verification =
            SecondaryVerification::new(db, set, store.clone(), c.verification.clone())
                .with_metrics(metrics.clone());
        let sync = BlobSync::new(db, set, client.clone(), store.clone(), c.sync.clone())
            .with_metrics(metrics.clone());
        let v = &c.verification;
        let mut jobs = vec![jobs::event_cursor(cursor), jobs::blob_sync(sync)];
        jobs.extend(jobs::secondary_verification(
            verification,
            client.clone(),
            c.sweep_interval,
            v.idle_wait,
            v.disabled_recheck,
        ));
        jobs.extend([
            jobs::consistency_pass(db, set, client.clone(), c.consistency_interval),
            jobs::sync_timeout_sweep(db, set, c.sync_timeout, c.sweep_interval),
            jobs::removals(db, set, store.clone()),
            jobs::cursor_report(db, set, client.clone(), &c),
        ]);
        jobs::spawn_all(&tracker, &cancel, jobs);

        let status = secondary_status(db, set, &c, &client, &metrics);
        let admin_addr = start_status(
            &tracker,
            &cancel,
            &status,
            &metrics,
            admin_listener,
            c.status_interval,
            admin_routes(db, NodeRole::Secondary, set, &c.name)?,
        )
        .await?;

        tracing::info!(node = %c.name, primary = %c.primary_url, admin = ?admin_addr, "secondary started");
        Ok(NodeHandle {
            cancel,
            tracker,
            local_addr: None,
            admin_addr,
            status,
            metrics,
        })
    }
}

/// What a stopped secondary process left behind, put right before the workers start: rows left
/// `started` are released (failed, due at once) and temp files of unfinished downloads removed.
async fn recover_after_stop<S: BlobStore>(
    db: &Database,
    set: &ReplicatorSet,
    store: &S,
) -> Result<(), NodeStartError> {
    let started_at = now();
    for d in set.descriptors() {
        let n = Registry::new(db, d)
            .release_interrupted(started_at, started_at)
            .await?;
        if n > 0 {
            tracing::info!(
                replicable = d.replicable_name,
                rows = n,
                "released syncs a stopped process left in started"
            );
        }
    }
    let stale = store.remove_stale_temp_files().await?;
    if stale > 0 {
        tracing::info!(removed = stale, "removed temp files left by a crash");
    }
    Ok(())
}

/// A secondary's status collector: it asks the primary (through the node's client) for the
/// lag, and counts the times it could not.
fn secondary_status(
    db: &Database,
    set: &ReplicatorSet,
    c: &SecondaryConfig,
    client: &PrimaryClient,
    metrics: &Metrics,
) -> StatusCollector {
    let status = StatusCollector::new(db, NodeRole::Secondary, set, &c.name)
        .with_primary(client.clone())
        .with_cursor_stall(c.cursor_stall)
        .with_metrics(metrics.clone());
    match &c.url {
        Some(url) => status.with_url(url),
        None => status,
    }
}
