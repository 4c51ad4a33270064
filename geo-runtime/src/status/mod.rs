//! A node's status: Geo's per-replicable counts and the site's health, collected in the
//! background and served from memory.
//!
//! Geo recomputes every count on every status check and batches the scans in 100k-id ranges.
//! Here a [`StatusCollector`] runs one grouped query per replicable (per table, not per state)
//! every `status_interval` (Geo's metrics worker runs once a minute) and keeps the result; the
//! status and metrics endpoints only read that snapshot, so a request costs the same with ten rows
//! or ten million, and the database sees one scan per table and interval whatever the number of
//! scrapers. The snapshot says when it was taken and how long it took.

mod collect;
mod render;

pub use collect::StatusCollector;
pub use render::StatusGauges;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::db::NodeRole;
use crate::db::dialect::now;

/// A secondary whose event cursor has not stepped for this long while the primary has newer
/// events is unhealthy (stopped, or stuck), unless configured otherwise (`cursor_stall_secs`).
pub const CURSOR_STALL: Duration = Duration::from_secs(300);

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
    /// When that event was written (`None` once it was pruned from the log).
    pub last_event_date: Option<DateTime<Utc>>,
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
    /// When the newest event was written on the primary (a secondary asks its primary).
    pub last_event_date: Option<DateTime<Utc>>,
    /// Secondary: the last event the cursor has read and applied (ids below it that are still
    /// missing are [`NodeStatus::cursor_gaps_count`]).
    pub cursor_last_event_id: Option<i64>,
    /// Secondary: when the event at the cursor's position was written on the primary (Geo's
    /// `cursor_last_event_date`): with `last_event_date`, how far behind in time it is.
    pub cursor_last_event_date: Option<DateTime<Utc>>,
    /// Secondary: when the cursor last stepped (it steps every few seconds, idle or not).
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
            // Times as the node's own fields write them (RFC 3339), and each report's age.
            let secondaries = self.secondaries.iter().map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "last_event_id": s.last_event_id,
                    "last_event_date": s.last_event_date.map(|t| t.to_rfc3339()),
                    "updated_at": s.updated_at.to_rfc3339(),
                    "report_age_secs": (self.collected_at - s.updated_at).num_seconds().max(0),
                })
            });
            m.insert("secondaries".into(), secondaries.collect::<Vec<_>>().into());
        } else {
            m.insert(
                "cursor_last_event_id".into(),
                self.cursor_last_event_id.into(),
            );
            m.insert(
                "cursor_last_event_date".into(),
                self.cursor_last_event_date.map(|t| t.to_rfc3339()).into(),
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
