//! Collecting a node's status: counts per replicable in one pass over each table, the
//! cursor, the primary's newest event.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::db::dialect::now;
use crate::db::{Database, NodeRole};
use crate::error::DbError;
use futures_util::future::BoxFuture;

use crate::events::{EventSource, SourceError};
use crate::flags;
use crate::registry::Registry;
use crate::replicator::{ReplicatorDescriptor, ReplicatorSet};
use crate::storage::BlobStore;
use crate::telemetry::Metrics;
use crate::verification::Checksums;

use super::{NodeStatus, ReplicableStatus, SecondaryCursor};

/// The primary's newest event id and time, asked through any [`EventSource`] (whose futures
/// are not object-safe, hence the boxed closure).
type NewestEvent = Result<(i64, Option<DateTime<Utc>>), SourceError>;

#[derive(Clone)]
struct PrimaryEvents(Arc<dyn Fn() -> BoxFuture<'static, NewestEvent> + Send + Sync>);

impl std::fmt::Debug for PrimaryEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrimaryEvents")
    }
}

/// Whether the node's store can serve objects (a primary's), asked through any [`BlobStore`].
#[derive(Clone)]
struct StoreProbe(Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>);

impl std::fmt::Debug for StoreProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreProbe")
    }
}

/// Collects a node's status and keeps the latest snapshot.
#[derive(Debug, Clone)]
pub struct StatusCollector {
    db: Database,
    role: NodeRole,
    descriptors: Vec<&'static ReplicatorDescriptor>,
    name: String,
    url: Option<String>,
    primary: Option<PrimaryEvents>,
    store: Option<StoreProbe>,
    cursor_stall: std::time::Duration,
    metrics: Metrics,
    latest: Arc<RwLock<Option<Arc<NodeStatus>>>>,
}

impl StatusCollector {
    /// A collector for the node `name` of `role` over `db`.
    pub fn new(db: &Database, role: NodeRole, set: &ReplicatorSet, name: &str) -> Self {
        StatusCollector {
            db: db.clone(),
            role,
            descriptors: set.descriptors().to_vec(),
            name: name.to_owned(),
            url: None,
            primary: None,
            store: None,
            cursor_stall: super::CURSOR_STALL,
            metrics: Metrics::default(),
            latest: Arc::default(),
        }
    }

    /// A secondary's collector also asks its primary's event log (the node client) for the
    /// newest event id, for the lag.
    pub fn with_primary<S: EventSource + Clone + 'static>(mut self, events: S) -> Self {
        self.primary = Some(PrimaryEvents(Arc::new(move || {
            let events = events.clone();
            Box::pin(async move { events.latest_event().await })
        })));
        self
    }

    /// Counts the collections that could not reach the primary into `metrics`
    /// (`geo_status_failed_total{reason}`).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// A primary's collector also checks that `store` can serve objects: a node whose store
    /// is gone is unhealthy, and says so.
    pub fn with_store<S: BlobStore>(mut self, store: S) -> Self {
        self.store = Some(StoreProbe(Arc::new(move || {
            let store = store.clone();
            Box::pin(async move { store.usable().await })
        })));
        self
    }

    /// A secondary is unhealthy when its cursor has not stepped for `stall` while the primary
    /// has newer events (default [`CURSOR_STALL`](super::CURSOR_STALL)).
    pub fn with_cursor_stall(mut self, stall: std::time::Duration) -> Self {
        self.cursor_stall = stall;
        self
    }

    /// The node's external URL (the `url` label of its metrics).
    pub fn with_url(mut self, url: &str) -> Self {
        self.url = Some(url.to_owned());
        self
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's external URL, when known.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// The latest snapshot, if one was collected.
    pub fn latest(&self) -> Option<Arc<NodeStatus>> {
        self.latest.read().ok().and_then(|l| l.clone())
    }

    /// Collects a fresh status, keeps it as the latest and returns it.
    pub async fn refresh(&self) -> Result<Arc<NodeStatus>, DbError> {
        let started = Instant::now();
        let mut replicables = Vec::with_capacity(self.descriptors.len());
        for d in &self.descriptors {
            let enabled = flags::is_enabled(&self.db, d).await?;
            replicables.push(match self.role {
                NodeRole::Primary => primary_counts(&self.db, d, enabled).await?,
                NodeRole::Secondary => secondary_counts(&self.db, d, enabled).await?,
            });
        }
        let mut status = NodeStatus {
            name: self.name.clone(),
            role: self.role,
            version: env!("CARGO_PKG_VERSION"),
            replicables,
            last_event_id: None,
            last_event_date: None,
            cursor_last_event_id: None,
            cursor_last_event_date: None,
            cursor_updated_at: None,
            cursor_events_behind: None,
            cursor_gaps_count: None,
            cursor_oldest_gap_at: None,
            extra_files: None,
            store_checked_at: None,
            secondaries: Vec::new(),
            removals_pending: None,
            status_message: String::new(),
            collected_at: now(),
            collection_ms: 0,
        };
        match self.role {
            NodeRole::Primary => self.collect_primary(&mut status).await?,
            NodeRole::Secondary => self.collect_secondary(&mut status).await?,
        }
        status.collection_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let status = Arc::new(status);
        if let Ok(mut latest) = self.latest.write() {
            *latest = Some(status.clone());
        }
        Ok(status)
    }
}

impl StatusCollector {
    /// A primary's own figures: its newest event, and the secondaries' reported cursors.
    async fn collect_primary(&self, status: &mut NodeStatus) -> Result<(), DbError> {
        if let Some((id, at)) = crate::events::newest_event(&self.db).await? {
            status.last_event_id = Some(id);
            status.last_event_date = Some(at);
        }
        if let Some(probe) = &self.store
            && let Err(e) = (probe.0)().await
        {
            status.status_message = format!("the store cannot serve objects: storage_root {e}");
        }
        status.secondaries = crate::events::secondary_cursors(&self.db)
            .await?
            .into_iter()
            .map(|c| SecondaryCursor {
                name: c.name,
                last_event_id: c.last_event_id,
                last_event_date: c.last_event_date,
                updated_at: c.updated_at,
            })
            .collect();
        Ok(())
    }

    /// A secondary's own figures (cursor, gaps, removals, the store check), then the
    /// primary's newest event for the lag.
    async fn collect_secondary(&self, status: &mut NodeStatus) -> Result<(), DbError> {
        let cursor = crate::events::stored_cursor(&self.db).await?;
        let (gaps, oldest_gap) = crate::events::gap_summary(&self.db).await?;
        status.cursor_gaps_count = Some(gaps);
        status.cursor_oldest_gap_at = oldest_gap;
        status.removals_pending = Some(crate::removals::count(&self.db).await?);
        if let Some(check) = crate::store_checks::latest(&self.db).await? {
            status.store_checked_at = Some(check.checked_at);
            status.extra_files = Some(check.extra_files);
        }
        if let Some(cursor) = cursor {
            status.cursor_last_event_id = Some(cursor.position);
            status.cursor_updated_at = Some(cursor.updated_at);
            status.cursor_last_event_date = cursor.last_event_date;
        }
        if let Some(primary) = &self.primary {
            match (primary.0)().await {
                Ok((latest, latest_at)) => {
                    status.last_event_id = Some(latest);
                    status.last_event_date = latest_at;
                    status.cursor_events_behind =
                        Some((latest - status.cursor_last_event_id.unwrap_or(0)).max(0));
                }
                Err(e) => {
                    let (reason, message) = match &e {
                        SourceError::Refused { class, .. } => (class.as_str(), e.to_string()),
                        _ => ("unreachable", format!("the primary is unreachable: {e}")),
                    };
                    tracing::warn!(reason, error = %e, "the status could not get the primary's answer");
                    self.metrics.status_failed(reason);
                    status.status_message = message;
                }
            }
        }
        if status.status_message.is_empty()
            && let Some(stalled) = self.stalled(status)
        {
            status.status_message = stalled;
        }
        Ok(())
    }

    /// Why the cursor counts as stalled: behind the primary and not stepped for longer than
    /// the threshold (a stopped or stuck secondary).
    fn stalled(&self, status: &NodeStatus) -> Option<String> {
        let behind = status.cursor_events_behind.filter(|b| *b > 0)?;
        let Some(updated_at) = status.cursor_updated_at else {
            return Some(format!(
                "the event cursor never ran while the primary has {behind} events (is the secondary running?)"
            ));
        };
        let idle = (status.collected_at - updated_at).to_std().ok()?;
        (idle > self.cursor_stall).then(|| {
            format!(
                "the event cursor has not advanced for {} s while the primary has {behind} newer events (is the secondary running?)",
                idle.as_secs()
            )
        })
    }
}

/// The model table's count and the verification states' counts.
async fn primary_counts(
    db: &Database,
    d: &ReplicatorDescriptor,
    enabled: bool,
) -> Result<ReplicableStatus, DbError> {
    let total = crate::model::count(db, d).await?;
    let states = Checksums::new(db, d).counts().await?;
    Ok(ReplicableStatus {
        name: d.replicable_name,
        plural: d.replicable_name_plural,
        enabled,
        count: total,
        checksum_total_count: Some(total),
        checksummed_count: Some(states.succeeded),
        checksum_failed_count: Some(states.failed),
        ..ReplicableStatus::default()
    })
}

/// The registry's counts (one pass over the table).
async fn secondary_counts(
    db: &Database,
    d: &'static ReplicatorDescriptor,
    enabled: bool,
) -> Result<ReplicableStatus, DbError> {
    let c = Registry::new(db, d).counts().await?;
    Ok(ReplicableStatus {
        name: d.replicable_name,
        plural: d.replicable_name_plural,
        enabled,
        count: c.registry,
        registry_count: Some(c.registry),
        pending_count: Some(c.states.pending),
        started_count: Some(c.states.started),
        synced_count: Some(c.states.synced),
        failed_count: Some(c.states.failed),
        verification_total_count: Some(c.verification_total),
        verified_count: Some(c.verified),
        verification_failed_count: Some(c.verification_failed),
        checksum_mismatch_count: Some(c.checksum_mismatch),
        ..ReplicableStatus::default()
    })
}
