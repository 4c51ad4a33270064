//! One [`Database`] type over PostgreSQL and SQLite (no `sqlx::Any`: it mangles timestamps and
//! binary columns), and the migration runner.
//!
//! Dialect differences live in [`dialect`]: how timestamps are stored (PostgreSQL `timestamptz`,
//! SQLite integer microseconds since the Unix epoch) and how rows are read.

pub mod dialect;
pub mod lease;
pub(crate) mod lock;
mod migrate;
mod schema;
#[cfg(feature = "testing")]
pub(crate) mod test_schema;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use migrate::{AppliedMigration, MigrationReport, check_schema, migrate, migration_script};
pub use schema::{BASE_PRIMARY_MIGRATIONS, BASE_SECONDARY_MIGRATIONS, MIGRATIONS_TABLE};

pub use crate::descriptor::NodeRole;
use crate::error::DbError;

/// Which SQL dialect a [`Database`] speaks (the schema crate's, which the macro renders the
/// migrations for).
pub use geo_schema::Dialect;

/// How long a SQLite connection waits for another writer before it reports "busy".
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long opening a PostgreSQL connection may take before the connect fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a connection could not be opened, in words, with what to check.
fn connect_cause(e: &sqlx::Error, host_port: &str) -> String {
    match e {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => format!(
            "connection refused at {host_port} (is the server running and listening there?)"
        ),
        sqlx::Error::Database(d) => {
            let hint = match d.code().as_deref() {
                Some("28P01" | "28000") => {
                    " (authentication failed: check the user, the password and pg_hba.conf)"
                }
                Some("3D000") => " (create the database, or fix its name in database_url)",
                Some("14") => " (does its directory exist, and may this user write there?)",
                _ => "",
            };
            format!("{}{hint}", d.message())
        }
        other => crate::error::describe_sqlx(other),
    }
}

/// A connection pool to the node's database.
///
/// On SQLite there are two pools over one file: a single-connection writer, so write
/// transactions queue in the pool instead of failing with "database is locked", and readers
/// that run beside it (WAL mode).
#[derive(Clone)]
pub struct Database {
    inner: Inner,
}

#[derive(Clone)]
pub(crate) enum Inner {
    Postgres(PgPool),
    Sqlite {
        writer: SqlitePool,
        readers: SqlitePool,
    },
}

impl fmt::Debug for Database {
    // Never print connection options: they hold the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("dialect", &self.dialect())
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Opens `postgres://…` / `postgresql://…` or `sqlite://path` (created when missing).
    ///
    /// An error names the database without its password ([`DbError::Connect`]) and says why
    /// in words: connection refused at host:port, authentication failed, no such database, a
    /// SQLite file that cannot be created.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        let scheme = url.split(':').next().unwrap_or_default();
        let invalid = |e: sqlx::Error| DbError::Connect {
            target: format!("{scheme}://…"),
            cause: format!("the URL is not valid: {}", crate::error::describe_sqlx(&e)),
        };
        match scheme {
            "postgres" | "postgresql" => {
                Self::connect_postgres(PgConnectOptions::from_str(url).map_err(invalid)?).await
            }
            "sqlite" if url.starts_with("sqlite::memory:") || url.contains("mode=memory") => {
                Err(DbError::UnsupportedUrl {
                    scheme: "sqlite::memory:".into(),
                })
            }
            "sqlite" => {
                Self::connect_sqlite(SqliteConnectOptions::from_str(url).map_err(invalid)?).await
            }
            other => Err(DbError::UnsupportedUrl {
                scheme: other.to_owned(),
            }),
        }
    }

    /// Opens a PostgreSQL pool with these options (e.g. with a `search_path`). Connections are
    /// named `geo-runtime` in `pg_stat_activity` unless the options name them.
    pub async fn connect_postgres(options: PgConnectOptions) -> Result<Self, DbError> {
        let options = match options.get_application_name() {
            Some(_) => options,
            None => options.application_name("geo-runtime"),
        };
        let target = format!(
            "postgres://{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or(options.get_username())
        );
        let failed = |e: sqlx::Error| DbError::Connect {
            target: target.clone(),
            cause: connect_cause(
                &e,
                &format!("{}:{}", options.get_host(), options.get_port()),
            ),
        };
        // One connection first: a pool that cannot connect says only "pool timed out", never why.
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
            Err(_) => {
                return Err(DbError::Connect {
                    target,
                    cause: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                });
            }
            Ok(Err(e)) => return Err(failed(e)),
            Ok(Ok(first)) => {
                let _ = first.close().await;
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            // Recycle connections so one poisoned by a cancelled transaction cannot live on
            // (sqlx#4393).
            .max_lifetime(Duration::from_secs(30 * 60))
            .connect_with(options.clone())
            .await
            .map_err(failed)?;
        Ok(Database {
            inner: Inner::Postgres(pool),
        })
    }

    /// Opens a SQLite database file in WAL mode with a busy timeout and foreign keys on.
    pub async fn connect_sqlite(options: SqliteConnectOptions) -> Result<Self, DbError> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode cannot corrupt the database; a power cut may lose the last
            // commits, which the registry recovers from (rows fall back to pending).
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .foreign_keys(true);
        let failed = |e: sqlx::Error| DbError::Connect {
            target: format!("sqlite://{}", options.get_filename().display()),
            cause: connect_cause(&e, ""),
        };
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(failed)?;
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await
            .map_err(failed)?;
        Ok(Database {
            inner: Inner::Sqlite { writer, readers },
        })
    }

    /// Wraps an existing PostgreSQL pool (e.g. the application's own).
    pub fn from_pg_pool(pool: PgPool) -> Self {
        Database {
            inner: Inner::Postgres(pool),
        }
    }

    /// The dialect this database speaks.
    pub fn dialect(&self) -> Dialect {
        match self.inner {
            Inner::Postgres(_) => Dialect::Postgres,
            Inner::Sqlite { .. } => Dialect::Sqlite,
        }
    }

    /// The PostgreSQL pool, when this is PostgreSQL.
    pub fn as_postgres(&self) -> Option<&PgPool> {
        match &self.inner {
            Inner::Postgres(p) => Some(p),
            Inner::Sqlite { .. } => None,
        }
    }

    /// The SQLite writer pool (one connection), when this is SQLite.
    pub fn as_sqlite_writer(&self) -> Option<&SqlitePool> {
        match &self.inner {
            Inner::Sqlite { writer, .. } => Some(writer),
            Inner::Postgres(_) => None,
        }
    }

    /// The SQLite reader pool, when this is SQLite.
    pub fn as_sqlite_readers(&self) -> Option<&SqlitePool> {
        match &self.inner {
            Inner::Sqlite { readers, .. } => Some(readers),
            Inner::Postgres(_) => None,
        }
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Closes every pool, waiting for connections to be returned.
    pub async fn close(&self) {
        match &self.inner {
            Inner::Postgres(p) => p.close().await,
            Inner::Sqlite { writer, readers } => {
                readers.close().await;
                writer.close().await;
            }
        }
    }
}

/// A connection of either dialect, borrowed from a transaction or a pool connection: what the
/// runtime's multi-statement operations run on, so they can share the caller's transaction.
#[derive(Debug)]
pub enum Conn<'c> {
    /// PostgreSQL.
    Postgres(&'c mut sqlx::PgConnection),
    /// SQLite.
    Sqlite(&'c mut sqlx::SqliteConnection),
}

impl<'c> From<&'c mut sqlx::PgConnection> for Conn<'c> {
    fn from(c: &'c mut sqlx::PgConnection) -> Self {
        Conn::Postgres(c)
    }
}

impl<'c> From<&'c mut sqlx::SqliteConnection> for Conn<'c> {
    fn from(c: &'c mut sqlx::SqliteConnection) -> Self {
        Conn::Sqlite(c)
    }
}

impl Conn<'_> {
    /// The dialect of this connection.
    pub fn dialect(&self) -> Dialect {
        match self {
            Conn::Postgres(_) => Dialect::Postgres,
            Conn::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// Reborrows, for passing on without giving the connection away.
    pub fn reborrow(&mut self) -> Conn<'_> {
        match self {
            Conn::Postgres(c) => Conn::Postgres(c),
            Conn::Sqlite(c) => Conn::Sqlite(c),
        }
    }
}

/// A write transaction that holds the write lock from its first statement (SQLite:
/// `BEGIN IMMEDIATE`, so it never fails half-way with "database is locked"; PostgreSQL: an
/// ordinary transaction). Dropped without [`WriteTx::commit`], it rolls back.
#[derive(Debug)]
pub enum WriteTx {
    /// PostgreSQL.
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
    /// SQLite.
    Sqlite(SqliteWriteTx),
}

/// SQLite's write transaction, run by hand on the writer connection rather than through
/// `sqlx::Transaction`: when `COMMIT` itself fails (a full disk), sqlx would return the
/// connection to the pool still counting an open transaction, and every later `BEGIN` on the
/// pool's only writer would fail ("begin_with at non-zero transaction depth"). Here a failed
/// commit is rolled back, and a connection whose state is unknown is closed, never reused.
#[derive(Debug)]
pub struct SqliteWriteTx {
    conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
    /// Committed, or rolled back after a failed commit: the connection is clean.
    finished: bool,
}

impl Drop for SqliteWriteTx {
    fn drop(&mut self) {
        if !self.finished {
            // Closing the connection aborts its open transaction; the pool opens a new one.
            self.conn.close_on_drop();
        }
    }
}

impl WriteTx {
    /// The transaction's connection.
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            WriteTx::Postgres(tx) => Conn::Postgres(tx),
            WriteTx::Sqlite(tx) => Conn::Sqlite(&mut tx.conn),
        }
    }

    /// Commits.
    pub async fn commit(self) -> Result<(), DbError> {
        match self {
            WriteTx::Postgres(tx) => tx.commit().await?,
            WriteTx::Sqlite(mut tx) => {
                if let Err(e) = sqlx::query("COMMIT").execute(&mut *tx.conn).await {
                    // Still open after a failed COMMIT: roll back; if even that fails, the
                    // connection is closed on drop (`finished` stays false).
                    if sqlx::query("ROLLBACK").execute(&mut *tx.conn).await.is_ok() {
                        tx.finished = true;
                    }
                    return Err(e.into());
                }
                tx.finished = true;
            }
        }
        Ok(())
    }
}

impl Database {
    /// Begins a [`WriteTx`].
    pub async fn begin_write(&self) -> Result<WriteTx, DbError> {
        Ok(match &self.inner {
            Inner::Postgres(pool) => WriteTx::Postgres(pool.begin().await?),
            Inner::Sqlite { writer, .. } => {
                let mut conn = writer.acquire().await?;
                sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
                WriteTx::Sqlite(SqliteWriteTx {
                    conn,
                    finished: false,
                })
            }
        })
    }
}

/// Runs `$body` with `$c` bound to the typed connection of either dialect. The body is
/// type-checked once per dialect, so it must bind values that encode on both (see
/// [`dialect::Ts`], [`dialect::IdList`]).
macro_rules! on_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::db::Conn::Postgres($c) => $body,
            $crate::db::Conn::Sqlite($c) => $body,
        }
    };
}
pub(crate) use on_conn;

/// Like [`on_conn!`] on a pool: PostgreSQL's pool, or SQLite's writer (`write`) or readers
/// (`read`).
macro_rules! on_pool {
    ($db:expr, write, $p:ident => $body:expr) => {
        match $db.inner() {
            $crate::db::Inner::Postgres($p) => $body,
            $crate::db::Inner::Sqlite { writer: $p, .. } => $body,
        }
    };
    ($db:expr, read, $p:ident => $body:expr) => {
        match $db.inner() {
            $crate::db::Inner::Postgres($p) => $body,
            $crate::db::Inner::Sqlite { readers: $p, .. } => $body,
        }
    };
}
pub(crate) use on_pool;
