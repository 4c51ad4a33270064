//! Error types of the runtime. Every error says what went wrong and, where it can, what to do.

use thiserror::Error;

/// A database operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DbError {
    /// The URL names no database kind this runtime speaks.
    #[error(
        "unsupported database URL scheme `{scheme}`: use `postgres://…` or `sqlite://path` (`sqlite::memory:` is not supported: it is not shared between pool connections)"
    )]
    UnsupportedUrl {
        /// The scheme that was given (never the whole URL: it may hold a password).
        scheme: String,
    },
    /// A stored value does not fit the type the runtime expects.
    #[error("column `{column}` holds {value}, which is not a valid {what}")]
    InvalidValue {
        /// The column read.
        column: String,
        /// What the runtime expected there.
        what: &'static str,
        /// The value found, printed.
        value: String,
    },
    /// The model row a write was meant for does not exist.
    #[error("{table} has no row with id {id}")]
    RowNotFound {
        /// Table looked in.
        table: &'static str,
        /// Id looked for.
        id: i64,
    },
    /// The database could not be opened: `target` names it without the password (scheme,
    /// user, host, port, database; or the SQLite file), `cause` says why in words.
    #[error("cannot open the database {target}: {cause}")]
    Connect {
        /// `postgres://user@host:port/database` or `sqlite:///path`.
        target: String,
        /// Why, with what to check.
        cause: String,
    },
    /// The driver reported an error (said by [`describe_sqlx`]: the server's message and code,
    /// without PostgreSQL's "at line N" of its own source code).
    #[error("{}", describe_sqlx(.0))]
    Sqlx(sqlx::Error),
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        DbError::Sqlx(e)
    }
}

/// A driver error in words: a database's refusal as its message and code (PostgreSQL's
/// `Display` appends the line of the server's C source that raised it, which tells an operator
/// nothing), anything else as the driver says it.
pub fn describe_sqlx(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => match d.code() {
            Some(code) => format!("the database said: {} (code {code})", d.message()),
            None => format!("the database said: {}", d.message()),
        },
        other => other.to_string(),
    }
}

/// The migration runner refused or failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// A migration that was applied earlier now has different SQL text. Applied migrations are
    /// forever: add a new migration instead of editing one.
    #[error(
        "migration {scope} v{version} ({description}) was applied with a different text (checksum {applied} in the database, {current} now); applied migrations must never change: add a new migration instead, or restore the old text"
    )]
    Modified {
        /// Who owns the migration (`geo_runtime/primary`, `replicable:widget/secondary`, …).
        scope: String,
        /// Migration version inside the scope.
        version: i64,
        /// Its description.
        description: String,
        /// SHA-256 recorded when it was applied, hex.
        applied: String,
        /// SHA-256 of the text this binary carries, hex.
        current: String,
    },
    /// A migration's SQL failed to apply; nothing of this run was committed.
    #[error(
        "migration {scope} v{version} ({description}) failed; nothing of this run was applied: {}", describe_sqlx(.error)
    )]
    Apply {
        /// Who owns the migration.
        scope: String,
        /// Migration version.
        version: i64,
        /// Its description.
        description: String,
        /// The driver's error.
        error: sqlx::Error,
    },
    /// The database holds the other role's schema.
    #[error(
        "this database holds a {found}'s schema, not a {expected}'s: a primary runs on the application's database, a secondary on its own tracking database; check database_url and role"
    )]
    WrongRole {
        /// The role this node runs as.
        expected: &'static str,
        /// The role whose schema the database holds.
        found: &'static str,
    },
    /// Migrations this binary needs are not applied yet.
    #[error(
        "the database is not migrated for a {role}: {missing} migration(s) not applied, the first {first}; run `geo migrations apply` (a node applies them itself when it starts)"
    )]
    NotMigrated {
        /// The role checked.
        role: &'static str,
        /// How many are missing.
        missing: usize,
        /// The first missing one: scope, version and description.
        first: String,
    },
    /// The set of replicators is invalid.
    #[error(transparent)]
    Registration(#[from] RegistrationError),
    /// The database failed outside a migration's own SQL.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for MigrateError {
    fn from(e: sqlx::Error) -> Self {
        MigrateError::Db(DbError::Sqlx(e))
    }
}

/// The replicators known to a runtime do not form a valid set.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationError {
    /// No replicator is linked into this binary and none was registered by hand.
    #[error(
        "no replicators are registered: annotate a model with #[geo_runtime::replicable(...)], and if it lives in another crate make sure that crate is linked (`use my_models as _;`), or register it with ReplicatorSet::register::<WidgetReplicator>()"
    )]
    Empty,
    /// Two replicators use one name.
    #[error("two replicators use the replicable name `{name}`: {first} and {second}")]
    DuplicateName {
        /// The shared name.
        name: &'static str,
        /// Rust type of the first.
        first: &'static str,
        /// Rust type of the second.
        second: &'static str,
    },
    /// Two replicators claim one table (registry, model table or verification state table).
    #[error(
        "two replicators claim the table `{table}`: {first} uses it as its {first_role}, {second} as its {second_role}; give one of them another `registry`/`table`/`name`"
    )]
    DuplicateTable {
        /// The shared table.
        table: &'static str,
        /// Rust type of the first.
        first: &'static str,
        /// What the first uses the table for.
        first_role: &'static str,
        /// Rust type of the second.
        second: &'static str,
        /// What the second uses the table for.
        second_role: &'static str,
    },
    /// A descriptor's migrations are not numbered 1, 2, 3… in order.
    #[error(
        "{model}: {role} migration version {version} is out of order: versions start at 1 and strictly increase"
    )]
    MigrationOrder {
        /// Rust type of the replicator's model.
        model: &'static str,
        /// `primary` or `secondary`.
        role: &'static str,
        /// The offending version.
        version: i64,
    },
    /// A descriptor (hand-written, not generated) holds an identifier that is not safe in SQL.
    #[error("{model}: `{value}` is not a valid {what}: it must match ^[a-z][a-z0-9_]{{0,62}}$")]
    InvalidIdentifier {
        /// Rust type of the replicator's model.
        model: &'static str,
        /// What the identifier names.
        what: &'static str,
        /// The identifier.
        value: &'static str,
    },
}
