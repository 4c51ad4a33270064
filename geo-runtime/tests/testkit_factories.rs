//! Registry factories insert real rows in every state, on SQLite and PostgreSQL, and the
//! runtime's own queries see them as such.

mod common;

use common::{WidgetRegistry, secondaries};
use geo_runtime::db::dialect::now;
use geo_runtime::registry::{Registry, SyncState};
use geo_runtime::testkit::RegistryFactoryExt;
use geo_runtime::{Replicator, VerificationState};

#[tokio::test]
async fn factories_insert_rows_in_every_state() {
    for db in secondaries().await {
        let label = db.label().to_owned();
        let pending = WidgetRegistry::factory(&db)
            .insert()
            .await
            .expect("pending");
        assert_eq!(pending.state, SyncState::Pending, "{label}");
        assert_eq!(pending.widget_id, 1, "the first free model id");

        let started = WidgetRegistry::factory(&db)
            .started()
            .insert()
            .await
            .expect("started");
        assert_eq!(
            (started.state, started.sync_attempt),
            (SyncState::Started, 1)
        );
        assert_eq!(started.widget_id, 2);

        let synced = WidgetRegistry::factory(&db)
            .synced()
            .model_id(40)
            .verification_succeeded([7; 32])
            .insert()
            .await
            .expect("synced");
        assert_eq!(synced.state, SyncState::Synced);
        assert_eq!(synced.object_key.as_deref(), Some("widgets/40"));
        assert_eq!(synced.verification_state, VerificationState::Succeeded);
        assert_eq!(
            synced.verification_checksum.as_deref(),
            Some(&[7_u8; 32][..])
        );

        let failed = WidgetRegistry::factory(&db)
            .failed(&"x".repeat(400))
            .retry_count(3)
            .insert()
            .await
            .expect("failed");
        assert_eq!((failed.state, failed.retry_count), (SyncState::Failed, 3));
        assert_eq!(failed.last_sync_failure.as_deref().map(str::len), Some(255));
        assert!(failed.retry_at.is_some_and(|t| t > now()), "{label}");

        let mismatched = WidgetRegistry::factory(&db)
            .synced()
            .verification_failed("Checksum does not match", true)
            .insert_many(3)
            .await
            .expect("many");
        assert_eq!(
            mismatched.iter().map(|r| r.widget_id).collect::<Vec<_>>(),
            vec![42, 43, 44]
        );
        // A failed verification sends the copy back to the sync, as the runtime does.
        assert!(mismatched.iter().all(|r| r.checksum_mismatch
            && r.verification_state == VerificationState::Failed
            && r.state == SyncState::Failed));

        // The runtime's own queries agree.
        let registry = Registry::new(&db, common::WidgetReplicator::DESCRIPTOR);
        let counts = registry.count_by_state().await.expect("counts");
        assert_eq!(
            (counts.pending, counts.started, counts.synced, counts.failed),
            (1, 1, 1, 4),
            "{label}"
        );
        let claimed = registry.claim(10, now()).await.expect("claim");
        assert_eq!(
            claimed
                .iter()
                .map(|r| r.model_record_id)
                .collect::<Vec<_>>(),
            vec![1],
            "only the pending row is due: {label}"
        );
    }
}
