//! The secondary's event cursor (Geo's log cursor daemon): reads events after its stored
//! position, in batches, and applies each batch to the registries in one transaction together
//! with the new position, so a crash never applies a batch twice or skips one.
//!
//! - Idempotent: a `created` for a tracked id changes nothing; `updated` puts the row back to
//!   pending (creating it when missing); `deleted` removes the row and schedules the removal of
//!   the local copies (`geo_blob_removals`): the event's key and the registry's recorded one.
//!   Within a batch the events of one record are folded in order, so `created, deleted` leaves
//!   nothing and `deleted, created` a fresh pending row (the old row's copies retired).
//! - Gaps: ids skipped by the batch (a transaction on the primary that commits late, or rolled
//!   back) are stored and looked up again on every step; a gap that fills is applied then. A gap
//!   still empty after [`CursorConfig::gap_timeout`] is given up with a warning and the metric
//!   `geo_event_gaps_abandoned_total`: never silently. The consistency pass repairs whatever such
//!   an event would have done: it backfills a created record, removes a deleted one, and resyncs
//!   an updated one once the primary has verified its new checksum (or at once for a new key).
//! - Exactly one active cursor per tracking database: a lease (`geo_leases`), renewed inside the
//!   same transaction that moves the position, so a cursor that lost its lease cannot commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::AssertSqlSafe;
use tokio_util::sync::CancellationToken;

use super::Event;
use super::fold::{Fold, Gaps};
use super::source::{EventSource, SourceError};
use crate::db::dialect::{IdList, RowReader, Ts, in_id_list, now, param};
use crate::db::{Conn, Database, lease, on_conn, on_pool};
use crate::descriptor::{ReplicatorDescriptor, ReplicatorSet};
use crate::error::DbError;
use crate::flags;
use crate::registry::sql::RegistrySql;
use crate::registry::store::{
    delete_many, insert_pending_many, lock_model_ids, reset_pending_many,
};
use crate::removals;
use crate::telemetry::Metrics;

/// The lease name of the event cursor.
pub(super) const CURSOR_LEASE: &str = "geo_event_cursor";

/// Where a cursor with no stored position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// At the primary's latest event, as Geo does: history is covered by the backfill.
    Latest,
    /// At the first event still in the log.
    Beginning,
}

/// Tuning of the cursor.
#[derive(Debug, Clone)]
pub struct CursorConfig {
    /// Events per batch (Geo: 250; larger batches amortise the transaction).
    pub batch_size: usize,
    /// How long a gap is waited for before it is given up (Geo drops them after 1 h, silently).
    pub gap_timeout: Duration,
    /// Lease time to live (Geo: 30 s).
    pub lease_ttl: Duration,
    /// Where a cursor with no stored position starts.
    pub start: StartPosition,
    /// Pause when there was nothing to read.
    pub idle_wait: Duration,
    /// Give up (return an error) after failing continuously this long (Geo: 30 min).
    pub max_error_duration: Duration,
}

impl Default for CursorConfig {
    fn default() -> Self {
        CursorConfig {
            batch_size: 1000,
            gap_timeout: Duration::from_secs(3600),
            lease_ttl: Duration::from_secs(30),
            start: StartPosition::Latest,
            idle_wait: Duration::from_secs(1),
            max_error_duration: Duration::from_secs(1800),
        }
    }
}

/// The cursor failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CursorError {
    /// The tracking database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The event source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Another process took the lease while this batch was applied; nothing was committed.
    #[error("lost the event cursor lease to another process; the batch was rolled back")]
    LeaseLost,
    /// Errors continued longer than `max_error_duration`.
    #[error("the event cursor failed continuously for {0:?}; last error: {1}")]
    GaveUp(Duration, Box<CursorError>),
}

impl From<sqlx::Error> for CursorError {
    fn from(e: sqlx::Error) -> Self {
        CursorError::Db(DbError::Sqlx(e))
    }
}

/// What one step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Whether this process holds the lease (when false, nothing else happened).
    pub held_lease: bool,
    /// Events read in this step (new ones and filled gaps).
    pub read: usize,
    /// Events applied to a registry.
    pub applied: usize,
    /// Events skipped: unknown replicable or replication off here.
    pub skipped: usize,
    /// Gaps found in this batch.
    pub gaps_detected: usize,
    /// Gaps that filled and were applied.
    pub gaps_filled: usize,
    /// Gaps given up.
    pub gaps_abandoned: usize,
    /// The position after the step.
    pub position: i64,
}

/// What a step read from the primary.
struct Read {
    position: i64,
    gap_rows: Vec<(i64, DateTime<Utc>)>,
    filled: Vec<Event>,
    batch: Vec<Event>,
    read_at: DateTime<Utc>,
}

/// The secondary's event cursor. See the module docs.
#[derive(Debug)]
pub struct EventCursor<S> {
    db: Database,
    source: S,
    config: CursorConfig,
    holder: String,
    replicators: HashMap<&'static str, (&'static ReplicatorDescriptor, Arc<RegistrySql>)>,
    metrics: Metrics,
}

impl<S: EventSource> EventCursor<S> {
    /// A cursor over `db` (the tracking database) for the replicators in `set`. `holder` names
    /// this process in the lease (e.g. `host:pid`).
    pub fn new(
        db: &Database,
        set: &ReplicatorSet,
        source: S,
        config: CursorConfig,
        holder: impl Into<String>,
    ) -> Self {
        let replicators = set
            .descriptors()
            .iter()
            .map(|d| {
                (
                    d.replicable_name,
                    (*d, Arc::new(RegistrySql::new(d, db.dialect()))),
                )
            })
            .collect();
        EventCursor {
            db: db.clone(),
            source,
            config,
            holder: holder.into(),
            replicators,
            metrics: Metrics::default(),
        }
    }

    /// Records events applied and gaps given up into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The stored position (last event id applied), if any.
    pub async fn position(&self) -> Result<Option<i64>, DbError> {
        let sql = "SELECT \"last_event_id\" FROM \"geo_event_cursor\" WHERE \"id\" = 1";
        Ok(on_pool!(self.db, read, pool => sqlx::query_scalar(sql).fetch_optional(pool).await?))
    }

    /// The gaps waiting to fill, oldest id first.
    pub async fn gaps(&self) -> Result<Vec<i64>, DbError> {
        let sql = "SELECT \"event_id\" FROM \"geo_event_gaps\" ORDER BY \"event_id\"";
        Ok(on_pool!(self.db, read, pool => sqlx::query_scalar(sql).fetch_all(pool).await?))
    }

    /// The position the primary may prune below: every event at or under it has been applied
    /// (Geo: min(smallest gap, last processed)).
    pub async fn safe_position(&self) -> Result<Option<i64>, DbError> {
        let gaps = self.gaps().await?;
        Ok(self.position().await?.map(|p| match gaps.first() {
            Some(g) => p.min(g - 1),
            None => p,
        }))
    }

    /// Fixes the start position when none is stored yet (the primary's latest event, or 0), and
    /// returns the stored position. A node calls it before its first consistency pass: every
    /// record older than the position is then in that pass's listing, and every newer one has
    /// an event after it, so no record falls between the two.
    pub async fn initialize(&self) -> Result<i64, CursorError> {
        if let Some(p) = self.position().await? {
            return Ok(p);
        }
        let (start, start_date) = match self.config.start {
            StartPosition::Latest => self.source.latest_event().await?,
            StartPosition::Beginning => (0, None),
        };
        let d = self.db.dialect();
        let sql = format!(
            "INSERT INTO \"geo_event_cursor\" (\"id\", \"last_event_id\", \"updated_at\", \"last_event_date\") VALUES (1, {}, {}, {}) ON CONFLICT (\"id\") DO NOTHING",
            param(d, 1),
            param(d, 2),
            param(d, 3)
        );
        on_pool!(self.db, write, pool => sqlx::query(AssertSqlSafe(sql)).bind(start).bind(Ts(now())).bind(start_date.map(Ts)).execute(pool).await?.rows_affected());
        Ok(self.position().await?.unwrap_or(start))
    }

    /// Reads and applies one batch (plus any gaps that filled). Returns what it did; when the
    /// lease is held by another process it does nothing.
    pub async fn step(&self) -> Result<BatchReport, CursorError> {
        let started = now();
        let mut report = BatchReport::default();
        if !lease::try_acquire(
            &self.db,
            CURSOR_LEASE,
            &self.holder,
            self.config.lease_ttl,
            started,
        )
        .await?
        {
            return Ok(report);
        }
        report.held_lease = true;

        let Read {
            position,
            gap_rows,
            filled,
            batch,
            read_at,
        } = self.read().await?;
        let gaps = Gaps::of(position, batch.iter().map(|e| e.id));
        report.gaps_abandoned += self.report_too_wide(&gaps);
        let filled_ids: Vec<i64> = filled.iter().map(|e| e.id).collect();
        let deadline =
            started - TimeDelta::from_std(self.config.gap_timeout).unwrap_or(TimeDelta::MAX);
        let abandoned: Vec<i64> = gap_rows
            .iter()
            .filter(|(id, detected)| *detected < deadline && !filled_ids.contains(id))
            .map(|(id, _)| *id)
            .collect();
        let new_position = batch.last().map_or(position, |e| e.id.max(position));

        let mut tx = self.db.begin_write().await?;
        if !lease::renew(
            tx.conn(),
            CURSOR_LEASE,
            &self.holder,
            self.config.lease_ttl,
            started,
        )
        .await?
        {
            return Err(CursorError::LeaseLost);
        }
        let events: Vec<&Event> = filled.iter().chain(batch.iter()).collect();
        let (applied, skipped) = self.apply(tx.conn(), &events, read_at).await?;
        delete_gaps(tx.conn(), &filled_ids).await?;
        delete_gaps(tx.conn(), &abandoned).await?;
        insert_gaps(tx.conn(), &gaps.ids, started).await?;
        // The cursor's event time moves with its position (Geo's cursor_last_event_date).
        let position_date = batch
            .last()
            .filter(|e| e.id > position)
            .map(|e| e.created_at);
        store_position(tx.conn(), new_position, position_date, started).await?;
        // The crash suite stops the process here: events applied, nothing committed.
        #[cfg(feature = "failpoints")]
        if !events.is_empty() {
            fail::fail_point!("cursor::before_commit", |_| std::process::abort());
        }
        tx.commit().await?;

        self.report_abandoned(&abandoned);
        report.read = events.len();
        report.applied = applied;
        report.skipped = skipped;
        report.gaps_detected = gaps.ids.len();
        report.gaps_filled = filled_ids.len();
        report.gaps_abandoned += abandoned.len();
        report.position = new_position;
        self.metrics.events_applied(applied as u64);
        Ok(report)
    }

    /// The batch a step applies: the position, the gaps known so far and the events that
    /// filled them, the next events, and when they were read.
    async fn read(&self) -> Result<Read, CursorError> {
        let position = match self.position().await? {
            Some(p) => p,
            None => match self.config.start {
                StartPosition::Latest => self.source.latest_event_id().await?,
                StartPosition::Beginning => 0,
            },
        };
        let gap_rows = self.gap_rows().await?;
        let gap_ids: Vec<i64> = gap_rows.iter().map(|(id, _)| *id).collect();
        let filled = self.source.events_by_ids(&gap_ids).await?;
        let batch = self
            .source
            .events_after(position, self.config.batch_size)
            .await?;
        // Rows this step creates are stamped after the read, not at the step's start: a
        // consistency pass whose listing began before the read (and so may lack these records)
        // must see them as newer than its listing, never as orphans.
        Ok(Read {
            position,
            gap_rows,
            filled,
            batch,
            read_at: now(),
        })
    }

    /// Says which id jumps were too wide to track; returns how many ids they hold.
    fn report_too_wide(&self, gaps: &Gaps) -> usize {
        for (from, to) in &gaps.too_wide {
            tracing::warn!(
                from,
                to,
                width = to - from + 1,
                "event id jump too wide to track id by id; the consistency pass covers it"
            );
        }
        if !gaps.too_wide.is_empty() {
            self.metrics.gaps_abandoned(gaps.abandoned());
        }
        usize::try_from(gaps.abandoned()).unwrap_or(usize::MAX)
    }

    /// Says which gaps were given up (the consistency pass repairs what they carried).
    fn report_abandoned(&self, abandoned: &[i64]) {
        if abandoned.is_empty() {
            return;
        }
        tracing::warn!(
            gaps = ?abandoned,
            timeout_s = self.config.gap_timeout.as_secs(),
            "event gaps never filled and were given up; the consistency pass will repair what they carried"
        );
        self.metrics.gaps_abandoned(abandoned.len() as u64);
    }

    /// Runs until cancelled: steps while there is work, waits when idle or on standby, backs off
    /// on errors and gives up after `max_error_duration` of continuous failure. Releases the
    /// lease on the way out.
    pub async fn run(&self, cancel: CancellationToken) -> Result<(), CursorError> {
        let mut failing_since: Option<Instant> = None;
        let mut failures: u32 = 0;
        let result = loop {
            if cancel.is_cancelled() {
                break Ok(());
            }
            let wait = match self.step().await {
                Ok(r) => {
                    failing_since = None;
                    failures = 0;
                    if !r.held_lease {
                        // Standby: try again within the lease's lifetime.
                        self.config.lease_ttl / 3
                    } else if r.read == 0 {
                        self.config.idle_wait
                    } else {
                        Duration::ZERO
                    }
                }
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > self.config.max_error_duration {
                        break Err(CursorError::GaveUp(since.elapsed(), Box::new(e)));
                    }
                    // A passing hiccup costs a fraction of a second, a lasting outage is not
                    // hammered, and the lease is renewed in time either way.
                    failures = failures.saturating_add(1);
                    let backoff = Duration::from_millis(100)
                        .saturating_mul(1 << failures.min(10).saturating_sub(1))
                        .min(self.config.lease_ttl / 3);
                    let jitter =
                        fastrand::u64(0..=u64::try_from(backoff.as_millis() / 4).unwrap_or(0));
                    tracing::warn!(error = %e, retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX), "event cursor step failed; retrying");
                    backoff + Duration::from_millis(jitter)
                }
            };
            if !wait.is_zero() {
                tokio::select! {
                    () = cancel.cancelled() => break Ok(()),
                    () = tokio::time::sleep(wait) => {}
                }
            }
        };
        if let Err(e) = lease::release(&self.db, CURSOR_LEASE, &self.holder).await {
            tracing::warn!(error = %e, "could not release the event cursor lease; it expires by itself");
        }
        result
    }

    async fn gap_rows(&self) -> Result<Vec<(i64, DateTime<Utc>)>, DbError> {
        let sql =
            "SELECT \"event_id\", \"detected_at\" FROM \"geo_event_gaps\" ORDER BY \"event_id\"";
        on_pool!(self.db, read, pool => sqlx::query(sql)
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| Ok((r.i64("event_id")?, r.timestamp("detected_at")?)))
            .collect())
    }

    /// Folds the events per record and applies them, set-based, per replicable. Returns
    /// (applied, skipped).
    async fn apply(
        &self,
        mut conn: Conn<'_>,
        events: &[&Event],
        now: DateTime<Utc>,
    ) -> Result<(usize, usize), CursorError> {
        let mut applied = 0;
        let mut skipped = 0;
        let mut plan: BTreeMap<&str, Fold> = BTreeMap::new();
        let mut enabled: HashMap<&str, bool> = HashMap::new();
        for e in events {
            let Some((d, _)) = self.replicators.get(e.replicable_name.as_str()) else {
                tracing::warn!(replicable = %e.replicable_name, event = e.id, "event for a replicable this node does not know; skipped");
                skipped += 1;
                continue;
            };
            let on = match enabled.get(d.replicable_name) {
                Some(on) => *on,
                None => {
                    let on = flags::is_enabled_in(conn.reborrow(), d).await?;
                    enabled.insert(d.replicable_name, on);
                    on
                }
            };
            if !on {
                skipped += 1;
                continue;
            }
            applied += 1;
            plan.entry(d.replicable_name).or_default().add(
                e.model_record_id,
                e.event_name,
                e.payload.object_key.clone(),
            );
        }
        for (name, fold) in plan {
            let Some((d, sql)) = self.replicators.get(name) else {
                continue;
            };
            for (id, action) in fold.records() {
                tracing::debug!(
                    replicable = d.replicable_name,
                    id,
                    action = action.describe(),
                    "registry row from events"
                );
            }
            let mut changes = fold.changes();
            // Existing rows are locked in id order first, as every writer of several rows does.
            let touched: Vec<i64> = changes
                .reset
                .iter()
                .chain(&changes.remove)
                .copied()
                .collect();
            lock_model_ids(conn.reborrow(), sql, &touched).await?;
            // The copy the registry recorded goes too, whatever key the event names: the
            // record may have moved without an event reaching us.
            let deleted = delete_many(conn.reborrow(), sql, &changes.remove).await?;
            insert_pending_many(conn.reborrow(), sql, &changes.track, now).await?;
            reset_pending_many(conn.reborrow(), sql, &changes.reset, now).await?;
            for (id, stored_key) in deleted {
                changes.retire_stored(id, stored_key);
            }
            let removals = changes.removal_list();
            removals::schedule(conn.reborrow(), d.replicable_name, &removals, now).await?;
        }
        Ok((applied, skipped))
    }
}

/// The stored cursor, for the status.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoredCursor {
    /// Every event up to this id is applied.
    pub(crate) position: i64,
    /// When the cursor last stepped.
    pub(crate) updated_at: DateTime<Utc>,
    /// When the event at the position was written on the primary (`None` until the cursor
    /// applied one).
    pub(crate) last_event_date: Option<DateTime<Utc>>,
}

/// The stored cursor, if the cursor ever ran.
pub(crate) async fn stored_cursor(db: &Database) -> Result<Option<StoredCursor>, DbError> {
    on_pool!(db, read, pool => {
        let row = sqlx::query("SELECT \"last_event_id\", \"updated_at\", \"last_event_date\" FROM \"geo_event_cursor\" WHERE \"id\" = 1").fetch_optional(pool).await?;
        row.map(|r| Ok::<_, DbError>(StoredCursor {
            position: r.i64("last_event_id")?,
            updated_at: r.timestamp("updated_at")?,
            last_event_date: r.opt_timestamp("last_event_date")?,
        })).transpose()
    })
}

/// How many gaps the cursor waits for, and since when the oldest (for the status).
pub(crate) async fn gap_summary(db: &Database) -> Result<(i64, Option<DateTime<Utc>>), DbError> {
    on_pool!(db, read, pool => {
        let r = sqlx::query("SELECT COUNT(*) AS \"n\", MIN(\"detected_at\") AS \"oldest\" FROM \"geo_event_gaps\"").fetch_one(pool).await?;
        Ok((r.i64("n")?, r.opt_timestamp("oldest")?))
    })
}

async fn delete_gaps(conn: Conn<'_>, ids: &[i64]) -> Result<(), DbError> {
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "DELETE FROM \"geo_event_gaps\" WHERE {}",
        in_id_list(conn.dialect(), "\"event_id\"", 1)
    );
    let ids = IdList(ids.to_vec());
    on_conn!(conn, c => sqlx::query(AssertSqlSafe(sql)).bind(ids).execute(&mut *c).await?.rows_affected());
    Ok(())
}

async fn insert_gaps(conn: Conn<'_>, ids: &[i64], now: DateTime<Utc>) -> Result<(), DbError> {
    if ids.is_empty() {
        return Ok(());
    }
    let d = conn.dialect();
    let sql = format!(
        "INSERT INTO \"geo_event_gaps\" (\"event_id\", \"detected_at\") SELECT \"id\", {} FROM ({}) AS ids WHERE true ON CONFLICT (\"event_id\") DO NOTHING",
        param(d, 2),
        crate::db::dialect::id_list_rows(d, 1)
    );
    let ids = IdList(ids.to_vec());
    on_conn!(conn, c => sqlx::query(AssertSqlSafe(sql)).bind(ids).bind(Ts(now)).execute(&mut *c).await?.rows_affected());
    Ok(())
}

/// Stores the position; `event_date` (the newest applied event's time) only when the position
/// moved, else the stored one stays.
async fn store_position(
    conn: Conn<'_>,
    position: i64,
    event_date: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    let d = conn.dialect();
    let sql = format!(
        "INSERT INTO \"geo_event_cursor\" (\"id\", \"last_event_id\", \"updated_at\", \"last_event_date\") VALUES (1, {}, {}, {}) \
         ON CONFLICT (\"id\") DO UPDATE SET \"last_event_id\" = excluded.\"last_event_id\", \"updated_at\" = excluded.\"updated_at\", \
         \"last_event_date\" = COALESCE(excluded.\"last_event_date\", \"geo_event_cursor\".\"last_event_date\")",
        param(d, 1),
        param(d, 2),
        param(d, 3)
    );
    on_conn!(conn, c => sqlx::query(AssertSqlSafe(sql)).bind(position).bind(Ts(now)).bind(event_date.map(Ts)).execute(&mut *c).await?.rows_affected());
    Ok(())
}
