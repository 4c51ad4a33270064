//! The crash suite (feature `failpoints`): a secondary run as a separate process is killed
//! mid-work, then restarted; it must converge to the primary's bytes, leave no temp file, and
//! never publish a partial file at a final path. Convergence is judged by `geo check`, which
//! hashes every local copy itself and compares it with the primary's checksum.
//!
//! `cargo nextest run -p geo-examples --features failpoints --test crash`
#![cfg(feature = "failpoints")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{GEO, credential, geo, ok, wait_for_line};

/// Runs a node; its log, at `trace`, is appended to `<config>.log` (scanned for secrets).
fn spawn(config: &Path, role: &str, env: &[(&str, &str)]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_extension("log"))
        .expect("log file");
    let mut cmd = Command::new(GEO);
    cmd.arg(role)
        .env("GEO_CONFIG", config)
        .env("RUST_LOG", "trace")
        .env_remove("FAILPOINTS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn geo")
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn wait(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the process did not stop"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Temp files anywhere under `root`.
fn temp_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if e.file_name().to_string_lossy().starts_with(".geo-tmp-") {
                out.push(p);
            }
        }
    }
    out
}

fn converges(secondary: &Path, env: &[(&str, &str)]) {
    let start = Instant::now();
    loop {
        let o = geo(secondary, &["check"], env);
        if o.status.success() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "never converged:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// How many times the primary served each widget (its `serving an object` log lines).
fn served(setup: &Setup) -> std::collections::BTreeMap<i64, usize> {
    let log = std::fs::read_to_string(setup.primary.with_extension("log")).expect("primary log");
    let mut out = std::collections::BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("serving an object")) {
        if let Some(id) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("id="))
            .and_then(|v| v.parse::<i64>().ok())
        {
            *out.entry(id).or_insert(0) += 1;
        }
    }
    out
}

/// Every object was downloaded, and none more than twice (a kill costs one repeat at most).
fn at_most_twice(setup: &Setup, ids: std::ops::RangeInclusive<i64>) {
    let served = served(setup);
    for id in ids {
        let n = served.get(&id).copied().unwrap_or(0);
        assert!(
            (1..=2).contains(&n),
            "widget {id} was served {n} times: {served:?}"
        );
    }
}

struct Setup {
    dir: tempfile::TempDir,
    primary: PathBuf,
    secret: String,
    access_key: String,
}

impl Drop for Setup {
    /// No log line of any process, at `trace`, holds the secondary's secret.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        for entry in std::fs::read_dir(self.dir.path()).expect("dir").flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).expect("log");
                assert!(!text.is_empty(), "{} is empty", path.display());
                assert!(
                    !text.contains(&self.secret),
                    "{} contains the secret",
                    path.display()
                );
                // A JWT (base64 of `{"alg":…`) or an Authorization value (`<access key>:<jwt>`).
                assert!(
                    !text.contains("eyJhbGciOi")
                        && !text.contains(&format!("{}:", self.access_key)),
                    "{} contains a token",
                    path.display()
                );
            }
        }
    }
}

/// A primary with 30 widgets, one of them 256 MiB, running.
fn primary() -> (Setup, Child, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let primary = d.join("primary.toml");
    std::fs::write(
        &primary,
        format!(
            "role = \"primary\"\nname = \"east\"\ndatabase_url = \"sqlite://{d}/primary.db\"\nstorage_root = \"{d}/primary-objects\"\nlisten = \"127.0.0.1:0\"\n",
            d = d.display()
        ),
    )
    .expect("config");
    ok(&primary, &["app-schema"], &[]);
    ok(&primary, &["migrations", "apply"], &[]);
    let creds = ok(
        &primary,
        &["nodes", "add", "west", "--url", "http://west"],
        &[],
    );
    let field = |name: &str| credential(&creds, name);
    ok(&primary, &["app-create", "widget", "1", "30"], &[]);
    // Widget 1's object becomes large (before the primary checksums it).
    let big = d
        .join("primary-objects")
        .join(geo_examples::app::key(geo_examples::app::Kind::Widget, 1));
    let chunk: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut f = std::fs::File::create(&big).expect("big file");
    for i in 0..256u32 {
        let mut c = chunk.clone();
        c[..4].copy_from_slice(&i.to_le_bytes());
        std::io::Write::write_all(&mut f, &c).expect("write");
    }
    f.sync_all().expect("sync");
    let mut node = spawn(&primary, "primary", &[]);
    let url = wait_for_line(&mut node, "primary API listening on ");
    (
        Setup {
            secret: field("secret"),
            access_key: field("access_key"),
            dir,
            primary,
        },
        node,
        url,
    )
}

/// A fresh secondary configuration (its own tracking database and store), named `tag`.
fn secondary(s: &Setup, url: &str, tag: &str) -> (PathBuf, PathBuf) {
    let d = s.dir.path();
    let root = d.join(format!("{tag}-objects"));
    let config = d.join(format!("{tag}.toml"));
    std::fs::write(
        &config,
        format!(
            "role = \"secondary\"\nname = \"west\"\ndatabase_url = \"sqlite://{d}/{tag}.db\"\nstorage_root = \"{}\"\nprimary_url = \"{url}\"\naccess_key = \"{}\"\n",
            root.display(),
            s.access_key,
            d = d.display()
        ),
    )
    .expect("config");
    (config, root)
}

#[test]
fn killed_during_a_large_download_the_secondary_converges_on_restart() {
    let (setup, mut primary_node, url) = primary();
    let env = [("GEO_SECRET", setup.secret.as_str())];
    let (config, root) = secondary(&setup, &url, "a");
    let mut node = spawn(&config, "secondary", &env);
    // Wait for the large object's temp file, then kill -9 mid-download.
    let start = Instant::now();
    let big = root.join(geo_examples::app::key(geo_examples::app::Kind::Widget, 1));
    loop {
        let temps = temp_files(&root);
        if temps
            .iter()
            .any(|t| t.metadata().map(|m| m.len() > 1024 * 1024).unwrap_or(false))
        {
            break;
        }
        assert!(
            !big.exists(),
            "the large object finished before the kill; nothing was tested"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no download started"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    signal(&node, "-KILL");
    wait(&mut node);
    assert!(!big.exists(), "no partial file at the final path");
    assert!(
        !temp_files(&root).is_empty(),
        "the kill left its temp file behind"
    );

    let mut node = spawn(&config, "secondary", &env);
    converges(&config, &env);
    at_most_twice(&setup, 1..=30);
    assert!(
        temp_files(&root).is_empty(),
        "temp files are removed at start-up"
    );
    signal(&node, "-TERM");
    assert!(wait(&mut node).success());
    signal(&primary_node, "-TERM");
    assert!(wait(&mut primary_node).success());
}

#[test]
fn stopped_between_durable_bytes_and_the_registry_commit_it_converges_on_restart() {
    let (setup, mut primary_node, url) = primary();
    let env = [("GEO_SECRET", setup.secret.as_str())];
    let (config, root) = secondary(&setup, &url, "b");
    let mut failing = env.to_vec();
    failing.push(("FAILPOINTS", "sync::before_registry_commit=return"));
    let mut node = spawn(&config, "secondary", &failing);
    let status = wait(&mut node);
    assert!(
        !status.success(),
        "the fail point stopped the process: {status:?}"
    );
    let s = ok(&config, &["status", "--json"], &env);
    let json: serde_json::Value = serde_json::from_str(&s).expect("json");
    assert!(
        json["widgets_started_count"].as_i64().unwrap_or(0) > 0,
        "rows were left in started: {json}"
    );

    // Restarted: the interrupted syncs are released at once (not after the 8 h sweeper).
    let mut node = spawn(&config, "secondary", &env);
    converges(&config, &env);
    at_most_twice(&setup, 1..=30);
    assert!(temp_files(&root).is_empty());
    signal(&node, "-TERM");
    assert!(wait(&mut node).success());
    signal(&primary_node, "-TERM");
    assert!(wait(&mut primary_node).success());
}

#[test]
fn stopped_between_applying_events_and_saving_the_cursor_it_converges_on_restart() {
    let (setup, mut primary_node, url) = primary();
    let env = [("GEO_SECRET", setup.secret.as_str())];
    let (config, _root) = secondary(&setup, &url, "c");
    let mut failing = env.to_vec();
    failing.push(("FAILPOINTS", "cursor::before_commit=return"));
    let mut node = spawn(&config, "secondary", &failing);
    // New records: their events reach the cursor, which stops before it commits.
    std::thread::sleep(Duration::from_millis(300));
    ok(&setup.primary, &["app-create", "widget", "31", "40"], &[]);
    let status = wait(&mut node);
    assert!(
        !status.success(),
        "the fail point stopped the process: {status:?}"
    );

    let mut node = spawn(&config, "secondary", &env);
    converges(&config, &env);
    at_most_twice(&setup, 1..=40);
    let s = ok(&config, &["status", "--json"], &env);
    let json: serde_json::Value = serde_json::from_str(&s).expect("json");
    assert_eq!(json["widgets_synced_count"], 40, "{json}");
    signal(&node, "-TERM");
    assert!(wait(&mut node).success());
    signal(&primary_node, "-TERM");
    assert!(wait(&mut primary_node).success());
}

/// A root-only tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        // Mounting needs root (`id -u` prints 0).
        let uid = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            eprintln!("SKIPPED: the disk-full test needs root to mount a tmpfs");
            assert!(
                std::env::var("CI").is_err(),
                "CI runs as root and must run this test"
            );
            return None;
        }
        std::fs::create_dir_all(path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount");
        assert!(status.success(), "mount tmpfs");
        Some(Tmpfs(path.to_owned()))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("remount");
        assert!(status.success(), "remount tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_store_fails_the_large_object_only_and_converges_once_space_returns() {
    let (setup, mut primary_node, url) = primary();
    let env = [("GEO_SECRET", setup.secret.as_str())];
    let (config, root) = secondary(&setup, &url, "d");
    // The store on a 64 MiB file system; the tracking database stays off it.
    let Some(fs) = Tmpfs::mount(&root, "64M") else {
        return;
    };
    let mut node = spawn(&config, "secondary", &env);
    let db = setup.dir.path().join("d.db");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let row = |id: i64| -> Option<(i16, Option<String>)> {
        rt.block_on(async {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
                .await
                .ok()?;
            let r = sqlx::query_as(
                "SELECT state, last_sync_failure FROM widget_registry WHERE widget_id = ?1",
            )
            .bind(id)
            .fetch_optional(&pool)
            .await
            .ok()?;
            pool.close().await;
            r
        })
    };
    let start = Instant::now();
    loop {
        let big = row(1);
        let small_synced = (2..=30).all(|id| row(id).is_some_and(|(s, _)| s == 2));
        if let Some((3, Some(reason))) = &big
            && small_synced
        {
            assert!(reason.contains("No space left on device"), "{reason}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "big {big:?}, small synced {small_synced}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        temp_files(&root).is_empty(),
        "the failed download's temp file is removed"
    );
    assert!(
        !root
            .join(geo_examples::app::key(geo_examples::app::Kind::Widget, 1))
            .exists()
    );

    // Space returns; the backoff elapses (the operator could also `geo resync`).
    fs.resize("512M");
    rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .expect("db");
        sqlx::query("UPDATE widget_registry SET retry_at = 0 WHERE state = 3")
            .execute(&pool)
            .await
            .expect("update");
        pool.close().await;
    });
    converges(&config, &env);
    signal(&node, "-TERM");
    assert!(wait(&mut node).success());
    signal(&primary_node, "-TERM");
    assert!(wait(&mut primary_node).success());
}

#[test]
fn the_application_killed_around_its_commit_leaves_rows_and_events_together() {
    let (setup, mut primary_node, _url) = primary();
    let status = |what: &str| -> i64 {
        let s = ok(&setup.primary, &["status", "--json"], &[]);
        let json: serde_json::Value = serde_json::from_str(&s).expect("json");
        json[what].as_i64().unwrap_or(0)
    };
    let (records, events) = (status("widgets_count"), status("last_event_id"));
    assert_eq!(records, 30);

    // Killed after writing the objects, before committing rows and events: neither exists.
    let o = geo(
        &setup.primary,
        &["app-create", "widget", "31", "35"],
        &[("FAILPOINTS", "app::before_commit=return")],
    );
    assert!(
        !o.status.success(),
        "the fail point stopped the application"
    );
    assert_eq!(status("widgets_count"), records, "no row without its event");
    assert_eq!(status("last_event_id"), events, "no event without its row");

    // Killed just after the commit: both exist, one event per row.
    let o = geo(
        &setup.primary,
        &["app-create", "widget", "36", "40"],
        &[("FAILPOINTS", "app::after_commit=return")],
    );
    assert!(
        !o.status.success(),
        "the fail point stopped the application"
    );
    assert_eq!(status("widgets_count"), records + 5);
    assert_eq!(status("last_event_id"), events + 5);
    signal(&primary_node, "-TERM");
    assert!(wait(&mut primary_node).success());
}

#[test]
fn a_full_tracking_database_stops_the_work_says_why_and_recovers() {
    let (setup, mut primary_node, url) = primary();
    let env = [("GEO_SECRET", setup.secret.as_str())];
    let (config, _root) = secondary(&setup, &url, "e");
    // The tracking database on a small file system of its own.
    let dbdir = setup.dir.path().join("e-db");
    let Some(_fs) = Tmpfs::mount(&dbdir, "16M") else {
        return;
    };
    let text = std::fs::read_to_string(&config).expect("config");
    let moved = text.replace(
        &format!("sqlite://{}/e.db", setup.dir.path().display()),
        &format!("sqlite://{}/e.db", dbdir.display()),
    );
    assert_ne!(text, moved);
    std::fs::write(&config, moved).expect("config");
    let mut node = spawn(&config, "secondary", &env);
    // Once the node has migrated its database, fill the file system to the last byte.
    let start = Instant::now();
    while !geo(&config, &["status", "--json"], &env).status.success() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the secondary never started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let filler = dbdir.join("filler");
    {
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0_u8; 64 * 1024];
        while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
        let _ = f.sync_all();
    }
    // The workers fail their writes and say why (the log is at trace).
    let log = config.with_extension("log");
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("database or disk is full") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no worker said the database is full"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        node.try_wait().expect("wait").is_none(),
        "the node keeps running"
    );
    // Space returns: the same process recovers and converges.
    std::fs::remove_file(&filler).expect("free space");
    let start = Instant::now();
    while !geo(&config, &["check"], &env).status.success() {
        if start.elapsed() > Duration::from_secs(120) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let warnings: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            panic!(
                "never recovered; the last warnings:\n{}",
                warnings[warnings.len().saturating_sub(15)..].join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    signal(&node, "-TERM");
    assert!(wait(&mut node).success());
    signal(&primary_node, "-TERM");
    assert!(wait(&mut primary_node).success());
}
