//! An update whose event never reaches the secondary (lost, or given up as a gap) is repaired by
//! the consistency pass: the copy whose primary object changed (another key, or another verified
//! checksum) goes back to pending and is synced again. On SQLite and PostgreSQL.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::cluster::{self, converge};
use common::{WidgetReplicator, pairs};
use geo_runtime::events::SourceError;
use geo_runtime::events::{DbModelIdSource, Listing, ModelIdSource};
use geo_runtime::registry::{Registry, SyncedCopy};
use geo_runtime::replicator::{RecordVersion, ReplicatorDescriptor};
use geo_runtime::worker::consistency::Consistency;
use geo_runtime::{Replicator, SyncState};
use sha2::{Digest, Sha256};

fn data(seed: u64, size: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..size).map(|_| rng.u8(..)).collect()
}

/// Through running nodes: one object rewritten under its key and one moved to another key, both
/// without their `updated` events; the secondary ends up byte for byte the primary's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_without_its_event_is_repaired_by_the_consistency_pass() {
    for (pdb, sdb) in common::empty_pairs().await {
        let label = sdb.label().to_owned();
        let primary = cluster::start_primary(pdb).await;
        for id in 1..=20 {
            primary
                .create(id, &format!("w/{id}.bin"), &data(id as u64, 5000))
                .await;
        }
        let root = tempfile::tempdir().expect("tempdir");
        let secondary =
            cluster::start_secondary(&primary, &primary.url, &sdb, root.path(), "s", |_| {}).await;
        converge(&primary, &sdb, root.path(), &label).await;

        // The application rewrites 3 and moves 4; neither event reaches any secondary.
        primary.update(3, "w/3.bin", &data(103, 7000), false).await;
        primary
            .update(4, "moved/4.bin", &data(104, 6000), false)
            .await;
        // A later event: the cursor sees the two missing ids as gaps.
        primary.create(21, "w/21.bin", &data(21, 5000)).await;
        converge(&primary, &sdb, root.path(), &label).await;

        // Gaps are shown as gaps, not as lag: nothing is left to read.
        let mut status = secondary.status().refresh().await.expect("status");
        for _ in 0..100 {
            if status.cursor_events_behind == Some(0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            status = secondary.status().refresh().await.expect("status");
        }
        assert_eq!(status.cursor_events_behind, Some(0), "{label}: {status:?}");
        assert_eq!(status.cursor_gaps_count, Some(2), "{label}: {status:?}");
        assert!(status.cursor_oldest_gap_at.is_some(), "{label}");
        let table = status.render_table();
        assert!(
            table.contains("(0 behind) · gaps: 2 (oldest waited for "),
            "{table}"
        );
        let json = status.to_json();
        assert_eq!(json["cursor_gaps_count"], 2, "{json}");
        let registry = Registry::new(&sdb, WidgetReplicator::DESCRIPTOR);
        let row = registry
            .find_by_model_id(3)
            .await
            .expect("find")
            .expect("row");
        assert_eq!(
            row.verification_checksum.as_deref(),
            Some(Sha256::digest(data(103, 7000)).as_slice()),
            "{label}"
        );
        secondary.shutdown().await;
        primary.handle.shutdown().await;
    }
}

/// A source that counts the pages whose versions the pass had to fetch.
struct Counting {
    inner: DbModelIdSource,
    fetched: Arc<AtomicUsize>,
}

impl ModelIdSource for Counting {
    async fn model_ids_after(
        &self,
        d: &'static ReplicatorDescriptor,
        after: i64,
        limit: usize,
    ) -> Result<Vec<i64>, SourceError> {
        self.inner.model_ids_after(d, after, limit).await
    }
    async fn listing(
        &self,
        d: &'static ReplicatorDescriptor,
        after: i64,
        limit: usize,
    ) -> Result<Listing, SourceError> {
        self.inner.listing(d, after, limit).await
    }
    async fn versions_between(
        &self,
        d: &'static ReplicatorDescriptor,
        after: i64,
        until: i64,
    ) -> Result<Vec<RecordVersion>, SourceError> {
        self.fetched.fetch_add(1, Ordering::SeqCst);
        self.inner.versions_between(d, after, until).await
    }
}

/// The pass alone: a range whose copies all match its digest costs no more than its listing; a
/// changed key, a changed verified checksum, or a copy recorded without a key sends exactly
/// those rows back to pending; a checksum the primary has not verified yet is not compared.
#[tokio::test]
async fn the_pass_finds_exactly_the_copies_whose_primary_object_changed() {
    for (primary, secondary) in pairs().await {
        let label = primary.label().to_owned();
        let d = WidgetReplicator::DESCRIPTOR;
        let n: i64 = 250;
        for id in 1..=n {
            common::exec(
                &primary,
                &format!("INSERT INTO widgets VALUES ({id}, 'w/{id}')"),
            )
            .await;
        }
        // The primary's verified checksums: sha of the id, except 200..=209 not verified yet.
        let sum = |id: i64| -> [u8; 32] { Sha256::digest(id.to_be_bytes()).into() };
        for id in 1..=n {
            let details = if (200..210).contains(&id) {
                geo_runtime::testkit::verification::pending()
            } else {
                geo_runtime::testkit::verification::succeeded(sum(id))
            };
            common::Widget {
                id,
                file: format!("w/{id}"),
            }
            .set_verification_details(&primary, &details)
            .await
            .expect("details");
        }
        // The secondary synced every record as it was.
        let registry = Registry::new(&secondary, d);
        let ids: Vec<i64> = (1..=n).collect();
        registry
            .insert_pending(&ids, geo_runtime::db::dialect::now())
            .await
            .expect("pending");
        let claimed = registry
            .claim(n as usize, geo_runtime::db::dialect::now())
            .await
            .expect("claim");
        let copies: Vec<SyncedCopy> = claimed
            .iter()
            .map(|row| SyncedCopy {
                row: *row,
                object_key: Some(format!("w/{}", row.model_record_id)),
                sha256: Some(sum(row.model_record_id)),
                checked_against_primary: true,
            })
            .collect();
        registry.mark_synced_copies(&copies).await.expect("synced");

        let fetched = Arc::new(AtomicUsize::new(0));
        let pass = Consistency::new(
            &secondary,
            Counting {
                inner: DbModelIdSource::new(&primary),
                fetched: fetched.clone(),
            },
        )
        .with_batch_size(100);
        let report = pass.run_pass(d).await.expect("pass");
        assert_eq!(report.changed, 0, "{label}: {report:?}");
        assert_eq!(
            fetched.load(Ordering::SeqCst),
            0,
            "{label}: every page matched its digest, yet versions were fetched"
        );

        // Lost updates: 17 rewritten (a new verified checksum), 150 moved, 205 rewritten but
        // not verified yet, 230 recorded here without a key.
        common::Widget {
            id: 17,
            file: "w/17".into(),
        }
        .set_verification_details(
            &primary,
            &geo_runtime::testkit::verification::succeeded([9; 32]),
        )
        .await
        .expect("details");
        common::exec(
            &primary,
            "UPDATE widgets SET file = 'moved/150' WHERE id = 150",
        )
        .await;
        common::exec(
            &secondary,
            "UPDATE widget_registry SET object_key = NULL WHERE widget_id = 230",
        )
        .await;
        let report = pass.run_pass(d).await.expect("pass");
        assert_eq!(report.changed, 3, "{label}: {report:?}");
        assert_eq!(
            fetched.load(Ordering::SeqCst),
            3,
            "{label}: only the three pages with a difference fetch their versions"
        );
        for id in 1..=n {
            let row = registry
                .find_by_model_id(id)
                .await
                .expect("find")
                .expect("row");
            let want = if [17, 150, 230].contains(&id) {
                SyncState::Pending
            } else {
                SyncState::Synced
            };
            assert_eq!(row.state, want, "{label}: widget {id}");
        }
        // Once 205's new checksum is verified, it is found too.
        common::Widget {
            id: 205,
            file: "w/205".into(),
        }
        .set_verification_details(
            &primary,
            &geo_runtime::testkit::verification::succeeded([5; 32]),
        )
        .await
        .expect("details");
        let report = pass.run_pass(d).await.expect("pass");
        assert_eq!(report.changed, 1, "{label}: {report:?}");
        let row = registry
            .find_by_model_id(205)
            .await
            .expect("find")
            .expect("row");
        assert_eq!(row.state, SyncState::Pending, "{label}");
    }
}
