//! The statements of the primary's verification, rendered from the descriptor's validated names,
//! for the table that holds the verification columns (the model table, or `<name>_states`).
//! Like the registry's, the state machine lives in the `WHERE` clauses: only the attempt that
//! started a checksum may record it, so a record changed while it was hashed stays pending.

use super::{VerificationEvent, VerificationState};
use crate::db::Dialect;
use crate::db::dialect::{param, plus_random_secs, quote, skip_locked};
use crate::descriptor::{ReplicatorDescriptor, VerificationStorage};

/// `$1` model id: verification back to pending (a new or changed object), when the record
/// exists; run in the same transaction as the model change's event.
pub(crate) fn mark_pending_sql(d: &ReplicatorDescriptor, dialect: Dialect) -> String {
    VerificationSql::new(d, dialect).mark_pending
}

/// The assignments that put a verification back to pending: state, retries and failure cleared.
pub(crate) fn reset_to_pending() -> String {
    format!(
        "\"verification_state\" = {}, \"verification_retry_count\" = 0, \"verification_retry_at\" = NULL, \"verification_failure\" = NULL",
        VerificationState::Pending.as_i16()
    )
}

/// An operator's reverify: back to pending (`VerificationEvent::Pending`) every state but a
/// running check, which is left to finish.
pub(crate) fn not_running() -> String {
    let others: Vec<VerificationState> = VerificationState::ALL
        .into_iter()
        .filter(|s| *s != VerificationState::Started)
        .collect();
    VerificationEvent::Pending.guard_only("\"verification_state\"", &others)
}

/// Verification statements for one replicable and dialect.
#[derive(Debug, Clone)]
pub(crate) struct VerificationSql {
    /// The table holding the verification columns, quoted.
    pub(crate) table: String,
    /// Its model id column, quoted.
    pub(crate) key: String,
    /// `$1` limit: creates missing state rows (separate table only; `None` inline).
    pub(crate) ensure_rows: Option<String>,
    /// `$1` model id: back to pending (a new or changed object), when the record exists.
    pub(crate) mark_pending: String,
    /// `$1` limit, `$2` now: pending → started, returning the ids.
    pub(crate) claim_pending: String,
    /// `$1` limit, `$2` now: failed and due → started, returning the ids and the checksum kept
    /// by a failed re-verification (to compare against again).
    pub(crate) claim_failed_due: String,
    /// `$1` limit, `$2` now, `$3` verified before: succeeded long ago → started, returning the
    /// ids and their recorded checksums.
    pub(crate) claim_reverify: String,
    /// `$1` id, `$2` started at, `$3` checksum, `$4` now: started → succeeded, same attempt only.
    pub(crate) mark_succeeded: String,
    /// `$1` id, `$2` started at, `$3` failure, `$4` now, `$5` retry at, `$6` checksum to keep
    /// (a re-verification's expected one) or NULL: started → failed.
    pub(crate) mark_failed: String,
    /// `$1` started before, `$2` earliest retry, `$3` failure: started too long → failed.
    pub(crate) fail_timed_out: String,
    /// Rows per verification state.
    pub(crate) count_by_state: String,
}

impl VerificationSql {
    /// Renders the statements.
    pub(crate) fn new(d: &ReplicatorDescriptor, dialect: Dialect) -> Self {
        let p = |n| param(dialect, n);
        let model = quote(d.model_table);
        let model_id = quote(d.model_id_column);
        let (table, key) = match d.verification {
            VerificationStorage::SeparateTable { table } => {
                (quote(table), quote(d.model_foreign_key))
            }
            VerificationStorage::Inline => (model.clone(), model_id.clone()),
        };
        let lock = skip_locked(dialect);
        let bytes = match dialect {
            Dialect::Postgres => "BYTEA",
            Dialect::Sqlite => "BLOB",
        };
        let reset = reset_to_pending();
        let [_, started, succeeded, failed, _] =
            VerificationState::ALL.map(VerificationState::as_i16);
        let (ensure_rows, mark_pending) = match d.verification {
            VerificationStorage::SeparateTable { .. } => (
                Some(format!(
                    "INSERT INTO {table} ({key}) SELECT m.{model_id} FROM {model} m WHERE NOT EXISTS (SELECT 1 FROM {table} s WHERE s.{key} = m.{model_id}) LIMIT {} ON CONFLICT ({key}) DO NOTHING",
                    p(1)
                )),
                format!(
                    "INSERT INTO {table} ({key}) SELECT m.{model_id} FROM {model} m WHERE m.{model_id} = {} ON CONFLICT ({key}) DO UPDATE SET {reset}",
                    p(1)
                ),
            ),
            VerificationStorage::Inline => (
                None,
                format!("UPDATE {table} SET {reset} WHERE {key} = {}", p(1)),
            ),
        };
        let start = format!(
            "\"verification_state\" = {started}, \"verification_started_at\" = {}",
            p(2)
        );
        // Each statement's condition on the state is the machine's (`VerificationEvent`),
        // narrowed to what the statement takes: a claim one due state, an outcome the attempt.
        let vs = "\"verification_state\"";
        let claim = |from: VerificationState| VerificationEvent::Start.guard_only(vs, &[from]);
        let running =
            |event: VerificationEvent| event.guard_only(vs, &[VerificationState::Started]);
        VerificationSql {
            table: table.clone(),
            key: key.clone(),
            ensure_rows,
            mark_pending,
            claim_pending: format!(
                "UPDATE {table} SET {start} WHERE {key} IN (SELECT {key} FROM {table} WHERE {} ORDER BY \"verified_at\" NULLS FIRST, {key} LIMIT {}{lock}) RETURNING {key} AS \"id\", \"verification_retry_count\", CAST(NULL AS {bytes}) AS \"expected\"",
                claim(VerificationState::Pending),
                p(1)
            ),
            claim_reverify: format!(
                "UPDATE {table} SET {start} WHERE {key} IN (SELECT {key} FROM {table} WHERE {} AND \"verified_at\" < {} ORDER BY \"verified_at\" LIMIT {}{lock}) RETURNING {key} AS \"id\", \"verification_retry_count\", \"verification_checksum\" AS \"expected\"",
                claim(VerificationState::Succeeded),
                p(3),
                p(1)
            ),
            claim_failed_due: format!(
                "UPDATE {table} SET {start} WHERE {key} IN (SELECT {key} FROM {table} WHERE {} AND (\"verification_retry_at\" IS NULL OR \"verification_retry_at\" <= {}) ORDER BY \"verification_retry_at\" LIMIT {}{lock}) RETURNING {key} AS \"id\", \"verification_retry_count\", \"verification_checksum\" AS \"expected\"",
                claim(VerificationState::Failed),
                p(2),
                p(1)
            ),
            mark_succeeded: format!(
                "UPDATE {table} SET \"verification_state\" = {succeeded}, \"verification_checksum\" = {}, \"verified_at\" = {}, \"verification_failure\" = NULL, \"verification_retry_count\" = 0, \"verification_retry_at\" = NULL WHERE {key} = {} AND {} AND \"verification_started_at\" = {}",
                p(3),
                p(4),
                p(1),
                running(VerificationEvent::Succeed),
                p(2)
            ),
            mark_failed: format!(
                "UPDATE {table} SET \"verification_state\" = {failed}, \"verification_checksum\" = {}, \"verification_failure\" = {}, \"verified_at\" = {}, \"verification_retry_count\" = \"verification_retry_count\" + 1, \"verification_retry_at\" = {} WHERE {key} = {} AND {} AND \"verification_started_at\" = {}",
                p(6),
                p(3),
                p(4),
                p(5),
                p(1),
                running(VerificationEvent::Fail),
                p(2)
            ),
            fail_timed_out: format!(
                "UPDATE {table} SET \"verification_state\" = {failed}, \"verification_failure\" = {}, \"verification_retry_count\" = \"verification_retry_count\" + 1, \"verification_retry_at\" = {} WHERE {} AND \"verification_started_at\" < {}",
                p(3),
                plus_random_secs(dialect, &p(2), 58),
                running(VerificationEvent::Fail),
                p(1)
            ),
            count_by_state: format!(
                "SELECT \"verification_state\", count(*) AS \"rows\" FROM {table} GROUP BY \"verification_state\""
            ),
        }
    }
}
