//! The migration runner: the runtime's base schema plus every replicator's migrations, for one
//! node role, applied in one transaction under a lock, recorded with checksums in
//! [`MIGRATIONS_TABLE`](super::MIGRATIONS_TABLE).

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::schema::{BASE_PRIMARY_MIGRATIONS, BASE_SECONDARY_MIGRATIONS};
use super::{Database, Dialect, Inner, NodeRole, dialect};
use crate::descriptor::{MigrationDef, ReplicatorSet};
use crate::error::MigrateError;

/// One migration this run applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    /// Owner and role: `geo_runtime/primary`, `replicable:widget/secondary`.
    pub scope: String,
    /// Version inside the scope.
    pub version: i64,
    /// What it does.
    pub description: &'static str,
}

/// What a migration run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Migrations applied by this run, in order.
    pub applied: Vec<AppliedMigration>,
    /// Migrations found already applied (checksums matched).
    pub already_applied: usize,
}

struct Planned {
    scope: String,
    def: &'static MigrationDef,
}

fn plan(role: NodeRole, set: &ReplicatorSet) -> Vec<Planned> {
    let base = match role {
        NodeRole::Primary => BASE_PRIMARY_MIGRATIONS,
        NodeRole::Secondary => BASE_SECONDARY_MIGRATIONS,
    };
    let role_name = role.as_str();
    let mut plan: Vec<Planned> = base
        .iter()
        .map(|def| Planned {
            scope: format!("geo_runtime/{role_name}"),
            def,
        })
        .collect();
    for d in set.descriptors() {
        plan.extend(d.migrations(role).iter().map(|def| Planned {
            scope: format!("replicable:{}/{role_name}", d.replicable_name),
            def,
        }));
    }
    plan
}

/// Every migration a node of `role` would apply, as one script for `dialect`, each preceded by
/// a comment naming its scope and version (for review, or for a DBA who applies schemas by hand;
/// [`migrate`] also records what it applied).
pub fn migration_script(role: NodeRole, set: &ReplicatorSet, dialect: Dialect) -> String {
    let mut out = String::new();
    for p in plan(role, set) {
        out.push_str(&format!(
            "-- {} v{}: {}\n{}\n",
            p.scope,
            p.def.version,
            p.def.description,
            sql_of(p.def, dialect).trim_end()
        ));
        if !out.ends_with(";\n") {
            out.insert(out.len() - 1, ';');
        }
        out.push('\n');
    }
    out
}

fn sql_of(def: &MigrationDef, dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Postgres => def.postgres,
        Dialect::Sqlite => def.sqlite,
    }
}

fn checksum(sql: &str) -> Vec<u8> {
    Sha256::digest(sql.as_bytes()).to_vec()
}

/// Compares the plan with what the database recorded: refuses changed texts, returns what is
/// left to apply.
fn pending<'p>(
    plan: &'p [Planned],
    role: NodeRole,
    recorded: Vec<(String, i64, Vec<u8>)>,
    dialect: Dialect,
    report: &mut MigrationReport,
) -> Result<Vec<&'p Planned>, MigrateError> {
    refuse_other_role(role, &recorded)?;
    let mut recorded: HashMap<(String, i64), Vec<u8>> = recorded
        .into_iter()
        .map(|(scope, version, sum)| ((scope, version), sum))
        .collect();
    let mut todo = Vec::new();
    for p in plan {
        let current = checksum(sql_of(p.def, dialect));
        match recorded.remove(&(p.scope.clone(), p.def.version)) {
            Some(applied) if applied == current => report.already_applied += 1,
            Some(applied) => {
                return Err(MigrateError::Modified {
                    scope: p.scope.clone(),
                    version: p.def.version,
                    description: p.def.description.to_owned(),
                    applied: hex::encode(applied),
                    current: hex::encode(current),
                });
            }
            None => todo.push(p),
        }
    }
    for (scope, version) in recorded.keys() {
        // A newer binary applied it (rolling upgrade) or a replicator was removed: keep going,
        // but say so.
        tracing::warn!(%scope, version, "applied migration is unknown to this binary");
    }
    Ok(todo)
}

/// A database that holds the other role's base schema and not this role's is the wrong
/// database (a secondary's `database_url` pointing at the primary's, say): refused before
/// anything is created in it.
fn refuse_other_role(
    role: NodeRole,
    recorded: &[(String, i64, Vec<u8>)],
) -> Result<(), MigrateError> {
    let other = match role {
        NodeRole::Primary => NodeRole::Secondary,
        NodeRole::Secondary => NodeRole::Primary,
    };
    let has = |r: NodeRole| {
        let scope = format!("geo_runtime/{}", r.as_str());
        recorded.iter().any(|(s, _, _)| *s == scope)
    };
    if has(other) && !has(role) {
        return Err(MigrateError::WrongRole {
            expected: role.as_str(),
            found: other.as_str(),
        });
    }
    Ok(())
}

/// The migrations recorded in the database (none when it has no migrations table yet).
async fn recorded(db: &Database) -> Result<Vec<(String, i64, Vec<u8>)>, MigrateError> {
    let exists = match db.dialect() {
        Dialect::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'geo_schema_migrations'"
        }
        Dialect::Sqlite => {
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'geo_schema_migrations'"
        }
    };
    let n: i64 =
        super::on_pool!(db, read, pool => sqlx::query_scalar(exists).fetch_one(pool).await?);
    if n == 0 {
        return Ok(Vec::new());
    }
    Ok(super::on_pool!(db, read, pool => sqlx::query_as(SELECT_RECORDED).fetch_all(pool).await?))
}

/// Checks, without changing anything, that `db` carries every migration a node of `role` with
/// `set` needs: [`MigrateError::NotMigrated`] names the first one missing and says to run
/// `geo migrations apply`; [`MigrateError::WrongRole`] says the database is the other role's;
/// [`MigrateError::Modified`] as in [`migrate`]. One-shot commands call it before they read.
pub async fn check_schema(
    db: &Database,
    role: NodeRole,
    set: &ReplicatorSet,
) -> Result<(), MigrateError> {
    let plan = plan(role, set);
    let recorded = recorded(db).await?;
    let mut report = MigrationReport::default();
    let todo = pending(&plan, role, recorded, db.dialect(), &mut report)?;
    match todo.first() {
        None => Ok(()),
        Some(first) => Err(MigrateError::NotMigrated {
            role: role.as_str(),
            missing: todo.len(),
            first: format!(
                "{} v{} ({})",
                first.scope, first.def.version, first.def.description
            ),
        }),
    }
}

const CREATE_TABLE_POSTGRES: &str = r#"CREATE TABLE IF NOT EXISTS "geo_schema_migrations" (
    "scope" VARCHAR(255) NOT NULL,
    "version" BIGINT NOT NULL,
    "description" TEXT NOT NULL,
    "checksum" BYTEA NOT NULL,
    "applied_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY ("scope", "version")
)"#;
const CREATE_TABLE_SQLITE: &str = r#"CREATE TABLE IF NOT EXISTS "geo_schema_migrations" (
    "scope" TEXT NOT NULL,
    "version" INTEGER NOT NULL,
    "description" TEXT NOT NULL,
    "checksum" BLOB NOT NULL,
    "applied_at" INTEGER NOT NULL,
    PRIMARY KEY ("scope", "version")
) STRICT"#;
const SELECT_RECORDED: &str =
    r#"SELECT "scope", "version", "checksum" FROM "geo_schema_migrations""#;

/// Applies the base schema and every replicator's migrations for `role`, idempotently.
///
/// Everything runs in one transaction, so a failing migration leaves the database as it was.
/// Concurrent runners (several processes starting at once) serialize on a lock: a PostgreSQL
/// advisory lock per schema, SQLite's write lock (`BEGIN IMMEDIATE`). A migration whose text
/// changed since it was applied is refused with [`MigrateError::Modified`].
///
/// On a primary with `verification = "inline"` or `"separate_table"`, the model tables must exist
/// first: run the application's own migrations before this one.
pub async fn migrate(
    db: &Database,
    role: NodeRole,
    set: &ReplicatorSet,
) -> Result<MigrationReport, MigrateError> {
    let plan = plan(role, set);
    let dialect = db.dialect();
    let mut report = MigrationReport::default();

    // The two arms differ only in the driver types and the placeholders.
    macro_rules! run {
        ($tx:ident, $lock:expr, $create:expr, $insert:expr, $applied_at:expr) => {{
            if let Some(lock) = $lock {
                sqlx::query(lock).execute(&mut *$tx).await?;
            }
            sqlx::raw_sql($create).execute(&mut *$tx).await?;
            let recorded: Vec<(String, i64, Vec<u8>)> =
                sqlx::query_as(SELECT_RECORDED).fetch_all(&mut *$tx).await?;
            for p in pending(&plan, role, recorded, dialect, &mut report)? {
                let sql = sql_of(p.def, dialect);
                sqlx::raw_sql(sql)
                    .execute(&mut *$tx)
                    .await
                    .map_err(|error| MigrateError::Apply {
                        scope: p.scope.clone(),
                        version: p.def.version,
                        description: p.def.description.to_owned(),
                        error,
                    })?;
                sqlx::query($insert)
                    .bind(&p.scope)
                    .bind(p.def.version)
                    .bind(p.def.description)
                    .bind(checksum(sql))
                    .bind($applied_at)
                    .execute(&mut *$tx)
                    .await?;
                tracing::info!(scope = %p.scope, version = p.def.version, description = p.def.description, "applied migration");
                report.applied.push(AppliedMigration {
                    scope: p.scope.clone(),
                    version: p.def.version,
                    description: p.def.description,
                });
            }
            $tx.commit().await?;
        }};
    }

    match db.inner() {
        Inner::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            run!(
                tx,
                Some(
                    "SELECT pg_advisory_xact_lock(hashtext('geo_schema_migrations'), hashtext(current_schema()))"
                ),
                CREATE_TABLE_POSTGRES,
                r#"INSERT INTO "geo_schema_migrations" ("scope", "version", "description", "checksum", "applied_at") VALUES ($1, $2, $3, $4, $5)"#,
                dialect::now()
            );
        }
        Inner::Sqlite { writer, .. } => {
            let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
            run!(
                tx,
                None::<&'static str>,
                CREATE_TABLE_SQLITE,
                r#"INSERT INTO "geo_schema_migrations" ("scope", "version", "description", "checksum", "applied_at") VALUES (?1, ?2, ?3, ?4, ?5)"#,
                dialect::timestamp_to_micros(dialect::now())
            );
        }
    }
    Ok(report)
}
