//! The primary's verification throughput (SHA-256 of every object, recorded in the database),
//! with one and with two workers, next to `sha256sum` over the same files and to raw `sha2` in
//! this process, all in the same run.
//!
//! `cargo bench -p geo-runtime --bench verify` (release; needs coreutils' sha256sum).
//! GEO_BENCH_LARGE (default 8 files of 64 MiB) and GEO_BENCH_SMALL (default 5000 files of 4 KiB).

use std::path::Path;
use std::time::{Duration, Instant};

use geo_runtime::db;
use geo_runtime::storage::LocalStore;
use geo_runtime::testing;
use geo_runtime::worker::verify::{PrimaryVerification, VerifyConfig};
use geo_runtime::{NodeRole, ReplicatorSet};
use sha2::{Digest, Sha256};
use sqlx::AssertSqlSafe;

mod common;
use common::env;

fn write_files(root: &Path, count: usize, size: usize) {
    let piece: Vec<u8> = (0..size.min(1 << 20)).map(|i| (i * 31 + 7) as u8).collect();
    for id in 1..=count {
        let dir = root.join(format!("w/{}", id % 64));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(dir.join(id.to_string())).expect("create"),
        );
        let mut left = size;
        // Vary the first byte so files differ.
        let mut first = piece.clone();
        if let Some(b) = first.first_mut() {
            *b = id as u8;
        }
        while left > 0 {
            let n = left.min(first.len());
            std::io::Write::write_all(&mut f, &first[..n]).expect("write");
            left -= n;
        }
    }
}

fn sha256sum(root: &Path) -> Duration {
    let t = Instant::now();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "find {} -type f -print0 | xargs -0 sha256sum > /dev/null",
            root.display()
        ))
        .status()
        .expect("sha256sum");
    assert!(status.success());
    t.elapsed()
}

fn raw_sha2(root: &Path) -> Duration {
    let t = Instant::now();
    let mut dirs = vec![root.to_path_buf()];
    let mut buf = vec![0u8; 1 << 20];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("ls").flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            let mut f = std::fs::File::open(&p).expect("open");
            let mut h = Sha256::new();
            loop {
                let n = std::io::Read::read(&mut f, &mut buf).expect("read");
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            std::hint::black_box(h.finalize());
        }
    }
    t.elapsed()
}

async fn run(label: &str, count: usize, size: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_files(dir.path(), count, size);
    let bytes = (count * size) as f64;
    let sha = sha256sum(dir.path());
    let raw = raw_sha2(dir.path());
    for workers in [1usize, 2] {
        let primary = testing::sqlite().await;
        let set = ReplicatorSet::linked().expect("set");
        let pool = primary.as_sqlite_writer().expect("sqlite").clone();
        sqlx::query("CREATE TABLE widgets (id INTEGER PRIMARY KEY, file TEXT NOT NULL)")
            .execute(&pool)
            .await
            .expect("table");
        db::migrate(&primary, NodeRole::Primary, &set)
            .await
            .expect("migrate");
        sqlx::query(AssertSqlSafe(format!(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {count}) INSERT INTO widgets SELECT i, 'w/' || (i % 64) || '/' || i FROM s"
        )))
        .execute(&pool)
        .await
        .expect("rows");
        let v = PrimaryVerification::new(
            &primary,
            &set,
            LocalStore::new(dir.path()),
            VerifyConfig {
                verification_max_capacity: workers,
                ..VerifyConfig::default()
            },
        );
        let t = Instant::now();
        let mut done = 0;
        while done < count {
            let r = v.step().await.expect("round");
            assert_eq!(r.failed, 0);
            done += r.succeeded;
            if r.claimed == 0 && done < count {
                panic!("verification stalled at {done}/{count}");
            }
        }
        let took = t.elapsed();
        println!(
            "{label:<26} {workers} worker(s): {count:>6} files in {:>6.3} s = {:>6.2} GB/s {:>8.0} files/s | sha256sum {:>5.2} GB/s (ratio {:.2}) | raw sha2, 1 core {:>5.2} GB/s (ratio {:.2})",
            took.as_secs_f64(),
            bytes / 1e9 / took.as_secs_f64(),
            count as f64 / took.as_secs_f64(),
            bytes / 1e9 / sha.as_secs_f64(),
            sha.as_secs_f64() / took.as_secs_f64(),
            bytes / 1e9 / raw.as_secs_f64(),
            raw.as_secs_f64() / took.as_secs_f64(),
        );
    }
}

#[tokio::main]
async fn main() {
    println!(
        "geo-runtime verification benchmark (primary; SHA-256 recorded per object); one run each"
    );
    let large = env("GEO_BENCH_LARGE", 8);
    let small = env("GEO_BENCH_SMALL", 5000);
    if large > 0 {
        run("large (64 MiB files)", large, 64 * 1024 * 1024).await;
    }
    if small > 0 {
        run("small (4 KiB files)", small, 4096).await;
    }
}
