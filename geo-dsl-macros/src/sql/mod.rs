//! The migrations (DDL) of one replicable, for PostgreSQL and SQLite. (The statements that read
//! and write these tables are rendered by the runtime from the same validated names.) Pure functions of the validated [`ReplicableDef`]; every
//! identifier was checked against `^[a-z][a-z0-9_]{0,62}$` and is quoted anyway (a table may be
//! called `user` or `order`). Values are always placeholders.
//!
//! The text is part of the schema contract: applied migrations are checksummed, so any change to
//! what `*_migration` renders must come as a new migration version, never as an edit. The
//! snapshot tests in `src/tests` catch accidental edits.

pub(crate) use geo_schema::Dialect;
use geo_schema::ident::{constraint_name, index_name};
use geo_schema::state::{sync, verification};
use geo_schema::{Column, REGISTRY_COLUMNS, VERIFICATION_COLUMNS};

use crate::replicable::ir::{ReplicableDef, Verification};

/// `"name"`.
fn q(ident: &str) -> String {
    format!("\"{ident}\"")
}

/// `columns` with their definitions in `d`.
fn defined(columns: &[Column], d: Dialect) -> Vec<(&'static str, String)> {
    columns
        .iter()
        .map(|c| (c.name, c.ty.definition(d, c.name)))
        .collect()
}

fn table_body(columns: &[(&str, String)]) -> String {
    columns
        .iter()
        .map(|(name, def)| format!("    {} {def}", q(name)))
        .collect::<Vec<_>>()
        .join(",\n")
}

/// The registry's columns and their definitions, in table order: the id, the model foreign
/// key, then the schema's registry columns.
fn registry_columns(def: &ReplicableDef, d: Dialect) -> Vec<(&str, String)> {
    let mut columns = vec![
        ("id", d.identity_pk().to_owned()),
        (
            def.foreign_key.as_str(),
            format!("{} NOT NULL", d.big_int()),
        ),
    ];
    columns.extend(defined(&REGISTRY_COLUMNS, d));
    columns
}

/// The registry's indexes.
fn registry_indexes(def: &ReplicableDef) -> String {
    let t = &def.registry_table;
    let tq = q(t);
    format!(
        "CREATE UNIQUE INDEX {i_fk} ON {tq} ({fkq});\n\
         CREATE INDEX {i_retry} ON {tq} (\"retry_at\") WHERE \"retry_at\" IS NOT NULL;\n\
         CREATE INDEX {i_state} ON {tq} (\"state\");\n\
         CREATE INDEX {i_pending} ON {tq} (\"id\") WHERE \"state\" = {pending};\n\
         CREATE INDEX {i_failed} ON {tq} (\"retry_at\") WHERE \"state\" = {failed};\n\
         CREATE INDEX {i_verify} ON {tq} (\"verification_state\", \"verification_retry_at\") WHERE \"state\" = {synced};\n",
        pending = sync::PENDING,
        failed = sync::FAILED,
        synced = sync::SYNCED,
        fkq = q(&def.foreign_key),
        i_fk = q(&index_name(t, &def.foreign_key)),
        i_retry = q(&index_name(t, "retry_at")),
        i_state = q(&index_name(t, "state")),
        i_pending = q(&index_name(t, "pending")),
        i_failed = q(&index_name(t, "failed_retry_at")),
        i_verify = q(&index_name(t, "synced_verification")),
    )
}

/// Migration 1 of the secondary: the registry table and its indexes.
pub(crate) fn registry_migration(def: &ReplicableDef, d: Dialect) -> String {
    format!(
        "CREATE TABLE {} (\n{}\n){};\n{}",
        q(&def.registry_table),
        table_body(&registry_columns(def, d)),
        d.table_suffix(),
        registry_indexes(def)
    )
}

/// The registry's invariants, as CHECK constraints (name, condition). Each rules out a row
/// that no scheduler would ever select: a sync or a verification `started` with no start time
/// (the sweepers select by it), a verification `succeeded` with no time (re-verification selects
/// by it), and a synced copy whose verification failed (a failed verification always sends the
/// row back to the sync).
pub(crate) const REGISTRY_INVARIANTS: [(&str, &str); 4] = [
    (
        "started_has_start_time",
        "\"state\" <> 1 OR \"last_synced_at\" IS NOT NULL",
    ),
    (
        "verification_started_has_start_time",
        "\"verification_state\" <> 1 OR \"verification_started_at\" IS NOT NULL",
    ),
    (
        "verified_has_time",
        "\"verification_state\" <> 2 OR \"verified_at\" IS NOT NULL",
    ),
    (
        "synced_not_verification_failed",
        "\"state\" <> 2 OR \"verification_state\" <> 3",
    ),
];

/// Migration 2 of the secondary: the registry's invariants ([`REGISTRY_INVARIANTS`]) as CHECK
/// constraints, after repairing the rows that break them (a start time from the row's creation,
/// verifications without their time back to pending, a synced copy that failed verification
/// back to the sync). PostgreSQL adds the constraints; SQLite, which cannot add one to a table,
/// rebuilds the table with them (its AUTOINCREMENT position kept, so no row id is reused).
pub(crate) fn registry_invariants_migration(def: &ReplicableDef, d: Dialect) -> String {
    let t = &def.registry_table;
    let tq = q(t);
    let repair = format!(
        "UPDATE {tq} SET \"last_synced_at\" = \"created_at\" WHERE \"state\" = 1 AND \"last_synced_at\" IS NULL;\n\
         UPDATE {tq} SET \"verification_state\" = 0 WHERE \"verification_state\" = 1 AND \"verification_started_at\" IS NULL;\n\
         UPDATE {tq} SET \"verification_state\" = 0 WHERE \"verification_state\" = 2 AND \"verified_at\" IS NULL;\n\
         UPDATE {tq} SET \"state\" = 0, \"retry_count\" = 0, \"retry_at\" = NULL, \"last_synced_at\" = NULL WHERE \"state\" = 2 AND \"verification_state\" = 3;\n"
    );
    match d {
        Dialect::Postgres => format!(
            "{repair}ALTER TABLE {tq}\n{};\n",
            REGISTRY_INVARIANTS
                .iter()
                .map(|(name, check)| format!(
                    "    ADD CONSTRAINT {} CHECK ({check})",
                    q(&constraint_name(t, name))
                ))
                .collect::<Vec<_>>()
                .join(",\n")
        ),
        Dialect::Sqlite => {
            let new = q(&format!("{t}__geo_rebuild"));
            let checks: String = REGISTRY_INVARIANTS
                .iter()
                .map(|(name, check)| {
                    format!(
                        ",\n    CONSTRAINT {} CHECK ({check})",
                        q(&constraint_name(t, name))
                    )
                })
                .collect();
            let lit = format!("'{t}'");
            let new_lit = format!("'{t}__geo_rebuild'");
            format!(
                "{repair}CREATE TABLE {new} (\n{body}{checks}\n){strict};\n\
                 INSERT INTO {new} SELECT * FROM {tq};\n\
                 DELETE FROM \"sqlite_sequence\" WHERE \"name\" = {new_lit};\n\
                 INSERT INTO \"sqlite_sequence\" (\"name\", \"seq\") SELECT {new_lit}, \"seq\" FROM \"sqlite_sequence\" WHERE \"name\" = {lit};\n\
                 DROP TABLE {tq};\n\
                 ALTER TABLE {new} RENAME TO {tq};\n{indexes}",
                body = table_body(&registry_columns(def, d)),
                strict = d.table_suffix(),
                indexes = registry_indexes(def),
            )
        }
    }
}

/// Indexes the verification workers need on the table holding the verification columns.
fn verification_indexes(table: &str) -> String {
    let tq = q(table);
    format!(
        "CREATE INDEX {i_state} ON {tq} (\"verification_state\");\n\
         CREATE INDEX {i_pending} ON {tq} (\"verified_at\") WHERE \"verification_state\" = {pending};\n\
         CREATE INDEX {i_failed} ON {tq} (\"verification_retry_at\") WHERE \"verification_state\" = {failed};\n\
         CREATE INDEX {i_succeeded} ON {tq} (\"verified_at\") WHERE \"verification_state\" = {succeeded};\n",
        pending = verification::PENDING,
        failed = verification::FAILED,
        succeeded = verification::SUCCEEDED,
        i_state = q(&index_name(table, "verification_state")),
        i_pending = q(&index_name(table, "pending_verification")),
        i_failed = q(&index_name(table, "failed_verification")),
        i_succeeded = q(&index_name(table, "verified_at")),
    )
}

/// Migration 1 of the primary: the verification state, in a state table or inline.
pub(crate) fn verification_migration(def: &ReplicableDef, d: Dialect) -> String {
    let model = q(&def.model_table);
    match &def.verification {
        Verification::SeparateTable { table } => {
            let mut columns = vec![(
                def.foreign_key.as_str(),
                format!(
                    "{} PRIMARY KEY REFERENCES {model} ({}) ON DELETE CASCADE",
                    d.big_int(),
                    q(&def.id.column)
                ),
            )];
            columns.extend(defined(&VERIFICATION_COLUMNS, d));
            format!(
                "CREATE TABLE {} (\n{}\n){};\n{}",
                q(table),
                table_body(&columns),
                d.table_suffix(),
                verification_indexes(table)
            )
        }
        Verification::Inline => {
            let columns = defined(&VERIFICATION_COLUMNS, d);
            let alter = match d {
                // One statement: the table is rewritten at most once.
                Dialect::Postgres => format!(
                    "ALTER TABLE {model}\n{};\n",
                    columns
                        .iter()
                        .map(|(n, def)| format!("    ADD COLUMN {} {def}", q(n)))
                        .collect::<Vec<_>>()
                        .join(",\n")
                ),
                // SQLite adds one column per statement.
                Dialect::Sqlite => columns
                    .iter()
                    .map(|(n, def)| format!("ALTER TABLE {model} ADD COLUMN {} {def};\n", q(n)))
                    .collect(),
            };
            format!("{alter}{}", verification_indexes(&def.model_table))
        }
    }
}
