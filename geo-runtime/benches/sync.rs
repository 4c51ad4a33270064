//! Blob sync throughput on loopback: a primary serving from its store, a secondary syncing into
//! a fresh directory with durable writes, SHA-256 and registry state, next to `rsync -a` of the
//! same tree (no fsync, no state) measured in the same run.
//!
//! `cargo bench -p geo-runtime --bench sync` (release). GEO_BENCH_SMALL (default 10000 files of
//! 4 KiB), GEO_BENCH_LARGE (default 10 files of 100 MiB), GEO_BENCH_CAPACITY (default 32 at once), GEO_BENCH_BATCH (default 32 small objects per request), GEO_BENCH_DIR (where the trees go; default
//! the system's temp directory).

use std::path::Path;
use std::time::{Duration, Instant};

use geo_runtime::db;
use geo_runtime::node::nodes::add_secondary;
use geo_runtime::node::{Node, NodeConfig, PrimaryClient, PrimaryConfig};
use geo_runtime::registry::Registry;
use geo_runtime::storage::LocalStore;
use geo_runtime::testing::{self, TestDatabase};
use geo_runtime::worker::sync::{BlobSync, SyncConfig};
use geo_runtime::{NodeRole, Replicator, ReplicatorSet};

mod common;
use common::{WidgetReplicator, env, exec};

/// A directory for one tree, under GEO_BENCH_DIR when set (another file system), else the
/// system's temp directory.
fn tree_dir() -> tempfile::TempDir {
    match std::env::var_os("GEO_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("tempdir")
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds this process has used (user + system), from /proc/self/stat.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces): utime and stime are the
            // 12th and 13th of them, in clock ticks (100 per second on Linux).
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

fn rsync(from: &Path, to: &Path) -> Duration {
    let t = Instant::now();
    let status = std::process::Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", from.display()))
        .arg(to)
        .status()
        .expect("run rsync (apt-get install rsync)");
    assert!(status.success());
    t.elapsed()
}

/// `rsync -a rsync://…/src/ <to>` from an rsync daemon serving `from` on loopback (the
/// network copy a user would set up instead); the daemon starts before the clock does.
fn rsync_daemon(from: &Path, to: &Path) -> Duration {
    let conf_dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    // As root the daemon would switch to `nobody`, which cannot write the secondary's tree.
    let root = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:\t0\t")));
    let conf = conf_dir.path().join("rsyncd.conf");
    std::fs::write(
        &conf,
        format!(
            "use chroot = false\n{}[src]\npath = {}\nread only = true\n",
            if root { "uid = 0\ngid = 0\n" } else { "" },
            from.display()
        ),
    )
    .expect("write rsyncd.conf");
    let mut daemon = std::process::Command::new("rsync")
        .arg("--daemon")
        .arg("--no-detach")
        .arg(format!("--config={}", conf.display()))
        .arg(format!("--port={port}"))
        .arg("--address=127.0.0.1")
        .spawn()
        .expect("run rsync --daemon");
    let up = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            up.elapsed() < Duration::from_secs(10),
            "rsync daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let t = Instant::now();
    let status = std::process::Command::new("rsync")
        .arg("-a")
        .arg(format!("rsync://127.0.0.1:{port}/src/"))
        .arg(to)
        .status()
        .expect("run rsync");
    let took = t.elapsed();
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(status.success(), "rsync from the daemon failed");
    took
}

/// Syncs `count` files of `size` bytes; prints files/s and MB/s next to rsync.
async fn run(label: &str, tracking: TestDatabase, count: usize, size: usize, capacity: usize) {
    if count == 0 {
        return;
    }
    let primary_db = testing::sqlite().await;
    let set = ReplicatorSet::linked().expect("linked");
    exec(
        &primary_db,
        "CREATE TABLE widgets (id BIGINT PRIMARY KEY, file TEXT NOT NULL)",
    )
    .await;
    let pdir = tree_dir();
    let node = Node::start(
        NodeConfig::Primary(PrimaryConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            pdir.path(),
        )),
        &primary_db,
        &set,
    )
    .await
    .expect("primary");
    // The primary's tree: files written directly (not part of the measurement).
    for id in 1..=count as i64 {
        let dir = pdir.path().join(format!("w/{}", id % 100));
        std::fs::create_dir_all(&dir).expect("mkdir");
        // Written in 1 MiB pieces, so the bench's own memory stays out of the RSS figure.
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(dir.join(format!("{id}"))).expect("create"),
        );
        let mut left = size;
        let piece: Vec<u8> = (0..size.min(1 << 20))
            .map(|i| (i as u64 * 7 + id as u64) as u8)
            .collect();
        while left > 0 {
            let n = left.min(piece.len());
            std::io::Write::write_all(&mut f, &piece[..n]).expect("write");
            left -= n;
        }
    }
    exec(&primary_db, &format!(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {count}) INSERT INTO widgets SELECT i, 'w/' || (i % 100) || '/' || i FROM s"
    )).await;
    // The primary's tree is on disk before the clock starts: the secondary's flushes must not
    // pay for writing it, nor rsync's reads for it.
    assert!(
        std::process::Command::new("sync")
            .status()
            .expect("run sync")
            .success()
    );
    let creds = add_secondary(&primary_db, "bench", "http://bench.invalid")
        .await
        .expect("node");
    let url = format!("http://{}", node.local_addr().expect("addr"));

    db::migrate(&tracking, NodeRole::Secondary, &set)
        .await
        .expect("migrate");
    let registry = Registry::new(&tracking, WidgetReplicator::DESCRIPTOR);
    let ids: Vec<i64> = (1..=count as i64).collect();
    registry
        .insert_pending(&ids, geo_runtime::db::dialect::now())
        .await
        .expect("pending");
    let sdir = tree_dir();
    let client = PrimaryClient::new(
        &url,
        &creds.access_key,
        creds.secret,
        Duration::from_secs(60),
    )
    .expect("client");
    let sync = BlobSync::new(
        &tracking,
        &set,
        client,
        LocalStore::new(sdir.path()),
        SyncConfig {
            files_max_capacity: capacity,
            idle_wait: Duration::ZERO,
            max_object_size: None,
            batch_size: env("GEO_BENCH_BATCH", 32),
            ..SyncConfig::default()
        },
    );
    let t = Instant::now();
    let cpu = cpu_seconds();
    let mut synced = 0;
    let mut bytes = 0;
    while synced < count {
        let r = sync.step().await.expect("round");
        assert_eq!(r.failed, 0, "failures during the bench");
        synced += r.synced;
        bytes += r.bytes;
    }
    let took = t.elapsed();
    let cpu = cpu_seconds() - cpu;
    let rss = peak_rss_mib();
    // rsync right after, into fresh directories; the file system's inode allocation after many
    // deletes makes single figures noisy, so compare within one run.
    let rdir = tree_dir();
    let local = rsync(pdir.path(), rdir.path());
    let ddir = tree_dir();
    let daemon = rsync_daemon(pdir.path(), ddir.path());
    let secs = took.as_secs_f64();
    println!(
        "{label:<28} {count:>6} x {size:>9} B: {secs:>7.3} s = {:>7.0} files/s {:>7.1} MB/s (capacity {capacity}, CPU {:.1} cores, peak RSS {rss:.0} MiB)",
        count as f64 / secs,
        bytes as f64 / 1e6 / secs,
        cpu / secs,
    );
    for (anchor, t) in [("rsync -a", local), ("rsync daemon", daemon)] {
        let t = t.as_secs_f64();
        println!(
            "  {anchor:<26} {:>7.0} files/s {:>7.1} MB/s; geo-dsl at {:.2}x",
            count as f64 / t,
            bytes as f64 / 1e6 / t,
            t / secs
        );
    }
    node.shutdown().await;
    // Deleted at the end of the process, not here: on ext4 without a journal, creating files
    // slows down for a while after many deletions, which would burden the next run.
    KEEP.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .extend([pdir, sdir, rdir, ddir]);
}

static KEEP: std::sync::Mutex<Vec<tempfile::TempDir>> = std::sync::Mutex::new(Vec::new());

#[tokio::main]
async fn main() {
    let small = env("GEO_BENCH_SMALL", 10_000);
    let large = env("GEO_BENCH_LARGE", 10);
    let capacity = env("GEO_BENCH_CAPACITY", 32);
    println!(
        "geo-runtime sync benchmark: durable writes (fsync + rename + directory fsync), SHA-256, registry state; one run each"
    );
    run(
        "small, SQLite tracking",
        testing::sqlite().await,
        small,
        4096,
        capacity,
    )
    .await;
    if let Some(pg) = testing::postgres().await {
        run("small, PostgreSQL tracking", pg, small, 4096, capacity).await;
    }
    run(
        "large, SQLite tracking",
        testing::sqlite().await,
        large,
        100 * 1024 * 1024,
        capacity.min(4),
    )
    .await;
    drop(std::mem::take(
        &mut *KEEP
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    ));
}
