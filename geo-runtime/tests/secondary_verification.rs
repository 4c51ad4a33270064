//! A secondary verifies its own copies on its own schedule and heals them through the sync,
//! with a backoff that keeps growing while the mismatch persists.

mod common;

use bytes::Bytes;
use chrono::TimeDelta;
use common::{WidgetReplicator, exec, secondaries};
use geo_runtime::db::dialect::now;
use geo_runtime::registry::{Registry, SyncState, SyncedCopy};
use geo_runtime::storage::{LocalStore, ObjectKey};
use geo_runtime::worker::verify::{SecondaryVerification, SecondaryVerifyConfig};
use geo_runtime::{Replicator, ReplicatorSet, VerificationState};
use sha2::{Digest, Sha256};

#[tokio::test]
async fn bit_rot_is_found_without_any_event_and_resynced_with_growing_backoff() {
    for db in secondaries().await {
        let label = db.label().to_owned();
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path());
        let registry = Registry::new(&db, WidgetReplicator::DESCRIPTOR);
        let key = ObjectKey::parse("w/1").expect("key");
        let good = b"the primary's bytes".to_vec();

        // A copy synced and checked against the primary's checksum.
        registry.insert_pending(&[1], now()).await.expect("pending");
        let claimed = registry.claim(1, now()).await.expect("claim");
        let written = store
            .write_bytes(&key, Bytes::from(good.clone()), None)
            .await
            .expect("write");
        let copy = SyncedCopy {
            row: claimed[0],
            object_key: Some("w/1".into()),
            sha256: Some(written.sha256),
            checked_against_primary: true,
        };
        registry.mark_synced_copies(&[copy]).await.expect("synced");
        let row = registry
            .find_by_model_id(1)
            .await
            .expect("find")
            .expect("row");
        assert_eq!(
            row.verification_state,
            VerificationState::Succeeded,
            "{label}"
        );
        assert_eq!(
            row.verification_checksum.as_deref(),
            Some(Sha256::digest(&good).as_slice())
        );

        let v = SecondaryVerification::new(
            &db,
            &ReplicatorSet::linked().expect("set"),
            store.clone(),
            SecondaryVerifyConfig::default(),
        );
        // A verification a crash interrupted (started an hour ago) is released, then done again.
        let hour_ago = match db.dialect() {
            geo_runtime::Dialect::Postgres => "now() - interval '1 hour'".to_owned(),
            geo_runtime::Dialect::Sqlite => (now().timestamp_micros() - 3_600_000_000).to_string(),
        };
        exec(
            &db,
            &format!("UPDATE widget_registry SET verification_state = 1, verification_started_at = {hour_ago}"),
        )
        .await;
        assert_eq!(
            v.release_stuck(now() - TimeDelta::minutes(30))
                .await
                .expect("release"),
            1,
            "{label}"
        );
        let round = v
            .step_before(now() - TimeDelta::days(1))
            .await
            .expect("round");
        assert_eq!(
            round.succeeded, 1,
            "{label}: a released copy is verified again"
        );
        // Verified just now: not due.
        assert_eq!(
            v.step_before(now() - TimeDelta::days(1))
                .await
                .expect("round")
                .claimed,
            0
        );
        // Due (its interval passed): verified again, still good.
        let round = v
            .step_before(now() + TimeDelta::seconds(1))
            .await
            .expect("round");
        assert_eq!(
            (round.claimed, round.succeeded),
            (1, 1),
            "{label}: {round:?}"
        );

        // Bit rot at rest: no event from the primary, the secondary finds it on its own.
        std::fs::write(store.path(&key), b"the primary's bytez").expect("rot");
        let round = v
            .step_before(now() + TimeDelta::seconds(1))
            .await
            .expect("round");
        assert_eq!(round.failed, 1, "{label}: {round:?}");
        let row = registry
            .find_by_model_id(1)
            .await
            .expect("find")
            .expect("row");
        assert_eq!(row.verification_state, VerificationState::Failed);
        assert!(row.checksum_mismatch);
        assert_eq!(
            row.verification_checksum.as_deref(),
            Some(Sha256::digest(&good).as_slice()),
            "the expected checksum is kept"
        );
        assert_eq!(
            row.verification_checksum_mismatched.as_deref(),
            Some(Sha256::digest(b"the primary's bytez").as_slice())
        );
        assert_eq!(
            row.state,
            SyncState::Failed,
            "{label}: the copy goes back to the sync"
        );
        assert_eq!((row.retry_count, row.verification_retry_count), (1, 1));
        assert!(
            row.last_sync_failure
                .as_deref()
                .unwrap_or_default()
                .starts_with("Verification failed with: Checksum does not match")
        );
        let first_wait = row.retry_at.expect("retry_at") - now();

        // The resync hits a primary whose checksum is stale: it fails, and the backoff grows
        // (Geo's counter swings 1 ↔ 0 here and never backs off).
        let due = registry
            .claim(1, now() + TimeDelta::hours(2))
            .await
            .expect("claim");
        assert_eq!(due.len(), 1);
        registry
            .mark_failed(
                &[due[0].failed("Error downloading file: checksum mismatch", false)],
                now(),
            )
            .await
            .expect("failed");
        let row = registry
            .find_by_model_id(1)
            .await
            .expect("find")
            .expect("row");
        assert_eq!(
            (row.retry_count, row.verification_retry_count),
            (2, 1),
            "{label}"
        );
        assert!(
            row.retry_at.expect("retry_at") - now() > first_wait - TimeDelta::seconds(60),
            "{label}"
        );

        // The primary's bytes come back: a checked resync heals the copy and resets the counts.
        let due = registry
            .claim(1, now() + TimeDelta::hours(2))
            .await
            .expect("claim");
        store
            .write_bytes(&key, Bytes::from(good.clone()), None)
            .await
            .expect("write");
        let copy = SyncedCopy {
            row: due[0],
            object_key: Some("w/1".into()),
            sha256: Some(Sha256::digest(&good).into()),
            checked_against_primary: true,
        };
        registry.mark_synced_copies(&[copy]).await.expect("synced");
        let row = registry
            .find_by_model_id(1)
            .await
            .expect("find")
            .expect("row");
        assert_eq!(
            (row.state, row.verification_state),
            (SyncState::Synced, VerificationState::Succeeded),
            "{label}"
        );
        assert_eq!((row.retry_count, row.verification_retry_count), (0, 0));
        assert!(!row.checksum_mismatch);
    }
}

#[tokio::test]
async fn a_copy_without_a_primary_checksum_stays_disabled() {
    for db in secondaries().await {
        let registry = Registry::new(&db, WidgetReplicator::DESCRIPTOR);
        registry.insert_pending(&[1], now()).await.expect("pending");
        let claimed = registry.claim(1, now()).await.expect("claim");
        let copy = SyncedCopy {
            row: claimed[0],
            object_key: Some("w/1".into()),
            sha256: Some([7; 32]),
            checked_against_primary: false,
        };
        registry.mark_synced_copies(&[copy]).await.expect("synced");
        let row = registry
            .find_by_model_id(1)
            .await
            .expect("find")
            .expect("row");
        assert_eq!(
            row.verification_state,
            VerificationState::Disabled,
            "{}",
            db.label()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let v = SecondaryVerification::new(
            &db,
            &ReplicatorSet::linked().expect("set"),
            LocalStore::new(dir.path()),
            SecondaryVerifyConfig::default(),
        );
        assert_eq!(
            v.step_before(now() + TimeDelta::days(30))
                .await
                .expect("round")
                .claimed,
            0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_copies_are_picked_up_when_the_primary_has_a_checksum() {
    use common::Widget;
    use geo_runtime::VerificationDetails;
    use geo_runtime::node::nodes::add_secondary;
    use geo_runtime::node::{Node, NodeConfig, PrimaryClient, PrimaryConfig};

    let primary_db = geo_runtime::testing::sqlite().await;
    exec(&primary_db, "CREATE TABLE widgets (id BIGINT PRIMARY KEY, file TEXT NOT NULL); CREATE TABLE gizmos (id BIGINT PRIMARY KEY, file TEXT NOT NULL); INSERT INTO widgets VALUES (1, 'w/1'), (2, 'w/2'), (3, 'w/3')").await;
    let pdir = tempfile::tempdir().expect("tempdir");
    let primary = Node::start(
        NodeConfig::Primary(PrimaryConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            pdir.path(),
        )),
        &primary_db,
        &ReplicatorSet::linked().expect("set"),
    )
    .await
    .expect("primary");
    let creds = add_secondary(&primary_db, "s", "http://s.invalid")
        .await
        .expect("register");
    let url = format!("http://{}", primary.local_addr().expect("addr"));
    let (a, b) = ([0xaa_u8; 32], [0xbb_u8; 32]);
    for (id, sum) in [(1, a), (2, b)] {
        let details = VerificationDetails {
            verification_state: VerificationState::Succeeded,
            verified_at: Some(now()),
            verification_checksum: Some(sum.to_vec()),
            ..VerificationDetails::default()
        };
        Widget {
            id,
            file: format!("w/{id}"),
        }
        .set_verification_details(&primary_db, &details)
        .await
        .expect("checksum");
    }
    // Widget 3 has no primary checksum yet (its verification worker may get to it, its file does
    // not exist: it can only fail, never succeed).

    for db in secondaries().await {
        let registry = Registry::new(&db, WidgetReplicator::DESCRIPTOR);
        registry
            .insert_pending(&[1, 2, 3], now())
            .await
            .expect("pending");
        let claimed = registry.claim(3, now()).await.expect("claim");
        let copies: Vec<SyncedCopy> = claimed
            .iter()
            .map(|c| SyncedCopy {
                row: *c,
                object_key: Some(format!("w/{}", c.model_record_id)),
                sha256: Some(a),
                checked_against_primary: false,
            })
            .collect();
        registry.mark_synced_copies(&copies).await.expect("synced");
        let client = PrimaryClient::new(
            &url,
            &creds.access_key,
            creds.secret.clone(),
            std::time::Duration::from_secs(5),
        )
        .expect("client");
        let dir = tempfile::tempdir().expect("tempdir");
        let v = SecondaryVerification::new(
            &db,
            &ReplicatorSet::linked().expect("set"),
            LocalStore::new(dir.path()),
            SecondaryVerifyConfig::default(),
        );
        let round = v
            .check_disabled(&client, std::time::Duration::from_secs(300))
            .await
            .expect("check");
        assert_eq!(
            (round.claimed, round.succeeded, round.failed),
            (3, 1, 1),
            "{}: {round:?}",
            db.label()
        );
        let row = |id| {
            let registry = registry.clone();
            async move {
                registry
                    .find_by_model_id(id)
                    .await
                    .expect("find")
                    .expect("row")
            }
        };
        assert_eq!(
            row(1).await.verification_state,
            VerificationState::Succeeded,
            "{}",
            db.label()
        );
        let two = row(2).await;
        assert_eq!(
            (two.verification_state, two.state),
            (VerificationState::Failed, SyncState::Failed),
            "{}",
            db.label()
        );
        assert!(two.checksum_mismatch);
        assert_eq!(
            two.verification_checksum.as_deref(),
            Some(b.as_slice()),
            "the primary's checksum is what the copy must match"
        );
        assert_eq!(
            two.verification_checksum_mismatched.as_deref(),
            Some(a.as_slice())
        );
        let three = row(3).await;
        assert_eq!(three.verification_state, VerificationState::Disabled);
        assert!(
            three.verification_retry_at.expect("next look") > now(),
            "{}",
            db.label()
        );
        // Looked at again only after the recheck interval.
        assert_eq!(
            v.check_disabled(&client, std::time::Duration::from_secs(300))
                .await
                .expect("check")
                .claimed,
            0
        );
    }
    primary.shutdown().await;
}
