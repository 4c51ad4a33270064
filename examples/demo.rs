//! The main job, end to end on one machine: a primary and a secondary on loopback, each with its
//! own SQLite database and object store, replicating widgets for real (HTTP, JWT, durable
//! writes). It creates, updates and deletes widgets on the primary, waits until the secondary has
//! converged, checks every file byte for byte, and prints what happened.
//!
//! ```sh
//! cargo run -p geo-examples --example demo               # 200 widgets in a temp directory
//! cargo run -p geo-examples --example demo -- 1000 ./geo-demo   # how many, and where to keep it
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use geo_runtime::db::Conn;
use geo_runtime::events::{CursorConfig, StartPosition};
use geo_runtime::node::nodes::add_secondary;
use geo_runtime::node::{Node, NodeConfig, PrimaryConfig, SecondaryConfig};
use geo_runtime::registry::Registry;
use geo_runtime::storage::{LocalStore, ObjectKey};
use geo_runtime::worker::sync::SyncConfig;
use geo_runtime::{Database, ReplicableModel, Replicator, ReplicatorSet};
use sha2::{Digest, Sha256};

/// A file attached to a project.
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

fn content(id: i64, version: u32) -> Vec<u8> {
    let len = if id % 25 == 0 {
        2 * 1024 * 1024
    } else {
        (id as usize * 1531) % 40_000
    };
    let mut rng = fastrand::Rng::with_seed(((id as u64) << 8) | u64::from(version));
    (0..len).map(|_| rng.u8(..)).collect()
}

fn widget(id: i64) -> Widget {
    Widget {
        id,
        file: format!("widgets/{}/{id}.bin", id % 16),
        project_id: id % 3,
    }
}

/// The application's write: the file, the row and its event, the last two in one transaction.
async fn save(
    primary: &Database,
    store: &LocalStore,
    w: &Widget,
    version: u32,
    new: bool,
) -> Result<()> {
    let key = ObjectKey::parse(&w.file)?;
    store
        .write_bytes(&key, content(w.id, version).into(), None)
        .await?;
    let mut tx = primary.begin_write().await?;
    if new {
        match tx.conn() {
            Conn::Sqlite(c) => {
                sqlx::query("INSERT INTO widgets (id, file, project_id) VALUES (?1, ?2, ?3)")
                    .bind(w.id)
                    .bind(&w.file)
                    .bind(w.project_id)
                    .execute(&mut *c)
                    .await?;
            }
            Conn::Postgres(_) => bail!("this demo runs on SQLite"),
        }
        w.publish_created(tx.conn()).await?;
    } else {
        w.publish_updated(tx.conn()).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn remove(primary: &Database, store: &LocalStore, w: &Widget) -> Result<()> {
    let mut tx = primary.begin_write().await?;
    w.publish_deleted(tx.conn()).await?;
    if let Conn::Sqlite(c) = tx.conn() {
        sqlx::query("DELETE FROM widgets WHERE id = ?1")
            .bind(w.id)
            .execute(&mut *c)
            .await?;
    }
    tx.commit().await?;
    store.delete(&ObjectKey::parse(&w.file)?).await?;
    Ok(())
}

fn sha(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path)
        .ok()
        .map(|b| Sha256::digest(&b).to_vec())
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count: i64 = args
        .first()
        .map(|s| s.parse())
        .transpose()
        .context("the first argument is how many widgets")?
        .unwrap_or(200);
    let keep = args.get(1).map(PathBuf::from);
    let temp = tempfile::tempdir()?;
    let base = keep.clone().unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&base)?;
    let set = ReplicatorSet::linked()?;

    // The primary: the application's table, then the node (it applies its migrations).
    let primary_db = Database::connect(&format!("sqlite://{}/primary.db", base.display())).await?;
    if let Some(pool) = primary_db.as_sqlite_writer() {
        sqlx::query("CREATE TABLE IF NOT EXISTS widgets (id INTEGER PRIMARY KEY, file TEXT NOT NULL, project_id INTEGER NOT NULL)")
            .execute(pool)
            .await?;
    }
    let primary_store = LocalStore::new(base.join("primary-objects"));
    let primary = Node::start(
        NodeConfig::Primary(PrimaryConfig::new(
            "127.0.0.1:0".parse()?,
            base.join("primary-objects"),
        )),
        &primary_db,
        &set,
    )
    .await?;
    let url = format!(
        "http://{}",
        primary.local_addr().context("the primary's address")?
    );
    println!(
        "primary   listening on {url}, objects in {}",
        base.join("primary-objects").display()
    );

    // The secondary: registered on the primary, its own tracking database and store.
    let name = format!("secondary-{}", std::process::id());
    let creds = add_secondary(&primary_db, &name, "http://127.0.0.1").await?;
    println!(
        "secondary {name} registered (access key {}, secret {:?})",
        creds.access_key, creds.secret
    );
    let secondary_db = Database::connect(&format!(
        "sqlite://{}/secondary-tracking.db",
        base.display()
    ))
    .await?;
    let mut config = SecondaryConfig::new(
        &name,
        &url,
        &creds.access_key,
        creds.secret,
        base.join("secondary-objects"),
    );
    config.sync = SyncConfig {
        files_max_capacity: 16,
        idle_wait: Duration::from_millis(50),
    };
    config.cursor = CursorConfig {
        idle_wait: Duration::from_millis(50),
        start: StartPosition::Latest,
        ..CursorConfig::default()
    };
    config.consistency_interval = Duration::from_secs(2);
    let secondary = Node::start(NodeConfig::Secondary(config), &secondary_db, &set).await?;

    let t = Instant::now();
    for id in 1..=count {
        save(&primary_db, &primary_store, &widget(id), 0, true).await?;
    }
    let updated: Vec<i64> = (1..=count).filter(|id| id % 7 == 0).collect();
    for id in &updated {
        save(&primary_db, &primary_store, &widget(*id), 1, false).await?;
    }
    let deleted: Vec<i64> = (1..=count).filter(|id| id % 11 == 0).collect();
    for id in &deleted {
        remove(&primary_db, &primary_store, &widget(*id)).await?;
    }
    println!(
        "primary   {count} widgets created, {} updated, {} deleted in {:.2} s",
        updated.len(),
        deleted.len(),
        t.elapsed().as_secs_f64()
    );

    let registry = Registry::new(&secondary_db, WidgetReplicator::DESCRIPTOR);
    let live = count - deleted.len() as i64;
    let secondary_store = LocalStore::new(base.join("secondary-objects"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let c = registry.count_by_state().await?;
        print!(
            "\rsecondary registry: {:>5} synced {:>5} pending {:>4} started {:>4} failed",
            c.synced, c.pending, c.started, c.failed
        );
        std::io::Write::flush(&mut std::io::stdout())?;
        let files_match = c.synced == live
            && c.total() == live
            && (1..=count).filter(|id| !deleted.contains(id)).all(|id| {
                let key = ObjectKey::parse(&widget(id).file).expect("demo keys are safe");
                let p = primary_store.path(&key);
                sha(&p).is_some() && sha(&p) == sha(&secondary_store.path(&key))
            })
            && deleted.iter().all(|id| {
                !secondary_store
                    .path(&ObjectKey::parse(&widget(*id).file).expect("key"))
                    .exists()
            });
        if files_match {
            break;
        }
        if Instant::now() > deadline {
            println!();
            bail!("the secondary did not converge within 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "\nconverged in {:.2} s: {live} widgets on the secondary, byte-identical (SHA-256 compared), {} deleted ones gone",
        t.elapsed().as_secs_f64(),
        deleted.len()
    );
    secondary.shutdown().await;
    primary.shutdown().await;
    match keep {
        Some(dir) => println!("kept in {}", dir.display()),
        None => println!("(run with `-- <count> <dir>` to keep the databases and objects)"),
    }
    Ok(())
}
