//! Registries on real SQLite and PostgreSQL: Geo's state machine as the database applies it,
//! leasing, backoff and the stuck-`started` sweeper.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use chrono::TimeDelta;
use common::{Widget, WidgetReplicator, exec, scalar_i64, secondaries};
use geo_runtime::db::dialect::now;
use geo_runtime::registry::{ClaimedRow, Registry, SyncState};
use geo_runtime::testing;
use geo_runtime::{Database, Replicator};

fn registry(db: &Database) -> Registry {
    Registry::new(db, WidgetReplicator::DESCRIPTOR)
}

async fn state_of(r: &Registry, id: i64) -> SyncState {
    r.find_by_model_id(id)
        .await
        .expect("find")
        .expect("row")
        .state
}

/// Puts row `id` into `state`, with a due retry time when failed.
async fn force(db: &Database, id: i64, state: SyncState) {
    let n = state.as_i16();
    exec(
        db,
        &format!("UPDATE widget_registry SET state = {n}, retry_at = NULL WHERE widget_id = {id}"),
    )
    .await;
}

#[tokio::test]
async fn claims_only_due_rows_and_finishes_only_the_running_attempt() {
    for db in secondaries().await {
        let r = registry(&db);
        let label = db.label();
        r.insert_pending(&[1, 2, 3, 4], now())
            .await
            .expect("insert");
        force(&db, 2, SyncState::Synced).await;
        force(&db, 3, SyncState::Failed).await; // retry_at NULL: due
        // Row 4 failed and is not due until 2999.
        let far = match db.dialect() {
            geo_runtime::Dialect::Postgres => "'2999-01-01'",
            geo_runtime::Dialect::Sqlite => "32472144000000000",
        };
        exec(
            &db,
            &format!("UPDATE widget_registry SET state = 3, retry_at = {far} WHERE widget_id = 4"),
        )
        .await;

        // Pending first, then due failures; synced and not-yet-due rows are not work.
        let claimed = r.claim(10, now()).await.expect("claim");
        let ids: Vec<i64> = claimed.iter().map(|c| c.model_record_id).collect();
        assert_eq!(ids, [1, 3], "{label}");
        assert!(
            claimed.iter().all(|c| c.sync_attempt == 1),
            "{label}: {claimed:?}"
        );
        assert_eq!(state_of(&r, 1).await, SyncState::Started);
        assert!(
            r.claim(10, now()).await.expect("claim").is_empty(),
            "{label}: a started row was claimed again"
        );

        // Row 1 is reset by an event while its sync runs: the stale attempt cannot finish it.
        let one = claimed[0];
        exec(
            &db,
            "UPDATE widget_registry SET state = 0 WHERE widget_id = 1",
        )
        .await;
        assert!(
            r.mark_synced(&[one]).await.expect("mark").is_empty(),
            "{label}: synced after a reset"
        );
        assert_eq!(state_of(&r, 1).await, SyncState::Pending);
        // The re-claim is attempt 2; attempt 1 can neither succeed nor fail it.
        let again = r.claim(1, now()).await.expect("claim");
        assert_eq!(again[0].sync_attempt, 2);
        assert!(r.mark_synced(&[one]).await.expect("mark").is_empty());
        assert_eq!(
            r.mark_failed(&[one.failed("late", false)], now())
                .await
                .expect("fail"),
            0
        );
        assert_eq!(state_of(&r, 1).await, SyncState::Started);
        assert_eq!(
            r.mark_synced(&again).await.expect("mark"),
            vec![again[0].id]
        );
        let row = r.find_by_model_id(1).await.expect("find").expect("row");
        assert_eq!(
            (row.state, row.retry_count, row.retry_at),
            (SyncState::Synced, 0, None),
            "{label}"
        );

        // A failure records the reason (≤ 255 characters) and Geo's backoff.
        let three = claimed[1];
        let at = now();
        assert_eq!(
            r.mark_failed(&[three.failed("x".repeat(400), false)], at)
                .await
                .expect("fail"),
            1
        );
        let row = r.find_by_model_id(3).await.expect("find").expect("row");
        assert_eq!(row.state, SyncState::Failed);
        assert_eq!(row.retry_count, 1);
        assert_eq!(row.last_sync_failure.map(|f| f.len()), Some(255));
        let wait = row.retry_at.expect("retry_at") - at;
        assert!(
            wait >= TimeDelta::seconds(16) && wait <= TimeDelta::seconds(76),
            "{label}: {wait}"
        );
        // Not due yet; due later.
        assert!(r.claim(10, now()).await.expect("claim").is_empty());
        let later = r
            .claim(10, at + TimeDelta::seconds(80))
            .await
            .expect("claim");
        assert_eq!(
            later.iter().map(|c| c.model_record_id).collect::<Vec<_>>(),
            [3]
        );
        assert_eq!(later[0].retry_count, 1);

        // Operator resync: synced/failed → pending only.
        assert_eq!(
            r.resync(&[1, 2, 3]).await.expect("resync"),
            2,
            "{label}: started row 3 must not be resynced"
        );
        assert_eq!(state_of(&r, 2).await, SyncState::Pending);
    }
}

/// Puts a new row for `id` into `from` through the registry's own operations; returns the
/// running attempt when `from` is started.
async fn reach(r: &Registry, id: i64, from: SyncState) -> ClaimedRow {
    r.insert_pending(&[id], now()).await.expect("insert");
    let mut row = ClaimedRow {
        id: r.find_by_model_id(id).await.expect("find").expect("row").id,
        model_record_id: id,
        retry_count: 0,
        sync_attempt: 0,
    };
    if from != SyncState::Pending {
        let claimed = r.claim(1000, now()).await.expect("claim");
        row = *claimed
            .iter()
            .find(|c| c.model_record_id == id)
            .expect("claimed");
        // Only this test's row is due: the others were settled by earlier rounds.
        match from {
            SyncState::Synced => drop(r.mark_synced(&[row]).await.expect("synced")),
            SyncState::Failed => drop(
                r.mark_failed(&[row.failed("boom", false)], now())
                    .await
                    .expect("failed"),
            ),
            _ => {}
        }
    }
    assert_eq!(state_of(r, id).await, from);
    row
}

/// Every statement that changes a row's state, on every state, does exactly what
/// `SyncEvent::apply` says: the transition when the machine allows it, nothing otherwise. No
/// exceptions: the statements' conditions are rendered from the machine.
#[tokio::test]
async fn every_transition_matches_the_state_machine() {
    use geo_runtime::registry::SyncEvent;
    for db in secondaries().await {
        let r = registry(&db);
        let label = db.label();
        let mut id = 100;
        // (event, operation name) pairs; each operation performs that event.
        let operations = [
            (SyncEvent::Pending, "reset by an updated event"),
            (SyncEvent::Start, "claim"),
            (SyncEvent::Synced, "mark synced"),
            (SyncEvent::Fail, "mark failed"),
            (SyncEvent::Fail, "fail timed out"),
            (SyncEvent::Resync, "resync"),
        ];
        for (event, operation) in operations {
            for from in SyncState::ALL {
                id += 1;
                let row = reach(&r, id, from).await;
                match operation {
                    "reset by an updated event" => {
                        r.reset_pending(&[id], now()).await.expect("reset");
                    }
                    "claim" => {
                        // Far ahead, so that a failed row is due.
                        let far = now() + TimeDelta::hours(5);
                        let claimed = r.claim(1000, far).await.expect("claim");
                        assert!(
                            claimed.iter().all(|c| c.model_record_id == id),
                            "{label}: another row was due"
                        );
                    }
                    "mark synced" => drop(r.mark_synced(&[row]).await.expect("op")),
                    "mark failed" => drop(
                        r.mark_failed(&[row.failed("f", false)], now())
                            .await
                            .expect("op"),
                    ),
                    "fail timed out" => {
                        let later = now() + TimeDelta::hours(5);
                        r.fail_timed_out(Duration::from_secs(60), later)
                            .await
                            .expect("op");
                    }
                    "resync" => drop(r.resync(&[id]).await.expect("op")),
                    other => unreachable!("{other}"),
                }
                let to = state_of(&r, id).await;
                let expected = event.apply(from).unwrap_or(from);
                assert_eq!(to, expected, "{label}: {operation} ({event:?}) from {from}");
                // Leave nothing due for the next claim.
                if to != SyncState::Synced {
                    let claimed = r
                        .claim(1000, now() + TimeDelta::hours(5))
                        .await
                        .expect("settle");
                    r.mark_synced(&claimed).await.expect("settle");
                }
            }
        }
    }
}

#[tokio::test]
async fn failures_spread_their_retry_times() {
    for db in secondaries().await {
        let r = registry(&db);
        let ids: Vec<i64> = (1..=100).collect();
        r.insert_pending(&ids, now()).await.expect("insert");
        let claimed = r.claim(100, now()).await.expect("claim");
        let at = now();
        let failures: Vec<_> = claimed.iter().map(|c| c.failed("down", false)).collect();
        assert_eq!(r.mark_failed(&failures, at).await.expect("fail"), 100);
        let mut retry: HashSet<i64> = HashSet::new();
        for id in ids {
            let row = r.find_by_model_id(id).await.expect("find").expect("row");
            retry.insert(row.retry_at.expect("retry_at").timestamp_micros());
        }
        // Random jitter in microseconds: two of 100 draws coincide about once in 6,000 runs,
        // so a few shared times are chance; lockstep would share nearly all.
        assert!(
            retry.len() >= 98,
            "{}: failures share retry times ({} distinct of 100)",
            db.label(),
            retry.len()
        );
        let spread = retry.iter().max().expect("100") - retry.iter().min().expect("100");
        assert!(
            spread > 30_000_000,
            "{}: retry times spread over only {spread} µs",
            db.label()
        );
    }
}

#[tokio::test]
async fn the_sweeper_fails_rows_stuck_in_started() {
    for db in secondaries().await {
        let r = registry(&db);
        r.insert_pending(&[1, 2], now()).await.expect("insert");
        let long_ago = now() - TimeDelta::hours(9);
        r.claim(1, long_ago).await.expect("claim"); // row 1: started 9 h ago
        r.claim(1, now()).await.expect("claim"); // row 2: started now
        let n = r
            .fail_timed_out(Duration::from_secs(8 * 3600), now())
            .await
            .expect("sweep");
        assert_eq!(n, 1, "{}", db.label());
        let row = r.find_by_model_id(1).await.expect("find").expect("row");
        assert_eq!(row.state, SyncState::Failed);
        assert_eq!(row.retry_count, 1);
        assert_eq!(
            row.last_sync_failure.as_deref(),
            Some("Sync timed out after 28800")
        );
        assert!(row.retry_at.expect("retry") > now());
        assert_eq!(state_of(&r, 2).await, SyncState::Started);
    }
}

#[tokio::test]
async fn two_claimers_on_postgres_never_share_a_row() {
    let Some(db) = testing::postgres().await else {
        return;
    };
    common::secondary(&db).await;
    let ids: Vec<i64> = (1..=10_000).collect();
    registry(&db)
        .insert_pending(&ids, now())
        .await
        .expect("insert");
    // Two pools, as two worker processes would have.
    let schema = db.pg_schema().expect("schema").to_owned();
    let url = std::env::var(testing::DATABASE_URL_VAR).expect("url");
    let mut workers = Vec::new();
    for _ in 0..2 {
        let options: sqlx::postgres::PgConnectOptions = url.parse().expect("url");
        let other = Database::connect_postgres(
            options
                .options([("search_path", schema.as_str())])
                .application_name(&schema),
        )
        .await
        .expect("connect");
        workers.push(tokio::spawn(async move {
            let r = registry(&other);
            let mut mine = Vec::new();
            loop {
                let batch = r.claim(100, now()).await.expect("claim");
                if batch.is_empty() {
                    break;
                }
                let done = r.mark_synced(&batch).await.expect("synced");
                assert_eq!(done.len(), batch.len());
                mine.extend(batch.iter().map(|c| c.model_record_id));
            }
            mine
        }));
    }
    let mut all = Vec::new();
    let mut per_worker = Vec::new();
    for w in workers {
        let mine = w.await.expect("join");
        per_worker.push(mine.len());
        all.extend(mine);
    }
    all.sort_unstable();
    assert_eq!(
        all, ids,
        "every row claimed exactly once (per worker: {per_worker:?})"
    );
    assert_eq!(
        scalar_i64(&db, "SELECT count(*) FROM widget_registry WHERE state = 2").await,
        10_000
    );
}

#[test]
fn the_model_has_its_replicator() {
    use geo_runtime::ReplicableModel;
    let w = Widget {
        id: 1,
        file: "f".into(),
    };
    assert_eq!(w.model_record_id(), 1);
}
