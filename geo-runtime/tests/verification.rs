//! The primary's verification worker on real SQLite and PostgreSQL, with both places for the
//! verification state (a `<name>_states` table and inline columns).

mod common;

use bytes::Bytes;
use common::{Widget, WidgetReplicator, exec};
use geo_runtime::db::dialect::now;
use geo_runtime::events::EventName;
use geo_runtime::storage::{BlobStore, LocalStore, ObjectKey};
use geo_runtime::testing::{self, TestDatabase};
use geo_runtime::worker::verify::{PrimaryVerification, VerifyConfig};
use geo_runtime::{Database, ReplicableModel, Replicator, ReplicatorSet, VerificationState};
use sha2::{Digest, Sha256};

/// A model whose verification columns live on its own table.
#[geo_runtime::replicable(strategy = "blob", table = "docs", verification = "inline")]
#[derive(Debug, Clone)]
pub struct Doc {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub path: Option<String>,
}

async fn primary() -> Vec<TestDatabase> {
    let dbs = testing::all().await;
    for db in &dbs {
        exec(db, "CREATE TABLE widgets (id BIGINT PRIMARY KEY, file TEXT NOT NULL); CREATE TABLE gizmos (id BIGINT PRIMARY KEY, file TEXT NOT NULL); CREATE TABLE docs (id BIGINT PRIMARY KEY, path TEXT)").await;
        geo_runtime::db::migrate(
            db,
            geo_runtime::NodeRole::Primary,
            &ReplicatorSet::linked().expect("set"),
        )
        .await
        .expect("migrate");
    }
    dbs
}

async fn put(store: &LocalStore, key: &str, data: &[u8]) -> [u8; 32] {
    store
        .write_bytes(
            &ObjectKey::parse(key).expect("key"),
            Bytes::copy_from_slice(data),
            None,
        )
        .await
        .expect("write");
    Sha256::digest(data).into()
}

async fn publish(db: &Database, w: &impl ReplicableModel, event: EventName) {
    let mut tx = db.begin_write().await.expect("begin");
    w.publish(tx.conn(), event).await.expect("publish");
    tx.commit().await.expect("commit");
}

async fn drain<S: BlobStore>(v: &PrimaryVerification<S>) {
    for _ in 0..100 {
        if v.step().await.expect("round").claimed == 0 {
            return;
        }
    }
    panic!("verification never ran out of work");
}

#[tokio::test]
async fn every_record_gets_its_checksum_or_a_reason() {
    for db in primary().await {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path());
        let label = db.label().to_owned();
        let mut sums = Vec::new();
        for id in 1..=5 {
            sums.push(
                put(
                    &store,
                    &format!("w/{id}"),
                    format!("widget {id}").repeat(id as usize * 1000).as_bytes(),
                )
                .await,
            );
            exec(&db, &format!("INSERT INTO widgets VALUES ({id}, 'w/{id}')")).await;
            publish(
                &db,
                &Widget {
                    id,
                    file: format!("w/{id}"),
                },
                EventName::Created,
            )
            .await;
        }
        // A record that never published an event still gets a state row and a checksum.
        let quiet = put(&store, "w/6", b"quiet").await;
        exec(&db, "INSERT INTO widgets VALUES (6, 'w/6')").await;
        // A record whose file is gone.
        exec(&db, "INSERT INTO widgets VALUES (7, 'w/7')").await;
        // Inline verification columns.
        let doc_sum = put(&store, "d/1", b"doc").await;
        exec(
            &db,
            "INSERT INTO docs (id, path) VALUES (1, 'd/1'), (2, NULL)",
        )
        .await;

        let v = PrimaryVerification::new(
            &db,
            &ReplicatorSet::linked().expect("set"),
            store.clone(),
            VerifyConfig::default(),
        );
        drain(&v).await;
        for (i, sum) in sums.iter().chain([&quiet]).enumerate() {
            let d = Widget {
                id: i as i64 + 1,
                file: String::new(),
            }
            .verification_details(&db)
            .await
            .expect("details");
            assert_eq!(
                d.verification_state,
                VerificationState::Succeeded,
                "{label}: widget {}",
                i + 1
            );
            assert_eq!(
                d.verification_checksum.as_deref(),
                Some(sum.as_slice()),
                "{label}: widget {}",
                i + 1
            );
            assert!(d.verified_at.is_some());
        }
        let missing = Widget {
            id: 7,
            file: String::new(),
        }
        .verification_details(&db)
        .await
        .expect("details");
        assert_eq!(
            missing.verification_state,
            VerificationState::Failed,
            "{label}"
        );
        assert_eq!(
            missing.verification_failure.as_deref(),
            Some("The file is missing")
        );
        assert_eq!(missing.verification_retry_count, 1);
        assert!(missing.verification_retry_at.expect("retry") > now());
        assert_eq!(missing.verification_checksum, None);

        let doc = Doc { id: 1, path: None }
            .verification_details(&db)
            .await
            .expect("doc");
        assert_eq!(
            doc.verification_checksum.as_deref(),
            Some(doc_sum.as_slice()),
            "{label}: inline"
        );
        let no_key = Doc { id: 2, path: None }
            .verification_details(&db)
            .await
            .expect("doc");
        assert_eq!(no_key.verification_state, VerificationState::Failed);
        assert!(
            no_key
                .verification_failure
                .unwrap_or_default()
                .starts_with("File is not checksummable")
        );

        let counts = v
            .counts(WidgetReplicator::DESCRIPTOR)
            .await
            .expect("counts");
        assert_eq!(
            (counts.succeeded, counts.failed, counts.pending),
            (6, 1, 0),
            "{label}: {counts:?}"
        );

        // An updated object is checksummed again.
        let new_sum = put(&store, "w/1", b"changed").await;
        publish(
            &db,
            &Widget {
                id: 1,
                file: "w/1".into(),
            },
            EventName::Updated,
        )
        .await;
        let pending = Widget {
            id: 1,
            file: String::new(),
        }
        .verification_details(&db)
        .await
        .expect("details");
        assert_eq!(
            pending.verification_state,
            VerificationState::Pending,
            "{label}: an update resets verification"
        );
        drain(&v).await;
        let d = Widget {
            id: 1,
            file: String::new(),
        }
        .verification_details(&db)
        .await
        .expect("details");
        assert_eq!(
            d.verification_checksum.as_deref(),
            Some(new_sum.as_slice()),
            "{label}"
        );
    }
}

/// During the hashing, the record changes (its verification goes back to pending).
#[derive(Debug, Clone)]
struct ChangesTheRecord {
    db: Database,
}

impl common::hooked::Hooks for ChangesTheRecord {
    async fn after_sha256(&self) {
        // What an `updated` event does to the record's verification, meanwhile.
        exec(
            &self.db,
            "UPDATE widget_states SET verification_state = 0 WHERE widget_id = 1",
        )
        .await;
    }
}

#[tokio::test]
async fn a_record_changed_while_it_is_hashed_goes_back_to_pending() {
    for db in primary().await {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path());
        put(&store, "w/1", b"old").await;
        exec(&db, "INSERT INTO widgets VALUES (1, 'w/1')").await;
        publish(
            &db,
            &Widget {
                id: 1,
                file: "w/1".into(),
            },
            EventName::Created,
        )
        .await;
        let changing = common::hooked::Hooked {
            inner: store,
            hooks: ChangesTheRecord {
                db: db.database().clone(),
            },
        };
        let v = PrimaryVerification::new(
            &db,
            &ReplicatorSet::linked().expect("set"),
            changing,
            VerifyConfig::default(),
        );
        let round = v.step().await.expect("round");
        assert_eq!(
            (round.claimed, round.succeeded, round.superseded),
            (1, 0, 1),
            "{}: {round:?}",
            db.label()
        );
        let d = Widget {
            id: 1,
            file: String::new(),
        }
        .verification_details(&db)
        .await
        .expect("details");
        assert_eq!(
            d.verification_state,
            VerificationState::Pending,
            "{}: a stale checksum was recorded",
            db.label()
        );
        assert_eq!(d.verification_checksum, None);
    }
}

#[tokio::test]
async fn re_verification_reports_a_primary_copy_that_changed_behind_our_back() {
    for db in primary().await {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path());
        let label = db.label().to_owned();
        let sum = put(&store, "w/1", b"original").await;
        exec(&db, "INSERT INTO widgets VALUES (1, 'w/1')").await;
        publish(
            &db,
            &Widget {
                id: 1,
                file: "w/1".into(),
            },
            EventName::Created,
        )
        .await;
        let v = PrimaryVerification::new(
            &db,
            &ReplicatorSet::linked().expect("set"),
            store.clone(),
            VerifyConfig::default(),
        );
        drain(&v).await;
        // The interval has not passed: nothing to re-verify.
        assert_eq!(v.step().await.expect("round").claimed, 0, "{label}");
        // The object changes on disk without any update; the interval passes.
        std::fs::write(
            store.path(&ObjectKey::parse("w/1").expect("key")),
            b"tampered",
        )
        .expect("write");
        let ago = match db.dialect() {
            geo_runtime::Dialect::Postgres => "now() - interval '8 days'".to_owned(),
            geo_runtime::Dialect::Sqlite => {
                (now().timestamp_micros() - 8 * 86_400_000_000).to_string()
            }
        };
        exec(
            &db,
            &format!("UPDATE widget_states SET verified_at = {ago}"),
        )
        .await;
        let round = v.step().await.expect("round");
        assert_eq!((round.claimed, round.failed), (1, 1), "{label}: {round:?}");
        let d = Widget {
            id: 1,
            file: String::new(),
        }
        .verification_details(&db)
        .await
        .expect("details");
        assert_eq!(d.verification_state, VerificationState::Failed, "{label}");
        assert!(
            d.verification_failure
                .unwrap_or_default()
                .starts_with("The primary's copy no longer matches its checksum")
        );
        assert_eq!(
            d.verification_checksum.as_deref(),
            Some(sum.as_slice()),
            "{label}: the recorded checksum is kept, not replaced"
        );
        // Its retry compares with the recorded checksum again: still a failure, not a new checksum.
        exec(&db, "UPDATE widget_states SET verification_retry_at = NULL").await;
        let round = v.step().await.expect("round");
        assert_eq!(round.failed, 1, "{label}: {round:?}");
        let d = Widget {
            id: 1,
            file: String::new(),
        }
        .verification_details(&db)
        .await
        .expect("details");
        assert_eq!(d.verification_retry_count, 2);
        assert_eq!(d.verification_checksum.as_deref(), Some(sum.as_slice()));
    }
}
