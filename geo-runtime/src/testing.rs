//! Real databases for tests (feature `testing`): a temp-file SQLite database, and a schema of its
//! own on the PostgreSQL server named by `GEO_TEST_DATABASE_URL`, dropped when the test ends (even
//! when it panics), so tests run in parallel without seeing each other.
//!
//! Without `GEO_TEST_DATABASE_URL`, PostgreSQL tests are skipped with a loud line on stderr; with
//! `CI=true` they fail instead, so CI can never pass by skipping them.

pub mod link;

use std::ops::Deref;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;

use crate::db::Database;
use crate::events::{CursorConfig, StartPosition};
use crate::node::SecondaryConfig;
use crate::worker::sync::SyncConfig;

/// The environment variable naming the test PostgreSQL server.
pub const DATABASE_URL_VAR: &str = "GEO_TEST_DATABASE_URL";

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    db: Database,
    label: String,
    cleanup: Option<PgCleanup>,
    _dir: Option<tempfile::TempDir>,
}

#[derive(Debug)]
struct PgCleanup {
    options: PgConnectOptions,
    schema: String,
}

impl TestDatabase {
    /// `sqlite` or `postgres (schema …)`, for assertion messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The PostgreSQL schema of this test, when it is one.
    pub fn pg_schema(&self) -> Option<&str> {
        self.cleanup.as_ref().map(|c| c.schema.as_str())
    }
}

impl Deref for TestDatabase {
    type Target = Database;
    fn deref(&self) -> &Database {
        &self.db
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(cleanup) = self.cleanup.take() else {
            return;
        };
        // Drop may run on the test's own runtime thread (blocked here) and while unwinding, so
        // it uses a thread with its own runtime, and it never waits for this test's pool: that
        // pool's tasks need the blocked runtime. Its connections are terminated instead (they
        // carry the schema as their application name), then the schema is dropped.
        let joined = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let admin = Database::connect_postgres(cleanup.options)
                    .await
                    .map_err(|e| e.to_string())?;
                let pool = admin.as_postgres().ok_or("not postgres")?;
                crate::db::test_schema::drop(pool, &cleanup.schema)
                    .await
                    .map_err(|e| e.to_string())?;
                admin.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        if let Ok(Err(e)) | Err(e) = joined.map_err(|_| "cleanup thread panicked".to_owned()) {
            eprintln!("warning: could not drop a test schema: {e}");
        }
    }
}

/// A fresh SQLite database in a temp directory (never `:memory:`, which pool connections do not
/// share).
pub async fn sqlite() -> TestDatabase {
    let dir = tempfile::tempdir().expect("create a temp dir for the test database");
    let options = SqliteConnectOptions::new().filename(dir.path().join("test.db"));
    let db = Database::connect_sqlite(options)
        .await
        .expect("open the test SQLite database");
    TestDatabase {
        db,
        label: "sqlite".into(),
        cleanup: None,
        _dir: Some(dir),
    }
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A PostgreSQL database for this test: a new schema on the server of `GEO_TEST_DATABASE_URL`,
/// set as the connections' `search_path`. `None` (with a loud message) when the variable is not
/// set; panics when it is set but the server cannot be reached, or when `CI` is set without it.
pub async fn postgres() -> Option<TestDatabase> {
    let url = match std::env::var(DATABASE_URL_VAR) {
        Ok(url) if !url.is_empty() => url,
        _ => {
            assert!(
                !ci(),
                "{DATABASE_URL_VAR} is not set but CI is: PostgreSQL tests must run in CI"
            );
            eprintln!(
                "SKIPPED: PostgreSQL part of this test: set {DATABASE_URL_VAR}=postgres://… to run it"
            );
            return None;
        }
    };
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let schema = format!(
        "geo_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let base = PgConnectOptions::from_str(&url)
        .unwrap_or_else(|e| panic!("{DATABASE_URL_VAR} is not a PostgreSQL URL: {e}"));
    let admin = Database::connect_postgres(base.clone().application_name("geo-test-admin"))
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {DATABASE_URL_VAR}: {e}"));
    let pool = admin.as_postgres().expect("a postgres database");
    crate::db::test_schema::create(pool, &schema)
        .await
        .expect("create the test schema");
    admin.close().await;
    let db = Database::connect_postgres(
        base.clone()
            .options([("search_path", schema.as_str())])
            .application_name(&schema),
    )
    .await
    .expect("connect to the test schema");
    Some(TestDatabase {
        db,
        label: format!("postgres (schema {schema})"),
        cleanup: Some(PgCleanup {
            options: base.application_name("geo-test-admin"),
            schema,
        }),
        _dir: None,
    })
}

/// SQLite, plus PostgreSQL when it is configured: run a test body over each.
pub async fn all() -> Vec<TestDatabase> {
    let mut dbs = vec![sqlite().await];
    dbs.extend(postgres().await);
    dbs
}

/// Short waits everywhere, so a test's secondary converges in moments: the sync, the cursor and
/// the consistency pass poll every few tens of milliseconds, a transfer's supersession is looked
/// at every 200 ms, a stalled transfer fails after 5 s. A test then sets what it is about.
pub fn fast_secondary(config: &mut SecondaryConfig) {
    config.sync = SyncConfig {
        files_max_capacity: 10,
        idle_wait: std::time::Duration::from_millis(20),
        max_object_size: None,
        supersede_check: std::time::Duration::from_millis(200),
        ..SyncConfig::default()
    };
    config.cursor = CursorConfig {
        idle_wait: std::time::Duration::from_millis(20),
        start: StartPosition::Latest,
        ..CursorConfig::default()
    };
    config.consistency_interval = std::time::Duration::from_millis(300);
    config.report_interval = std::time::Duration::from_millis(200);
    config.idle_timeout = std::time::Duration::from_secs(5);
}
