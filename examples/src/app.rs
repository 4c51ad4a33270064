//! The example application: three models with files, the tables its own migrations would
//! create, and its writes (file, row and event, the last two in one transaction).

use anyhow::{Context, Result};
use futures_util::StreamExt;
use geo_runtime::db::Conn;
use geo_runtime::storage::{LocalStore, ObjectKey};
use geo_runtime::{Database, Dialect, ReplicableModel, ReplicatorSet};

/// A file attached to a project; the primary keeps its verification state in `widget_states`.
#[geo_runtime::replicable(
    strategy = "blob",
    registry = "widget_registry",
    table = "widgets",
    enabled_by_default = true
)]
#[derive(Debug, Clone)]
pub struct Widget {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub file: String,
    #[replicable(selective_sync)]
    pub project_id: i64,
}

/// A package file; its verification columns live on `package_files` itself.
#[geo_runtime::replicable(strategy = "blob", verification = "inline", enabled_by_default)]
#[derive(Debug, Clone)]
pub struct PackageFile {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub file: String,
    #[replicable(file_store)]
    pub file_store: Option<i16>,
}

/// An upload; replication is off until its feature flag is switched on.
#[geo_runtime::replicable(strategy = "blob")]
#[derive(Debug, Clone)]
pub struct Upload {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub path: String,
}

/// What the application's own migrations create on the primary (before the runtime's).
pub const APP_TABLES: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS widgets (id BIGINT PRIMARY KEY, file TEXT NOT NULL, project_id BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS package_files (id BIGINT PRIMARY KEY, file TEXT NOT NULL, file_store SMALLINT)",
    "CREATE TABLE IF NOT EXISTS uploads (id BIGINT PRIMARY KEY, path TEXT NOT NULL)",
];

/// The application's replicators, registered explicitly (so they are there whatever the
/// linker keeps).
pub fn replicators() -> Result<ReplicatorSet> {
    Ok(ReplicatorSet::empty()
        .register::<WidgetReplicator>()?
        .register::<PackageFileReplicator>()?
        .register::<UploadReplicator>()?)
}

/// Runs one statement of the application's own (trusted, constant) SQL.
pub async fn execute(db: &Database, sql: &'static str) -> Result<()> {
    match db.dialect() {
        Dialect::Postgres => {
            sqlx::query(sql)
                .execute(db.as_postgres().context("pg")?)
                .await?;
        }
        Dialect::Sqlite => {
            sqlx::query(sql)
                .execute(db.as_sqlite_writer().context("sqlite")?)
                .await?;
        }
    }
    Ok(())
}

/// Creates the application's tables.
pub async fn create_app_tables(db: &Database) -> Result<()> {
    for sql in APP_TABLES {
        execute(db, sql).await?;
    }
    Ok(())
}

/// Which model a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A [`Widget`].
    Widget,
    /// A [`PackageFile`].
    PackageFile,
}

/// The object key of record `id` of `kind`.
pub fn key(kind: Kind, id: i64) -> String {
    match kind {
        Kind::Widget => format!("widgets/{}/{id}.bin", id % 16),
        Kind::PackageFile => format!("packages/{}/{id}.tgz", id % 16),
    }
}

/// Deterministic content of version `version` of record `id`: mostly a few KiB, every 25th
/// 1 MiB, every 50th empty.
pub fn content(kind: Kind, id: i64, version: u32) -> Vec<u8> {
    let len = match id % 50 {
        0 => 0,
        25 => 1024 * 1024,
        _ => (id as usize * 1531) % 12_000,
    };
    let seed =
        ((id as u64) << 9) | (u64::from(version) << 1) | u64::from(kind == Kind::PackageFile);
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// The application on the primary: its database and object store.
#[derive(Debug, Clone)]
pub struct App {
    /// The primary's database.
    pub db: Database,
    /// The primary's object store.
    pub store: LocalStore,
}

impl App {
    /// Writes the object, then the row and its event in one transaction.
    pub async fn create(&self, kind: Kind, id: i64) -> Result<()> {
        self.create_many(kind, &[id]).await
    }

    /// Writes the objects, then all the rows and their events in one transaction (an import).
    pub async fn create_many(&self, kind: Kind, ids: &[i64]) -> Result<()> {
        // The files first (durable; several at once so their flushes overlap), then the rows.
        let writes = ids.iter().copied().map(|id| {
            let store = self.store.clone();
            async move {
                store
                    .write_bytes(
                        &ObjectKey::parse(&key(kind, id))?,
                        content(kind, id, 0).into(),
                        None,
                    )
                    .await?;
                Ok::<_, anyhow::Error>(())
            }
        });
        let results: Vec<Result<()>> = futures_util::stream::iter(writes)
            .buffer_unordered(16)
            .collect()
            .await;
        results.into_iter().collect::<Result<()>>()?;
        let mut tx = self.db.begin_write().await?;
        for &id in ids {
            let file = key(kind, id);
            match kind {
                Kind::Widget => {
                    let w = Widget {
                        id,
                        file,
                        project_id: id % 3,
                    };
                    insert(
                        tx.conn(),
                        "widgets (id, file, project_id) VALUES",
                        id,
                        &w.file,
                        Some(w.project_id),
                    )
                    .await?;
                    w.publish_created(tx.conn()).await?;
                }
                Kind::PackageFile => {
                    let p = PackageFile {
                        id,
                        file,
                        file_store: Some(1),
                    };
                    insert(
                        tx.conn(),
                        "package_files (id, file, file_store) VALUES",
                        id,
                        &p.file,
                        Some(1),
                    )
                    .await?;
                    p.publish_created(tx.conn()).await?;
                }
            }
        }
        // The crash suite stops the application here: objects written, rows and events not.
        #[cfg(feature = "failpoints")]
        fail::fail_point!("app::before_commit", |_| std::process::abort());
        tx.commit().await?;
        #[cfg(feature = "failpoints")]
        fail::fail_point!("app::after_commit", |_| std::process::abort());
        Ok(())
    }

    /// Replaces the object with its next version and publishes `updated`.
    pub async fn update(&self, kind: Kind, id: i64, version: u32) -> Result<()> {
        let file = key(kind, id);
        self.store
            .write_bytes(
                &ObjectKey::parse(&file)?,
                content(kind, id, version).into(),
                None,
            )
            .await?;
        let mut tx = self.db.begin_write().await?;
        match kind {
            Kind::Widget => {
                Widget {
                    id,
                    file,
                    project_id: id % 3,
                }
                .publish_updated(tx.conn())
                .await?
            }
            Kind::PackageFile => {
                PackageFile {
                    id,
                    file,
                    file_store: Some(1),
                }
                .publish_updated(tx.conn())
                .await?
            }
        };
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the row (with its `deleted` event), then the object.
    pub async fn delete(&self, kind: Kind, id: i64) -> Result<()> {
        let file = key(kind, id);
        let mut tx = self.db.begin_write().await?;
        let table = match kind {
            Kind::Widget => {
                Widget {
                    id,
                    file: file.clone(),
                    project_id: id % 3,
                }
                .publish_deleted(tx.conn())
                .await?;
                "DELETE FROM widgets WHERE id = "
            }
            Kind::PackageFile => {
                PackageFile {
                    id,
                    file: file.clone(),
                    file_store: Some(1),
                }
                .publish_deleted(tx.conn())
                .await?;
                "DELETE FROM package_files WHERE id = "
            }
        };
        match tx.conn() {
            Conn::Postgres(c) => {
                sqlx::query(sqlx::AssertSqlSafe(format!("{table}$1")))
                    .bind(id)
                    .execute(&mut *c)
                    .await?;
            }
            Conn::Sqlite(c) => {
                sqlx::query(sqlx::AssertSqlSafe(format!("{table}?1")))
                    .bind(id)
                    .execute(&mut *c)
                    .await?;
            }
        }
        tx.commit().await?;
        self.store.delete(&ObjectKey::parse(&file)?).await?;
        Ok(())
    }
}

/// `INSERT INTO <into> (id, file, third)` with bound values; `into` is one of our constants.
async fn insert(
    conn: Conn<'_>,
    into: &'static str,
    id: i64,
    file: &str,
    third: Option<i64>,
) -> Result<()> {
    match conn {
        Conn::Postgres(c) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {into} ($1, $2, $3)"
            )))
            .bind(id)
            .bind(file)
            .bind(third)
            .execute(&mut *c)
            .await?;
        }
        Conn::Sqlite(c) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {into} (?1, ?2, ?3)"
            )))
            .bind(id)
            .bind(file)
            .bind(third)
            .execute(&mut *c)
            .await?;
        }
    }
    Ok(())
}
