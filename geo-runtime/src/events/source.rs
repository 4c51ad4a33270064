//! Where a secondary reads events from: the [`EventSource`] trait, and [`DbEventSource`], which
//! reads the primary's event log directly (an in-process primary, tests; the HTTP source of the
//! node API implements the same trait). Also the primary's side of the log: reading, recording
//! secondaries' cursors and pruning.

use chrono::{DateTime, Utc};
use std::future::Future;

use sqlx::AssertSqlSafe;

use super::{Event, EventName, EventPayload};
use crate::db::dialect::{IdList, RowReader, Ts, in_id_list, now, param};
use crate::db::{Conn, Database, on_conn, on_pool};
use crate::error::DbError;

/// Reading events failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The primary's database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The transport to the primary failed.
    #[error("event source: {0}")]
    Transport(String),
    /// The primary's answer could not be understood.
    #[error("the primary's answer: {0}")]
    Protocol(String),
    /// An event could not be understood.
    #[error("event {id}: {reason}")]
    Malformed {
        /// The event id.
        id: i64,
        /// What is wrong with it.
        reason: String,
    },
    /// The primary answered, and refused: why, in its words.
    #[error("the primary refused the request ({}; HTTP {status}): {message}", class.advice())]
    Refused {
        /// What kind of refusal, for the operator (and the metrics' `reason`).
        class: Refusal,
        /// The HTTP status.
        status: u16,
        /// The primary's own reason.
        message: String,
    },
}

/// Why a primary refused a secondary's request, in the classes an operator acts on differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// Unknown access key, or a token that does not verify with the node's secret.
    Authentication,
    /// The token is outside its validity window: the two nodes' clocks disagree.
    ClockSkew,
    /// The node is registered but disabled on the primary.
    Disabled,
    /// Not the primary's node API (another service, or the primary's admin endpoint).
    WrongEndpoint,
    /// Anything else the primary refused (the message says what).
    Other,
}

impl Refusal {
    /// A short, stable name (a metrics label): `authentication`, `clock_skew`, `disabled`,
    /// `wrong_endpoint`, `other`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Refusal::Authentication => "authentication",
            Refusal::ClockSkew => "clock_skew",
            Refusal::Disabled => "disabled",
            Refusal::WrongEndpoint => "wrong_endpoint",
            Refusal::Other => "other",
        }
    }

    /// What the operator should look at.
    pub const fn advice(self) -> &'static str {
        match self {
            Refusal::Authentication => "authentication failed: check access_key and secret",
            Refusal::ClockSkew => "clock skew: check the nodes' clocks",
            Refusal::Disabled => "this secondary is disabled on the primary: `geo nodes enable`",
            Refusal::WrongEndpoint => {
                "wrong endpoint: primary_url must be the primary's node API (its `listen`), not its admin endpoint"
            }
            Refusal::Other => "refused",
        }
    }
}

/// A primary's event log as a secondary sees it.
pub trait EventSource: Send + Sync {
    /// Up to `limit` events with ids above `after`, in id order.
    fn events_after(
        &self,
        after: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Event>, SourceError>> + Send;
    /// The events among `ids` that exist now (gaps that filled), in id order.
    fn events_by_ids(
        &self,
        ids: &[i64],
    ) -> impl Future<Output = Result<Vec<Event>, SourceError>> + Send;
    /// The highest event id (0 when the log is empty).
    fn latest_event_id(&self) -> impl Future<Output = Result<i64, SourceError>> + Send;
    /// The highest event id and when that event was written (`None` when the log is empty or
    /// the source cannot say), for the status's `last_event_date`.
    fn latest_event(
        &self,
    ) -> impl Future<Output = Result<(i64, Option<DateTime<Utc>>), SourceError>> + Send {
        async move { Ok((self.latest_event_id().await?, None)) }
    }
}

/// Reads the event log from the primary's database.
#[derive(Debug, Clone)]
pub struct DbEventSource {
    primary: Database,
}

impl DbEventSource {
    /// A source over the primary's database.
    pub fn new(primary: &Database) -> Self {
        DbEventSource {
            primary: primary.clone(),
        }
    }
}

const EVENT_COLUMNS: &str =
    "\"id\", \"replicable_name\", \"event_name\", \"model_record_id\", \"payload\", \"created_at\"";

fn decode<R: RowReader>(row: &R) -> Result<Event, SourceError> {
    let id = row.i64("id")?;
    let payload = row.json("payload").map_err(|e| SourceError::Malformed {
        id,
        reason: format!("payload: {e}"),
    })?;
    let name = row
        .opt_string("event_name")?
        .unwrap_or_default()
        .parse::<EventName>()
        .map_err(|e| SourceError::Malformed {
            id,
            reason: e.to_string(),
        })?;
    let payload: EventPayload =
        serde_json::from_value(payload).map_err(|e| SourceError::Malformed {
            id,
            reason: format!("payload: {e}"),
        })?;
    Ok(Event {
        id,
        replicable_name: row.opt_string("replicable_name")?.unwrap_or_default(),
        event_name: name,
        model_record_id: row.i64("model_record_id")?,
        payload,
        created_at: row.timestamp("created_at")?,
    })
}

/// Reads events from the primary's log with `where_sql` (parameters: `$1` a bound value, `$2`
/// a limit when given).
async fn read_events(
    db: &Database,
    sql: String,
    first: Bind,
    limit: Option<i64>,
) -> Result<Vec<Event>, SourceError> {
    on_pool!(db, read, pool => {
        let mut q = sqlx::query(AssertSqlSafe(sql));
        q = match first {
            Bind::Id(v) => q.bind(v),
            Bind::Ids(v) => q.bind(v),
        };
        if let Some(l) = limit {
            q = q.bind(l);
        }
        let rows = q.fetch_all(pool).await.map_err(DbError::from)?;
        rows.iter().map(decode).collect()
    })
}

enum Bind {
    Id(i64),
    Ids(IdList),
}

impl EventSource for DbEventSource {
    async fn events_after(&self, after: i64, limit: usize) -> Result<Vec<Event>, SourceError> {
        let d = self.primary.dialect();
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM \"geo_events\" WHERE \"id\" > {} ORDER BY \"id\" LIMIT {}",
            param(d, 1),
            param(d, 2)
        );
        read_events(
            &self.primary,
            sql,
            Bind::Id(after),
            Some(i64::try_from(limit).unwrap_or(i64::MAX)),
        )
        .await
    }

    async fn events_by_ids(&self, ids: &[i64]) -> Result<Vec<Event>, SourceError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let d = self.primary.dialect();
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM \"geo_events\" WHERE {} ORDER BY \"id\"",
            in_id_list(d, "\"id\"", 1)
        );
        read_events(&self.primary, sql, Bind::Ids(IdList(ids.to_vec())), None).await
    }

    async fn latest_event_id(&self) -> Result<i64, SourceError> {
        let max: Option<i64> = on_pool!(self.primary, read, pool => sqlx::query_scalar("SELECT max(\"id\") FROM \"geo_events\"")
            .fetch_one(pool)
            .await
            .map_err(DbError::from)?);
        Ok(max.unwrap_or(0))
    }

    async fn latest_event(&self) -> Result<(i64, Option<DateTime<Utc>>), SourceError> {
        Ok(newest_event(&self.primary)
            .await?
            .map_or((0, None), |(id, at)| (id, Some(at))))
    }
}

/// On the primary: remembers how far a secondary has read, for pruning.
pub async fn record_secondary_cursor(
    primary: &Database,
    node_name: &str,
    last_event_id: i64,
) -> Result<(), DbError> {
    let d = primary.dialect();
    let sql = format!(
        "INSERT INTO \"geo_secondary_cursors\" (\"node_name\", \"last_event_id\", \"updated_at\") VALUES ({}, {}, {}) \
         ON CONFLICT (\"node_name\") DO UPDATE SET \"last_event_id\" = excluded.\"last_event_id\", \"updated_at\" = excluded.\"updated_at\"",
        param(d, 1),
        param(d, 2),
        param(d, 3)
    );
    on_pool!(primary, write, pool => sqlx::query(AssertSqlSafe(sql))
        .bind(node_name)
        .bind(last_event_id)
        .bind(Ts(now()))
        .execute(pool)
        .await?
        .rows_affected());
    Ok(())
}

/// Forgets a secondary's reported cursor (it was removed), in the caller's transaction, so it
/// no longer holds back the pruning of the log.
pub(crate) async fn forget_secondary_cursor(
    conn: Conn<'_>,
    node_name: &str,
) -> Result<(), DbError> {
    let sql = format!(
        "DELETE FROM \"geo_secondary_cursors\" WHERE \"node_name\" = {}",
        param(conn.dialect(), 1)
    );
    on_conn!(conn, c => sqlx::query(AssertSqlSafe(sql)).bind(node_name).execute(&mut *c).await?.rows_affected());
    Ok(())
}

/// The newest event's id and time, if the log has any (for the primary's status).
pub(crate) async fn newest_event(
    primary: &Database,
) -> Result<Option<(i64, DateTime<Utc>)>, DbError> {
    on_pool!(primary, read, pool => {
        let row = sqlx::query("SELECT \"id\", \"created_at\" FROM \"geo_events\" ORDER BY \"id\" DESC LIMIT 1").fetch_optional(pool).await?;
        row.map(|r| Ok((r.i64("id")?, r.timestamp("created_at")?))).transpose()
    })
}

/// How many events of `replicable` the log holds, only those named `event` for
/// `model_record_id` when given (for the test kit's checks of what an application published).
#[cfg(feature = "testkit")]
pub(crate) async fn count_events(
    primary: &Database,
    replicable: &str,
    event: Option<(&str, i64)>,
) -> Result<i64, DbError> {
    let p = |n| param(primary.dialect(), n);
    let mut sql = format!(
        "SELECT COUNT(*) FROM \"geo_events\" WHERE \"replicable_name\" = {}",
        p(1)
    );
    if event.is_some() {
        sql.push_str(&format!(
            " AND \"event_name\" = {} AND \"model_record_id\" = {}",
            p(2),
            p(3)
        ));
    }
    on_pool!(primary, read, pool => {
        let mut q = sqlx::query_scalar(AssertSqlSafe(sql)).bind(replicable);
        if let Some((name, id)) = event {
            q = q.bind(name).bind(id);
        }
        Ok(q.fetch_one(pool).await?)
    })
}

/// A secondary's reported cursor, as the primary keeps it.
#[derive(Debug, Clone)]
pub(crate) struct ReportedCursor {
    /// The secondary's name.
    pub(crate) name: String,
    /// Every event up to this id is applied there.
    pub(crate) last_event_id: i64,
    /// When that event was written (`None` when it is no longer in the log).
    pub(crate) last_event_date: Option<DateTime<Utc>>,
    /// When the secondary reported it.
    pub(crate) updated_at: DateTime<Utc>,
}

/// The secondaries' reported cursors, by name (for the primary's status).
pub(crate) async fn secondary_cursors(primary: &Database) -> Result<Vec<ReportedCursor>, DbError> {
    on_pool!(primary, read, pool => {
        let rows = sqlx::query(
            "SELECT c.\"node_name\", c.\"last_event_id\", c.\"updated_at\", e.\"created_at\" AS \"last_event_date\" \
             FROM \"geo_secondary_cursors\" c LEFT JOIN \"geo_events\" e ON e.\"id\" = c.\"last_event_id\" ORDER BY c.\"node_name\"",
        )
        .fetch_all(pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReportedCursor {
                    name: r.opt_string("node_name")?.unwrap_or_default(),
                    last_event_id: r.i64("last_event_id")?,
                    last_event_date: r.opt_timestamp("last_event_date")?,
                    updated_at: r.timestamp("updated_at")?,
                })
            })
            .collect()
    })
}

/// On the primary: deletes up to `limit` events below the lowest cursor of all known
/// secondaries, oldest first. With no secondary known it deletes nothing: a secondary that
/// appears later starts from the log and the backfill. Returns how many were deleted.
pub async fn prune_events(primary: &Database, limit: i64) -> Result<u64, DbError> {
    let d = primary.dialect();
    let sql = format!(
        "DELETE FROM \"geo_events\" WHERE \"id\" IN (SELECT \"id\" FROM \"geo_events\" \
         WHERE \"id\" < (SELECT min(\"last_event_id\") FROM \"geo_secondary_cursors\") ORDER BY \"id\" LIMIT {})",
        param(d, 1)
    );
    let n = on_pool!(primary, write, pool => sqlx::query(AssertSqlSafe(sql)).bind(limit).execute(pool).await?.rows_affected());
    if n > 0 {
        tracing::info!(deleted = n, "pruned the event log");
    }
    Ok(n)
}
