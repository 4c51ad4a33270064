//! A primary and a secondary on loopback, for real: HTTP, JWT auth, files on disk, SQLite and
//! PostgreSQL tracking databases.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{self, Primary, fast, start_primary};
use common::{Widget, WidgetReplicator, exec, scalar_i64};
use geo_runtime::db::Dialect;

use geo_runtime::node::nodes::add_secondary;
use geo_runtime::node::{Node, NodeConfig, NodeHandle, SecondaryConfig};
use geo_runtime::registry::Registry;
use geo_runtime::storage::{LocalStore, ObjectKey};
use geo_runtime::testing::{self, TestDatabase};
use geo_runtime::worker::sync::SyncConfig;
use geo_runtime::{Database, ReplicableModel, Replicator};
use sha2::{Digest, Sha256};

async fn start_secondary(primary: &Primary, db: &Database, root: &Path, name: &str) -> NodeHandle {
    cluster::start_secondary(primary, &primary.url, db, root, name, |_| {}).await
}

/// Deterministic content for widget `id`, version `v`.
fn content(id: i64, v: u32) -> Vec<u8> {
    let size = match id % 50 {
        0 => 0,
        7 => 3 * 1024 * 1024 + 17,
        _ => (id as usize * 997) % 65_536,
    };
    let mut rng = fastrand::Rng::with_seed((id as u64) << 8 | u64::from(v));
    (0..size).map(|_| rng.u8(..)).collect()
}

fn widget(id: i64) -> Widget {
    Widget {
        id,
        file: format!("widgets/{}/{id}.bin", id % 10),
    }
}

/// Creates the object, then the model row and its event in one transaction.
async fn create(primary: &Primary, id: i64) {
    primary.create(id, &widget(id).file, &content(id, 0)).await;
}

async fn update(primary: &Primary, id: i64) {
    primary
        .update(id, &widget(id).file, &content(id, 1), true)
        .await;
}

async fn delete(primary: &Primary, id: i64) {
    primary.delete(id).await;
}

fn sha_of(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}

/// The secondary has exactly the primary's live widgets, byte for byte, all synced.
async fn converged(
    primary: &Primary,
    secondary: &Database,
    root: &Path,
    live: &BTreeMap<i64, u32>,
    deleted: &[i64],
) -> Result<(), String> {
    let counts = Registry::new(secondary, WidgetReplicator::DESCRIPTOR)
        .count_by_state()
        .await
        .map_err(|e| e.to_string())?;
    if counts.synced != live.len() as i64 || counts.total() != live.len() as i64 {
        return Err(format!("registry {counts:?}, want {} synced", live.len()));
    }
    let local = LocalStore::new(root);
    for (id, v) in live {
        let key = ObjectKey::parse(&widget(*id).file).expect("key");
        let want: [u8; 32] = Sha256::digest(content(*id, *v)).into();
        if sha_of(&primary.store.path(&key)) != Some(want) {
            return Err(format!("primary copy of {id} is not version {v}"));
        }
        if sha_of(&local.path(&key)) != Some(want) {
            return Err(format!("secondary copy of {id} differs from the primary's"));
        }
    }
    for id in deleted {
        if local
            .path(&ObjectKey::parse(&widget(*id).file).expect("key"))
            .exists()
        {
            return Err(format!("deleted widget {id} still on the secondary's disk"));
        }
    }
    Ok(())
}

async fn wait_for_convergence(
    primary: &Primary,
    secondary: &Database,
    root: &Path,
    live: &BTreeMap<i64, u32>,
    deleted: &[i64],
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match converged(primary, secondary, root, live, deleted).await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("the secondary did not converge: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn pairs() -> Vec<(TestDatabase, TestDatabase)> {
    let mut out = vec![(testing::sqlite().await, testing::sqlite().await)];
    if let Some(p) = testing::postgres().await {
        out.push((p, testing::postgres().await.expect("second schema")));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_converges_on_creates_updates_and_deletes() {
    for (pdb, sdb) in pairs().await {
        let primary = start_primary(pdb).await;
        let root = tempfile::tempdir().expect("tempdir");
        // The secondary starts first: everything arrives through events.
        let secondary = start_secondary(&primary, &sdb, root.path(), "s1").await;
        let mut live = BTreeMap::new();
        for id in 1..=500 {
            create(&primary, id).await;
            live.insert(id, 0);
        }
        for id in (1..=500).step_by(10) {
            update(&primary, id).await;
            live.insert(id, 1);
        }
        let deleted: Vec<i64> = (5..=500).step_by(10).collect();
        for id in &deleted {
            delete(&primary, *id).await;
            live.remove(id);
        }
        wait_for_convergence(&primary, &sdb, root.path(), &live, &deleted).await;
        // Nothing but objects under the root: no temp files left.
        let temp = walk(root.path())
            .into_iter()
            .filter(|p| p.contains(".geo-tmp-"))
            .count();
        assert_eq!(temp, 0, "{}", sdb.label());
        // The secondary reported its cursor: the primary may prune below it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while scalar_i64(&primary.db, "SELECT count(*) FROM geo_secondary_cursors").await == 0 {
            assert!(Instant::now() < deadline, "no cursor report");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        secondary.shutdown().await;
        primary.handle.shutdown().await;
    }
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_secondary_backfills_and_a_restarted_one_catches_up() {
    for (pdb, sdb) in pairs().await {
        let primary = start_primary(pdb).await;
        let mut live = BTreeMap::new();
        for id in 1..=120 {
            create(&primary, id).await;
            live.insert(id, 0);
        }
        // Started late: its cursor starts at the latest event, the backfill brings the rest.
        let root = tempfile::tempdir().expect("tempdir");
        let secondary = start_secondary(&primary, &sdb, root.path(), "late").await;
        wait_for_convergence(&primary, &sdb, root.path(), &live, &[]).await;
        secondary.shutdown().await;

        // Changes while it is down arrive through the cursor when it comes back.
        for id in 121..=150 {
            create(&primary, id).await;
            live.insert(id, 0);
        }
        for id in [3, 4] {
            update(&primary, id).await;
            live.insert(id, 1);
        }
        delete(&primary, 9).await;
        live.remove(&9);
        let mut config = SecondaryConfig::new(
            "late",
            &primary.url,
            "unused",
            geo_runtime::node::Secret::new("unused"),
            root.path(),
        );
        fast(&mut config);
        // Same tracking database and credentials as before (registered once above).
        let (key, secret) = credentials(&primary.db, "late").await;
        config.access_key = key;
        config.secret = secret;
        let again = Node::start(NodeConfig::Secondary(config), &sdb, &common::set())
            .await
            .expect("restart");
        wait_for_convergence(&primary, &sdb, root.path(), &live, &[9]).await;
        again.shutdown().await;
        primary.handle.shutdown().await;
    }
}

async fn credentials(primary: &Database, name: &str) -> (String, geo_runtime::node::Secret) {
    let (key, secret): (String, String) = match primary.dialect() {
        Dialect::Postgres => {
            sqlx::query_as("SELECT access_key, secret FROM geo_nodes WHERE name = $1")
                .bind(name)
                .fetch_one(primary.as_postgres().expect("pg"))
                .await
                .expect("node")
        }
        Dialect::Sqlite => {
            sqlx::query_as("SELECT access_key, secret FROM geo_nodes WHERE name = ?1")
                .bind(name)
                .fetch_one(primary.as_sqlite_readers().expect("sqlite"))
                .await
                .expect("node")
        }
    };
    (key, geo_runtime::node::Secret::new(secret))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_object_fails_with_a_long_backoff_and_its_reason() {
    let primary = start_primary(testing::sqlite().await).await;
    let sdb = testing::sqlite().await;
    create(&primary, 1).await;
    primary
        .store
        .delete(&ObjectKey::parse(&widget(1).file).expect("key"))
        .await
        .expect("lose the file");
    let root = tempfile::tempdir().expect("tempdir");
    let secondary = start_secondary(&primary, &sdb, root.path(), "s").await;
    let registry = Registry::new(&sdb, WidgetReplicator::DESCRIPTOR);
    let deadline = Instant::now() + Duration::from_secs(30);
    let row = loop {
        if let Some(row) = registry.find_by_model_id(1).await.expect("find")
            && row.state == geo_runtime::SyncState::Failed
        {
            break row;
        }
        assert!(Instant::now() < deadline, "never failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        row.last_sync_failure.as_deref(),
        Some("The file is missing on the Geo primary site")
    );
    assert_eq!(row.retry_count, 1);
    assert!(
        !LocalStore::new(root.path())
            .path(&ObjectKey::parse(&widget(1).file).expect("key"))
            .exists()
    );
    secondary.shutdown().await;
    primary.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_can_keep_its_objects_in_an_object_store() {
    use geo_runtime::storage::{BlobStore, ObjectStoreBlobs, Opened};
    use std::sync::Arc;

    let primary = start_primary(testing::sqlite().await).await;
    let sdb = testing::sqlite().await;
    let creds = add_secondary(&primary.db, "bucket", "http://bucket.invalid")
        .await
        .expect("register");
    let staging = tempfile::tempdir().expect("tempdir");
    let bucket = Arc::new(object_store::memory::InMemory::new());
    let store = ObjectStoreBlobs::new(bucket, staging.path());
    let mut config = SecondaryConfig::new(
        "bucket",
        &primary.url,
        &creds.access_key,
        creds.secret,
        staging.path(),
    );
    fast(&mut config);
    let secondary = Node::start_secondary(config, &sdb, &common::set(), store.clone())
        .await
        .expect("secondary");
    let ids: Vec<i64> = (1..=60).collect();
    for id in &ids {
        create(&primary, *id).await;
    }
    let registry = Registry::new(&sdb, WidgetReplicator::DESCRIPTOR);
    let deadline = Instant::now() + Duration::from_secs(60);
    while registry.count_by_state().await.expect("counts").synced < ids.len() as i64 {
        assert!(
            Instant::now() < deadline,
            "not synced into the object store"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in ids {
        let key = ObjectKey::parse(&widget(id).file).expect("key");
        let bytes = match store.read_or_open(&key, u64::MAX).await.expect("read") {
            Some(Opened::Whole(b)) => b,
            other => panic!("widget {id}: {other:?}"),
        };
        assert_eq!(
            bytes.as_ref(),
            content(id, 0).as_slice(),
            "widget {id} differs in the bucket"
        );
    }
    assert_eq!(
        store.remove_stale_temp_files().await.expect("staging"),
        0,
        "staging files left"
    );
    secondary.shutdown().await;
    primary.handle.shutdown().await;
}

/// A round told to stop starts no download: the rows it claimed stay `started`, nothing is
/// written, and once released (as a node does when it starts) the next round syncs them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_round_starts_nothing_and_the_next_start_finishes_it() {
    use geo_runtime::node::PrimaryClient;
    use geo_runtime::worker::sync::BlobSync;

    let primary = start_primary(testing::sqlite().await).await;
    let ids: Vec<i64> = (1..=120).collect();
    for id in &ids {
        create(&primary, *id).await;
    }
    let creds = add_secondary(&primary.db, "s", "http://s.invalid")
        .await
        .expect("register");
    let sdb = testing::sqlite().await;
    geo_runtime::db::migrate(&sdb, geo_runtime::NodeRole::Secondary, &common::set())
        .await
        .expect("migrate");
    let registry = Registry::new(&sdb, WidgetReplicator::DESCRIPTOR);
    registry
        .insert_pending(&ids, geo_runtime::db::dialect::now())
        .await
        .expect("pending");
    let root = tempfile::tempdir().expect("tempdir");
    let client = PrimaryClient::new(
        &primary.url,
        &creds.access_key,
        creds.secret,
        Duration::from_secs(10),
    )
    .expect("client");
    let sync = BlobSync::new(
        &sdb,
        &common::set(),
        client,
        LocalStore::new(root.path()),
        SyncConfig::default(),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    stop.cancel();
    let round = sync.step_until(&stop).await.expect("round");
    assert!(round.claimed > 0, "the round claimed: {round:?}");
    assert_eq!((round.synced, round.failed), (0, 0), "{round:?}");
    let counts = registry.count_by_state().await.expect("counts");
    assert_eq!(counts.started, round.claimed as i64, "{counts:?}");
    assert!(
        std::fs::read_dir(root.path())
            .expect("root")
            .next()
            .is_none(),
        "nothing written"
    );

    let now = geo_runtime::db::dialect::now();
    registry
        .release_interrupted(now + chrono::TimeDelta::seconds(1), now)
        .await
        .expect("release");
    while registry.count_by_state().await.expect("counts").synced < ids.len() as i64 {
        let round = sync.step().await.expect("round");
        assert_eq!(round.failed, 0, "{round:?}");
        assert!(round.claimed > 0, "rows left unsynced: {round:?}");
    }
    for id in ids {
        let key = ObjectKey::parse(&widget(id).file).expect("key");
        assert!(
            std::fs::read(LocalStore::new(root.path()).path(&key)).expect("copy") == content(id, 0),
            "widget {id}"
        );
    }
    primary.handle.shutdown().await;
}

/// A model whose object moves to another key: the secondary syncs the new key and removes its
/// copy under the old one (Geo's blobs never move; ours may).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_that_moves_to_another_key_leaves_no_copy_behind() {
    for (pdb, sdb) in pairs().await {
        let label = sdb.label().to_owned();
        let primary = start_primary(pdb).await;
        let root = tempfile::tempdir().expect("tempdir");
        let secondary = start_secondary(&primary, &sdb, root.path(), "s1").await;
        let local = LocalStore::new(root.path());
        create(&primary, 1).await;
        let old = ObjectKey::parse(&widget(1).file).expect("key");
        let registry = Registry::new(&sdb, WidgetReplicator::DESCRIPTOR);
        let synced_under = |key: String| {
            let registry = registry.clone();
            async move {
                registry
                    .find_by_model_id(1)
                    .await
                    .expect("find")
                    .is_some_and(|r| {
                        r.state == geo_runtime::SyncState::Synced
                            && r.object_key.as_deref() == Some(&key)
                    })
            }
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !synced_under(old.as_str().to_owned()).await {
            assert!(Instant::now() < deadline, "{label}: never synced");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(local.path(&old).exists(), "{label}");

        // The application moves the object and publishes `updated`.
        let moved = Widget {
            id: 1,
            file: "moved/1.bin".to_owned(),
        };
        let new = ObjectKey::parse(&moved.file).expect("key");
        let data = bytes::Bytes::from(content(1, 5));
        primary
            .store
            .write(
                &new,
                futures_util::stream::iter([Ok::<_, std::convert::Infallible>(data.clone())]),
                None,
                None,
            )
            .await
            .expect("write");
        exec(
            &primary.db,
            "UPDATE widgets SET file = 'moved/1.bin' WHERE id = 1",
        )
        .await;
        let mut tx = primary.db.begin_write().await.expect("begin");
        moved.publish_updated(tx.conn()).await.expect("publish");
        tx.commit().await.expect("commit");

        let deadline = Instant::now() + Duration::from_secs(30);
        while local.path(&old).exists() || !synced_under(new.as_str().to_owned()).await {
            assert!(
                Instant::now() < deadline,
                "{label}: the old copy stayed ({}) or the new key never synced",
                local.path(&old).exists()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            std::fs::read(local.path(&new)).expect("new copy"),
            data.as_ref(),
            "{label}"
        );
        secondary.shutdown().await;
        primary.handle.shutdown().await;
    }
}
