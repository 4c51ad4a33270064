//! The crash suite (feature `failpoints`): a secondary run as a separate process is killed
//! mid-work, then restarted; it must converge to the primary's bytes, leave no temp file, and
//! never publish a partial file at a final path. Convergence is judged by `geo check`, which
//! hashes every local copy itself and compares it with the primary's checksum.
//!
//! `cargo nextest run -p geo-examples --features failpoints --test crash`
#![cfg(feature = "failpoints")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const GEO: &str = env!("CARGO_BIN_EXE_geo");

fn geo(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(GEO);
    cmd.args(args)
        .env("GEO_CONFIG", config)
        .env_remove("FAILPOINTS")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("geo runs")
}

fn ok(config: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let o = geo(config, args, env);
    assert!(
        o.status.success(),
        "geo {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn spawn(config: &Path, role: &str, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(GEO);
    cmd.arg(role)
        .env("GEO_CONFIG", config)
        .env_remove("FAILPOINTS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn geo")
}

fn first_line_after(child: &mut Child, prefix: &str) -> String {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(child.stdout.as_mut().expect("stdout"));
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).expect("read") > 0,
            "no {prefix:?}"
        );
        if let Some(rest) = line.trim_end().strip_prefix(prefix) {
            return rest.to_owned();
        }
    }
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

struct Setup {
    dir: tempfile::TempDir,
    primary: PathBuf,
    secret: String,
    access_key: String,
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
    let field = |name: &str| {
        creds
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = \"")))
            .and_then(|v| v.strip_suffix('"'))
            .expect("credential")
            .to_owned()
    };
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
    let url = first_line_after(&mut node, "primary API listening on ");
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
    let s = ok(&config, &["status", "--json"], &env);
    let json: serde_json::Value = serde_json::from_str(&s).expect("json");
    assert_eq!(json["widgets_synced_count"], 40, "{json}");
    signal(&node, "-TERM");
    assert!(wait(&mut node).success());
    signal(&primary_node, "-TERM");
    assert!(wait(&mut primary_node).success());
}
