//! A node's status: Geo's per-replicable counts and the site's health, collected in the
//! background and served from memory.
//!
//! Geo recomputes every count on every status check and batches the scans in 100k-id ranges.
//! Here a [`StatusCollector`] runs one grouped query per replicable (per table, not per state)
//! every `status_interval` (Geo's metrics worker runs once a minute) and keeps the result; the
//! status and metrics endpoints only read that snapshot, so a request costs the same with ten rows
//! or ten million, and the database sees one scan per table and interval whatever the number of
//! scrapers. The snapshot says when it was taken and how long it took.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::AssertSqlSafe;

use crate::db::dialect::{RowReader, now, quote};
use crate::db::{Database, NodeRole, on_pool};
use crate::error::DbError;
use futures_util::future::BoxFuture;

use crate::events::{EventSource, SourceError};
use crate::flags;
use crate::replicator::{ReplicatorDescriptor, ReplicatorSet};
use crate::verification::VerificationState;

/// A status older than this makes the node unhealthy (Geo's `EXPIRATION_IN_MINUTES`).
pub const STATUS_EXPIRY: Duration = Duration::from_secs(3600);

/// One replicable's counts on one node. Fields that do not apply to the node's role are `None`
/// (a primary has no registry; a secondary does not checksum the primary's records).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReplicableStatus {
    /// `widget`.
    pub name: &'static str,
    /// `widgets`: the prefix of Geo's field names.
    pub plural: &'static str,
    /// Whether the replicable's feature flag is on here.
    pub enabled: bool,
    /// Primary: model records. Secondary: registry rows (as Geo sets it).
    pub count: i64,
    /// Primary: records that can be checksummed.
    pub checksum_total_count: Option<i64>,
    /// Primary: records with a succeeded checksum.
    pub checksummed_count: Option<i64>,
    /// Primary: records whose checksum failed.
    pub checksum_failed_count: Option<i64>,
    /// Secondary: registry rows.
    pub registry_count: Option<i64>,
    /// Secondary: rows waiting for their first sync or a resync.
    pub pending_count: Option<i64>,
    /// Secondary: rows syncing now.
    pub started_count: Option<i64>,
    /// Secondary: rows synced.
    pub synced_count: Option<i64>,
    /// Secondary: rows whose sync failed.
    pub failed_count: Option<i64>,
    /// Secondary: synced rows whose verification is not disabled.
    pub verification_total_count: Option<i64>,
    /// Secondary: synced rows verified.
    pub verified_count: Option<i64>,
    /// Secondary: synced rows whose verification failed.
    pub verification_failed_count: Option<i64>,
    /// Secondary: rows whose copy did not match the primary's checksum.
    pub checksum_mismatch_count: Option<i64>,
}

impl ReplicableStatus {
    /// Synced rows as a percentage of the registry (Geo's `_synced_in_percentage`).
    pub fn synced_in_percentage(&self) -> Option<f64> {
        percentage(self.synced_count?, self.registry_count?)
    }

    /// Verified rows as a percentage of the registry (Geo's `_verified_in_percentage`).
    pub fn verified_in_percentage(&self) -> Option<f64> {
        percentage(self.verified_count?, self.registry_count?)
    }

    /// Geo's field suffixes with their values, in Geo's order; `None` for what does not apply.
    pub fn fields(&self) -> Vec<(&'static str, Option<f64>)> {
        let f = |v: Option<i64>| v.map(|v| v as f64);
        vec![
            ("_count", Some(self.count as f64)),
            ("_checksum_total_count", f(self.checksum_total_count)),
            ("_checksummed_count", f(self.checksummed_count)),
            ("_checksum_failed_count", f(self.checksum_failed_count)),
            ("_registry_count", f(self.registry_count)),
            ("_pending_count", f(self.pending_count)),
            ("_started_count", f(self.started_count)),
            ("_synced_count", f(self.synced_count)),
            ("_failed_count", f(self.failed_count)),
            (
                "_verification_total_count",
                f(self.verification_total_count),
            ),
            ("_verified_count", f(self.verified_count)),
            (
                "_verification_failed_count",
                f(self.verification_failed_count),
            ),
            ("_checksum_mismatch_count", f(self.checksum_mismatch_count)),
            ("_synced_in_percentage", self.synced_in_percentage()),
            ("_verified_in_percentage", self.verified_in_percentage()),
        ]
    }
}

fn percentage(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 * 10_000.0 / whole as f64).round() / 100.0)
}

/// A secondary as its primary sees it: the position it last reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecondaryCursor {
    /// The secondary's name.
    pub name: String,
    /// The last event id it reported as applied.
    pub last_event_id: i64,
    /// When it reported it.
    pub updated_at: DateTime<Utc>,
}

/// A node's status at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeStatus {
    /// The node's name.
    pub name: String,
    /// Its role.
    pub role: NodeRole,
    /// The runtime's version.
    pub version: &'static str,
    /// Per replicable, in registration order.
    pub replicables: Vec<ReplicableStatus>,
    /// The newest event on the primary (a secondary asks its primary; `None` when unreachable).
    pub last_event_id: Option<i64>,
    /// When the newest event was written (primary).
    pub last_event_date: Option<DateTime<Utc>>,
    /// Secondary: the last event the cursor has read and applied (ids below it that are still
    /// missing are [`NodeStatus::cursor_gaps_count`]).
    pub cursor_last_event_id: Option<i64>,
    /// Secondary: when the cursor last moved.
    pub cursor_updated_at: Option<DateTime<Utc>>,
    /// Secondary: events the primary has after the cursor's position, not read here yet. Gaps
    /// are not lag: they are counted apart.
    pub cursor_events_behind: Option<i64>,
    /// Secondary: event ids below the cursor's position still missing (a transaction on the
    /// primary that commits late, or rolled back), waited for up to the gap timeout (1 h).
    pub cursor_gaps_count: Option<i64>,
    /// Secondary: when the oldest of those gaps was found.
    pub cursor_oldest_gap_at: Option<DateTime<Utc>>,
    /// Secondary: files in the store no registry row accounts for, as of the last `geo check`
    /// (`None`: never checked).
    pub extra_files: Option<i64>,
    /// Secondary: when the store was last checked.
    pub store_checked_at: Option<DateTime<Utc>>,
    /// Primary: its secondaries' reported positions.
    pub secondaries: Vec<SecondaryCursor>,
    /// Secondary: local copies of deleted records still waiting to be removed.
    pub removals_pending: Option<i64>,
    /// Empty when healthy; otherwise what is wrong.
    pub status_message: String,
    /// When this status was collected.
    pub collected_at: DateTime<Utc>,
    /// How long the collection took, in milliseconds.
    pub collection_ms: u64,
}

impl NodeStatus {
    /// Healthy: collected within [`STATUS_EXPIRY`] and nothing wrong (Geo's `healthy?`).
    pub fn healthy(&self) -> bool {
        self.status_message.is_empty()
            && (now() - self.collected_at)
                .to_std()
                .is_ok_and(|age| age < STATUS_EXPIRY)
    }

    /// The status as Geo's flat JSON: site fields, then `<plural><suffix>` per replicable, plus
    /// a `replicables` array with the same counts per object for tools that prefer it.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        let healthy = self.healthy();
        m.insert("name".into(), self.name.clone().into());
        m.insert("role".into(), self.role.as_str().into());
        m.insert("version".into(), self.version.into());
        m.insert("healthy".into(), healthy.into());
        m.insert(
            "health_status".into(),
            if healthy { "Healthy" } else { "Unhealthy" }.into(),
        );
        m.insert("status_message".into(), self.status_message.clone().into());
        m.insert("last_event_id".into(), self.last_event_id.into());
        m.insert(
            "last_event_date".into(),
            self.last_event_date.map(|t| t.to_rfc3339()).into(),
        );
        if self.role == NodeRole::Primary {
            m.insert("event_log_max_id".into(), self.last_event_id.into());
            m.insert(
                "secondaries".into(),
                serde_json::to_value(&self.secondaries).unwrap_or_default(),
            );
        } else {
            m.insert(
                "cursor_last_event_id".into(),
                self.cursor_last_event_id.into(),
            );
            m.insert(
                "cursor_updated_at".into(),
                self.cursor_updated_at.map(|t| t.to_rfc3339()).into(),
            );
            m.insert(
                "cursor_events_behind".into(),
                self.cursor_events_behind.into(),
            );
            m.insert(
                "removals_pending_count".into(),
                self.removals_pending.into(),
            );
            m.insert("cursor_gaps_count".into(), self.cursor_gaps_count.into());
            m.insert(
                "cursor_oldest_gap_at".into(),
                self.cursor_oldest_gap_at.map(|t| t.to_rfc3339()).into(),
            );
            m.insert("extra_files_count".into(), self.extra_files.into());
            m.insert(
                "store_checked_at".into(),
                self.store_checked_at.map(|t| t.to_rfc3339()).into(),
            );
        }
        m.insert(
            "last_successful_status_check_at".into(),
            self.collected_at.to_rfc3339().into(),
        );
        m.insert("collection_ms".into(), self.collection_ms.into());
        for r in &self.replicables {
            for (suffix, v) in r.fields() {
                m.insert(format!("{}{suffix}", r.plural), number(v));
            }
        }
        m.insert(
            "replicables".into(),
            serde_json::to_value(&self.replicables).unwrap_or_default(),
        );
        Value::Object(m)
    }
}

fn number(v: Option<f64>) -> Value {
    match v {
        Some(v) if v.fract() == 0.0 && v.abs() < 9e15 => Value::from(v as i64),
        Some(v) => Value::from(v),
        None => Value::Null,
    }
}

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
            NodeRole::Primary => {
                let newest = on_pool!(self.db, read, pool => {
                    let row = sqlx::query("SELECT \"id\", \"created_at\" FROM \"geo_events\" ORDER BY \"id\" DESC LIMIT 1").fetch_optional(pool).await?;
                    row.map(|r| Ok::<_, DbError>((r.i64("id")?, r.timestamp("created_at")?))).transpose()?
                });
                if let Some((id, at)) = newest {
                    status.last_event_id = Some(id);
                    status.last_event_date = Some(at);
                }
                status.secondaries = on_pool!(self.db, read, pool => {
                    let rows = sqlx::query("SELECT \"node_name\", \"last_event_id\", \"updated_at\" FROM \"geo_secondary_cursors\" ORDER BY \"node_name\"").fetch_all(pool).await?;
                    rows.iter().map(|r| Ok::<_, DbError>(SecondaryCursor {
                        name: r.opt_string("node_name")?.unwrap_or_default(),
                        last_event_id: r.i64("last_event_id")?,
                        updated_at: r.timestamp("updated_at")?,
                    })).collect::<Result<Vec<_>, _>>()?
                });
            }
            NodeRole::Secondary => {
                let cursor = on_pool!(self.db, read, pool => {
                    let row = sqlx::query("SELECT \"last_event_id\", \"updated_at\" FROM \"geo_event_cursor\" WHERE \"id\" = 1").fetch_optional(pool).await?;
                    row.map(|r| Ok::<_, DbError>((r.i64("last_event_id")?, r.timestamp("updated_at")?))).transpose()?
                });
                let (gaps, oldest_gap) = on_pool!(self.db, read, pool => {
                    let r = sqlx::query("SELECT COUNT(*) AS \"n\", MIN(\"detected_at\") AS \"oldest\" FROM \"geo_event_gaps\"").fetch_one(pool).await?;
                    (r.i64("n")?, r.opt_timestamp("oldest")?)
                });
                status.cursor_gaps_count = Some(gaps);
                status.cursor_oldest_gap_at = oldest_gap;
                let removals: i64 = on_pool!(self.db, read, pool => sqlx::query_scalar("SELECT COUNT(*) FROM \"geo_blob_removals\"").fetch_one(pool).await?);
                status.removals_pending = Some(removals);
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
                        Err(e) => {
                            status.status_message = format!("the primary is unreachable: {e}")
                        }
                    }
                }
            }
        }
        status.collection_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let status = Arc::new(status);
        if let Ok(mut latest) = self.latest.write() {
            *latest = Some(status.clone());
        }
        Ok(status)
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

/// Renders Geo's gauges for `status` (`geo_<plural><field>` without a trailing `_count`,
/// labelled `name` and `url`, both the node's name as in Geo) in Prometheus' text format.
pub fn render_gauges(status: &NodeStatus, out: &mut String) {
    use crate::telemetry::sample;
    let labels: &[(&'static str, &str)] = &[("name", &status.name), ("url", &status.name)];
    let mut gauge = |name: String, help: &str, v: Option<f64>| {
        if let Some(v) = v {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
            sample(out, &name, labels, &[], None, v);
        }
    };
    for r in &status.replicables {
        for (suffix, v) in r.fields() {
            let field = suffix.strip_suffix("_count").unwrap_or(suffix);
            gauge(
                format!("geo_{}{field}", r.plural),
                &format!("Geo status field {}{suffix}.", r.plural),
                v,
            );
        }
    }
    let f = |v: Option<i64>| v.map(|v| v as f64);
    let ts = |v: Option<DateTime<Utc>>| v.map(|t| t.timestamp_micros() as f64 / 1e6);
    gauge(
        "geo_last_event_id".into(),
        "The newest event id on the primary.",
        f(status.last_event_id),
    );
    gauge(
        "geo_last_event_timestamp".into(),
        "When the newest event was written.",
        ts(status.last_event_date),
    );
    gauge(
        "geo_cursor_last_event_id".into(),
        "Every event up to this id is applied here.",
        f(status.cursor_last_event_id),
    );
    gauge(
        "geo_cursor_events_behind".into(),
        "Events on the primary not applied here yet.",
        f(status.cursor_events_behind),
    );
    gauge(
        "geo_removals_pending".into(),
        "Local copies of deleted records waiting to be removed.",
        f(status.removals_pending),
    );
    gauge(
        "geo_cursor_gaps".into(),
        "Event ids below the cursor still missing (waited for up to the gap timeout).",
        f(status.cursor_gaps_count),
    );
    gauge(
        "geo_cursor_oldest_gap_age_seconds".into(),
        "How long the oldest missing event id has been waited for.",
        status
            .cursor_oldest_gap_at
            .map(|t| (status.collected_at - t).num_milliseconds() as f64 / 1e3),
    );
    gauge(
        "geo_store_extra_files".into(),
        "Files in the store no registry row accounts for, at the last geo check.",
        f(status.extra_files),
    );
    gauge(
        "geo_last_successful_status_check_timestamp".into(),
        "When this status was collected.",
        ts(Some(status.collected_at)),
    );
    gauge(
        "geo_status_healthy".into(),
        "1 when the node is healthy.",
        Some(if status.healthy() { 1.0 } else { 0.0 }),
    );
}

impl NodeStatus {
    /// The status as a table for a terminal: one line per replicable, then the node's health.
    pub fn render_table(&self) -> String {
        use std::fmt::Write as _;
        let n = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let mut out = String::new();
        let health = if self.healthy() {
            "healthy".to_owned()
        } else {
            format!("UNHEALTHY: {}", self.status_message)
        };
        let _ = writeln!(
            out,
            "node {} ({}) · {health} · collected {} in {} ms",
            self.name,
            self.role.as_str(),
            self.collected_at.format("%Y-%m-%d %H:%M:%S UTC"),
            self.collection_ms
        );
        match self.role {
            NodeRole::Primary => {
                let _ = writeln!(
                    out,
                    "{:<16} {:>8} {:>10} {:>12} {:>16}",
                    "replicable", "enabled", "records", "checksummed", "checksum failed"
                );
                for r in &self.replicables {
                    let _ = writeln!(
                        out,
                        "{:<16} {:>8} {:>10} {:>12} {:>16}",
                        r.name,
                        if r.enabled { "yes" } else { "no" },
                        r.count,
                        n(r.checksummed_count),
                        n(r.checksum_failed_count)
                    );
                }
                let _ = writeln!(out, "last event: {}", n(self.last_event_id));
                for s in &self.secondaries {
                    let behind = self.last_event_id.map(|l| (l - s.last_event_id).max(0));
                    let _ = writeln!(
                        out,
                        "secondary {}: applied up to event {} ({} behind), reported {}",
                        s.name,
                        s.last_event_id,
                        n(behind),
                        s.updated_at.format("%Y-%m-%d %H:%M:%S UTC")
                    );
                }
            }
            NodeRole::Secondary => {
                let _ = writeln!(
                    out,
                    "{:<16} {:>8} {:>9} {:>9} {:>8} {:>8} {:>9} {:>12} {:>11} {:>8}",
                    "replicable",
                    "enabled",
                    "registry",
                    "synced",
                    "failed",
                    "pending",
                    "verified",
                    "verif.failed",
                    "mismatched",
                    "synced%"
                );
                for r in &self.replicables {
                    let _ = writeln!(
                        out,
                        "{:<16} {:>8} {:>9} {:>9} {:>8} {:>8} {:>9} {:>12} {:>11} {:>8}",
                        r.name,
                        if r.enabled { "yes" } else { "no" },
                        n(r.registry_count),
                        n(r.synced_count),
                        n(r.failed_count),
                        n(r.pending_count.zip(r.started_count).map(|(p, s)| p + s)),
                        n(r.verified_count),
                        n(r.verification_failed_count),
                        n(r.checksum_mismatch_count),
                        r.synced_in_percentage()
                            .map_or_else(|| "-".to_owned(), |p| format!("{p:.1}"))
                    );
                }
                let gaps = match (self.cursor_gaps_count, self.cursor_oldest_gap_at) {
                    (Some(g), Some(oldest)) if g > 0 => format!(
                        "{g} (oldest waited for {})",
                        age(self.collected_at - oldest)
                    ),
                    (g, _) => n(g),
                };
                let _ = writeln!(
                    out,
                    "cursor: event {} of {} ({} behind) · gaps: {gaps} · removals pending: {}",
                    n(self.cursor_last_event_id),
                    n(self.last_event_id),
                    n(self.cursor_events_behind),
                    n(self.removals_pending)
                );
                let _ = match (self.extra_files, self.store_checked_at) {
                    (Some(extra), Some(at)) => writeln!(
                        out,
                        "store: {extra} files no row accounts for at the last check ({}){}",
                        at.format("%Y-%m-%d %H:%M:%S UTC"),
                        if extra > 0 {
                            "; `geo check --delete-extra` lists them"
                        } else {
                            ""
                        }
                    ),
                    _ => writeln!(out, "store: not checked yet for extra files (`geo check`)"),
                };
            }
        }
        out
    }
}

/// `3 s`, `12 min`, `5 h`, `2 d`.
fn age(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}
