//! The example application's operator CLI: `geo_runtime::cli` with the application's
//! replicators, plus two commands of the application itself that the CLI tests use:
//!
//! - `geo app-schema`: create the application's tables in the configured database;
//! - `geo app-create <kind> <from> <to>`: create records (`widget` or `package_file`) with
//!   their files in the configured store, and publish their events.
//!
//! Everything else is `geo_runtime::cli`: `geo --help`.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use geo_examples::app::{self, App, Kind};
use geo_runtime::Database;
use geo_runtime::cli::config::Settings;
use geo_runtime::storage::LocalStore;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let set = match app::replicators() {
        Ok(set) => set,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match args.get(1).map(String::as_str) {
        Some("app-schema" | "app-create") => match app_command(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        _ => geo_runtime::cli::run_with(set, args),
    }
}

fn app_command(args: &[String]) -> Result<()> {
    #[cfg(feature = "failpoints")]
    let _scenario = fail::FailScenario::setup();
    let config = std::env::var_os("GEO_CONFIG").map(std::path::PathBuf::from);
    let settings = Settings::load(config.as_deref())?;
    let url: String = settings.require("database_url", "")?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let db = Database::connect(&url).await?;
        match args {
            [cmd] if cmd == "app-schema" => app::create_app_tables(&db).await?,
            [cmd, kind, from, to] if cmd == "app-create" => {
                let kind = match kind.as_str() {
                    "widget" => Kind::Widget,
                    "package_file" => Kind::PackageFile,
                    other => bail!("unknown kind {other:?}: widget or package_file"),
                };
                let (from, to): (i64, i64) = (
                    from.parse().context("FROM is an id")?,
                    to.parse().context("TO is an id")?,
                );
                let root: std::path::PathBuf = settings.require("storage_root", "")?;
                let app = App {
                    db: db.clone(),
                    store: LocalStore::new(root),
                };
                let ids: Vec<i64> = (from..=to).collect();
                for chunk in ids.chunks(500) {
                    app.create_many(kind, chunk).await?;
                }
            }
            _ => bail!("usage: geo app-schema | geo app-create <widget|package_file> <from> <to> (configuration from GEO_CONFIG and GEO_*)"),
        }
        db.close().await;
        Ok(())
    })
}
