//! Verification end to end, through running nodes on loopback, for both places the primary
//! keeps its verification state (a `<name>_states` table for widgets, inline columns for docs):
//! the primary checksums 1,000 objects and its checksums equal `sha256sum`'s; the secondary syncs
//! and verifies them; a flipped byte and a truncated file in the secondary's store are found by
//! the secondary's own re-verification and healed with no action on the primary. The status and
//! the metrics are read through the admin endpoint over HTTP and checked against the files.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Widget, WidgetReplicator, exec, scalar_i64};
use geo_runtime::db::{Conn, Dialect};
use geo_runtime::events::{CursorConfig, StartPosition};
use geo_runtime::node::SecondaryConfig;
use geo_runtime::node::nodes::add_secondary;
use geo_runtime::node::{AdminConfig, Node, NodeConfig, NodeHandle, PrimaryConfig, Secret};
use geo_runtime::status::NodeStatus;
use geo_runtime::storage::{LocalStore, ObjectKey};
use geo_runtime::worker::sync::SyncConfig;
use geo_runtime::worker::verify::{SecondaryVerifyConfig, VerifyConfig};
use geo_runtime::{Database, ReplicableModel, Replicator, ReplicatorDescriptor};
use sha2::{Digest, Sha256};

/// A model whose verification columns live on its own table.
#[geo_runtime::replicable(
    strategy = "blob",
    table = "docs",
    verification = "inline",
    enabled_by_default = true
)]
#[derive(Debug, Clone)]
pub struct Doc {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub path: String,
}

const PER_MODEL: i64 = 500;
const DEADLINE: Duration = Duration::from_secs(120);

/// One replicable under test: its descriptor, table, object keys and contents.
struct Kind {
    d: &'static ReplicatorDescriptor,
    table: &'static str,
}

const KINDS: [Kind; 2] = [
    Kind {
        d: WidgetReplicator::DESCRIPTOR,
        table: "widgets",
    },
    Kind {
        d: DocReplicator::DESCRIPTOR,
        table: "docs",
    },
];

fn key(kind: &Kind, id: i64) -> String {
    format!("{}/{}/{id}.bin", kind.table, id % 7)
}

fn content(kind: &Kind, id: i64) -> Vec<u8> {
    let size = match id % 100 {
        0 => 0,
        1 => 1024 * 1024 + 3,
        _ => (id as usize * 131) % 9_000,
    };
    let mut rng = fastrand::Rng::with_seed((id as u64) << 1 | u64::from(kind.table == "docs"));
    (0..size).map(|_| rng.u8(..)).collect()
}

async fn publish_batch(db: &Database, kind: &Kind, ids: std::ops::RangeInclusive<i64>) {
    let mut tx = db.begin_write().await.expect("begin");
    for id in ids {
        let path = key(kind, id);
        let sql = format!(
            "INSERT INTO {} (id, {}) VALUES ({}, '{path}')",
            kind.table,
            if kind.table == "docs" { "path" } else { "file" },
            id // ids and keys are ours: no user input reaches this string
        );
        match tx.conn() {
            Conn::Postgres(c) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *c)
                    .await
                    .expect("insert");
            }
            Conn::Sqlite(c) => {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *c)
                    .await
                    .expect("insert");
            }
        }
        if kind.table == "widgets" {
            Widget { id, file: path }.publish_created(tx.conn()).await
        } else {
            Doc { id, path }.publish_created(tx.conn()).await
        }
        .expect("publish");
    }
    tx.commit().await.expect("commit");
}

fn token() -> Secret {
    Secret::generate()
}

async fn get(url: &str, token: Option<&Secret>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t.expose());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

/// Prometheus text → series → value.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample line");
            (
                series.to_owned(),
                value
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("a number: {l}")),
            )
        })
        .collect()
}

fn counts<'a>(s: &'a NodeStatus, name: &str) -> &'a geo_runtime::status::ReplicableStatus {
    s.replicables
        .iter()
        .find(|r| r.name == name)
        .expect("replicable in status")
}

/// `sha256sum` of every file, keyed by path relative to `root`.
fn sha256sum(root: &Path, keys: &[String]) -> BTreeMap<String, String> {
    let out = std::process::Command::new("sha256sum")
        .args(keys)
        .current_dir(root)
        .output()
        .expect("sha256sum runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| {
            let (sum, path) = l.split_once("  ").expect("sum  path");
            (path.to_owned(), sum.to_owned())
        })
        .collect()
}

/// The primary's recorded checksums, hex, keyed by object key.
async fn recorded_checksums(db: &Database, kind: &Kind) -> BTreeMap<String, String> {
    let sql = format!(
        "SELECT m.id, v.verification_checksum FROM {} m JOIN {} v ON v.{} = m.id WHERE v.verification_state = 2",
        kind.table,
        kind.d.verification_table(),
        match kind.d.verification {
            geo_runtime::replicator::VerificationStorage::Inline => "id",
            geo_runtime::replicator::VerificationStorage::SeparateTable { .. } => "widget_id",
        }
    );
    let rows: Vec<(i64, Vec<u8>)> = match db.dialect() {
        Dialect::Postgres => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(db.as_postgres().expect("pg"))
            .await
            .expect("checksums"),
        Dialect::Sqlite => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(db.as_sqlite_readers().expect("sqlite"))
            .await
            .expect("checksums"),
    };
    rows.into_iter()
        .map(|(id, sum)| (key(kind, id), hex::encode(&sum)))
        .collect()
}

struct Site {
    handle: NodeHandle,
    admin: String,
    token: Secret,
}

impl Site {
    async fn status(&self) -> std::sync::Arc<NodeStatus> {
        self.handle.status().refresh().await.expect("status")
    }
}

async fn start_primary(db: &Database, root: &Path) -> Site {
    exec(db, "CREATE TABLE widgets (id BIGINT PRIMARY KEY, file TEXT NOT NULL); CREATE TABLE gizmos (id BIGINT PRIMARY KEY, file TEXT NOT NULL); CREATE TABLE docs (id BIGINT PRIMARY KEY, path TEXT NOT NULL)").await;
    let token = token();
    let mut config = PrimaryConfig::new("127.0.0.1:0".parse().expect("addr"), root);
    config.name = "east".into();
    config.verification = VerifyConfig {
        idle_wait: Duration::from_millis(50),
        ..VerifyConfig::default()
    };
    config.admin = Some(AdminConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        token: token.clone(),
    });
    let handle = Node::start(NodeConfig::Primary(config), db, &common::set())
        .await
        .expect("primary");
    Site {
        admin: format!("http://{}", handle.admin_addr().expect("admin")),
        handle,
        token,
    }
}

async fn start_secondary(primary: &Database, url: &str, db: &Database, root: &Path) -> Site {
    let creds = add_secondary(primary, "west", "http://west.invalid")
        .await
        .expect("register");
    let mut config = SecondaryConfig::new("west", url, &creds.access_key, creds.secret, root);
    config.sync = SyncConfig {
        files_max_capacity: 10,
        idle_wait: Duration::from_millis(20),
        max_object_size: None,
        ..SyncConfig::default()
    };
    config.cursor = CursorConfig {
        idle_wait: Duration::from_millis(20),
        start: StartPosition::Beginning,
        ..CursorConfig::default()
    };
    config.verification = SecondaryVerifyConfig {
        idle_wait: Duration::from_millis(50),
        disabled_recheck: Duration::from_millis(100),
        ..SecondaryVerifyConfig::default()
    };
    config.consistency_interval = Duration::from_millis(500);
    let token = token();
    config.admin = Some(AdminConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        token: token.clone(),
    });
    let handle = Node::start(NodeConfig::Secondary(config), db, &common::set())
        .await
        .expect("secondary");
    Site {
        admin: format!("http://{}", handle.admin_addr().expect("admin")),
        handle,
        token,
    }
}

fn all_keys() -> Vec<(usize, i64, String)> {
    KINDS
        .iter()
        .enumerate()
        .flat_map(|(k, kind)| (1..=PER_MODEL).map(move |id| (k, id, key(kind, id))))
        .collect()
}

fn sha_hex(path: &Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|b| hex::encode(Sha256::digest(&b)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sites_verify_and_the_secondary_heals_corruption_on_its_own() {
    for (pdb, sdb) in common::empty_pairs().await {
        let label = pdb.label().to_owned();
        let pdir = tempfile::tempdir().expect("tempdir");
        let sdir = tempfile::tempdir().expect("tempdir");
        let (proot, sroot): (PathBuf, PathBuf) = (pdir.path().into(), sdir.path().into());
        let primary = start_primary(&pdb, &proot).await;
        let url = format!(
            "http://{}",
            primary.handle.local_addr().expect("primary address")
        );

        // 1,000 objects on the primary, their model rows and events.
        let store = LocalStore::new(&proot);
        for (k, id, key) in all_keys() {
            store
                .write_bytes(
                    &ObjectKey::parse(&key).expect("key"),
                    bytes::Bytes::from(content(&KINDS[k], id)),
                    None,
                )
                .await
                .expect("write");
        }
        for kind in &KINDS {
            for start in (1..=PER_MODEL).step_by(100) {
                publish_batch(&pdb, kind, start..=(start + 99).min(PER_MODEL)).await;
            }
        }
        let secondary = start_secondary(&pdb, &url, &sdb, &sroot).await;
        let started = Instant::now();

        // The primary checksums everything; its checksums are sha256sum's.
        common::eventually("the primary checksums every object", DEADLINE, || async {
            let s = primary.status().await;
            for kind in &KINDS {
                let c = counts(&s, kind.d.replicable_name);
                if c.checksummed_count != Some(PER_MODEL) {
                    return Err(format!("{c:?}"));
                }
            }
            Ok(())
        })
        .await;
        eprintln!("{label}: primary verified after {:?}", started.elapsed());
        let keys: Vec<String> = all_keys().into_iter().map(|(_, _, k)| k).collect();
        let expected = sha256sum(&proot, &keys);
        assert_eq!(expected.len(), 2 * PER_MODEL as usize);
        let mut recorded = BTreeMap::new();
        for kind in &KINDS {
            recorded.extend(recorded_checksums(&pdb, kind).await);
        }
        assert_eq!(
            recorded, expected,
            "{label}: the primary's checksums are sha256sum's"
        );

        // The secondary syncs and verifies every copy.
        common::eventually(
            "the secondary syncs and verifies every copy",
            DEADLINE,
            || async {
                let s = secondary.status().await;
                for kind in &KINDS {
                    let c = counts(&s, kind.d.replicable_name);
                    if (c.synced_count, c.verified_count) != (Some(PER_MODEL), Some(PER_MODEL)) {
                        return Err(format!("{c:?}"));
                    }
                }
                Ok(())
            },
        )
        .await;
        eprintln!("{label}: secondary verified after {:?}", started.elapsed());
        for key in &keys {
            assert_eq!(
                sha_hex(&sroot.join(key)).as_ref(),
                expected.get(key),
                "{label}: {key}"
            );
        }

        // Status and metrics over HTTP, with the admin token and only with it.
        let (code, body) = get(&format!("{}/status", secondary.admin), None).await;
        assert_eq!(code, 401, "{label}: no token");
        assert!(!body.contains(secondary.token.expose()));
        let (code, _) = get(
            &format!("{}/metrics", secondary.admin),
            Some(&primary.token),
        )
        .await;
        assert_eq!(code, 401, "{label}: another node's token");
        let (code, body) = get(
            &format!("{}/status", secondary.admin),
            Some(&secondary.token),
        )
        .await;
        assert_eq!(code, 200, "{label}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("status json");
        assert_eq!(json["widgets_synced_count"], PER_MODEL, "{label}: {json}");
        assert_eq!(json["docs_verified_count"], PER_MODEL, "{label}: {json}");
        assert_eq!(json["widgets_synced_in_percentage"], 100, "{label}: {json}");
        assert_eq!(json["health_status"], "Healthy", "{label}: {json}");
        let (code, body) = get(&format!("{}/status", primary.admin), Some(&primary.token)).await;
        assert_eq!(code, 200);
        let json: serde_json::Value = serde_json::from_str(&body).expect("status json");
        assert_eq!(json["docs_checksummed_count"], PER_MODEL, "{label}: {json}");
        assert_eq!(json["widgets_count"], PER_MODEL, "{label}: {json}");

        // Corruption at rest on the secondary: a flipped byte, a truncated file.
        let flipped = sroot.join(key(&KINDS[0], 2));
        let mut bytes = std::fs::read(&flipped).expect("read");
        bytes[7] ^= 0x40;
        std::fs::write(&flipped, &bytes).expect("flip");
        let truncated = sroot.join(key(&KINDS[1], 3));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&truncated)
            .and_then(|f| f.set_len(10))
            .expect("truncate");
        let events_before = scalar_i64(&pdb, "SELECT COUNT(*) FROM geo_events").await;
        let primary_checksums_before = recorded.clone();

        // A week passes: the copies are due for the secondary's own re-verification.
        let week_ago = match sdb.dialect() {
            Dialect::Postgres => "now() - interval '8 days'".to_owned(),
            Dialect::Sqlite => {
                (chrono::Utc::now().timestamp_micros() - 8 * 86_400_000_000).to_string()
            }
        };
        for kind in &KINDS {
            exec(
                &sdb,
                &format!(
                    "UPDATE {} SET verified_at = {week_ago}",
                    kind.d.registry_table
                ),
            )
            .await;
        }
        common::eventually(
            "the secondary finds both corrupted copies",
            DEADLINE,
            || async {
                let failed = |name| {
                    secondary
                        .handle
                        .metrics()
                        .verifications_total(name, "failed")
                };
                let s = secondary.status().await;
                let resyncing: Vec<_> = KINDS
                    .iter()
                    .map(|k| counts(&s, k.d.replicable_name).failed_count)
                    .collect();
                if failed("widget") < 1 || failed("doc") < 1 || resyncing != [Some(1), Some(1)] {
                    return Err(format!("not detected yet: {resyncing:?}"));
                }
                Ok(())
            },
        )
        .await;
        eprintln!("{label}: corruption found after {:?}", started.elapsed());
        // The first retry waits 16-74 s (Geo's backoff): let that time pass.
        for kind in &KINDS {
            exec(
                &sdb,
                &format!(
                    "UPDATE {} SET retry_at = {week_ago} WHERE state = 3",
                    kind.d.registry_table
                ),
            )
            .await;
        }
        common::eventually("the secondary heals both copies", DEADLINE, || async {
            let s = secondary.status().await;
            for kind in &KINDS {
                let c = counts(&s, kind.d.replicable_name);
                if (c.synced_count, c.verified_count) != (Some(PER_MODEL), Some(PER_MODEL)) {
                    return Err(format!("{c:?}"));
                }
            }
            for path in [&flipped, &truncated] {
                let key = path.strip_prefix(&sroot).expect("under root");
                if sha_hex(path).as_ref() != expected.get(key.to_str().expect("utf-8")) {
                    return Err(format!("{} not restored yet", key.display()));
                }
            }
            Ok(())
        })
        .await;
        eprintln!("{label}: healed after {:?}", started.elapsed());
        for key in &keys {
            assert_eq!(
                sha_hex(&sroot.join(key)).as_ref(),
                expected.get(key),
                "{label}: {key}"
            );
        }
        // Healing needed nothing from the primary but the bytes.
        assert_eq!(
            scalar_i64(&pdb, "SELECT COUNT(*) FROM geo_events").await,
            events_before,
            "{label}: no event"
        );
        let mut after = BTreeMap::new();
        for kind in &KINDS {
            after.extend(recorded_checksums(&pdb, kind).await);
        }
        assert_eq!(
            after, primary_checksums_before,
            "{label}: primary untouched"
        );

        // The metrics endpoint parses and agrees with the files.
        let (code, body) = get(
            &format!("{}/metrics", secondary.admin),
            Some(&secondary.token),
        )
        .await;
        assert_eq!(code, 200);
        let metrics = parse_prometheus(&body);
        assert_eq!(
            metrics.get("geo_widgets_synced{name=\"west\"}"),
            Some(&(PER_MODEL as f64)),
            "{label}: {body}"
        );
        assert!(
            metrics
                .get("geo_verification_total{name=\"west\",replicable=\"doc\",outcome=\"failed\"}")
                .is_some_and(|v| *v >= 1.0),
            "{label}: {body}"
        );
        let transferred: f64 = metrics
            .iter()
            .filter(|(k, _)| k.starts_with("geo_sync_bytes_total{"))
            .map(|(_, v)| v)
            .sum();
        let on_disk: u64 = keys
            .iter()
            .map(|k| std::fs::metadata(proot.join(k)).expect("file").len())
            .sum();
        assert!(
            transferred >= on_disk as f64,
            "{label}: {transferred} bytes transferred, {on_disk} on disk"
        );
        assert!(body.contains("geo_sync_download_duration_seconds_count{"));
        assert!(!body.contains(secondary.token.expose()));

        secondary.handle.shutdown().await;
        primary.handle.shutdown().await;
    }
}
