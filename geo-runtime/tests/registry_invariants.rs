//! Every registry row is picked up by exactly one scheduler, or cannot exist.
//!
//! The test writes a row for every combination of the columns the schedulers select on (sync
//! state × retry time × sync start time × verification state × verification start time ×
//! verification time × verification retry time; each time absent, past or future), on SQLite and
//! PostgreSQL. The combinations the registry's CHECK constraints refuse must be exactly the
//! documented impossible ones. Every other row is then offered to each scheduler, each on its own
//! copy of the table, at a time far enough ahead for every retry to be due, and must be taken by
//! exactly one of them: the sync's claim (pending, failed), the sync sweeper (started), the
//! verification's claim (synced: pending, or verified and due again), the verification sweeper
//! (synced: verification started), or the recheck of copies disabled for want of a primary
//! checksum (synced: disabled). A row no scheduler takes would stay as it is forever.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use common::WidgetReplicator;
use geo_runtime::db::Dialect;
use geo_runtime::db::dialect::{Ts, now};
use geo_runtime::node::nodes::add_secondary;
use geo_runtime::node::{Node, NodeConfig, PrimaryClient, PrimaryConfig};
use geo_runtime::registry::{REGISTRY_COLUMNS, Registry, RegistryRecord};
use geo_runtime::storage::LocalStore;
use geo_runtime::testing::{self, TestDatabase};
use geo_runtime::worker::verify::{SecondaryVerification, SecondaryVerifyConfig};
use geo_runtime::{Database, Replicator};
use sqlx::AssertSqlSafe;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    Never,
    Past,
    Future,
}

const WHEN: [When; 3] = [When::Never, When::Past, When::Future];

/// One combination of the scheduling columns.
#[derive(Debug, Clone, Copy)]
struct Combo {
    state: i16,
    retry_at: When,
    last_synced_at: When,
    verification_state: i16,
    verification_started_at: When,
    verified_at: When,
    verification_retry_at: When,
}

impl Combo {
    /// The documented impossible rows (docs/reference.md, "Registry invariants").
    fn impossible(&self) -> Option<&'static str> {
        if self.state == 1 && self.last_synced_at == When::Never {
            Some("a started sync has its start time")
        } else if self.verification_state == 1 && self.verification_started_at == When::Never {
            Some("a started verification has its start time")
        } else if self.verification_state == 2 && self.verified_at == When::Never {
            Some("a succeeded verification has its time")
        } else if self.state == 2 && self.verification_state == 3 {
            Some("a copy that failed verification is back in the sync")
        } else {
            None
        }
    }
}

fn combos() -> Vec<Combo> {
    let mut out = Vec::new();
    for state in 0..=3 {
        for retry_at in WHEN {
            for last_synced_at in WHEN {
                for verification_state in 0..=4 {
                    // A verification start time is never in the future: it is set to now.
                    for verification_started_at in [When::Never, When::Past] {
                        for verified_at in WHEN {
                            for verification_retry_at in WHEN {
                                out.push(Combo {
                                    state,
                                    retry_at,
                                    last_synced_at,
                                    verification_state,
                                    verification_started_at,
                                    verified_at,
                                    verification_retry_at,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// Writes `combo` as the row of model id `id`; the database's answer (a CHECK refusal is an
/// error).
async fn insert(db: &Database, id: i64, c: &Combo, base: DateTime<Utc>) -> Result<(), String> {
    let at = |w: When| match w {
        When::Never => None,
        When::Past => Some(Ts(base - TimeDelta::hours(2))),
        When::Future => Some(Ts(base + TimeDelta::days(1))),
    };
    let p = |n| geo_runtime::db::dialect::param(db.dialect(), n);
    let sql = format!(
        "INSERT INTO widget_registry (widget_id, state, retry_count, retry_at, last_synced_at, sync_attempt, object_key, \
         created_at, verification_state, verification_started_at, verified_at, verification_retry_at, verification_checksum) \
         VALUES ({}, {}, 1, {}, {}, 1, {}, {}, {}, {}, {}, {}, {})",
        p(1),
        p(2),
        p(3),
        p(4),
        p(5),
        p(6),
        p(7),
        p(8),
        p(9),
        p(10),
        p(11)
    );
    let key = format!("widgets/{id}");
    macro_rules! bind_all {
        ($q:expr) => {
            $q.bind(id)
                .bind(c.state)
                .bind(at(c.retry_at))
                .bind(at(c.last_synced_at))
                .bind(key)
                .bind(Ts(base - TimeDelta::days(2)))
                .bind(c.verification_state)
                .bind(at(c.verification_started_at))
                .bind(at(c.verified_at))
                .bind(at(c.verification_retry_at))
                .bind(vec![1_u8; 32])
        };
    }
    let done = match db.dialect() {
        Dialect::Postgres => bind_all!(sqlx::query(AssertSqlSafe(sql)))
            .execute(db.as_postgres().expect("pg"))
            .await
            .map(|_| ()),
        Dialect::Sqlite => bind_all!(sqlx::query(AssertSqlSafe(sql)))
            .execute(db.as_sqlite_writer().expect("sqlite"))
            .await
            .map(|_| ()),
    };
    done.map_err(|e| e.to_string())
}

async fn rows(db: &Database) -> BTreeMap<i64, RegistryRecord> {
    let columns = ["id", "widget_id"]
        .into_iter()
        .chain(REGISTRY_COLUMNS)
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("SELECT {columns} FROM widget_registry");
    let rows: Vec<RegistryRecord> = match db.dialect() {
        Dialect::Postgres => sqlx::query(AssertSqlSafe(sql))
            .fetch_all(db.as_postgres().expect("pg"))
            .await
            .expect("rows")
            .iter()
            .map(|r| RegistryRecord::decode(r, "widget_id").expect("decode"))
            .collect(),
        Dialect::Sqlite => sqlx::query(AssertSqlSafe(sql))
            .fetch_all(db.as_sqlite_readers().expect("sqlite"))
            .await
            .expect("rows")
            .iter()
            .map(|r| RegistryRecord::decode(r, "widget_id").expect("decode"))
            .collect(),
    };
    rows.into_iter().map(|r| (r.model_record_id, r)).collect()
}

/// A fresh secondary tracking database of the same kind as `like`.
async fn fresh(like: &TestDatabase) -> TestDatabase {
    let db = match like.dialect() {
        Dialect::Sqlite => testing::sqlite().await,
        Dialect::Postgres => testing::postgres().await.expect("postgres"),
    };
    common::secondary(&db).await;
    db
}

const SCHEDULERS: [&str; 5] = [
    "sync claim",
    "sync sweeper",
    "verification claim",
    "verification sweeper",
    "disabled recheck",
];

/// Runs scheduler `which` at `far` on `db`; returns the model ids whose rows it changed.
async fn run(
    which: &str,
    db: &Database,
    far: DateTime<Utc>,
    client: &PrimaryClient,
    store: &LocalStore,
) -> BTreeSet<i64> {
    let before = rows(db).await;
    let registry = Registry::new(db, WidgetReplicator::DESCRIPTOR);
    let verification = SecondaryVerification::new(
        db,
        &common::set(),
        store.clone(),
        SecondaryVerifyConfig::default(),
    );
    match which {
        "sync claim" => {
            registry.claim(1_000_000, far).await.expect("claim");
        }
        "sync sweeper" => {
            registry
                .fail_timed_out(Duration::from_secs(1), far)
                .await
                .expect("sweep");
        }
        "sync release at start" => {
            registry
                .release_interrupted(far, far)
                .await
                .expect("release");
        }
        "verification claim" => {
            while verification.step_before(far).await.expect("verify").claimed > 0 {}
        }
        "verification sweeper" => {
            verification.release_stuck(far).await.expect("release");
        }
        "disabled recheck" => {
            verification
                .check_disabled_at(client, Duration::from_secs(60), far)
                .await
                .expect("recheck");
        }
        other => unreachable!("{other}"),
    }
    let after = rows(db).await;
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "{which} added or removed rows"
    );
    before
        .iter()
        .filter(|(id, row)| after.get(id) != Some(row))
        .map(|(id, _)| *id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_is_taken_by_exactly_one_scheduler_or_cannot_exist() {
    // A real primary, for the recheck of disabled copies (it knows none of these records).
    let pdb = testing::sqlite().await;
    common::primary(&pdb).await;
    let root = tempfile::tempdir().expect("tempdir");
    let primary = Node::start(
        NodeConfig::Primary(PrimaryConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            root.path(),
        )),
        &pdb,
        &common::set(),
    )
    .await
    .expect("primary");
    let creds = add_secondary(&pdb, "s", "http://s.invalid")
        .await
        .expect("register");
    let client = PrimaryClient::new(
        &format!("http://{}", primary.local_addr().expect("addr")),
        &creds.access_key,
        creds.secret,
        Duration::from_secs(10),
    )
    .expect("client");
    let empty = tempfile::tempdir().expect("tempdir");
    let store = LocalStore::new(empty.path());

    let combos = combos();
    for like in testing::all().await {
        let label = like.label().to_owned();
        let base = now();
        let far = base + TimeDelta::days(3650);

        // What the CHECK constraints refuse is exactly what the docs call impossible.
        let first = fresh(&like).await;
        let mut possible = Vec::new();
        for (i, c) in combos.iter().enumerate() {
            let id = i as i64 + 1;
            let refused = insert(&first, id, c, base).await.err();
            match (c.impossible(), &refused) {
                (None, None) => possible.push((id, *c)),
                (Some(_), Some(e)) => assert!(e.contains("check"), "{label}: {c:?}: {e}"),
                (None, Some(e)) => panic!("{label}: a possible row was refused: {c:?}: {e}"),
                (Some(why), None) => panic!("{label}: accepted an impossible row ({why}): {c:?}"),
            }
        }
        assert!(possible.len() > combos.len() / 2, "{label}");

        let mut taken: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
        let mut started_rows = BTreeSet::new();
        for which in SCHEDULERS {
            let db = fresh(&like).await;
            for (id, c) in &possible {
                insert(&db, *id, c, base).await.expect("copy");
            }
            let changed = run(which, &db, far, &client, &store).await;
            if which == "sync sweeper" {
                started_rows = changed.clone();
            }
            for id in changed {
                taken.entry(id).or_default().push(which);
            }
        }
        for (id, c) in &possible {
            let by = taken.get(id).cloned().unwrap_or_default();
            assert_eq!(
                by.len(),
                1,
                "{label}: row {c:?} is taken by {by:?}, not by exactly one scheduler"
            );
        }
        // A node's start releases the same rows the sweeper would fail, at once.
        let db = fresh(&like).await;
        for (id, c) in &possible {
            insert(&db, *id, c, base).await.expect("copy");
        }
        let released = run("sync release at start", &db, far, &client, &store).await;
        assert_eq!(released, started_rows, "{label}");
        assert!(
            possible
                .iter()
                .filter(|(_, c)| c.state == 1)
                .all(|(id, _)| released.contains(id)),
            "{label}"
        );
    }
    primary.shutdown().await;
}

/// The widget descriptor as it was before the invariants: its registry migration 1 only.
static BEFORE_INVARIANTS: geo_runtime::replicator::ReplicatorDescriptor =
    geo_runtime::replicator::ReplicatorDescriptor {
        secondary_migrations: &[WidgetReplicator::DESCRIPTOR.secondary_migrations[0]],
        ..*WidgetReplicator::DESCRIPTOR
    };

/// A registry written before the invariants existed is repaired by the migration that adds
/// them: each unreachable row is made reachable, nothing else changes, and on SQLite the
/// rebuilt table keeps its AUTOINCREMENT position (a registry row id is never reused).
#[tokio::test]
async fn the_invariants_migration_repairs_existing_rows() {
    for db in testing::all().await {
        let label = db.label().to_owned();
        let old = geo_runtime::ReplicatorSet::empty()
            .with_descriptor(&BEFORE_INVARIANTS)
            .expect("set");
        geo_runtime::db::migrate(&db, geo_runtime::NodeRole::Secondary, &old)
            .await
            .expect("migration 1");
        let base = now();
        let c = |state, last_synced_at, verification_state, verified_at| Combo {
            state,
            retry_at: When::Never,
            last_synced_at,
            verification_state,
            verification_started_at: When::Never,
            verified_at,
            verification_retry_at: When::Never,
        };
        let written = [
            c(1, When::Never, 0, When::Never), // started without a start time
            c(2, When::Past, 1, When::Never),  // verification started without a start time
            c(2, When::Past, 2, When::Never),  // verified without a time
            c(2, When::Past, 3, When::Past),   // synced with a failed verification
            c(2, When::Past, 2, When::Past),   // fine as it is
        ];
        for (i, row) in written.iter().enumerate() {
            insert(&db, i as i64 + 1, row, base)
                .await
                .expect("an old registry takes any row");
        }
        // The row at the top is deleted: its id must not come back.
        let top = common::scalar_i64(&db, "SELECT max(id) FROM widget_registry").await;
        common::exec(&db, "DELETE FROM widget_registry WHERE widget_id = 5").await;
        let fine = rows(&db).await;

        geo_runtime::db::migrate(&db, geo_runtime::NodeRole::Secondary, &common::set())
            .await
            .expect("migration 2");
        let after = rows(&db).await;
        let by_model = |id: i64| after.get(&id).expect("row kept");
        assert!(by_model(1).last_synced_at.is_some(), "{label}");
        assert_eq!(
            by_model(2).verification_state,
            geo_runtime::VerificationState::Pending,
            "{label}"
        );
        assert_eq!(
            by_model(3).verification_state,
            geo_runtime::VerificationState::Pending,
            "{label}"
        );
        assert_eq!(
            by_model(4).state,
            geo_runtime::SyncState::Pending,
            "{label}"
        );
        assert_eq!(after.len(), 4, "{label}");
        for (id, row) in &fine {
            assert_eq!(
                after.get(id).map(|r| r.id),
                Some(row.id),
                "{label}: ids kept"
            );
        }
        // The constraints hold from now on, and a new row gets a new id.
        let refused = insert(&db, 9, &c(1, When::Never, 0, When::Never), base).await;
        assert!(refused.is_err(), "{label}: {refused:?}");
        insert(&db, 10, &c(0, When::Never, 0, When::Never), base)
            .await
            .expect("a valid row");
        let new_id = rows(&db).await.get(&10).expect("row").id;
        assert!(
            new_id > top,
            "{label}: id {new_id} reused (the highest used was {top})"
        );
    }
}
