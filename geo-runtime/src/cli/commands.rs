//! One function per subcommand of the CLI.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::config::Settings;
use super::{
    CliError, DialectArg, NodesAction, ReplicablesAction, RoleArg, Target, client, connect,
    connect_migrated, ensure_store_is_dedicated, out, replicable, role, selection, shutdown_signal,
};
use crate::check::{
    ExtraRemoval, check_replicable, delete_extra as delete_extra_files, extra_files,
};
use crate::db::{Dialect, NodeRole, migration_script};
use crate::node::nodes;
use crate::node::{Node, NodeConfig};
use crate::operations;
use crate::replicator::ReplicatorSet;
use crate::status::StatusCollector;
use crate::storage::LocalStore;

/// `geo primary` / `geo secondary`: runs a node until SIGINT or SIGTERM.
pub(super) async fn run_node(
    mut settings: Settings,
    set: &ReplicatorSet,
    primary: bool,
) -> Result<ExitCode, CliError> {
    settings.set("role", if primary { "primary" } else { "secondary" });
    let config = if primary {
        NodeConfig::Primary(settings.primary()?)
    } else {
        let c = settings.secondary()?;
        ensure_store_is_dedicated(&settings, &c.storage_root)?;
        NodeConfig::Secondary(c)
    };
    let db = connect(&settings).await?;
    let handle = Node::start(config, &db, set).await?;
    if let Some(addr) = handle.local_addr() {
        out(&format!("primary API listening on http://{addr}\n"));
    }
    if let Some(addr) = handle.admin_addr() {
        out(&format!(
            "admin endpoint on http://{addr} (/status, /metrics, /health)\n"
        ));
    }
    shutdown_signal().await;
    tracing::info!("shutting down: letting in-flight work finish");
    handle.shutdown().await;
    db.close().await;
    Ok(ExitCode::SUCCESS)
}

/// `geo status`: collects the node's status once and prints it.
pub(super) async fn status(
    settings: Settings,
    set: &ReplicatorSet,
    json: bool,
) -> Result<ExitCode, CliError> {
    let role = role(&settings)?;
    let db = connect_migrated(&settings, set, role).await?;
    let name = settings
        .get::<String>("name")?
        .unwrap_or_else(|| role.as_str().to_owned());
    let mut collector = StatusCollector::new(&db, role, set, &name);
    if role == NodeRole::Primary
        && let Some(root) = settings.get::<PathBuf>("storage_root")?
    {
        collector = collector.with_store(LocalStore::new(root));
    }
    if role == NodeRole::Secondary {
        let stall = Duration::from_secs(settings.positive("cursor_stall_secs")?);
        collector = collector
            .with_primary(client(&settings)?)
            .with_cursor_stall(stall);
    }
    let status = collector.refresh().await?;
    if json {
        out(&format!(
            "{}\n",
            serde_json::to_string_pretty(&status.to_json())
                .map_err(|e| CliError::Message(e.to_string()))?
        ));
    } else {
        out(&status.render_table());
    }
    // Like Geo's `geo:status` check: an unhealthy node fails the command (the reason printed).
    Ok(if status.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `geo migrations print`: the schema of a role, for a DBA to apply.
pub(super) fn print_migrations(
    settings: Settings,
    set: &ReplicatorSet,
    dialect: DialectArg,
    r: Option<RoleArg>,
) -> Result<ExitCode, CliError> {
    let role = match r {
        Some(RoleArg::Primary) => NodeRole::Primary,
        Some(RoleArg::Secondary) => NodeRole::Secondary,
        None => role(&settings).map_err(|_| {
            CliError::Message(
                "say which schema: --role primary|secondary (or set role in the configuration)"
                    .into(),
            )
        })?,
    };
    let dialect = match dialect {
        DialectArg::Postgres => Dialect::Postgres,
        DialectArg::Sqlite => Dialect::Sqlite,
    };
    out(&migration_script(role, set, dialect));
    Ok(ExitCode::SUCCESS)
}

/// `geo migrations apply`.
pub(super) async fn apply_migrations(
    settings: Settings,
    set: &ReplicatorSet,
) -> Result<ExitCode, CliError> {
    let role = role(&settings)?;
    let db = connect(&settings).await?;
    let report = crate::db::migrate(&db, role, set).await?;
    for m in &report.applied {
        out(&format!(
            "applied {} v{}: {}\n",
            m.scope, m.version, m.description
        ));
    }
    out(&format!(
        "{} applied, {} already applied\n",
        report.applied.len(),
        report.already_applied
    ));
    Ok(ExitCode::SUCCESS)
}

/// `geo check`: every copy against the primary, then the store as a whole; exits 1 on a
/// difference.
pub(super) async fn check(
    mut settings: Settings,
    set: &ReplicatorSet,
    only: Option<String>,
    delete_extra: bool,
    confirm: bool,
) -> Result<ExitCode, CliError> {
    if settings.get::<String>("role")?.as_deref() == Some("primary") {
        return Err(CliError::Message(
            "`geo check` runs on a secondary: it compares the secondary's copies with its primary (this configuration is a primary's)".into(),
        ));
    }
    settings.set("role", "secondary");
    let descriptors = match &only {
        Some(name) => vec![replicable(set, name)?],
        None => set.descriptors().to_vec(),
    };
    let client = client(&settings)?;
    let root: PathBuf = settings.require("storage_root", "needed to read the local copies")?;
    ensure_store_is_dedicated(&settings, &root)?;
    let db = connect_migrated(&settings, set, NodeRole::Secondary).await?;
    let store = LocalStore::new(root);
    let mut total = 0;
    for d in descriptors {
        let report = check_replicable(&db, d, &client, &store, |diff| {
            out(&format!("ERROR : {} {diff}\n", d.replicable_name));
        })
        .await?;
        total += report.differences.len();
        out(&format!(
            "NOTICE: {}: {} records on the primary, {} matching, {} without a primary checksum yet, {} differences\n",
            d.replicable_name,
            report.primary_records,
            report.matching,
            report.unverifiable,
            report.differences.len()
        ));
    }
    // The store as a whole: files no row accounts for (copies that outlived their record).
    total += check_store(&db, set, &store, delete_extra, confirm).await?;
    if total > 0 {
        out(&format!("{total} differences found\n"));
        Ok(ExitCode::FAILURE)
    } else {
        out("0 differences found\n");
        Ok(ExitCode::SUCCESS)
    }
}

/// `geo check`'s look at the store as a whole: the files no row accounts for, deleted with
/// `--delete-extra --confirm`. Returns how many are left.
async fn check_store(
    db: &crate::db::Database,
    set: &ReplicatorSet,
    store: &LocalStore,
    delete_extra: bool,
    confirm: bool,
) -> Result<usize, CliError> {
    let store_report = extra_files(db, set, store).await?;
    for key in &store_report.extra {
        out(&format!(
            "ERROR : + {key}: extra on the secondary (no registry row)\n"
        ));
    }
    out(&format!(
        "NOTICE: store: {} files, {} extra, {} waiting for removal\n",
        store_report.files,
        store_report.extra.len(),
        store_report.pending_removal
    ));
    let mut extra = store_report.extra.len();
    if delete_extra && !store_report.extra.is_empty() {
        if confirm {
            for (key, outcome) in delete_extra_files(db, set, store, &store_report).await? {
                match outcome {
                    ExtraRemoval::Deleted => {
                        extra -= 1;
                        out(&format!("NOTICE: deleted {key}\n"));
                    }
                    ExtraRemoval::InUse => {
                        extra -= 1;
                        out(&format!(
                            "NOTICE: kept {key}: a row is recorded with it now\n"
                        ));
                    }
                    ExtraRemoval::UnsafeKey(why) => {
                        out(&format!("ERROR : kept {key}: {why}; remove it by hand\n"))
                    }
                    ExtraRemoval::Failed(why) => {
                        out(&format!("ERROR : could not delete {key}: {why}\n"))
                    }
                }
            }
        } else {
            for key in &store_report.extra {
                out(&format!("NOTICE: would delete {key}\n"));
            }
            out("NOTICE: a dry run: add --confirm to delete them\n");
        }
    }
    Ok(extra)
}

/// `geo resync`: rows of a secondary's registry back to pending.
pub(super) async fn resync(
    settings: Settings,
    set: &ReplicatorSet,
    target: Target,
) -> Result<ExitCode, CliError> {
    let d = replicable(set, &target.replicable)?;
    if role(&settings)? != NodeRole::Secondary {
        return Err(CliError::Message(
            "resync acts on a secondary's registry; this configuration is a primary's".into(),
        ));
    }
    let db = connect_migrated(&settings, set, NodeRole::Secondary).await?;
    let n = operations::resync(&db, d, &selection(&target)).await?;
    out(&format!(
        "{}: {n} rows back to pending; the sync downloads them again\n",
        d.replicable_name
    ));
    unknown_ids(&db, NodeRole::Secondary, d, &target).await
}

/// Fails when some of `--id` name no record here (after acting on the others).
async fn unknown_ids(
    db: &crate::db::Database,
    role: NodeRole,
    d: &'static crate::replicator::ReplicatorDescriptor,
    target: &Target,
) -> Result<ExitCode, CliError> {
    if target.all {
        return Ok(ExitCode::SUCCESS);
    }
    let unknown = operations::unknown_ids(db, role, d, &target.ids).await?;
    if unknown.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let list: Vec<String> = unknown.iter().map(i64::to_string).collect();
    let what = match role {
        NodeRole::Secondary => "no registry row",
        NodeRole::Primary => "no record",
    };
    Err(CliError::Message(format!(
        "{}: {what} for id {}",
        d.replicable_name,
        list.join(", ")
    )))
}

/// `geo reverify`: records marked for verification, on either role.
pub(super) async fn reverify(
    settings: Settings,
    set: &ReplicatorSet,
    target: Target,
) -> Result<ExitCode, CliError> {
    let d = replicable(set, &target.replicable)?;
    let role = role(&settings)?;
    if role == NodeRole::Primary && target.state.is_some() {
        return Err(CliError::Message(
            "--state filters a secondary's registry; a primary has none".into(),
        ));
    }
    let db = connect_migrated(&settings, set, role).await?;
    let n = operations::reverify(&db, role, d, &selection(&target)).await?;
    out(&format!(
        "{}: {n} records marked for verification\n",
        d.replicable_name
    ));
    unknown_ids(&db, role, d, &target).await
}

/// `geo nodes add|list|remove|enable|disable`: the secondaries a primary knows.
pub(super) async fn nodes(
    settings: Settings,
    set: &ReplicatorSet,
    action: NodesAction,
) -> Result<ExitCode, CliError> {
    let db = connect_migrated(&settings, set, NodeRole::Primary).await?;
    let enable = matches!(action, NodesAction::Enable { .. });
    match action {
        NodesAction::Add { name, url } => {
            let key = settings.get::<crate::node::SecretsKey>("secrets_key")?;
            let creds = nodes::register(&db, &name, &url, key.as_ref()).await?;
            let stored = if key.is_some() {
                "sealed with secrets_key"
            } else {
                "IN CLEAR: set secrets_key (GEO_SECRETS_KEY) and restart the primary to seal it"
            };
            // Environment assignments, not TOML: the secret belongs in the secondary's
            // environment (or a secret store), not in its configuration file.
            out(&format!(
                "registered secondary `{name}` ({url}); its secret is stored {stored}.\n\
                 The secret is shown this once. Give the secondary these settings, the secret through\n\
                 its environment or a secret store rather than its configuration file:\n\n\
                 GEO_NAME={name}\nGEO_ACCESS_KEY={}\nGEO_SECRET={}\n",
                creds.access_key,
                creds.secret.expose()
            ));
        }
        NodesAction::List => {
            out(&format!(
                "{:<24} {:<8} {:<22} url\n",
                "name", "enabled", "access_key"
            ));
            for n in nodes::list(&db).await? {
                out(&format!(
                    "{:<24} {:<8} {:<22} {}\n",
                    n.name,
                    if n.enabled { "yes" } else { "no" },
                    n.access_key,
                    n.url
                ));
            }
        }
        NodesAction::Remove { name } => {
            if !nodes::remove(&db, &name).await? {
                return Err(CliError::Message(format!("no secondary named `{name}`")));
            }
            out(&format!(
                "secondary `{name}` removed (its credentials stop working within {} s on a running primary)\n",
                crate::node::NODE_CACHE_TTL.as_secs()
            ));
        }
        NodesAction::Disable { name } | NodesAction::Enable { name } => {
            if !nodes::set_enabled(&db, &name, enable).await? {
                return Err(CliError::Message(format!("no secondary named `{name}`")));
            }
            out(&format!(
                "secondary `{name}` {} (within {} s on a running primary)\n",
                if enable { "enabled" } else { "disabled" },
                crate::node::NODE_CACHE_TTL.as_secs()
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `geo graphql-schema`: the GraphQL SDL of this binary's replicables.
#[cfg(feature = "graphql")]
pub(super) fn graphql_schema(set: &ReplicatorSet) -> Result<ExitCode, CliError> {
    let sdl = crate::graphql::sdl(set)
        .map_err(|e| CliError::Message(format!("building the GraphQL schema: {e}")))?;
    out(&sdl);
    Ok(ExitCode::SUCCESS)
}

/// `geo replicables`: the replicables linked into this binary.
/// `geo replicables enable|disable NAME`: the replicable's feature flag in this node's database.
pub(super) async fn switch_replicable(
    settings: Settings,
    set: &ReplicatorSet,
    action: ReplicablesAction,
) -> Result<ExitCode, CliError> {
    let (name, on) = match &action {
        ReplicablesAction::Enable { name } => (name, true),
        ReplicablesAction::Disable { name } => (name, false),
    };
    let d = replicable(set, name)?;
    let role = role(&settings)?;
    let db = connect_migrated(&settings, set, role).await?;
    crate::flags::set_enabled(&db, d, on).await?;
    let (state, effect) = match (on, role) {
        (true, NodeRole::Primary) => ("enabled", "this primary publishes its events"),
        (true, NodeRole::Secondary) => ("enabled", "this secondary syncs it"),
        (false, NodeRole::Primary) => ("disabled", "this primary publishes no events for it"),
        (false, NodeRole::Secondary) => (
            "disabled",
            "this secondary stops syncing it; nothing is deleted",
        ),
    };
    out(&format!(
        "{}: replication {state} (flag {}); {effect}\n",
        d.replicable_name, d.feature_flag
    ));
    Ok(ExitCode::SUCCESS)
}

pub(super) fn replicables(set: &ReplicatorSet) -> Result<ExitCode, CliError> {
    for d in set.descriptors() {
        out(&format!(
            "{:<16} model {:<20} table {:<20} registry {:<24} flag {}{}\n",
            d.replicable_name,
            d.model_type,
            d.model_table,
            d.registry_table,
            d.feature_flag,
            if d.enabled_by_default {
                " (on by default)"
            } else {
                ""
            }
        ));
    }
    Ok(ExitCode::SUCCESS)
}
