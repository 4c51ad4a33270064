//! Reading and creating registry rows through the generated SQL.

use super::RegistryRecord;
use crate::db::{Database, Inner, dialect};
use crate::error::DbError;
use crate::replicator::ReplicatorDescriptor;

/// The registry row tracking `model_record_id`, if any.
pub async fn find_by_model_id(
    db: &Database,
    descriptor: &ReplicatorDescriptor,
    model_record_id: i64,
) -> Result<Option<RegistryRecord>, DbError> {
    let sql = descriptor.sql(db.dialect()).registry_select_by_model_id;
    let fk = descriptor.model_foreign_key;
    match db.inner() {
        Inner::Postgres(pool) => sqlx::query(sql)
            .bind(model_record_id)
            .fetch_optional(pool)
            .await?
            .map(|row| RegistryRecord::decode(&row, fk))
            .transpose(),
        Inner::Sqlite { readers, .. } => sqlx::query(sql)
            .bind(model_record_id)
            .fetch_optional(readers)
            .await?
            .map(|row| RegistryRecord::decode(&row, fk))
            .transpose(),
    }
}

/// Creates a pending registry row for `model_record_id`; returns false when one already exists
/// (the row is left as it is).
pub async fn insert_pending(
    db: &Database,
    descriptor: &ReplicatorDescriptor,
    model_record_id: i64,
) -> Result<bool, DbError> {
    let sql = descriptor.sql(db.dialect()).registry_insert_pending;
    let now = dialect::now();
    let affected = match db.inner() {
        Inner::Postgres(pool) => sqlx::query(sql)
            .bind(model_record_id)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected(),
        Inner::Sqlite { writer, .. } => sqlx::query(sql)
            .bind(model_record_id)
            .bind(dialect::timestamp_to_micros(now))
            .execute(writer)
            .await?
            .rows_affected(),
    };
    Ok(affected == 1)
}
