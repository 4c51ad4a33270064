//! The operator CLI, built into the user's own binary so that it knows the user's replicators:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     geo_runtime::cli::main()
//! }
//! ```
//!
//! `geo primary` / `geo secondary` run a node until SIGINT or SIGTERM; `status`, `migrations
//! print|apply`, `check`, `resync`, `reverify`, `nodes add|list|enable|disable` and `replicables`
//! are one-shot commands. Configuration comes from a TOML file (`--config`, or `GEO_CONFIG`) with
//! every key overridable by `GEO_<KEY>` (see [`config::KEYS`]). Errors are one line on stderr
//! and exit code 1; `check` also exits with 1 when it finds differences, `status` when the node
//! is unhealthy; usage errors exit with 2.

mod commands;
pub mod config;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::check::CheckError;
use crate::db::{Database, NodeRole};
use crate::error::{DbError, MigrateError, RegistrationError};
use crate::node::nodes::NodeError;
use crate::node::{ClientError, NodeStartError, PrimaryClient};
use crate::operations::Selection;
use crate::registry::SyncState;
use crate::replicator::{ReplicatorDescriptor, ReplicatorSet};
use crate::verification::VerificationState;
use config::{ConfigError, Settings};

/// Replicate and verify your models' data across sites.
#[derive(Debug, Parser)]
#[command(name = "geo", version, about, long_about = None, disable_help_subcommand = true)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        short,
        long,
        global = true,
        value_name = "FILE",
        help = "Configuration file (TOML, flat keys); every key can also be set with GEO_<KEY>. \
                Defaults to $GEO_CONFIG, then ./geo.toml when it exists."
    )]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The CLI's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a primary (node API, checksums, event pruning) until interrupted.
    Primary,
    /// Run a secondary (event cursor, sync, verification) until interrupted.
    Secondary,
    /// Print this node's status per replicable.
    Status {
        /// Print Geo's status JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print or apply the schema the runtime needs.
    Migrations {
        /// What to do with them.
        #[command(subcommand)]
        action: MigrationsAction,
    },
    /// Compare this secondary with its primary, object by object (SHA-256 of every local copy
    /// against the primary's checksum); exits with 1 when anything differs.
    Check {
        /// Only this replicable (default: all).
        replicable: Option<String>,
        /// Also list the files no registry row accounts for (`+ path`) for removal: shown, not
        /// deleted, unless `--confirm` is given too.
        #[arg(long)]
        delete_extra: bool,
        /// With `--delete-extra`: delete them (each only while still unaccounted for).
        #[arg(long, requires = "delete_extra")]
        confirm: bool,
    },
    /// Download records again (secondary).
    Resync(Target),
    /// Verify records again (primary: checksum the object; secondary: hash the local copy).
    Reverify(Target),
    /// Manage the secondaries a primary knows.
    Nodes {
        /// What to do.
        #[command(subcommand)]
        action: NodesAction,
    },
    /// List the replicables this binary knows, or switch one's replication on or off.
    Replicables {
        /// What to do (nothing: list them).
        #[command(subcommand)]
        action: Option<ReplicablesAction>,
    },
    /// Print the GraphQL schema (SDL) of this binary's replicators.
    #[cfg(feature = "graphql")]
    GraphqlSchema,
}

/// `migrations` subcommands.
#[derive(Debug, Subcommand)]
pub enum MigrationsAction {
    /// Print the SQL a node would apply.
    Print {
        /// The SQL dialect.
        #[arg(long, value_enum)]
        dialect: DialectArg,
        /// The node role (default: the configured role).
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
    },
    /// Apply the migrations to the configured database.
    Apply,
}

/// `replicables` subcommands: a replicable's feature flag, in this node's database (Geo's
/// `Feature.enable(:geo_widget_replication)`). Switch it on the primary (events are published)
/// and on each secondary (its sync runs).
#[derive(Debug, Subcommand)]
pub enum ReplicablesAction {
    /// Replicate this data type from now on.
    Enable {
        /// The replicable's name (`geo replicables` lists them).
        name: String,
    },
    /// Stop replicating this data type (nothing is deleted; enabling again resumes).
    Disable {
        /// The replicable's name.
        name: String,
    },
}

/// `nodes` subcommands (run against the primary's database).
#[derive(Debug, Subcommand)]
pub enum NodesAction {
    /// Register a secondary and print its credentials, once.
    Add {
        /// The secondary's name.
        name: String,
        /// The secondary's URL (for operators; the primary never calls it).
        #[arg(long)]
        url: String,
    },
    /// List the registered secondaries (never their secrets).
    List,
    /// Refuse a secondary's requests from now on.
    Disable {
        /// The secondary's name.
        name: String,
    },
    /// Accept a disabled secondary's requests again.
    Enable {
        /// The secondary's name.
        name: String,
    },
    /// Forget a secondary: its credentials stop working and its cursor no longer holds back
    /// the pruning of the event log.
    Remove {
        /// The secondary's name.
        name: String,
    },
}

/// Which records a resync or reverify applies to.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The replicable (`geo replicables` lists them).
    pub replicable: String,
    /// Model ids (repeat or separate with commas).
    #[arg(long = "id", value_delimiter = ',', required_unless_present = "all")]
    pub ids: Vec<i64>,
    /// Every record (optionally only those in a state).
    #[arg(long, conflicts_with = "ids")]
    pub all: bool,
    /// With --all: only rows in this sync state (secondary).
    #[arg(long, value_enum, requires = "all")]
    pub state: Option<SyncStateArg>,
    /// With --all: only rows in this verification state.
    #[arg(long, value_enum, requires = "all")]
    pub verification_state: Option<VerificationStateArg>,
}

/// `--dialect`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DialectArg {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

/// `--role`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// A primary.
    Primary,
    /// A secondary.
    Secondary,
}

/// `--state`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SyncStateArg {
    /// Waiting to sync.
    Pending,
    /// Syncing.
    Started,
    /// Synced.
    Synced,
    /// Failed.
    Failed,
}

/// `--verification-state`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum VerificationStateArg {
    /// Waiting for verification.
    Pending,
    /// Being verified.
    Started,
    /// Verified.
    Succeeded,
    /// Verification failed.
    Failed,
    /// Nothing to compare with yet.
    Disabled,
}

/// A command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Migrations failed.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    /// The node could not start.
    #[error(transparent)]
    Start(#[from] NodeStartError),
    /// The primary's client could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Registering a node failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The check could not finish.
    #[error(transparent)]
    Check(#[from] CheckError),
    /// The replicators linked into this binary are inconsistent.
    #[error(transparent)]
    Registration(#[from] RegistrationError),
    /// Anything else, said in one line.
    #[error("{0}")]
    Message(String),
}

/// Runs the CLI on the process's arguments with the replicators linked into the binary.
pub fn main() -> ExitCode {
    match ReplicatorSet::linked() {
        Ok(set) => run_with(set, std::env::args_os()),
        Err(e) => fail(&CliError::from(e)),
    }
}

/// Runs the CLI on `args` (the first is the program name) with `set`.
pub fn run_with<I, T>(set: ReplicatorSet, args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // Fail points from FAILPOINTS (crash suite builds only).
    #[cfg(feature = "failpoints")]
    let _scenario = fail::FailScenario::setup();
    let long_running = matches!(cli.command, Command::Primary | Command::Secondary);
    init_logging(if long_running { "info" } else { "warn" });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&CliError::Message(format!("cannot start tokio: {e}"))),
    };
    match runtime.block_on(run(cli, set)) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(e: &CliError) -> ExitCode {
    let mut line = format!("error: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    let _ = writeln!(std::io::stderr(), "{line}");
    ExitCode::FAILURE
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: a log file or journald gets plain text.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn config_path(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| std::env::var_os("GEO_CONFIG").map(PathBuf::from))
        .or_else(|| {
            let default = PathBuf::from("geo.toml");
            default.exists().then_some(default)
        })
}

fn role(settings: &Settings) -> Result<NodeRole, CliError> {
    match settings
        .require::<String>("role", "this command acts on a primary or a secondary")?
        .as_str()
    {
        "primary" => Ok(NodeRole::Primary),
        "secondary" => Ok(NodeRole::Secondary),
        other => {
            let (_, source) = settings
                .raw("role")
                .unwrap_or((String::new(), config::Source::Default));
            Err(ConfigError::Invalid {
                key: "role",
                shown: format!("{other:?} "),
                source_: source,
                reason: "must be `primary` or `secondary`".into(),
            }
            .into())
        }
    }
}

fn replicable(set: &ReplicatorSet, name: &str) -> Result<&'static ReplicatorDescriptor, CliError> {
    set.get(name).ok_or_else(|| {
        let known: Vec<&str> = set
            .descriptors()
            .iter()
            .map(|d| d.replicable_name)
            .collect();
        CliError::Message(format!(
            "unknown replicable `{name}`: this binary knows {}",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
    })
}

/// A secondary's store must hold its objects only: `geo check` takes every other file for a
/// copy no row accounts for (and `--delete-extra --confirm` deletes it). Refuses a SQLite
/// tracking database kept under `storage_root`.
fn ensure_store_is_dedicated(settings: &Settings, root: &std::path::Path) -> Result<(), CliError> {
    let url: String = settings.require("database_url", "")?;
    let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .map(|p| p.split('?').next().unwrap_or(p))
    else {
        return Ok(());
    };
    let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (db, root) = (absolute(std::path::Path::new(path)), absolute(root));
    if db.starts_with(&root) {
        return Err(CliError::Message(format!(
            "the tracking database {} is inside storage_root {}: keep it elsewhere, the store must hold the objects only (geo check would take it for a file no row accounts for)",
            db.display(),
            root.display()
        )));
    }
    Ok(())
}

/// Opens the node's database (errors name it without the password).
async fn connect(settings: &Settings) -> Result<Database, CliError> {
    let url: String = settings.require("database_url", "")?;
    match Database::connect(&url).await {
        Ok(db) => Ok(db),
        Err(e @ DbError::Connect { .. }) => Err(e.into()),
        Err(e) => Err(CliError::Message(format!("cannot open the database: {e}"))),
    }
}

/// Opens the node's database and checks it carries this binary's schema for `role`, so a
/// one-shot command on an unmigrated or wrong database says so instead of "no such table".
async fn connect_migrated(
    settings: &Settings,
    set: &ReplicatorSet,
    role: NodeRole,
) -> Result<Database, CliError> {
    let db = connect(settings).await?;
    crate::db::check_schema(&db, role, set).await?;
    Ok(db)
}

/// The client to the primary, from the keys that say how to reach it (a one-shot command needs
/// no admin endpoint, hence no admin token).
fn client(settings: &Settings) -> Result<PrimaryClient, CliError> {
    let (url, access_key, secret, idle_timeout) = settings.primary_connection()?;
    Ok(PrimaryClient::new(&url, &access_key, secret, idle_timeout)?)
}

fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Runs one parsed command.
pub async fn run(cli: Cli, set: ReplicatorSet) -> Result<ExitCode, CliError> {
    let settings = Settings::load(config_path(cli.config).as_deref())?;
    match cli.command {
        Command::Primary | Command::Secondary => {
            commands::run_node(settings, &set, matches!(cli.command, Command::Primary)).await
        }
        Command::Status { json } => commands::status(settings, &set, json).await,
        Command::Migrations {
            action: MigrationsAction::Print { dialect, role: r },
        } => commands::print_migrations(settings, &set, dialect, r),
        Command::Migrations {
            action: MigrationsAction::Apply,
        } => commands::apply_migrations(settings, &set).await,
        Command::Check {
            replicable: only,
            delete_extra,
            confirm,
        } => commands::check(settings, &set, only, delete_extra, confirm).await,
        Command::Resync(target) => commands::resync(settings, &set, target).await,
        Command::Reverify(target) => commands::reverify(settings, &set, target).await,
        Command::Nodes { action } => commands::nodes(settings, &set, action).await,
        #[cfg(feature = "graphql")]
        Command::GraphqlSchema => commands::graphql_schema(&set),
        Command::Replicables { action: None } => commands::replicables(&set),
        Command::Replicables {
            action: Some(action),
        } => commands::switch_replicable(settings, &set, action).await,
    }
}

fn selection(target: &Target) -> Selection {
    if target.all {
        Selection::All {
            sync_state: target.state.map(|s| match s {
                SyncStateArg::Pending => SyncState::Pending,
                SyncStateArg::Started => SyncState::Started,
                SyncStateArg::Synced => SyncState::Synced,
                SyncStateArg::Failed => SyncState::Failed,
            }),
            verification_state: target.verification_state.map(|s| match s {
                VerificationStateArg::Pending => VerificationState::Pending,
                VerificationStateArg::Started => VerificationState::Started,
                VerificationStateArg::Succeeded => VerificationState::Succeeded,
                VerificationStateArg::Failed => VerificationState::Failed,
                VerificationStateArg::Disabled => VerificationState::Disabled,
            }),
        }
    } else {
        Selection::Ids(target.ids.clone())
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    // A second signal while finishing work stops at once.
    tokio::spawn(async {
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    });
}
