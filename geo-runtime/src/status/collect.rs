//! Collecting a node's status: counts per replicable in one pass over each table, the
//! cursor, the primary's newest event.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use sqlx::AssertSqlSafe;

use crate::db::dialect::{RowReader, now, quote};
use crate::db::{Database, NodeRole, on_pool};
use crate::error::DbError;
use futures_util::future::BoxFuture;

use crate::events::{EventSource, SourceError};
use crate::flags;
use crate::replicator::{ReplicatorDescriptor, ReplicatorSet};
use crate::verification::VerificationState;

use super::{NodeStatus, ReplicableStatus, SecondaryCursor};

/// The primary's newest event id, asked through any [`EventSource`] (whose futures are not
/// object-safe, hence the boxed closure).
#[derive(Clone)]
struct PrimaryEvents(Arc<dyn Fn() -> BoxFuture<'static, Result<i64, SourceError>> + Send + Sync>);

impl std::fmt::Debug for PrimaryEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrimaryEvents")
    }
}

/// Collects a node's status and keeps the latest snapshot.
#[derive(Debug, Clone)]
pub struct StatusCollector {
    db: Database,
    role: NodeRole,
    descriptors: Vec<&'static ReplicatorDescriptor>,
    name: String,
    primary: Option<PrimaryEvents>,
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
            primary: None,
            latest: Arc::default(),
        }
    }

    /// A secondary's collector also asks its primary's event log (the node client) for the
    /// newest event id, for the lag.
    pub fn with_primary<S: EventSource + Clone + 'static>(mut self, events: S) -> Self {
        self.primary = Some(PrimaryEvents(Arc::new(move || {
            let events = events.clone();
            Box::pin(async move { events.latest_event_id().await })
        })));
        self
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
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
        let newest = on_pool!(self.db, read, pool => {
            let row = sqlx::query("SELECT \"id\", \"created_at\" FROM \"geo_events\" ORDER BY \"id\" DESC LIMIT 1").fetch_optional(pool).await?;
            row.map(|r| Ok::<_, DbError>((r.i64("id")?, r.timestamp("created_at")?))).transpose()?
        });
        if let Some((id, at)) = newest {
            status.last_event_id = Some(id);
            status.last_event_date = Some(at);
        }
        status.secondaries = crate::events::secondary_cursors(&self.db)
            .await?
            .into_iter()
            .map(|(name, last_event_id, updated_at)| SecondaryCursor {
                name,
                last_event_id,
                updated_at,
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
        let store_check = on_pool!(self.db, read, pool => {
            let row = sqlx::query("SELECT \"checked_at\", \"extra_files\" FROM \"geo_store_checks\" WHERE \"id\" = 1").fetch_optional(pool).await?;
            row.map(|r| Ok::<_, DbError>((r.timestamp("checked_at")?, r.i64("extra_files")?))).transpose()?
        });
        if let Some((at, extra)) = store_check {
            status.store_checked_at = Some(at);
            status.extra_files = Some(extra);
        }
        if let Some((position, at)) = cursor {
            status.cursor_last_event_id = Some(position);
            status.cursor_updated_at = Some(at);
        }
        if let Some(primary) = &self.primary {
            match (primary.0)().await {
                Ok(latest) => {
                    status.last_event_id = Some(latest);
                    status.cursor_events_behind =
                        Some((latest - status.cursor_last_event_id.unwrap_or(0)).max(0));
                }
                Err(e) => status.status_message = format!("the primary is unreachable: {e}"),
            }
        }
        Ok(())
    }
}

fn invalid(column: &str, value: i16) -> DbError {
    DbError::InvalidValue {
        column: column.into(),
        what: "state",
        value: value.to_string(),
    }
}

/// One count of the model table and one grouped count of its verification states.
async fn primary_counts(
    db: &Database,
    d: &ReplicatorDescriptor,
    enabled: bool,
) -> Result<ReplicableStatus, DbError> {
    let total_sql = format!("SELECT COUNT(*) FROM {}", quote(d.model_table));
    let states_sql = format!(
        "SELECT \"verification_state\", COUNT(*) FROM {} GROUP BY \"verification_state\"",
        quote(d.verification_table())
    );
    let (total, states): (i64, Vec<(i16, i64)>) = on_pool!(db, read, pool => (
        sqlx::query_scalar(AssertSqlSafe(total_sql)).fetch_one(pool).await?,
        sqlx::query_as(AssertSqlSafe(states_sql)).fetch_all(pool).await?,
    ));
    let mut s = ReplicableStatus {
        name: d.replicable_name,
        plural: d.replicable_name_plural,
        enabled,
        count: total,
        checksum_total_count: Some(total),
        checksummed_count: Some(0),
        checksum_failed_count: Some(0),
        ..ReplicableStatus::default()
    };
    for (state, n) in states {
        match VerificationState::from_i16(state) {
            Some(VerificationState::Succeeded) => s.checksummed_count = Some(n),
            Some(VerificationState::Failed) => s.checksum_failed_count = Some(n),
            Some(_) => {}
            None => return Err(invalid("verification_state", state)),
        }
    }
    Ok(s)
}

/// One pass over the registry with conditional sums (no grouping, so no sort or temp table).
async fn secondary_counts(
    db: &Database,
    d: &ReplicatorDescriptor,
    enabled: bool,
) -> Result<ReplicableStatus, DbError> {
    let sum = |cond: &str| {
        format!("CAST(COALESCE(SUM(CASE WHEN {cond} THEN 1 ELSE 0 END), 0) AS BIGINT)")
    };
    let sql = format!(
        "SELECT COUNT(*), {}, {}, {}, {}, {}, {}, {}, {} FROM {}",
        sum("\"state\" = 0"),
        sum("\"state\" = 1"),
        sum("\"state\" = 2"),
        sum("\"state\" = 3"),
        // A copy that fails verification goes straight back to the sync: counted as failed
        // (and in the total) until it is synced again, whatever its sync state.
        sum("(\"state\" = 2 AND \"verification_state\" <> 4) OR \"verification_state\" = 3"),
        sum("\"state\" = 2 AND \"verification_state\" = 2"),
        sum("\"verification_state\" = 3"),
        sum("\"checksum_mismatch\""),
        quote(d.registry_table)
    );
    type Sums = (i64, i64, i64, i64, i64, i64, i64, i64, i64);
    let (registry, pending, started, synced, failed, vtotal, verified, vfailed, mismatched): Sums =
        on_pool!(db, read, pool => sqlx::query_as(AssertSqlSafe(sql)).fetch_one(pool).await?);
    Ok(ReplicableStatus {
        name: d.replicable_name,
        plural: d.replicable_name_plural,
        enabled,
        count: registry,
        registry_count: Some(registry),
        pending_count: Some(pending),
        started_count: Some(started),
        synced_count: Some(synced),
        failed_count: Some(failed),
        verification_total_count: Some(vtotal),
        verified_count: Some(verified),
        verification_failed_count: Some(vfailed),
        checksum_mismatch_count: Some(mismatched),
        ..ReplicableStatus::default()
    })
}
