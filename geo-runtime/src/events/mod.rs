//! The event log: the primary writes `created` / `updated` / `deleted` events in the same
//! transaction as the model change; each secondary's [`EventCursor`] reads them in order and
//! applies them to its registries.
//!
//! Events are hints, the registry is the truth: a lost event is repaired by the consistency pass
//! (backfill), and a gap in the ids is tracked until it fills or is given up loudly.

mod cursor;
mod fold;
mod ids;
mod source;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;

pub use cursor::{BatchReport, CursorConfig, CursorError, EventCursor, StartPosition};
pub(crate) use cursor::{gap_summary, stored_cursor};
pub use ids::{DbModelIdSource, ListedVersions, Listing, ModelIdSource};
#[cfg(feature = "testkit")]
pub(crate) use source::count_events;
pub use source::{
    DbEventSource, EventSource, Refusal, SourceError, prune_events, record_secondary_cursor,
};
pub(crate) use source::{forget_secondary_cursor, newest_event, secondary_cursors};

use crate::db::dialect::{JsonDoc, Ts, now, param};
use crate::db::{Conn, on_conn};
use crate::descriptor::ReplicatorDescriptor;
use crate::error::DbError;

/// What happened to a model record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventName {
    /// A record (and its object) was created.
    Created,
    /// Its object changed: secondaries sync it again.
    Updated,
    /// It was deleted: secondaries drop the registry row and remove their copy.
    Deleted,
}

impl EventName {
    /// `created`, `updated`, `deleted`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventName::Created => "created",
            EventName::Updated => "updated",
            EventName::Deleted => "deleted",
        }
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event name `{0}`")]
pub struct UnknownEventName(pub String);

impl FromStr for EventName {
    type Err = UnknownEventName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "created" => Ok(EventName::Created),
            "updated" => Ok(EventName::Updated),
            "deleted" => Ok(EventName::Deleted),
            other => Err(UnknownEventName(other.to_owned())),
        }
    }
}

/// What an event carries about the object, so a secondary can act on a `deleted` event after
/// the model row is gone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPayload {
    /// The object's key, when the model has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_key: Option<String>,
    /// Whether the object is on local storage (false: object storage).
    #[serde(default = "yes")]
    pub local: bool,
}

fn yes() -> bool {
    true
}

/// One event of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Monotonically increasing id (commit order may differ: see gaps).
    pub id: i64,
    /// The replicable it concerns.
    pub replicable_name: String,
    /// What happened.
    pub event_name: EventName,
    /// The model record.
    pub model_record_id: i64,
    /// Details (the object key…).
    pub payload: EventPayload,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// Writes an event in the caller's transaction, so the model change and its event commit
/// together or not at all. A no-op (returns `None`) when the replicable's feature flag is off;
/// the flag is read in the same statement.
pub async fn publish(
    conn: Conn<'_>,
    descriptor: &'static ReplicatorDescriptor,
    event_name: EventName,
    model_record_id: i64,
    payload: EventPayload,
) -> Result<Option<i64>, DbError> {
    let d = conn.dialect();
    let p = |n| param(d, n);
    let sql = format!(
        "INSERT INTO \"geo_events\" (\"replicable_name\", \"event_name\", \"model_record_id\", \"payload\", \"created_at\") \
         SELECT {}, {}, {}, {}, {} \
         WHERE {} RETURNING \"id\"",
        p(1),
        p(2),
        p(3),
        p(4),
        p(5),
        crate::flags::enabled_expr(&p(6), &p(7))
    );
    let doc = serde_json::to_value(&payload).unwrap_or_default();
    let mut conn = conn;
    let id: Option<i64> = on_conn!(conn.reborrow(), c => sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(descriptor.replicable_name)
        .bind(event_name.as_str())
        .bind(model_record_id)
        .bind(JsonDoc(doc))
        .bind(Ts(now()))
        .bind(descriptor.feature_flag)
        .bind(descriptor.enabled_by_default)
        .fetch_optional(&mut *c)
        .await?);
    // A new or changed object needs a new checksum: its verification goes back to pending in the
    // same transaction (the primary verifies its data whether or not replication is on).
    if matches!(event_name, EventName::Created | EventName::Updated) {
        let sql = crate::verification::sql::mark_pending_sql(descriptor, d);
        on_conn!(conn, c => sqlx::query(AssertSqlSafe(sql))
            .bind(model_record_id)
            .execute(&mut *c)
            .await?
            .rows_affected());
    }
    match id {
        Some(id) => {
            tracing::debug!(replicable = descriptor.replicable_name, model_record_id, event = %event_name, id, "event published")
        }
        None => tracing::trace!(
            replicable = descriptor.replicable_name,
            "replication disabled: no event"
        ),
    }
    Ok(id)
}
