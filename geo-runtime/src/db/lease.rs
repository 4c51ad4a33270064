//! Leases in the tracking database (`geo_leases`): a named lock held by one holder until it
//! expires. Used where exactly one process may act, such as the event cursor (Geo's exclusive
//! lease `geo_log_cursor_processed`, TTL 30 s). A holder that dies simply stops renewing.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::AssertSqlSafe;

use super::dialect::{Ts, param};
use super::{Conn, Database, on_conn, on_pool};
use crate::error::DbError;

fn ttl_delta(ttl: Duration) -> TimeDelta {
    TimeDelta::from_std(ttl).unwrap_or(TimeDelta::MAX)
}

/// Takes the lease `name` for `holder` until `now + ttl` when it is free, expired or already
/// this holder's; returns whether `holder` holds it now.
pub async fn try_acquire(
    db: &Database,
    name: &str,
    holder: &str,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    let d = db.dialect();
    let sql = format!(
        "INSERT INTO \"geo_leases\" (\"name\", \"holder\", \"expires_at\") VALUES ({}, {}, {}) \
         ON CONFLICT (\"name\") DO UPDATE SET \"holder\" = excluded.\"holder\", \"expires_at\" = excluded.\"expires_at\" \
         WHERE \"geo_leases\".\"holder\" = excluded.\"holder\" OR \"geo_leases\".\"expires_at\" < {} \
         RETURNING \"holder\"",
        param(d, 1),
        param(d, 2),
        param(d, 3),
        param(d, 4)
    );
    let expires = Ts(now + ttl_delta(ttl));
    let got: Option<String> = on_pool!(db, write, pool => sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(name)
        .bind(holder)
        .bind(expires)
        .bind(Ts(now))
        .fetch_optional(pool)
        .await?);
    Ok(got.as_deref() == Some(holder))
}

/// Inside a write transaction: extends the lease if `holder` still holds it; false when it was
/// lost (expired and taken), in which case the caller must not commit what it did under it.
pub async fn renew(
    conn: Conn<'_>,
    name: &str,
    holder: &str,
    ttl: Duration,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    let d = conn.dialect();
    let sql = format!(
        "UPDATE \"geo_leases\" SET \"expires_at\" = {} WHERE \"name\" = {} AND \"holder\" = {}",
        param(d, 1),
        param(d, 2),
        param(d, 3)
    );
    let expires = Ts(now + ttl_delta(ttl));
    let n = on_conn!(conn, c => sqlx::query(AssertSqlSafe(sql))
        .bind(expires)
        .bind(name)
        .bind(holder)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(n == 1)
}

/// Gives the lease up (on clean shutdown), if `holder` holds it.
pub async fn release(db: &Database, name: &str, holder: &str) -> Result<(), DbError> {
    let d = db.dialect();
    let sql = format!(
        "DELETE FROM \"geo_leases\" WHERE \"name\" = {} AND \"holder\" = {}",
        param(d, 1),
        param(d, 2)
    );
    on_pool!(db, write, pool => sqlx::query(AssertSqlSafe(sql)).bind(name).bind(holder).execute(pool).await?.rows_affected());
    Ok(())
}
