//! The statements a registry runs, rendered once per [`Registry`](super::Registry) from the
//! descriptor's validated names. The state machine lives in their `WHERE` clauses: `synced` and
//! `failed` only for the attempt that started the row, claims only of due rows.

use super::{REGISTRY_COLUMNS, SyncEvent, SyncState};
use crate::db::Dialect;
use crate::db::dialect::{
    false_literal, for_update, id_list_rows, in_id_list, param, plus_random_secs, quote,
    skip_locked, synced_rows, true_literal,
};
use crate::descriptor::ReplicatorDescriptor;
use crate::verification::{VerificationEvent, VerificationState};

/// A registry row's columns, as `RegistryRecord::decode` reads them: `"id", "<fk>", "state", ...`.
pub(crate) fn row_columns(d: &ReplicatorDescriptor) -> String {
    ["id", d.model_foreign_key]
        .into_iter()
        .chain(REGISTRY_COLUMNS)
        .map(quote)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Registry statements for one replicable and dialect. Parameters are listed per statement.
#[derive(Debug, Clone)]
pub(crate) struct RegistrySql {
    /// `$1` model id.
    pub(crate) select_by_model_id: String,
    /// `$1` registry id: the model id the row tracks.
    pub(crate) model_id_of: String,
    /// `$1` ids, `$2` now: new rows as pending; known ids untouched.
    pub(crate) insert_pending_many: String,
    /// `$1` ids, `$2` now: new rows as pending; known rows back to pending from any state.
    pub(crate) reset_pending_many: String,
    /// `$1` ids: synced or failed rows back to pending.
    pub(crate) resync_many: String,
    /// `$1` ids: delete, returning the model ids deleted and their object keys.
    pub(crate) delete_many: String,
    /// `$1` limit, `$2` now: start pending rows, oldest id first.
    pub(crate) claim_pending: String,
    /// `$1` limit, `$2` now: start failed rows whose retry time has come, earliest first.
    pub(crate) claim_failed_due: String,
    /// `$1` ids, `$2` attempts, `$3` object keys, `$4` checksums, `$5` verification states,
    /// `$6` now: started → synced for those attempts (with the copy's verification), returning
    /// the ids.
    pub(crate) mark_synced_many: String,
    /// The same parameters as `mark_synced_many`, then `$7` replicable name: schedules the
    /// removal of the copies those syncs supersede under another key (run first, in the same
    /// transaction).
    pub(crate) schedule_superseded: String,
    /// `$1` ids: `id`, `state` and `sync_attempt` of those rows that exist, locked until the
    /// transaction ends (PostgreSQL), so that an attempt found current stays current until its
    /// copy is published and recorded.
    pub(crate) lock_rows: String,
    /// `$1` model ids: locks those rows in id order until the transaction ends (PostgreSQL;
    /// nothing on SQLite). Every transaction that locks several rows takes them in id order (the
    /// sync's publish, the sweeper, and the event cursor and the consistency pass through this
    /// statement before they write), so that none waits for another in a cycle.
    pub(crate) lock_model_ids: String,
    /// `$1` model ids: the model id and `object_key` of each of those tracked.
    pub(crate) object_keys: String,
    /// `$1` ids: `id` and `sync_attempt` of those rows that are `started`.
    pub(crate) started_attempts: String,
    /// `$1` id, `$2` attempt, `$3` retry_at, `$4` failure: started → failed for that attempt.
    pub(crate) mark_failed: String,
    /// `$1` started before, `$2` earliest retry, `$3` failure: started too long → failed.
    pub(crate) fail_timed_out: String,
    /// `$1` started before, `$2` now, `$3` message: syncs a stopped process left in `started`
    /// become failed and due at once (run when a node starts).
    pub(crate) release_interrupted: String,
    /// `$1` after, `$2` high: the model id, `object_key`, `verification_checksum` and
    /// `sync_attempt` of the synced rows in `(after, high]`, ascending.
    pub(crate) synced_copies_between: String,
    /// `$1` model id, `$2` attempt: a synced row back to pending, only while it is still synced
    /// by that attempt (the consistency pass found its primary object changed).
    pub(crate) resync_synced_attempt: String,
    /// `$1` low, `$2` high: tracked model ids in the range, ascending.
    pub(crate) model_ids_between: String,
    /// `$1` above, `$2` limit, `$3` created before: tracked model ids above, ascending.
    pub(crate) model_ids_above: String,
}

impl RegistrySql {
    /// Renders the statements.
    pub(crate) fn new(d: &ReplicatorDescriptor, dialect: Dialect) -> Self {
        let t = quote(d.registry_table);
        let fk = quote(d.model_foreign_key);
        let p = |n| param(dialect, n);
        let columns = row_columns(d);
        // State numbers come from the enum; each transition's condition on the state from the
        // state machine (`SyncEvent::guard`).
        let state = "\"state\"";
        let [pending, started, synced, failed] = SyncState::ALL.map(SyncState::as_i16);
        let to_pending = format!(
            "\"state\" = {pending}, \"retry_count\" = 0, \"retry_at\" = NULL, \"last_synced_at\" = NULL, \"last_sync_failure\" = NULL"
        );
        let lock = skip_locked(dialect);
        let claimed =
            format!("\"id\", {fk} AS \"model_record_id\", \"retry_count\", \"sync_attempt\"");
        let start = format!(
            "\"state\" = {started}, \"last_synced_at\" = {}, \"sync_attempt\" = \"sync_attempt\" + 1",
            p(2)
        );
        let jitter = plus_random_secs(dialect, &p(2), 58);
        let lock_in_order = for_update(dialect);
        let fail = SyncEvent::Fail.guard(state);
        RegistrySql {
            select_by_model_id: format!("SELECT {columns} FROM {t} WHERE {fk} = {}", p(1)),
            model_id_of: format!("SELECT {fk} FROM {t} WHERE \"id\" = {}", p(1)),
            insert_pending_many: format!(
                "INSERT INTO {t} ({fk}, \"created_at\") SELECT \"id\", {} FROM ({}) AS ids WHERE true ON CONFLICT ({fk}) DO NOTHING",
                p(2),
                id_list_rows(dialect, 1)
            ),
            reset_pending_many: format!(
                "INSERT INTO {t} ({fk}, \"created_at\") SELECT \"id\", {} FROM ({}) AS ids WHERE true ON CONFLICT ({fk}) DO UPDATE SET {to_pending}",
                p(2),
                id_list_rows(dialect, 1)
            ),
            resync_many: format!(
                "UPDATE {t} SET {to_pending} WHERE {} AND {}",
                in_id_list(dialect, &fk, 1),
                SyncEvent::Resync.guard(state)
            ),
            delete_many: format!(
                "DELETE FROM {t} WHERE {} RETURNING {fk} AS \"model_record_id\", \"object_key\"",
                in_id_list(dialect, &fk, 1)
            ),
            claim_pending: format!(
                "UPDATE {t} SET {start} WHERE \"id\" IN (SELECT \"id\" FROM {t} WHERE {} ORDER BY \"id\" LIMIT {}{lock}) RETURNING {claimed}",
                SyncEvent::Start.guard_only(state, &[SyncState::Pending]),
                p(1)
            ),
            claim_failed_due: format!(
                "UPDATE {t} SET {start} WHERE \"id\" IN (SELECT \"id\" FROM {t} WHERE {} AND (\"retry_at\" IS NULL OR \"retry_at\" <= {}) ORDER BY \"retry_at\" LIMIT {}{lock}) RETURNING {claimed}",
                SyncEvent::Start.guard_only(state, &[SyncState::Failed]),
                p(2),
                p(1)
            ),
            // `"state" + 0`: keeps both planners off the state index. Started rows look rare to
            // the statistics, so they would loop over them and scan the id list for each
            // (quadratic in the batch); this way each listed id is one primary-key lookup.
            mark_synced_many: format!(
                "UPDATE {t} SET \"state\" = {synced}, \"retry_count\" = 0, \"retry_at\" = NULL, \"last_sync_failure\" = NULL, \"object_key\" = copies.\"key\", \
                 \"verification_checksum\" = copies.\"sum\", \"verification_state\" = copies.\"vstate\", \
                 \"verified_at\" = CASE WHEN copies.\"vstate\" = {v_succeeded} THEN {now} ELSE NULL END, \
                 \"verification_retry_count\" = CASE WHEN copies.\"vstate\" = {v_succeeded} THEN 0 ELSE {t}.\"verification_retry_count\" END, \
                 \"verification_retry_at\" = NULL, \"checksum_mismatch\" = {no}, \"verification_checksum_mismatched\" = NULL, \"verification_failure\" = NULL \
                 FROM ({rows}) AS copies WHERE {t}.\"id\" = copies.\"id\" AND {guard} AND {t}.\"sync_attempt\" = copies.\"attempt\" RETURNING {t}.\"id\"",
                guard = SyncEvent::Synced.guard(&format!("{t}.\"state\" + 0")),
                v_succeeded = VerificationState::Succeeded.as_i16(),
                now = p(6),
                no = false_literal(dialect),
                rows = synced_rows(dialect)
            ),
            schedule_superseded: crate::removals::schedule_from(&format!(
                "SELECT {name}, r.{fk}, r.\"object_key\", {now} FROM {t} r JOIN ({rows}) AS copies ON r.\"id\" = copies.\"id\" \
                 WHERE {guard} AND r.\"sync_attempt\" = copies.\"attempt\" \
                 AND r.\"object_key\" IS NOT NULL AND copies.\"key\" IS NOT NULL AND r.\"object_key\" <> copies.\"key\"",
                now = p(6),
                name = p(7),
                guard = SyncEvent::Synced.guard("r.\"state\" + 0"),
                rows = synced_rows(dialect)
            )),
            lock_rows: format!(
                "SELECT \"id\", \"state\", \"sync_attempt\" FROM {t} WHERE {} ORDER BY \"id\"{}",
                in_id_list(dialect, "\"id\"", 1),
                for_update(dialect)
            ),
            object_keys: format!(
                "SELECT {fk}, \"object_key\" FROM {t} WHERE {}",
                in_id_list(dialect, &fk, 1)
            ),
            started_attempts: format!(
                "SELECT \"id\", \"sync_attempt\" FROM {t} WHERE {} AND \"state\" = {started}",
                in_id_list(dialect, "\"id\"", 1)
            ),
            mark_failed: format!(
                "UPDATE {t} SET \"state\" = {failed}, \"retry_count\" = \"retry_count\" + 1, \"retry_at\" = {}, \"last_sync_failure\" = {} WHERE \"id\" = {} AND {fail} AND \"sync_attempt\" = {}",
                p(3),
                p(4),
                p(1),
                p(2)
            ),
            // The rows are locked in id order, as every writer that locks several rows does
            // (see `lock_model_ids`), so that none waits for another in a cycle.
            fail_timed_out: format!(
                "UPDATE {t} SET \"state\" = {failed}, \"retry_count\" = 1, \"retry_at\" = {jitter}, \"last_sync_failure\" = {} \
                 WHERE \"id\" IN (SELECT \"id\" FROM {t} WHERE {fail} AND \"last_synced_at\" < {} ORDER BY \"id\"{lock_in_order})",
                p(3),
                p(1)
            ),
            release_interrupted: format!(
                "UPDATE {t} SET \"state\" = {failed}, \"retry_count\" = \"retry_count\" + 1, \"retry_at\" = {}, \"last_sync_failure\" = {} \
                 WHERE \"id\" IN (SELECT \"id\" FROM {t} WHERE {fail} AND \"last_synced_at\" < {} ORDER BY \"id\"{lock_in_order})",
                p(2),
                p(3),
                p(1)
            ),
            lock_model_ids: format!(
                "SELECT \"id\" FROM {t} WHERE {} ORDER BY \"id\"{lock_in_order}",
                in_id_list(dialect, &fk, 1)
            ),
            // `"state" + 0`: a page of model ids is the selective part; without statistics,
            // SQLite would otherwise walk the state index over every synced row, for each page.
            synced_copies_between: format!(
                "SELECT {fk}, \"object_key\", \"verification_checksum\", \"sync_attempt\" FROM {t} WHERE {fk} > {} AND {fk} <= {} AND \"state\" + 0 = {synced} ORDER BY {fk}",
                p(1),
                p(2)
            ),
            resync_synced_attempt: format!(
                "UPDATE {t} SET {to_pending} WHERE {fk} = {} AND {} AND \"sync_attempt\" = {}",
                p(1),
                SyncEvent::Resync.guard_only(state, &[SyncState::Synced]),
                p(2)
            ),
            model_ids_between: format!(
                "SELECT {fk} FROM {t} WHERE {fk} BETWEEN {} AND {} AND \"created_at\" < {} ORDER BY {fk}",
                p(1),
                p(2),
                p(3)
            ),
            model_ids_above: format!(
                "SELECT {fk} FROM {t} WHERE {fk} > {} AND \"created_at\" < {} ORDER BY {fk} LIMIT {}",
                p(1),
                p(3),
                p(2)
            ),
        }
    }
}

/// The statements of a secondary's own verification of its copies, on the registry table.
#[derive(Debug, Clone)]
pub(crate) struct SecondaryVerificationSql {
    /// `$1` limit, `$2` now, `$3` verified before: synced rows due for (re-)verification →
    /// started, returning `id`, `model_record_id`, `object_key`, `verification_checksum`,
    /// `verification_retry_count`.
    pub(crate) claim: String,
    /// `$1` id, `$2` started at, `$3` now: started → succeeded, same attempt only.
    pub(crate) mark_succeeded: String,
    /// `$1` id, `$2` started at, `$3` failure, `$4` mismatch, `$5` local checksum, `$6` now,
    /// `$7` retry at, `$8` sync failure: the verification fails and the row is resynced, its sync
    /// backoff following the verification's failure count.
    pub(crate) mark_failed: String,
    /// `$1` id, `$2` started at: nothing to compare with (no checksum) → disabled.
    pub(crate) mark_disabled: String,
    /// `$1` started before: verifications of synced copies interrupted (a crash) or running too
    /// long go back to pending. (A row back in the sync has its verification reset when it is
    /// synced again.)
    pub(crate) release_stuck: String,
    /// `$1` limit, `$2` now, `$3` next check: synced copies `disabled` for want of a primary
    /// checksum, due for a look, returning `id`, `model_record_id`, `verification_checksum`.
    pub(crate) claim_disabled: String,
    /// `$1` id, `$2` now: a disabled copy whose checksum the primary now confirms → succeeded.
    pub(crate) disabled_succeeded: String,
    /// `$1` id, `$2` failure, `$3` local checksum, `$4` now, `$5` retry at, `$6` sync failure,
    /// `$7` the primary's checksum: a disabled copy that differs from the primary's → resync.
    pub(crate) disabled_mismatch: String,
}

impl SecondaryVerificationSql {
    /// Renders the statements.
    pub(crate) fn new(d: &ReplicatorDescriptor, dialect: Dialect) -> Self {
        let t = quote(d.registry_table);
        let fk = quote(d.model_foreign_key);
        let p = |n| param(dialect, n);
        let lock = skip_locked(dialect);
        let [synced, failed] = [SyncState::Synced, SyncState::Failed].map(SyncState::as_i16);
        let [v_pending, v_started, v_succeeded, v_failed, v_disabled] =
            VerificationState::ALL.map(VerificationState::as_i16);
        // A verification works on synced copies only; the statements that fail one fail its
        // sync too (`SyncEvent::FailVerification`, whose guard is the same condition).
        let fail_copy = SyncEvent::FailVerification.guard("\"state\"");
        // The running attempt's outcome: the event's guard narrowed to started.
        let vs = "\"verification_state\"";
        let this_attempt = |event: VerificationEvent| {
            format!(
                "\"id\" = {} AND {} AND \"verification_started_at\" = {} AND {fail_copy}",
                p(1),
                event.guard_only(vs, &[VerificationState::Started]),
                p(2)
            )
        };
        let start = |from: VerificationState| VerificationEvent::Start.guard_only(vs, &[from]);
        SecondaryVerificationSql {
            claim: format!(
                "UPDATE {t} SET \"verification_state\" = {v_started}, \"verification_started_at\" = {now} WHERE \"id\" IN (\
                 SELECT \"id\" FROM {t} WHERE \"state\" = {synced} AND ({} \
                 OR ({} AND \"verified_at\" < {before})) \
                 ORDER BY \"verified_at\" NULLS FIRST LIMIT {limit}{lock}) \
                 RETURNING \"id\", {fk} AS \"model_record_id\", \"object_key\", \"verification_checksum\", \"verification_retry_count\"",
                start(VerificationState::Pending),
                start(VerificationState::Succeeded),
                now = p(2),
                before = p(3),
                limit = p(1)
            ),
            mark_succeeded: format!(
                "UPDATE {t} SET \"verification_state\" = {v_succeeded}, \"verified_at\" = {}, \"verification_retry_count\" = 0, \"verification_retry_at\" = NULL, \"verification_failure\" = NULL, \"checksum_mismatch\" = {no}, \"verification_checksum_mismatched\" = NULL WHERE {}",
                p(3),
                this_attempt(VerificationEvent::Succeed),
                no = false_literal(dialect)
            ),
            mark_failed: format!(
                "UPDATE {t} SET \"verification_state\" = {v_failed}, \"verification_failure\" = {}, \"checksum_mismatch\" = {}, \"verification_checksum_mismatched\" = {}, \"verified_at\" = {}, \
                 \"verification_retry_count\" = \"verification_retry_count\" + 1, \"verification_retry_at\" = {retry}, \
                 \"state\" = {failed}, \"retry_count\" = \"verification_retry_count\" + 1, \"retry_at\" = {retry}, \"last_sync_failure\" = {} WHERE {}",
                p(3),
                p(4),
                p(5),
                p(6),
                p(8),
                this_attempt(VerificationEvent::Fail),
                retry = p(7)
            ),
            mark_disabled: format!(
                "UPDATE {t} SET \"verification_state\" = {v_disabled} WHERE {}",
                this_attempt(VerificationEvent::Disable)
            ),
            release_stuck: format!(
                "UPDATE {t} SET \"verification_state\" = {v_pending} WHERE \"state\" = {synced} AND {} AND \"verification_started_at\" < {}",
                VerificationEvent::Pending.guard_only(vs, &[VerificationState::Started]),
                p(1)
            ),
            claim_disabled: format!(
                "UPDATE {t} SET \"verification_retry_at\" = {} WHERE \"id\" IN (SELECT \"id\" FROM {t} WHERE \"state\" = {synced} AND \"verification_state\" = {v_disabled} \
                 AND (\"verification_retry_at\" IS NULL OR \"verification_retry_at\" <= {}) ORDER BY \"id\" LIMIT {}{lock}) \
                 RETURNING \"id\", {fk} AS \"model_record_id\", \"verification_checksum\"",
                p(3),
                p(2),
                p(1)
            ),
            disabled_succeeded: format!(
                "UPDATE {t} SET \"verification_state\" = {v_succeeded}, \"verified_at\" = {}, \"verification_retry_count\" = 0, \"verification_retry_at\" = NULL, \"verification_failure\" = NULL, \"checksum_mismatch\" = {no} WHERE \"id\" = {} AND {} AND \"state\" = {synced}",
                p(2),
                p(1),
                VerificationEvent::Succeed.guard_only(vs, &[VerificationState::Disabled]),
                no = false_literal(dialect)
            ),
            disabled_mismatch: format!(
                "UPDATE {t} SET \"verification_state\" = {v_failed}, \"verification_failure\" = {}, \"checksum_mismatch\" = {yes}, \"verification_checksum_mismatched\" = {}, \"verification_checksum\" = {}, \"verified_at\" = {}, \
                 \"verification_retry_count\" = \"verification_retry_count\" + 1, \"verification_retry_at\" = {retry}, \
                 \"state\" = {failed}, \"retry_count\" = \"verification_retry_count\" + 1, \"retry_at\" = {retry}, \"last_sync_failure\" = {} \
                 WHERE \"id\" = {} AND {} AND {fail_copy}",
                p(2),
                p(3),
                p(7),
                p(4),
                p(6),
                p(1),
                VerificationEvent::Fail.guard_only(vs, &[VerificationState::Disabled]),
                retry = p(5),
                yes = true_literal(dialect)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::descriptor::TEST_WIDGET as WIDGET;

    /// The statements that fail a copy's verification fail only synced copies, as the machine's
    /// `FailVerification` (tests/secondary_verification.rs watches them do it on real copies;
    /// tests/registry.rs runs the other transitions on every state).
    #[test]
    fn failing_a_verification_is_guarded_by_the_machine() {
        for dialect in [Dialect::Postgres, Dialect::Sqlite] {
            let v = SecondaryVerificationSql::new(&WIDGET, dialect);
            let guard = SyncEvent::FailVerification.guard("\"state\"");
            assert_eq!(guard, "\"state\" = 2");
            for (name, sql) in [
                ("mark_failed", &v.mark_failed),
                ("disabled_mismatch", &v.disabled_mismatch),
            ] {
                assert!(sql.contains(&guard), "{name} lacks {guard}: {sql}");
            }
        }
    }
}
