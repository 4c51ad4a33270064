//! The generated migrations, registry type and verification accessors against real SQLite and
//! real PostgreSQL (`GEO_TEST_DATABASE_URL`). Catalogue queries check the indexes and
//! constraints, never string matching of the DDL.

use std::collections::BTreeSet;

use geo_dsl_tests::models::{
    Gadget, GadgetReplicator, Widget, WidgetRegistry, WidgetReplicator, app_schema,
};
use geo_runtime::db::{self, dialect};
use geo_runtime::testing::{self, TestDatabase};
use geo_runtime::{
    Database, Dialect, MigrateError, MigrationDef, NodeRole, Replicator, ReplicatorDescriptor,
    ReplicatorSet, SyncState, VerificationDetails, VerificationState,
};
use sqlx::{AssertSqlSafe, Row};

fn set() -> ReplicatorSet {
    ReplicatorSet::linked().expect("the test models are linked")
}

async fn exec(db: &Database, postgres: &str, sqlite: &str) -> Result<(), sqlx::Error> {
    match db.dialect() {
        Dialect::Postgres => {
            sqlx::raw_sql(AssertSqlSafe(postgres.to_owned()))
                .execute(db.as_postgres().expect("pg"))
                .await?;
        }
        Dialect::Sqlite => {
            sqlx::raw_sql(AssertSqlSafe(sqlite.to_owned()))
                .execute(db.as_sqlite_writer().expect("sqlite"))
                .await?;
        }
    }
    Ok(())
}

/// A primary with the application's tables and every migration applied.
async fn primary(db: &TestDatabase) {
    exec(db, app_schema::POSTGRES, app_schema::SQLITE)
        .await
        .expect("create the application's tables");
    db::migrate(db, NodeRole::Primary, &set())
        .await
        .expect("primary migrations");
}

/// (index columns, unique, partial) of every index on `table`, from the catalogue.
async fn indexes(db: &Database, table: &str) -> BTreeSet<(Vec<String>, bool, bool)> {
    match db.dialect() {
        Dialect::Postgres => {
            let rows = sqlx::query(
                "SELECT ix.indisunique, ix.indpred IS NOT NULL AS partial,
                        array_agg(a.attname::text ORDER BY k.ord) AS columns
                 FROM pg_index ix
                 JOIN pg_class t ON t.oid = ix.indrelid
                 JOIN pg_namespace n ON n.oid = t.relnamespace
                 CROSS JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
                 WHERE n.nspname = current_schema() AND t.relname = $1
                 GROUP BY ix.indexrelid, ix.indisunique, ix.indpred",
            )
            .bind(table)
            .fetch_all(db.as_postgres().expect("pg"))
            .await
            .expect("read pg_index");
            rows.iter()
                .map(|r| (r.get("columns"), r.get("indisunique"), r.get("partial")))
                .collect()
        }
        Dialect::Sqlite => {
            let rows = sqlx::query(
                "SELECT l.name, l.\"unique\" AS is_unique, l.partial,
                        (SELECT group_concat(name, ',') FROM (SELECT i.name FROM pragma_index_info(l.name) i ORDER BY i.seqno)) AS columns
                 FROM pragma_index_list(?1) l",
            )
            .bind(table)
            .fetch_all(db.as_sqlite_readers().expect("sqlite"))
            .await
            .expect("read pragma_index_list");
            rows.iter()
                .map(|r| {
                    let cols: String = r.get("columns");
                    (
                        cols.split(',').map(str::to_owned).collect(),
                        r.get::<bool, _>("is_unique"),
                        r.get::<bool, _>("partial"),
                    )
                })
                .collect()
        }
    }
}

fn has_index(
    set: &BTreeSet<(Vec<String>, bool, bool)>,
    columns: &[&str],
    unique: bool,
    partial: bool,
) -> bool {
    set.contains(&(
        columns.iter().map(|c| (*c).to_owned()).collect(),
        unique,
        partial,
    ))
}

/// (referenced table, column, referenced column, on delete) of `table`'s foreign keys.
async fn foreign_keys(db: &Database, table: &str) -> Vec<(String, String, String, String)> {
    match db.dialect() {
        Dialect::Postgres => sqlx::query_as(
            "SELECT rt.relname::text, a.attname::text, ra.attname::text,
                    CASE c.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'a' THEN 'NO ACTION' ELSE c.confdeltype::text END
             FROM pg_constraint c
             JOIN pg_class t ON t.oid = c.conrelid
             JOIN pg_namespace n ON n.oid = t.relnamespace
             JOIN pg_class rt ON rt.oid = c.confrelid
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
             JOIN pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = c.confkey[1]
             WHERE c.contype = 'f' AND n.nspname = current_schema() AND t.relname = $1",
        )
        .bind(table)
        .fetch_all(db.as_postgres().expect("pg"))
        .await
        .expect("read pg_constraint"),
        Dialect::Sqlite => sqlx::query_as(
            "SELECT \"table\", \"from\", \"to\", on_delete FROM pragma_foreign_key_list(?1)",
        )
        .bind(table)
        .fetch_all(db.as_sqlite_readers().expect("sqlite"))
        .await
        .expect("read pragma_foreign_key_list"),
    }
}

#[tokio::test]
async fn migrations_apply_once_and_record_themselves() {
    for role in [NodeRole::Primary, NodeRole::Secondary] {
        for db in testing::all().await {
            if role == NodeRole::Primary {
                exec(&db, app_schema::POSTGRES, app_schema::SQLITE)
                    .await
                    .expect("app tables");
            }
            let first = db::migrate(&db, role, &set()).await.expect("first run");
            // The base schema's migrations, then each
            // replicator's (one on a primary, two on a secondary: the registry, then its
            // invariants).
            let (base, per_replicator) = match role {
                NodeRole::Primary => (db::BASE_PRIMARY_MIGRATIONS.len(), 1),
                NodeRole::Secondary => (db::BASE_SECONDARY_MIGRATIONS.len(), 2),
            };
            let expected = base + 2 * per_replicator;
            assert_eq!(first.applied.len(), expected, "{}: {first:?}", db.label());
            assert_eq!(first.already_applied, 0);
            let scopes: Vec<&str> = first.applied.iter().map(|a| a.scope.as_str()).collect();
            let r = role.as_str();
            let mut want: Vec<String> = (0..base).map(|_| format!("geo_runtime/{r}")).collect();
            for name in ["gadget", "widget"] {
                want.extend((0..per_replicator).map(|_| format!("replicable:{name}/{r}")));
            }
            assert_eq!(scopes, want, "{}", db.label());

            let again = db::migrate(&db, role, &set()).await.expect("second run");
            assert!(
                again.applied.is_empty(),
                "{}: re-applied {again:?}",
                db.label()
            );
            assert_eq!(again.already_applied, expected);

            // Recorded in our own table, not the host application's `_sqlx_migrations`.
            let recorded: i64 = match db.dialect() {
                Dialect::Postgres => {
                    sqlx::query_scalar("SELECT count(*) FROM geo_schema_migrations")
                        .fetch_one(db.as_postgres().expect("pg"))
                        .await
                        .expect("count")
                }
                Dialect::Sqlite => sqlx::query_scalar("SELECT count(*) FROM geo_schema_migrations")
                    .fetch_one(db.as_sqlite_readers().expect("sqlite"))
                    .await
                    .expect("count"),
            };
            assert_eq!(recorded, expected as i64, "{}", db.label());
        }
    }
}

#[tokio::test]
async fn registry_table_has_geos_indexes_and_constraints() {
    for db in testing::all().await {
        db::migrate(&db, NodeRole::Secondary, &set())
            .await
            .expect("migrate");
        let idx = indexes(&db, "widget_registry").await;
        let label = db.label();
        assert!(
            has_index(&idx, &["widget_id"], true, false),
            "{label}: unique model id index missing: {idx:?}"
        );
        assert!(
            has_index(&idx, &["retry_at"], false, true),
            "{label}: retry_at index missing: {idx:?}"
        );
        assert!(
            has_index(&idx, &["state"], false, false),
            "{label}: state index missing: {idx:?}"
        );
        assert!(
            has_index(&idx, &["id"], false, true),
            "{label}: pending partial index missing: {idx:?}"
        );

        // The constraints hold: one row per model id, states in range, failures ≤ 255.
        exec(
            &db,
            "INSERT INTO widget_registry (widget_id) VALUES (1)",
            "INSERT INTO widget_registry (widget_id) VALUES (1)",
        )
        .await
        .expect("first row");
        let dup = exec(
            &db,
            "INSERT INTO widget_registry (widget_id) VALUES (1)",
            "INSERT INTO widget_registry (widget_id) VALUES (1)",
        )
        .await;
        assert!(
            dup.is_err(),
            "{label}: a second row for one model id was accepted"
        );
        let bad_state = exec(
            &db,
            "INSERT INTO widget_registry (widget_id, state) VALUES (2, 4)",
            "INSERT INTO widget_registry (widget_id, state) VALUES (2, 4)",
        )
        .await;
        assert!(bad_state.is_err(), "{label}: state 4 was accepted");
        let long = "x".repeat(256);
        let too_long = exec(
            &db,
            &format!(
                "INSERT INTO widget_registry (widget_id, last_sync_failure) VALUES (3, '{long}')"
            ),
            &format!(
                "INSERT INTO widget_registry (widget_id, last_sync_failure) VALUES (3, '{long}')"
            ),
        )
        .await;
        assert!(
            too_long.is_err(),
            "{label}: a 256-character failure was accepted"
        );
    }
}

#[tokio::test]
async fn registry_rows_round_trip_through_the_generated_type() {
    for db in testing::all().await {
        db::migrate(&db, NodeRole::Secondary, &set())
            .await
            .expect("migrate");
        let before = dialect::now();
        assert!(
            WidgetRegistry::insert_pending(&db, 42)
                .await
                .expect("insert")
        );
        assert!(
            !WidgetRegistry::insert_pending(&db, 42)
                .await
                .expect("insert again"),
            "{}: a known id must not get a second row",
            db.label()
        );
        let row = WidgetRegistry::find_by_model_id(&db, 42)
            .await
            .expect("find")
            .expect("the row exists");
        assert_eq!(row.widget_id, 42);
        assert_eq!(row.state, SyncState::Pending);
        assert_eq!(row.state.as_i16(), WidgetRegistry::STATE_PENDING);
        assert_eq!(row.retry_count, 0);
        assert_eq!(row.retry_at, None);
        assert_eq!(row.verification_state, VerificationState::Pending);
        assert!(!row.checksum_mismatch);
        assert!(
            row.created_at >= before,
            "{}: created_at {} < {before}",
            db.label(),
            row.created_at
        );
        assert_eq!(
            WidgetRegistry::find_by_model_id(&db, 43)
                .await
                .expect("find"),
            None
        );

        // The generated FromRow impls decode rows of the user's own queries.
        let sql = match db.dialect() {
            Dialect::Postgres => "SELECT * FROM widget_registry WHERE widget_id = $1",
            Dialect::Sqlite => "SELECT * FROM widget_registry WHERE widget_id = ?",
        };
        let sql = AssertSqlSafe(sql);
        let decoded: WidgetRegistry = match db.dialect() {
            Dialect::Postgres => {
                sqlx::query_as(sql)
                    .bind(42_i64)
                    .fetch_one(db.as_postgres().expect("pg"))
                    .await
            }
            Dialect::Sqlite => {
                sqlx::query_as(sql)
                    .bind(42_i64)
                    .fetch_one(db.as_sqlite_readers().expect("sqlite"))
                    .await
            }
        }
        .expect("decode through FromRow");
        assert_eq!(decoded, row);

        // Every state value Geo defines decodes.
        for state in SyncState::ALL {
            let n = state.as_i16();
            exec(
                &db,
                &format!("UPDATE widget_registry SET state = {n}, retry_count = 3, last_sync_failure = 'boom', last_synced_at = now() WHERE widget_id = 42"),
                &format!("UPDATE widget_registry SET state = {n}, retry_count = 3, last_sync_failure = 'boom', last_synced_at = 1 WHERE widget_id = 42"),
            )
            .await
            .expect("update");
            let row = WidgetRegistry::find_by_model_id(&db, 42)
                .await
                .expect("find")
                .expect("row");
            assert_eq!(row.state, state);
            assert_eq!(row.retry_count, 3);
            assert_eq!(row.last_sync_failure.as_deref(), Some("boom"));
        }
    }
}

fn succeeded(checksum: u8) -> VerificationDetails {
    let now = dialect::now();
    VerificationDetails {
        verification_state: VerificationState::Succeeded,
        verification_started_at: Some(now),
        verification_retry_at: None,
        verified_at: Some(now),
        verification_retry_count: 0,
        verification_checksum: Some(vec![checksum; 32]),
        verification_failure: None,
    }
}

#[tokio::test]
async fn separate_state_table_delegates_and_cascades() {
    for db in testing::all().await {
        primary(&db).await;
        let label = db.label().to_owned();
        let idx = indexes(&db, "widget_states").await;
        assert!(
            has_index(&idx, &["verification_state"], false, false),
            "{label}: {idx:?}"
        );
        assert_eq!(
            foreign_keys(&db, "widget_states").await,
            [(
                "widgets".to_owned(),
                "widget_id".to_owned(),
                "id".to_owned(),
                "CASCADE".to_owned()
            )],
            "{label}"
        );

        exec(
            &db,
            "INSERT INTO widgets VALUES (1, 'a/1', NULL, 9)",
            "INSERT INTO widgets VALUES (1, 'a/1', NULL, 9)",
        )
        .await
        .expect("insert widget");
        let widget = Widget {
            id: 1,
            file: "a/1".into(),
            file_store: None,
            project_id: 9,
        };
        assert_eq!(
            widget.verification_details(&db).await.expect("read"),
            VerificationDetails::default(),
            "{label}: no state row reads as pending"
        );
        let details = succeeded(7);
        widget
            .set_verification_details(&db, &details)
            .await
            .expect("write");
        assert_eq!(
            widget.verification_details(&db).await.expect("read"),
            details,
            "{label}"
        );
        // An update of an existing state row.
        let mut failed = details.clone();
        failed.verification_state = VerificationState::Failed;
        failed.verification_failure = Some("é".repeat(300));
        failed.verification_retry_count = 2;
        widget
            .set_verification_details(&db, &failed)
            .await
            .expect("update");
        let read = widget.verification_details(&db).await.expect("read");
        assert_eq!(read.verification_state, VerificationState::Failed);
        assert_eq!(read.verification_retry_count, 2);
        assert_eq!(
            read.verification_failure.map(|f| f.chars().count()),
            Some(255),
            "{label}: failure truncated to 255 characters"
        );

        // The state row goes with the model row.
        exec(
            &db,
            "DELETE FROM widgets WHERE id = 1",
            "DELETE FROM widgets WHERE id = 1",
        )
        .await
        .expect("delete");
        assert_eq!(
            widget.verification_details(&db).await.expect("read"),
            VerificationDetails::default(),
            "{label}: state row not deleted with its model"
        );

        // No state for a model row that does not exist.
        let ghost = Widget { id: 99, ..widget };
        assert!(
            ghost.set_verification_details(&db, &details).await.is_err(),
            "{label}: state written for a missing model row"
        );
    }
}

#[tokio::test]
async fn inline_verification_columns_live_on_the_model_table() {
    for db in testing::all().await {
        primary(&db).await;
        let label = db.label().to_owned();
        let idx = indexes(&db, "gadgets").await;
        assert!(
            has_index(&idx, &["verification_state"], false, false),
            "{label}: {idx:?}"
        );
        exec(
            &db,
            "INSERT INTO gadgets (id, path) VALUES (5, 'g/5')",
            "INSERT INTO gadgets (id, path) VALUES (5, 'g/5')",
        )
        .await
        .expect("insert gadget");
        let gadget = Gadget {
            id: 5,
            path: Some("g/5".into()),
        };
        assert_eq!(
            gadget.verification_details(&db).await.expect("read"),
            VerificationDetails::default()
        );
        let details = succeeded(3);
        gadget
            .set_verification_details(&db, &details)
            .await
            .expect("write");
        assert_eq!(
            gadget.verification_details(&db).await.expect("read"),
            details,
            "{label}"
        );

        let ghost = Gadget { id: 6, path: None };
        assert!(matches!(
            ghost.verification_details(&db).await,
            Err(geo_runtime::DbError::RowNotFound {
                table: "gadgets",
                id: 6
            })
        ));
        assert!(matches!(
            ghost.set_verification_details(&db, &details).await,
            Err(geo_runtime::DbError::RowNotFound {
                table: "gadgets",
                id: 6
            })
        ));
        assert_eq!(GadgetReplicator::DESCRIPTOR.verification_table(), "gadgets");
    }
}

/// The widget descriptor, with its registry migration's text edited after it was applied.
static EDITED: ReplicatorDescriptor = ReplicatorDescriptor {
    secondary_migrations: &[MigrationDef {
        version: 1,
        description: "registry table widget_registry",
        postgres: "CREATE TABLE widget_registry (id BIGINT PRIMARY KEY, widget_id BIGINT NOT NULL)",
        sqlite: "CREATE TABLE widget_registry (id INTEGER PRIMARY KEY, widget_id INTEGER NOT NULL)",
    }],
    ..*WidgetReplicator::DESCRIPTOR
};

#[tokio::test]
async fn an_edited_applied_migration_is_refused() {
    for db in testing::all().await {
        let original = ReplicatorSet::empty()
            .register::<WidgetReplicator>()
            .expect("set");
        db::migrate(&db, NodeRole::Secondary, &original)
            .await
            .expect("migrate");
        let edited = ReplicatorSet::empty()
            .with_descriptor(&EDITED)
            .expect("set");
        let err = db::migrate(&db, NodeRole::Secondary, &edited)
            .await
            .expect_err("an edited migration must be refused");
        match &err {
            MigrateError::Modified { scope, version, .. } => {
                assert_eq!(scope, "replicable:widget/secondary");
                assert_eq!(*version, 1);
            }
            other => panic!("{}: expected Modified, got {other:?}", db.label()),
        }
        assert!(err.to_string().contains("add a new migration"), "{err}");
    }
}

/// A descriptor whose second migration fails.
static BROKEN: ReplicatorDescriptor = ReplicatorDescriptor {
    secondary_migrations: &[
        WidgetReplicator::DESCRIPTOR.secondary_migrations[0],
        MigrationDef {
            version: 2,
            description: "broken",
            postgres: "ALTER TABLE no_such_table ADD COLUMN x INTEGER",
            sqlite: "ALTER TABLE no_such_table ADD COLUMN x INTEGER",
        },
    ],
    ..*WidgetReplicator::DESCRIPTOR
};

#[tokio::test]
async fn a_failing_migration_applies_nothing() {
    for db in testing::all().await {
        let set = ReplicatorSet::empty()
            .with_descriptor(&BROKEN)
            .expect("set");
        let err = db::migrate(&db, NodeRole::Secondary, &set)
            .await
            .expect_err("must fail");
        assert!(
            matches!(&err, MigrateError::Apply { version: 2, .. }),
            "{}: {err:?}",
            db.label()
        );
        // Nothing of the run stayed: not the base schema, not migration 1.
        let tables: Vec<String> = match db.dialect() {
            Dialect::Postgres => sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
            )
            .fetch_all(db.as_postgres().expect("pg"))
            .await
            .expect("tables"),
            Dialect::Sqlite => sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                .fetch_all(db.as_sqlite_readers().expect("sqlite"))
                .await
                .expect("tables"),
        };
        assert!(
            !tables
                .iter()
                .any(|t| t == "widget_registry" || t == "geo_event_cursor"),
            "{}: tables left behind: {tables:?}",
            db.label()
        );
    }
}

#[tokio::test]
async fn concurrent_runners_apply_each_migration_once() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    let schema = db.pg_schema().expect("schema").to_owned();
    let url = std::env::var(testing::DATABASE_URL_VAR).expect("url");
    let mut runners = Vec::new();
    for _ in 0..4 {
        let options: sqlx::postgres::PgConnectOptions = url.parse().expect("url");
        let other = Database::connect_postgres(options.options([("search_path", schema.as_str())]))
            .await
            .expect("connect");
        runners.push(tokio::spawn(async move {
            db::migrate(&other, NodeRole::Secondary, &set())
                .await
                .map(|r| r.applied.len())
        }));
    }
    let mut applied = Vec::new();
    for r in runners {
        applied.push(r.await.expect("join").expect("migrate"));
    }
    applied.sort_unstable();
    assert_eq!(
        applied,
        [0, 0, 0, db::BASE_SECONDARY_MIGRATIONS.len() + 4],
        "exactly one runner applies the migrations"
    );
}

#[test]
fn linked_set_lists_every_model_in_name_order() {
    let set = set();
    let names: Vec<&str> = set
        .descriptors()
        .iter()
        .map(|d| d.replicable_name)
        .collect();
    assert_eq!(names, ["gadget", "widget"]);
    assert_eq!(set.get("widget"), Some(WidgetReplicator::DESCRIPTOR));
    // Registering a linked replicator again changes nothing.
    assert_eq!(
        set.clone()
            .register::<GadgetReplicator>()
            .expect("idempotent")
            .len(),
        2
    );
}
