//! Builds a primary's and a secondary's schema for three replicables and prints what
//! `#[replicable]` generated: the replicators, the migrations it applied, the tables and indexes.
//!
//! ```sh
//! cargo run -p geo-examples --example schema                      # two SQLite files in a temp dir
//! cargo run -p geo-examples --example schema -- PRIMARY_URL SECONDARY_URL   # e.g. postgres://…
//! ```

use anyhow::{Context, Result, bail};
use geo_runtime::db::{self, dialect};
use geo_runtime::{Database, Dialect, NodeRole, VerificationStorage};

use geo_examples::app::{APP_TABLES, Widget, WidgetRegistry, execute};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = tempfile_dir()?;
    let (primary_url, secondary_url) = match args.as_slice() {
        [] => (
            format!("sqlite://{}/primary.db", dir.display()),
            format!("sqlite://{}/secondary.db", dir.display()),
        ),
        [p, s] => (p.clone(), s.clone()),
        _ => bail!("usage: schema [PRIMARY_URL SECONDARY_URL]"),
    };

    let set = geo_examples::app::replicators()?;
    println!("Replicators linked into this binary ({}):", set.len());
    println!(
        "  {:<14} {:<22} {:<16} {:<30} feature flag",
        "name", "registry (secondary)", "model table", "verification (primary)"
    );
    for d in set.descriptors() {
        let verification = match d.verification {
            VerificationStorage::Inline => format!("inline on {}", d.model_table),
            VerificationStorage::SeparateTable { table } => format!("table {table}"),
        };
        println!(
            "  {:<14} {:<22} {:<16} {:<30} {} (default {})",
            d.replicable_name,
            d.registry_table,
            d.model_table,
            verification,
            d.feature_flag,
            if d.enabled_by_default { "on" } else { "off" }
        );
    }

    let primary = Database::connect(&primary_url)
        .await
        .context("open the primary's database")?;
    for sql in APP_TABLES {
        execute(&primary, sql).await?;
    }
    let report = db::migrate(&primary, NodeRole::Primary, &set).await?;
    print_report("primary", &report);

    let secondary = Database::connect(&secondary_url)
        .await
        .context("open the secondary's database")?;
    let report = db::migrate(&secondary, NodeRole::Secondary, &set).await?;
    print_report("secondary", &report);

    // The generated registry type, on the secondary.
    WidgetRegistry::insert_pending(&secondary, 1).await?;
    if let Some(row) = WidgetRegistry::find_by_model_id(&secondary, 1).await? {
        println!(
            "\nA registry row through the generated type: widget_registry #{} tracks widget {}: {} (retry {}, created {})",
            row.id, row.widget_id, row.state, row.retry_count, row.created_at
        );
    }
    // The generated verification accessors, on the primary.
    execute(&primary, "INSERT INTO widgets (id, file, project_id) VALUES (1, 'w/1', 7) ON CONFLICT (id) DO NOTHING").await?;
    let widget = Widget {
        id: 1,
        file: "w/1".into(),
        project_id: 7,
    };
    let mut details = widget.verification_details(&primary).await?;
    details.verification_state = geo_runtime::VerificationState::Succeeded;
    details.verified_at = Some(dialect::now());
    details.verification_checksum = Some(vec![0xab; 32]);
    widget.set_verification_details(&primary, &details).await?;
    println!(
        "Widget 1 on the primary: {} at {:?}",
        widget
            .verification_details(&primary)
            .await?
            .verification_state,
        details.verified_at
    );

    for (label, db) in [("primary", &primary), ("secondary", &secondary)] {
        println!("\nSchema of the {label} ({:?}):", db.dialect());
        for (table, indexes) in schema(db).await? {
            println!("  {table}");
            for index in indexes {
                println!("      index {index}");
            }
        }
    }
    primary.close().await;
    secondary.close().await;
    if args.is_empty() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    Ok(())
}

fn print_report(label: &str, report: &db::MigrationReport) {
    println!(
        "\nMigrated the {label}: {} applied, {} already applied",
        report.applied.len(),
        report.already_applied
    );
    for m in &report.applied {
        println!("  {} v{}: {}", m.scope, m.version, m.description);
    }
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("geo-dsl-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// Tables (ours and the application's) with their indexes, from the catalogue.
async fn schema(db: &Database) -> Result<Vec<(String, Vec<String>)>> {
    let rows: Vec<(String, Option<String>)> = match db.dialect() {
        Dialect::Postgres => {
            sqlx::query_as(
                "SELECT t.tablename::text, i.indexname::text FROM pg_tables t
                 LEFT JOIN pg_indexes i ON i.schemaname = t.schemaname AND i.tablename = t.tablename
                 WHERE t.schemaname = current_schema() ORDER BY 1, 2",
            )
            .fetch_all(db.as_postgres().context("pg")?)
            .await?
        }
        Dialect::Sqlite => {
            sqlx::query_as(
                "SELECT t.name, i.name FROM sqlite_master t
                 LEFT JOIN sqlite_master i ON i.type = 'index' AND i.tbl_name = t.name AND i.sql IS NOT NULL
                 WHERE t.type = 'table' AND t.name NOT LIKE 'sqlite_%' ORDER BY 1, 2",
            )
            .fetch_all(db.as_sqlite_readers().context("sqlite")?)
            .await?
        }
    };
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (table, index) in rows {
        match out.last_mut() {
            Some((t, idx)) if *t == table => idx.extend(index),
            _ => out.push((table, index.into_iter().collect())),
        }
    }
    Ok(out)
}
