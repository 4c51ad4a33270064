//! Property test: random interleavings of events, claims, successes, failures and resyncs,
//! applied to a real registry and to a model of Geo's state machine side by side. After every
//! step the database must equal the model; in particular no row is ever marked synced by an
//! attempt that a reset overtook, and once every attempt has finished no row is left `started`
//! (unreachable by the scheduler).

mod common;

use std::collections::BTreeMap;

use chrono::TimeDelta;
use common::WidgetReplicator;
use geo_runtime::db::dialect::now;
use geo_runtime::registry::{ClaimedRow, Registry, SyncState};
use geo_runtime::{Database, Replicator};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Created(i64),
    Updated(i64),
    Deleted(i64),
    Claim(usize),
    Succeed(usize),
    Fail(usize),
    Resync(i64),
}

fn op() -> impl Strategy<Value = Op> {
    let id = 1..6i64;
    prop_oneof![
        id.clone().prop_map(Op::Created),
        id.clone().prop_map(Op::Updated),
        id.clone().prop_map(Op::Deleted),
        (1..4usize).prop_map(Op::Claim),
        (0..8usize).prop_map(Op::Succeed),
        (0..8usize).prop_map(Op::Fail),
        id.prop_map(Op::Resync),
    ]
}

/// The model: per model id, (registry row id, state, attempt); attempts not finished yet.
#[derive(Debug, Default)]
struct Model {
    rows: BTreeMap<i64, (i64, SyncState, i64)>,
    outstanding: Vec<ClaimedRow>,
}

async fn db_rows(
    r: &Registry,
    ids: impl Iterator<Item = i64>,
) -> BTreeMap<i64, (i64, SyncState, i64)> {
    let mut out = BTreeMap::new();
    for id in ids {
        if let Some(row) = r.find_by_model_id(id).await.expect("find") {
            out.insert(id, (row.id, row.state, row.sync_attempt));
        }
    }
    out
}

async fn run(db: &Database, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let r = Registry::new(db, WidgetReplicator::DESCRIPTOR);
    let mut m = Model::default();
    // Claims look far ahead so that failed rows are due again.
    let later = || now() + TimeDelta::hours(5);
    for op in ops {
        match op {
            Op::Created(id) => {
                r.insert_pending(&[id], now()).await.expect("insert");
                if let std::collections::btree_map::Entry::Vacant(slot) = m.rows.entry(id) {
                    let row = r.find_by_model_id(id).await.expect("find").expect("row");
                    slot.insert((row.id, SyncState::Pending, 0));
                }
            }
            Op::Updated(id) => {
                r.reset_pending(&[id], now()).await.expect("reset");
                match m.rows.get_mut(&id) {
                    Some(row) => row.1 = SyncState::Pending,
                    None => {
                        let row = r.find_by_model_id(id).await.expect("find").expect("row");
                        m.rows.insert(id, (row.id, SyncState::Pending, 0));
                    }
                }
            }
            Op::Deleted(id) => {
                r.delete(&[id]).await.expect("delete");
                m.rows.remove(&id);
            }
            Op::Claim(n) => {
                let claimed = r.claim(n, later()).await.expect("claim");
                let due = m
                    .rows
                    .values()
                    .filter(|(_, s, _)| matches!(s, SyncState::Pending | SyncState::Failed))
                    .count();
                prop_assert_eq!(
                    claimed.len(),
                    n.min(due),
                    "claimed {:?} of {} due",
                    claimed,
                    due
                );
                for c in &claimed {
                    let row = m
                        .rows
                        .get_mut(&c.model_record_id)
                        .expect("claimed a row the model has");
                    prop_assert!(
                        matches!(row.1, SyncState::Pending | SyncState::Failed),
                        "claimed a {} row",
                        row.1
                    );
                    row.1 = SyncState::Started;
                    row.2 += 1;
                    prop_assert_eq!(row.2, c.sync_attempt);
                    prop_assert_eq!(row.0, c.id);
                }
                m.outstanding.extend(claimed);
            }
            Op::Succeed(k) | Op::Fail(k) if !m.outstanding.is_empty() => {
                let attempt = m.outstanding.remove(k % m.outstanding.len());
                let live = m
                    .rows
                    .get(&attempt.model_record_id)
                    .is_some_and(|(rid, s, a)| {
                        *rid == attempt.id && *s == SyncState::Started && *a == attempt.sync_attempt
                    });
                let done = if matches!(op, Op::Succeed(_)) {
                    !r.mark_synced(&[attempt]).await.expect("synced").is_empty()
                } else {
                    r.mark_failed(&[attempt.failed("boom", false)], now())
                        .await
                        .expect("failed")
                        == 1
                };
                prop_assert_eq!(
                    done,
                    live,
                    "attempt {:?} finished: db {}, model {}",
                    attempt,
                    done,
                    live
                );
                if live {
                    let row = m.rows.get_mut(&attempt.model_record_id).expect("live");
                    row.1 = if matches!(op, Op::Succeed(_)) {
                        SyncState::Synced
                    } else {
                        SyncState::Failed
                    };
                }
            }
            Op::Succeed(_) | Op::Fail(_) => {}
            Op::Resync(id) => {
                r.resync(&[id]).await.expect("resync");
                if let Some(row) = m.rows.get_mut(&id)
                    && matches!(row.1, SyncState::Synced | SyncState::Failed)
                {
                    row.1 = SyncState::Pending;
                }
            }
        }
        let actual = db_rows(&r, 1..6).await;
        prop_assert_eq!(&actual, &m.rows);
    }
    // Finish every attempt still running: nothing may stay `started`.
    for attempt in std::mem::take(&mut m.outstanding) {
        r.mark_failed(&[attempt.failed("drain", false)], now())
            .await
            .expect("failed");
    }
    let stuck = r.count_by_state().await.expect("counts").started;
    prop_assert_eq!(stuck, 0, "rows left started after every attempt finished");
    Ok(())
}

/// Makes the database of one case (`None`: skipped).
type MakeDb = fn() -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Option<geo_runtime::testing::TestDatabase>>>,
>;

fn check(make: MakeDb, cases: u32) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut config = ProptestConfig::with_cases(cases);
    config.failure_persistence = None;
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..40))| {
        rt.block_on(async {
            let Some(db) = make().await else { return Ok(()) };
            common::secondary(&db).await;
            run(&db, ops).await
        })?;
    });
}

#[test]
fn interleavings_on_sqlite() {
    check(
        || Box::pin(async { Some(geo_runtime::testing::sqlite().await) }),
        128,
    );
}

#[test]
fn interleavings_on_postgres() {
    check(|| Box::pin(geo_runtime::testing::postgres()), 32);
}
