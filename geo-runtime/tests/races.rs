//! Races between the primary's changes and the transfers in flight, through running nodes and
//! a throttled link (SQLite and PostgreSQL tracking databases): no copy outlives its record,
//! and a removal is never dropped.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::cluster::{self, Primary, converge};
use common::{WidgetReplicator, eventually};
use geo_runtime::registry::Registry;
use geo_runtime::testing::TestDatabase;
use geo_runtime::testing::link::{Connection, LinkProxy};
use geo_runtime::{Replicator, SyncState};

/// Large enough to travel alone (over 64 KiB) and to take seconds at [`SLOW`].
const BIG: usize = 4 << 20;
/// Bytes per second on a throttled link: [`BIG`] takes 16 s.
const SLOW: u64 = 256 * 1024;

fn data(seed: u64, size: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..size).map(|_| rng.u8(..)).collect()
}

async fn pairs() -> Vec<(TestDatabase, TestDatabase)> {
    common::empty_pairs().await
}

/// The connection carrying a transfer of more than `over` bytes, once there is one.
async fn transfer(link: &LinkProxy, over: u64) -> Arc<Connection> {
    let mut found = None;
    eventually("a transfer under way", Duration::from_secs(30), || {
        found = link
            .connections()
            .into_iter()
            .find(|c| c.bytes_down() > over && !c.is_closed());
        std::future::ready(found.as_ref().map(|_| ()).ok_or_else(|| "none".to_owned()))
    })
    .await;
    found.expect("found")
}

/// Waits until `carrying` is cut, before it could have run to its end, and checks it did not.
async fn cut(carrying: &Connection, label: &str) {
    eventually(
        &format!("{label}: the transfer is cut"),
        Duration::from_secs(10),
        || {
            std::future::ready(if carrying.is_closed() {
                Ok(())
            } else {
                Err(format!("open after {} bytes", carrying.bytes_down()))
            })
        },
    )
    .await;
    assert!(
        carrying.bytes_down() < BIG as u64,
        "{label}: the transfer ran to its end"
    );
}

/// A primary with one large object, and a secondary downloading it through a slow link.
async fn one_big_object_crawling(
    pdb: TestDatabase,
    sdb: &TestDatabase,
) -> (
    Primary,
    LinkProxy,
    tempfile::TempDir,
    geo_runtime::node::NodeHandle,
    Arc<Connection>,
) {
    let primary = cluster::start_primary(pdb).await;
    primary.create(1, "big/1.bin", &data(1, BIG)).await;
    let link = LinkProxy::start(primary.addr).await.expect("link");
    link.set_rate(SLOW);
    let root = tempfile::tempdir().expect("tempdir");
    let secondary =
        cluster::start_secondary(&primary, &link.url(), sdb, root.path(), "s", |_| {}).await;
    let carrying = transfer(&link, 256 * 1024).await;
    (primary, link, root, secondary, carrying)
}

/// A record deleted while its object is downloaded over a slow link: the transfer is cut (not
/// run to its end) and nothing of it reaches the secondary's store, not even for a moment after
/// the fact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_seen_mid_transfer_cancels_it_and_leaves_nothing() {
    for (pdb, sdb) in pairs().await {
        let label = sdb.label().to_owned();
        // The link lives until the end of the test.
        let (primary, _link, root, secondary, carrying) = one_big_object_crawling(pdb, &sdb).await;

        primary.delete(1).await;
        cut(&carrying, &label).await;
        converge(&primary, &sdb, root.path(), &label).await;
        let superseded = secondary
            .metrics()
            .sync_transfers_total("widget", "superseded");
        assert_eq!(superseded, 1, "{label}: the cut transfer is counted");
        assert!(cluster::tree(root.path()).is_empty(), "{label}");
        secondary.shutdown().await;
        primary.handle.shutdown().await;
    }
}

/// A record moved to another key while its old object is downloaded: the old transfer is cut,
/// the new key is synced, and no copy under the old key ever stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_move_seen_mid_transfer_publishes_only_the_new_key() {
    for (pdb, sdb) in pairs().await {
        let label = sdb.label().to_owned();
        // The link lives until the end of the test.
        let (primary, _link, root, secondary, carrying) = one_big_object_crawling(pdb, &sdb).await;

        primary
            .update(1, "moved/1.bin", &data(2, 100_000), true)
            .await;
        cut(&carrying, &label).await;
        converge(&primary, &sdb, root.path(), &label).await;
        assert_eq!(
            cluster::tree(root.path()).keys().collect::<Vec<_>>(),
            ["moved/1.bin"],
            "{label}"
        );
        secondary.shutdown().await;
        primary.handle.shutdown().await;
    }
}

/// A synced record deleted and then created again with the same id under another key, while
/// the new object is still on its way: the copy under the old key is removed, not kept for the
/// row that came back (which will never use it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_is_not_dropped_when_the_record_comes_back_under_another_key() {
    for (pdb, sdb) in pairs().await {
        let label = sdb.label().to_owned();
        let primary = cluster::start_primary(pdb).await;
        primary.create(1, "old/1.bin", &data(1, 8192)).await;
        let link = LinkProxy::start(primary.addr).await.expect("link");
        let root = tempfile::tempdir().expect("tempdir");
        let secondary =
            cluster::start_secondary(&primary, &link.url(), &sdb, root.path(), "s", |_| {}).await;
        converge(&primary, &sdb, root.path(), &label).await;
        let old = root.path().join("old/1.bin");
        assert!(old.exists(), "{label}");

        link.set_rate(SLOW);
        let registry = Registry::new(&sdb, WidgetReplicator::DESCRIPTOR);
        primary.delete(1).await;
        // Its row goes first (so the new record arrives in a later batch, as a new row).
        eventually(
            &format!("{label}: row removed"),
            Duration::from_secs(30),
            || {
                let registry = registry.clone();
                async move {
                    match registry.find_by_model_id(1).await {
                        Ok(None) => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                }
            },
        )
        .await;
        primary.create(1, "new/1.bin", &data(2, BIG)).await;
        let carrying = transfer(&link, 64 * 1024).await;
        eventually(
            &format!("{label}: the old copy is removed while the new one travels"),
            Duration::from_secs(10),
            || {
                std::future::ready(if old.exists() {
                    Err("the old copy is there".to_owned())
                } else {
                    Ok(())
                })
            },
        )
        .await;
        assert!(
            !carrying.is_closed(),
            "{label}: the new transfer is still going"
        );
        let row = registry
            .find_by_model_id(1)
            .await
            .expect("find")
            .expect("row");
        assert_eq!(row.state, SyncState::Started, "{label}");

        link.set_rate(0);
        converge(&primary, &sdb, root.path(), &label).await;
        let files: BTreeMap<String, [u8; 32]> = cluster::tree(root.path());
        assert_eq!(files.keys().collect::<Vec<_>>(), ["new/1.bin"], "{label}");
        secondary.shutdown().await;
        primary.handle.shutdown().await;
    }
}

/// The database half of the same race, without a link: a copy whose row is deleted while it
/// waits to be published is never put in place (the publish finds the row gone under its lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_whose_row_went_away_before_its_publish_is_discarded() {
    use geo_runtime::node::PrimaryClient;
    use geo_runtime::node::nodes::add_secondary;
    use geo_runtime::storage::LocalStore;
    use geo_runtime::worker::sync::{BlobSync, SyncConfig};

    for (pdb, sdb) in pairs().await {
        let label = sdb.label().to_owned();
        let primary = cluster::start_primary(pdb).await;
        for id in 1..=3 {
            primary
                .create(id, &format!("w/{id}.bin"), &data(id as u64, 1000))
                .await;
        }
        common::secondary(&sdb).await;
        let creds = add_secondary(&primary.db, "s", "http://s.invalid")
            .await
            .expect("register");
        let client = PrimaryClient::new(
            &primary.url,
            &creds.access_key,
            creds.secret,
            Duration::from_secs(10),
        )
        .expect("client");
        let registry = Registry::new(&sdb, WidgetReplicator::DESCRIPTOR);
        registry
            .insert_pending(&[1, 2, 3], geo_runtime::db::dialect::now())
            .await
            .expect("pending");
        let root = tempfile::tempdir().expect("tempdir");
        let gate = Arc::new(Gate {
            arrived: tokio::sync::Notify::new(),
            open: tokio::sync::Notify::new(),
            opened: std::sync::atomic::AtomicBool::new(false),
        });
        let store = common::hooked::Hooked {
            inner: LocalStore::new(root.path()),
            hooks: gate.clone(),
        };
        // One request for the three: they arrive, and wait, together.
        let config = SyncConfig {
            files_max_capacity: 1,
            ..SyncConfig::default()
        };
        let sync = BlobSync::new(&sdb, &common::set(), client, store, config);
        let round = tokio::spawn(async move { sync.step().await });
        // The downloads are in and wait to be flushed; record 2 is deleted meanwhile.
        gate.arrived.notified().await;
        common::exec(&sdb, "DELETE FROM widget_registry WHERE widget_id = 2").await;
        gate.release();
        let round = round.await.expect("join").expect("round");
        assert_eq!(
            (round.synced, round.superseded),
            (2, 1),
            "{label}: {round:?}"
        );
        let files = cluster::tree(root.path());
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            ["w/1.bin", "w/3.bin"],
            "{label}: the deleted record's copy was published"
        );
        primary.handle.shutdown().await;
    }
}

/// Holds every flush until released.
#[derive(Debug)]
struct Gate {
    arrived: tokio::sync::Notify,
    open: tokio::sync::Notify,
    opened: std::sync::atomic::AtomicBool,
}

impl Gate {
    fn release(&self) {
        self.opened.store(true, std::sync::atomic::Ordering::SeqCst);
        self.open.notify_waiters();
    }
}

impl common::hooked::Hooks for Arc<Gate> {
    async fn before_flush(&self) {
        let open = self.open.notified();
        tokio::pin!(open);
        open.as_mut().enable();
        if !self.opened.load(std::sync::atomic::Ordering::SeqCst) {
            self.arrived.notify_one();
            open.await;
        }
    }
}

/// Any mix of creates, rewrites, key moves, deletes, re-creates and lost updates, made while
/// objects crawl over a slow link: once the link is fast again, the secondary's store holds
/// exactly the primary's live objects (paths and SHA-256, nothing extra on either side), every
/// row is synced and no removal is left. The seed is printed; `GEO_TEST_SEED` replays one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_mix_of_changes_with_transfers_in_flight_converges_to_the_primarys_tree() {
    let seed = std::env::var("GEO_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("GEO_TEST_SEED={seed}");
    for (pdb, sdb) in pairs().await {
        let label = format!("{} (GEO_TEST_SEED={seed})", sdb.label());
        let mut rng = fastrand::Rng::with_seed(seed);
        let primary = cluster::start_primary(pdb).await;
        let link = LinkProxy::start(primary.addr).await.expect("link");
        link.set_rate(1 << 20);
        let root = tempfile::tempdir().expect("tempdir");
        let secondary =
            cluster::start_secondary(&primary, &link.url(), &sdb, root.path(), "s", |_| {}).await;
        // id -> key, on the primary.
        let mut live: BTreeMap<i64, String> = BTreeMap::new();
        let mut next_key = 0_u64;
        let mut key = |id: i64| {
            next_key += 1;
            format!("k/{id}/{next_key}.bin")
        };
        let body = |rng: &mut fastrand::Rng| {
            let size = if rng.u8(..10) < 3 {
                rng.usize(200_000..1_000_000)
            } else {
                rng.usize(0..30_000)
            };
            data(rng.u64(..), size)
        };
        for _ in 0..150 {
            let id = rng.i64(1..=25);
            match live.get(&id).cloned() {
                None => {
                    let k = key(id);
                    eprintln!("create {id} {k}");
                    primary.create(id, &k, &body(&mut rng)).await;
                    live.insert(id, k);
                }
                Some(old) => match rng.u8(..100) {
                    0..30 => {
                        eprintln!("rewrite {id} {old}");
                        primary.update(id, &old, &body(&mut rng), true).await
                    }
                    30..50 => {
                        let k = key(id);
                        eprintln!("move {id} {old} -> {k}");
                        primary.update(id, &k, &body(&mut rng), true).await;
                        live.insert(id, k);
                    }
                    50..75 => {
                        eprintln!("delete {id} {old}");
                        primary.delete(id).await;
                        live.remove(&id);
                    }
                    75..90 => {
                        // Deleted and created again at once, under the same key or another.
                        primary.delete(id).await;
                        let k = if rng.bool() { old.clone() } else { key(id) };
                        eprintln!("delete {id} {old}, create {id} {k}");
                        primary.create(id, &k, &body(&mut rng)).await;
                        live.insert(id, k);
                    }
                    _ => {
                        // An update whose event is lost.
                        let k = if rng.bool() { old.clone() } else { key(id) };
                        eprintln!("lost update {id} {old} -> {k}");
                        primary.update(id, &k, &body(&mut rng), false).await;
                        live.insert(id, k);
                    }
                },
            }
            tokio::time::sleep(Duration::from_millis(rng.u64(0..20))).await;
        }
        link.set_rate(0);
        converge(&primary, &sdb, root.path(), &label).await;
        assert_eq!(
            cluster::tree(primary.store.root()).len(),
            live.len(),
            "{label}: the primary's store holds its live objects only"
        );
        secondary.shutdown().await;
        primary.handle.shutdown().await;
    }
}
