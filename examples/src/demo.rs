//! The main job, end to end on one machine: a primary and a secondary on loopback HTTP, each
//! with its own SQLite database and object store, replicating and verifying for real. It creates
//! widgets and package files on the primary, updates and deletes some while the secondary is
//! still catching up, waits until the secondary has converged and verified everything, prints
//! both nodes' status and ends with a pass/fail line from an independent SHA-256 comparison of
//! both stores.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use geo_runtime::Database;
use geo_runtime::events::{CursorConfig, StartPosition};
use geo_runtime::node::nodes::add_secondary;
use geo_runtime::node::{Node, NodeConfig, NodeHandle, PrimaryConfig, SecondaryConfig};
use geo_runtime::status::NodeStatus;
use geo_runtime::storage::LocalStore;
use geo_runtime::worker::sync::SyncConfig;
use geo_runtime::worker::verify::{SecondaryVerifyConfig, VerifyConfig};
use sha2::{Digest, Sha256};

use crate::app::{self, App, Kind};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A bar redrawn in place (a terminal).
    Bar,
    /// A plain line every few seconds (a log, CI).
    Lines,
}

impl Progress {
    /// A bar when stdout is a terminal, lines otherwise.
    pub fn detect() -> Self {
        if std::io::stdout().is_terminal() {
            Progress::Bar
        } else {
            Progress::Lines
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Records created on the primary (two thirds widgets, one third package files).
    pub count: i64,
    /// Where the databases and objects live (a temporary directory when `None`).
    pub dir: Option<PathBuf>,
    /// How progress is shown.
    pub progress: Progress,
    /// Give up after this long.
    pub deadline: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            count: 3000,
            dir: None,
            progress: Progress::detect(),
            deadline: Duration::from_secs(300),
        }
    }
}

/// What the run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether both stores hold the same live objects, byte for byte.
    pub passed: bool,
    /// Objects compared.
    pub compared: usize,
    /// Objects that differ or are missing, and deleted ones still present.
    pub differences: Vec<String>,
}

/// `cargo run -p geo-examples --example demo -- [COUNT] [DIR]`.
pub async fn main() -> Result<std::process::ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("usage: demo [COUNT] [DIR]   (COUNT records, default 3000; DIR keeps the data)");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let mut options = Options::default();
    if let Some(count) = args.first() {
        options.count = count
            .parse()
            .with_context(|| format!("COUNT must be a number of records, not {count:?}"))?;
        if options.count < 3 {
            bail!("COUNT must be at least 3");
        }
    }
    options.dir = args.get(1).map(PathBuf::from);
    let outcome = run(&options, &mut std::io::stdout()).await?;
    Ok(if outcome.passed {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

/// Runs the demo, writing its report to `out`.
pub async fn run(options: &Options, out: &mut dyn Write) -> Result<Outcome> {
    let started = Instant::now();
    let temp = tempfile::tempdir()?;
    let base = options
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
    let set = app::replicators()?;

    // The primary: the application's tables, then the node (it applies the runtime's schema).
    let primary_db = Database::connect(&format!("sqlite://{}/primary.db", base.display())).await?;
    app::create_app_tables(&primary_db).await?;
    // The application's object store: the primary serves from it and refuses to start without it.
    let objects = base.join("primary-objects");
    std::fs::create_dir_all(&objects).with_context(|| format!("create {}", objects.display()))?;
    let mut pconfig = PrimaryConfig::new("127.0.0.1:0".parse()?, objects);
    pconfig.name = "east".into();
    pconfig.verification = VerifyConfig {
        idle_wait: Duration::from_millis(100),
        ..VerifyConfig::default()
    };
    let primary = Node::start(NodeConfig::Primary(pconfig), &primary_db, &set).await?;
    let url = format!(
        "http://{}",
        primary.local_addr().context("the primary's address")?
    );
    let app = App {
        db: primary_db.clone(),
        store: LocalStore::new(base.join("primary-objects")),
    };

    // The secondary: registered on the primary, its own tracking database and store.
    let creds = add_secondary(&primary_db, "west", "http://127.0.0.1").await?;
    let secondary_db =
        Database::connect(&format!("sqlite://{}/secondary.db", base.display())).await?;
    let mut sconfig = SecondaryConfig::new(
        "west",
        &url,
        &creds.access_key,
        creds.secret,
        base.join("secondary-objects"),
    );
    sconfig.sync = SyncConfig {
        files_max_capacity: 16,
        idle_wait: Duration::from_millis(50),
        max_object_size: None,
        ..SyncConfig::default()
    };
    sconfig.cursor = CursorConfig {
        idle_wait: Duration::from_millis(50),
        start: StartPosition::Latest,
        ..CursorConfig::default()
    };
    sconfig.consistency_interval = Duration::from_secs(2);
    sconfig.verification = SecondaryVerifyConfig {
        idle_wait: Duration::from_millis(200),
        disabled_recheck: Duration::from_millis(500),
        ..SecondaryVerifyConfig::default()
    };
    let secondary = Node::start(NodeConfig::Secondary(sconfig), &secondary_db, &set).await?;
    writeln!(
        out,
        "geo-dsl demo: primary `east` on {url}, secondary `west` following it (SQLite, local files)"
    )?;
    writeln!(
        out,
        "data in {}{}",
        base.display(),
        if options.dir.is_some() {
            " (kept)"
        } else {
            " (removed at exit; pass a directory to keep it)"
        }
    )?;

    // The application's work, in the background: an import, then updates and deletes while the
    // secondary is still catching up.
    let widgets = options.count * 2 / 3;
    let packages = options.count - widgets;
    let written = Arc::new(AtomicI64::new(0));
    let t = Instant::now();
    let work = tokio::spawn(application_work(app, widgets, packages, written.clone()));
    let mut work = Some(work);
    let mut plan: Option<Plan> = None;

    // Progress until the work is done and the secondary has synced and verified all of it,
    // removed what was deleted, and applied every event.
    let deadline = Instant::now() + options.deadline;
    let mut last_line = Instant::now();
    let total_ops = options.count + (widgets / 7 + packages / 7) + (widgets / 11 + packages / 11);
    let converged = loop {
        if work.as_ref().is_some_and(|w| w.is_finished())
            && let Some(w) = work.take()
        {
            let p = w.await.context("the application's work panicked")??;
            if options.progress == Progress::Bar {
                writeln!(out)?;
            }
            writeln!(
                out,
                "primary: created {widgets} widgets and {packages} package files, updated {}, deleted {} in {:.1} s",
                p.updated,
                p.deleted.len(),
                t.elapsed().as_secs_f64()
            )?;
            plan = Some(p);
        }
        let want = plan.as_ref().map(|p| p.live.len() as i64);
        let s = secondary.status().refresh().await?;
        let (synced, verified, registry, failed) = totals(&s);
        let target = want.unwrap_or(written.load(Ordering::Relaxed).max(1));
        let done = want.is_some_and(|want| {
            synced == want
                && verified == want
                && registry == want
                && s.removals_pending == Some(0)
                && s.cursor_events_behind == Some(0)
        });
        let ops = written.load(Ordering::Relaxed);
        match options.progress {
            Progress::Bar => {
                write!(
                    out,
                    "\rprimary {} {ops:>5}/{total_ops} writes   secondary {} {synced:>5} synced {} {verified:>5} verified  {failed} failed ",
                    bar(ops, total_ops),
                    bar(synced, target),
                    bar(verified, target)
                )?;
                out.flush()?;
            }
            Progress::Lines if done || last_line.elapsed() >= Duration::from_secs(2) => {
                writeln!(
                    out,
                    "[{:>5.1} s] primary: {ops}/{total_ops} writes · secondary: {synced} synced, {verified} verified, {failed} failed, {} events behind",
                    t.elapsed().as_secs_f64(),
                    s.cursor_events_behind.map_or("?".into(), |b| b.to_string())
                )?;
                last_line = Instant::now();
            }
            Progress::Lines => {}
        }
        if done {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if options.progress == Progress::Bar {
        writeln!(out)?;
    }
    let Some(plan) = plan else {
        bail!(
            "the application's work did not finish within {:?}",
            options.deadline
        );
    };
    if converged {
        writeln!(
            out,
            "secondary converged and verified in {:.1} s",
            t.elapsed().as_secs_f64()
        )?;
    } else {
        writeln!(
            out,
            "the secondary did not converge within {:?}",
            options.deadline
        )?;
    }

    // Both nodes' status, fresh.
    writeln!(out)?;
    write!(out, "{}", primary.status().refresh().await?.render_table())?;
    writeln!(out)?;
    write!(
        out,
        "{}",
        secondary.status().refresh().await?.render_table()
    )?;
    writeln!(out)?;

    shutdown(secondary, primary).await;
    let outcome = compare(&base, &plan.live, &plan.deleted);
    if outcome.passed {
        writeln!(
            out,
            "PASS: {} objects byte-identical on both sides (SHA-256 of every file), {} deleted ones gone from both, in {:.1} s",
            outcome.compared,
            plan.deleted.len(),
            started.elapsed().as_secs_f64()
        )?;
    } else {
        for d in outcome.differences.iter().take(20) {
            writeln!(out, "  differs: {d}")?;
        }
        writeln!(
            out,
            "FAIL: {} of {} objects differ between the primary and the secondary",
            outcome.differences.len(),
            outcome.compared
        )?;
    }
    primary_db.close().await;
    secondary_db.close().await;
    Ok(outcome)
}

/// What the application did: the live records and their versions, what it deleted.
struct Plan {
    live: BTreeMap<(Kind, i64), u32>,
    deleted: Vec<(Kind, i64)>,
    updated: usize,
}

async fn application_work(
    app: App,
    widgets: i64,
    packages: i64,
    written: Arc<AtomicI64>,
) -> Result<Plan> {
    let mut live: BTreeMap<(Kind, i64), u32> = BTreeMap::new();
    for (kind, n) in [(Kind::Widget, widgets), (Kind::PackageFile, packages)] {
        let ids: Vec<i64> = (1..=n).collect();
        for chunk in ids.chunks(100) {
            app.create_many(kind, chunk).await?;
            written.fetch_add(chunk.len() as i64, Ordering::Relaxed);
            live.extend(chunk.iter().map(|&id| ((kind, id), 0)));
        }
    }
    let mut updated = 0;
    for (&(kind, id), version) in live.iter_mut() {
        if id % 7 == 0 {
            *version = 1;
            app.update(kind, id, 1).await?;
            updated += 1;
            written.fetch_add(1, Ordering::Relaxed);
        }
    }
    let mut deleted = Vec::new();
    for (kind, id) in live.keys().copied().collect::<Vec<_>>() {
        if id % 11 == 0 {
            app.delete(kind, id).await?;
            live.remove(&(kind, id));
            deleted.push((kind, id));
            written.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(Plan {
        live,
        deleted,
        updated,
    })
}

async fn shutdown(secondary: NodeHandle, primary: NodeHandle) {
    secondary.shutdown().await;
    primary.shutdown().await;
}

/// (synced, verified, registry rows, failed) over every replicable.
fn totals(s: &NodeStatus) -> (i64, i64, i64, i64) {
    s.replicables.iter().fold((0, 0, 0, 0), |acc, r| {
        (
            acc.0 + r.synced_count.unwrap_or(0),
            acc.1 + r.verified_count.unwrap_or(0),
            acc.2 + r.registry_count.unwrap_or(0),
            acc.3 + r.failed_count.unwrap_or(0),
        )
    })
}

fn bar(done: i64, of: i64) -> String {
    const WIDTH: i64 = 20;
    let filled = if of == 0 {
        WIDTH
    } else {
        (done.clamp(0, of) * WIDTH) / of
    };
    format!(
        "[{}{}]",
        "#".repeat(filled as usize),
        "-".repeat((WIDTH - filled) as usize)
    )
}

fn sha(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}

/// The independent check: every live object's SHA-256 is the same in both stores and the one
/// the application wrote; every deleted object is gone from both.
fn compare(base: &Path, live: &BTreeMap<(Kind, i64), u32>, deleted: &[(Kind, i64)]) -> Outcome {
    let (p, s) = (base.join("primary-objects"), base.join("secondary-objects"));
    let mut differences = Vec::new();
    for (&(kind, id), &version) in live {
        let key = app::key(kind, id);
        let want: [u8; 32] = Sha256::digest(app::content(kind, id, version)).into();
        match (sha(&p.join(&key)), sha(&s.join(&key))) {
            (Some(a), Some(b)) if a == want && b == want => {}
            (_, None) => differences.push(format!("{key}: missing on the secondary")),
            (a, _) if a != Some(want) => {
                differences.push(format!("{key}: the primary's copy is not what was written"))
            }
            _ => differences.push(format!("{key}: the secondary's copy differs")),
        }
    }
    for &(kind, id) in deleted {
        let key = app::key(kind, id);
        if p.join(&key).exists() || s.join(&key).exists() {
            differences.push(format!("{key}: deleted but still present"));
        }
    }
    Outcome {
        passed: differences.is_empty(),
        compared: live.len(),
        differences,
    }
}
