//! Objects in Amazon S3 (the `s3` feature) against a real S3 API on loopback: moto's server
//! (`pip install "moto[server]"`; `.ci/run` installs it). A primary serves from one bucket and a
//! secondary syncs into another, small objects in batches and large ones in multipart uploads.
//!
//! `cargo nextest run -p geo-runtime --features s3 --test s3`. Without moto (`python3 -m
//! moto.server`; `PYTHON` picks another interpreter) the test says it was skipped; with
//! `CI=true` it fails instead.
#![cfg(feature = "s3")]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Widget, WidgetReplicator, exec};
use geo_runtime::Replicator;
use geo_runtime::events::{CursorConfig, StartPosition};
use geo_runtime::node::nodes::add_secondary;
use geo_runtime::node::{Node, PrimaryConfig, SecondaryConfig};
use geo_runtime::registry::Registry;
use geo_runtime::storage::{BlobStore, ObjectKey, ObjectStoreBlobs, Opened};
use geo_runtime::testing;
use geo_runtime::worker::sync::SyncConfig;
use object_store::aws::AmazonS3Builder;

/// The moto server, stopped when dropped.
struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Says the test was skipped, or fails it in CI.
fn skipped(why: &str) -> Option<Moto> {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "moto is needed in CI (pip install \"moto[server]\"): {why}"
    );
    eprintln!("SKIPPED: the S3 test needs moto (pip install \"moto[server]\"): {why}");
    None
}

fn start_moto() -> Option<Moto> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    // `python3 -m moto.server`: works whether or not pip's scripts are on the PATH.
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let child = match Command::new(&python)
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return skipped(&format!("cannot run {python}: {e}")),
    };
    let mut moto = Moto {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        // Exited at once: an interpreter without moto.
        if let Ok(Some(status)) = moto.child.try_wait() {
            return skipped(&format!("{python} -m moto.server exited with {status}"));
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "moto's server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(moto)
}

async fn bucket(moto: &Moto, name: &str) -> ObjectStoreBlobs {
    let created = reqwest::Client::new()
        .put(format!("{}/{name}", moto.url))
        .send()
        .await
        .expect("create bucket");
    assert!(created.status().is_success(), "{}", created.status());
    let s3 = AmazonS3Builder::new()
        .with_endpoint(&moto.url)
        .with_allow_http(true)
        .with_bucket_name(name)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .build()
        .expect("s3");
    let staging =
        std::env::temp_dir().join(format!("geo-s3-staging-{name}-{}", std::process::id()));
    ObjectStoreBlobs::new(Arc::new(s3), staging)
}

/// Sizes: empty, small ones that travel in batches, one over 64 KiB, one in multipart parts.
fn content(id: i64) -> Vec<u8> {
    let size = match id {
        1 => 0,
        2 => 200_000,
        3 => 12 * 1024 * 1024 + 5,
        _ => 100 + (id as usize * 977) % 30_000,
    };
    let mut rng = fastrand::Rng::with_seed(id as u64);
    (0..size).map(|_| rng.u8(..)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_and_a_secondary_on_s3_converge() {
    let Some(moto) = start_moto() else {
        return;
    };
    let source = bucket(&moto, "primary-objects").await;
    let target = bucket(&moto, "secondary-objects").await;

    let pdb = testing::sqlite().await;
    exec(&pdb, "CREATE TABLE widgets (id BIGINT PRIMARY KEY, file TEXT NOT NULL); CREATE TABLE gizmos (id BIGINT PRIMARY KEY, file TEXT NOT NULL)").await;
    let ids: Vec<i64> = (1..=40).collect();
    for &id in &ids {
        let w = Widget {
            id,
            file: format!("widgets/{}/{id}.bin", id % 4),
        };
        let key = ObjectKey::parse(&w.file).expect("key");
        let staged = source
            .stage_bytes(&key, bytes::Bytes::from(content(id)), None)
            .await
            .expect("stage on the primary");
        for r in source.commit(vec![staged]).await {
            r.expect("upload on the primary");
        }
        exec(
            &pdb,
            &format!("INSERT INTO widgets VALUES ({id}, '{}')", w.file),
        )
        .await;
    }
    let unused = tempfile::tempdir().expect("tempdir");
    let primary = Node::start_primary(
        PrimaryConfig::new("127.0.0.1:0".parse().expect("addr"), unused.path()),
        &pdb,
        &common::set(),
        source.clone(),
    )
    .await
    .expect("primary");
    let creds = add_secondary(&pdb, "s3", "http://s3.invalid")
        .await
        .expect("register");

    let sdb = testing::sqlite().await;
    let mut config = SecondaryConfig::new(
        "s3",
        &format!("http://{}", primary.local_addr().expect("addr")),
        &creds.access_key,
        creds.secret,
        unused.path(),
    );
    config.sync = SyncConfig {
        idle_wait: Duration::from_millis(20),
        ..SyncConfig::default()
    };
    config.cursor = CursorConfig {
        idle_wait: Duration::from_millis(20),
        start: StartPosition::Latest,
        ..CursorConfig::default()
    };
    // The records exist before the secondary: the consistency pass finds them.
    let secondary = Node::start_secondary(config, &sdb, &common::set(), target.clone())
        .await
        .expect("secondary");
    let registry = Registry::new(&sdb, WidgetReplicator::DESCRIPTOR);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let counts = registry.count_by_state().await.expect("counts");
        if counts.synced == ids.len() as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "not synced into S3: {counts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for &id in &ids {
        let key = ObjectKey::parse(&format!("widgets/{}/{id}.bin", id % 4)).expect("key");
        let bytes = match target.read_or_open(&key, u64::MAX).await.expect("read") {
            Some(Opened::Whole(b)) => b,
            other => panic!("widget {id}: {other:?}"),
        };
        assert!(
            bytes.as_ref() == content(id).as_slice(),
            "widget {id} differs in the secondary's bucket ({} bytes)",
            bytes.len()
        );
        let row = registry
            .find_by_model_id(id)
            .await
            .expect("find")
            .expect("row");
        assert_eq!(
            row.verification_checksum.as_deref(),
            Some(<sha2::Sha256 as sha2::Digest>::digest(content(id)).as_slice()),
            "widget {id}: the checksum recorded while it streamed"
        );
    }
    secondary.shutdown().await;
    primary.shutdown().await;
}
