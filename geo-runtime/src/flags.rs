//! Feature flags, one per replicable (`geo_<name>_replication`), persisted in each node's
//! database (`geo_feature_flags`) and switchable at run time. A flag nobody has set has the
//! replicator's `enabled_by_default`.

use sqlx::AssertSqlSafe;

use crate::db::dialect::{Ts, now, param};
use crate::db::{Conn, Database, Dialect, on_conn, on_pool};
use crate::descriptor::ReplicatorDescriptor;
use crate::error::DbError;

/// Whether replication of `descriptor` is on in `db`.
pub async fn is_enabled(db: &Database, descriptor: &ReplicatorDescriptor) -> Result<bool, DbError> {
    let sql = select_sql(db.dialect());
    let stored: Option<bool> = on_pool!(db, read, pool => sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(descriptor.feature_flag)
        .fetch_optional(pool)
        .await?);
    Ok(stored.unwrap_or(descriptor.enabled_by_default))
}

/// [`is_enabled`] in a caller's transaction (the event cursor reads it with the batch it
/// applies).
pub(crate) async fn is_enabled_in(
    conn: Conn<'_>,
    descriptor: &ReplicatorDescriptor,
) -> Result<bool, DbError> {
    let sql = select_sql(conn.dialect());
    let stored: Option<bool> = on_conn!(conn, c => sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(descriptor.feature_flag)
        .fetch_optional(&mut *c)
        .await?);
    Ok(stored.unwrap_or(descriptor.enabled_by_default))
}

/// The SQL expression that is replication's switch for the flag named by `name` (a
/// parameter), `default` (a parameter) when it was never set: the application's event
/// publishing reads it in the statement that writes the event.
pub(crate) fn enabled_expr(name: &str, default: &str) -> String {
    format!(
        "COALESCE((SELECT \"enabled\" FROM \"geo_feature_flags\" WHERE \"name\" = {name}), {default})"
    )
}

fn select_sql(dialect: Dialect) -> String {
    format!(
        "SELECT \"enabled\" FROM \"geo_feature_flags\" WHERE \"name\" = {}",
        param(dialect, 1)
    )
}

/// Switches replication of `descriptor` on or off in `db`, for every process using it.
pub async fn set_enabled(
    db: &Database,
    descriptor: &ReplicatorDescriptor,
    enabled: bool,
) -> Result<(), DbError> {
    let d = db.dialect();
    let sql = format!(
        "INSERT INTO \"geo_feature_flags\" (\"name\", \"enabled\", \"updated_at\") VALUES ({}, {}, {}) \
         ON CONFLICT (\"name\") DO UPDATE SET \"enabled\" = excluded.\"enabled\", \"updated_at\" = excluded.\"updated_at\"",
        param(d, 1),
        param(d, 2),
        param(d, 3)
    );
    on_pool!(db, write, pool => sqlx::query(AssertSqlSafe(sql))
        .bind(descriptor.feature_flag)
        .bind(enabled)
        .bind(Ts(now()))
        .execute(pool)
        .await?
        .rows_affected());
    tracing::info!(
        flag = descriptor.feature_flag,
        enabled,
        "feature flag switched"
    );
    Ok(())
}
