//! Reading and writing the primary's verification columns through the generated SQL, wherever
//! they live (Geo's delegation from the model to its state table).

use super::{VERIFICATION_COLUMNS, VerificationDetails};
use crate::db::dialect::{param, quote};
use crate::db::{Database, Dialect, Inner, dialect};
use crate::descriptor::{ReplicatorDescriptor, VerificationStorage};
use crate::error::DbError;
use sqlx::AssertSqlSafe;

/// The table and key column holding a replicable's verification columns on the primary.
fn place(d: &ReplicatorDescriptor) -> (String, String) {
    match d.verification {
        VerificationStorage::SeparateTable { table } => (quote(table), quote(d.model_foreign_key)),
        VerificationStorage::Inline => (quote(d.model_table), quote(d.model_id_column)),
    }
}

/// `SELECT <verification columns> … WHERE <key> = $1`.
pub(crate) fn select_sql(d: &ReplicatorDescriptor, dialect: Dialect) -> String {
    let (table, key) = place(d);
    let cols: Vec<String> = VERIFICATION_COLUMNS.iter().map(|c| quote(c)).collect();
    format!(
        "SELECT {} FROM {table} WHERE {key} = {}",
        cols.join(", "),
        param(dialect, 1)
    )
}

/// Writes the verification columns of `$1` (`$2`… in [`VERIFICATION_COLUMNS`] order): an upsert
/// into the state table, or an update of the model row.
pub(crate) fn save_sql(d: &ReplicatorDescriptor, dialect: Dialect) -> String {
    let (table, key) = place(d);
    let cols: Vec<String> = VERIFICATION_COLUMNS.iter().map(|c| quote(c)).collect();
    match d.verification {
        VerificationStorage::SeparateTable { .. } => format!(
            "INSERT INTO {table} ({key}, {}) VALUES ({}) ON CONFLICT ({key}) DO UPDATE SET {}",
            cols.join(", "),
            (1..=cols.len() + 1)
                .map(|n| param(dialect, n))
                .collect::<Vec<_>>()
                .join(", "),
            cols.iter()
                .map(|c| format!("{c} = excluded.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        VerificationStorage::Inline => format!(
            "UPDATE {table} SET {} WHERE {key} = {}",
            cols.iter()
                .enumerate()
                .map(|(i, c)| format!("{c} = {}", param(dialect, i + 2)))
                .collect::<Vec<_>>()
                .join(", "),
            param(dialect, 1)
        ),
    }
}

/// The verification details of one model record. With a separate state table, a record without
/// a state row reads as the default (pending); with inline columns the model row must exist.
pub async fn load(
    db: &Database,
    descriptor: &ReplicatorDescriptor,
    model_record_id: i64,
) -> Result<VerificationDetails, DbError> {
    let sql = AssertSqlSafe(select_sql(descriptor, db.dialect()));
    let found = match db.inner() {
        Inner::Postgres(pool) => {
            let row = sqlx::query(sql)
                .bind(model_record_id)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(VerificationDetails::decode).transpose()?
        }
        Inner::Sqlite { readers, .. } => {
            let row = sqlx::query(sql)
                .bind(model_record_id)
                .fetch_optional(readers)
                .await?;
            row.as_ref().map(VerificationDetails::decode).transpose()?
        }
    };
    match (found, descriptor.verification) {
        (Some(details), _) => Ok(details),
        (None, VerificationStorage::SeparateTable { .. }) => Ok(VerificationDetails::default()),
        (None, VerificationStorage::Inline) => Err(DbError::RowNotFound {
            table: descriptor.model_table,
            id: model_record_id,
        }),
    }
}

/// Writes the verification details of one model record (an upsert into the state table, or an
/// update of the model row's inline columns). Errors when the model record does not exist.
pub async fn save(
    db: &Database,
    descriptor: &ReplicatorDescriptor,
    model_record_id: i64,
    details: &VerificationDetails,
) -> Result<(), DbError> {
    let sql = AssertSqlSafe(save_sql(descriptor, db.dialect()));
    let failure = details
        .verification_failure
        .as_deref()
        .map(crate::retry::truncate_failure);
    let affected = match db.inner() {
        Inner::Postgres(pool) => sqlx::query(sql)
            .bind(model_record_id)
            .bind(details.verification_state.as_i16())
            .bind(details.verification_started_at)
            .bind(details.verification_retry_at)
            .bind(details.verified_at)
            .bind(details.verification_retry_count)
            .bind(details.verification_checksum.as_deref())
            .bind(failure)
            .execute(pool)
            .await?
            .rows_affected(),
        Inner::Sqlite { writer, .. } => {
            let ts = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(dialect::timestamp_to_micros);
            sqlx::query(sql)
                .bind(model_record_id)
                .bind(details.verification_state.as_i16())
                .bind(ts(details.verification_started_at))
                .bind(ts(details.verification_retry_at))
                .bind(ts(details.verified_at))
                .bind(details.verification_retry_count)
                .bind(details.verification_checksum.as_deref())
                .bind(failure)
                .execute(writer)
                .await?
                .rows_affected()
        }
    };
    if affected == 0 {
        return Err(DbError::RowNotFound {
            table: descriptor.model_table,
            id: model_record_id,
        });
    }
    Ok(())
}
