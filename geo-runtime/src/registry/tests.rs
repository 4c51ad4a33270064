//! Every statement that changes a verification state, run on every state on SQLite and
//! PostgreSQL, does what `VerificationEvent::apply` says (narrowed to the states the statement
//! takes: a claim one due state, an outcome the running attempt): the transition where the
//! machine allows it, nothing otherwise. The statements are crate-private, hence a test inside
//! the crate; tests/registry.rs does the same for the sync states through the public API.

use chrono::{DateTime, TimeDelta, Utc};
use geo_schema::{REGISTRY_COLUMNS, VERIFICATION_COLUMNS};
use sqlx::AssertSqlSafe;

use super::{Copies, CopyFailure, Registry, SyncState};
use crate::db::dialect::{Ts, now, param, quote};
use crate::db::{Database, on_pool};
use crate::descriptor::TEST_WIDGET as WIDGET;
use crate::verification::sql::mark_pending_sql;
use crate::verification::{Checksums, Due, VerificationEvent, VerificationState};

/// The three tables, from the schema's columns (without the invariants' constraints, so that
/// a row can be put in any state).
async fn create_tables(db: &Database) {
    let d = db.dialect();
    let columns = |list: &[geo_schema::Column]| -> String {
        list.iter()
            .map(|c| format!(", {} {}", quote(c.name), c.ty.definition(d, c.name)))
            .collect()
    };
    let sql = format!(
        "CREATE TABLE \"widgets\" (\"id\" {big} PRIMARY KEY, \"file\" TEXT);\n\
         CREATE TABLE \"widget_states\" (\"widget_id\" {big} PRIMARY KEY{states});\n\
         CREATE TABLE \"widget_registry\" (\"id\" {pk}, \"widget_id\" {big} NOT NULL UNIQUE{registry});",
        big = d.big_int(),
        pk = d.identity_pk(),
        states = columns(&VERIFICATION_COLUMNS),
        registry = columns(&REGISTRY_COLUMNS),
    );
    on_pool!(db, write, pool => sqlx::raw_sql(AssertSqlSafe(sql)).execute(pool).await.expect("create tables").rows_affected());
}

/// When every set-up attempt started, and the time a row verified "long ago" was verified.
fn started_at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).expect("a time")
}

/// Puts `table`'s row `key = id` in verification state `s`, started at [`started_at`], verified
/// long ago, retry due.
async fn put(db: &Database, table: &str, key: &str, id: i64, s: VerificationState) {
    let p = |n| param(db.dialect(), n);
    let sql = format!(
        "UPDATE {} SET \"verification_state\" = {}, \"verification_started_at\" = {at}, \"verified_at\" = {at}, \
         \"verification_retry_at\" = NULL, \"verification_checksum\" = {} WHERE {} = {id}",
        quote(table),
        s.as_i16(),
        p(2),
        quote(key),
        at = p(1),
    );
    on_pool!(db, write, pool => sqlx::query(AssertSqlSafe(sql)).bind(Ts(started_at())).bind(vec![7_u8; 32]).execute(pool).await.expect("put").rows_affected());
}

async fn state(db: &Database, table: &str, key: &str, id: i64) -> VerificationState {
    let sql = format!(
        "SELECT \"verification_state\" FROM {} WHERE {} = {id}",
        quote(table),
        quote(key)
    );
    let n: i16 = on_pool!(db, read, pool => sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(pool).await.expect("state"));
    VerificationState::stored(n).expect("a state")
}

/// What a statement that performs `event` on the states `only` must leave of `from`.
fn expected(
    event: VerificationEvent,
    only: &[VerificationState],
    from: VerificationState,
) -> VerificationState {
    if only.contains(&from) {
        event.apply(from).unwrap_or(from)
    } else {
        from
    }
}

const ALL: [VerificationState; 5] = VerificationState::ALL;
const STARTED: [VerificationState; 1] = [VerificationState::Started];
const DISABLED: [VerificationState; 1] = [VerificationState::Disabled];

/// The primary's statements (`Checksums`), on `widget_states`.
async fn primary_statement(db: &Database, c: &Checksums, statement: &str, id: i64) {
    let far = now() + TimeDelta::days(400);
    let after_start = started_at() + TimeDelta::hours(1);
    match statement {
        "claim pending" => drop(c.claim(Due::Pending, 1000, now()).await.expect("claim")),
        "claim due retries" => drop(c.claim(Due::Retry, 1000, now()).await.expect("claim")),
        "claim re-verifications" => drop(
            c.claim(Due::VerifiedBefore(now()), 1000, now())
                .await
                .expect("claim"),
        ),
        "record a checksum" | "record a failure" => {
            let mut tx = db.begin_write().await.expect("tx");
            if statement == "record a checksum" {
                c.succeeded_in(tx.conn(), id, started_at(), &[1; 32], now())
                    .await
                    .expect("succeed");
            } else {
                c.failed_in(tx.conn(), id, started_at(), "f", now(), far, None)
                    .await
                    .expect("fail");
            }
            tx.commit().await.expect("commit");
        }
        "fail timed out" => drop(
            c.fail_timed_out(after_start, far, "timed out")
                .await
                .expect("sweep"),
        ),
        "reverify" => drop(c.reverify(&[id]).await.expect("reverify")),
        "mark pending (a changed object)" => {
            let sql = mark_pending_sql(&WIDGET, db.dialect());
            on_pool!(db, write, pool => sqlx::query(AssertSqlSafe(sql)).bind(id).execute(pool).await.expect("pending").rows_affected());
        }
        other => unreachable!("{other}"),
    }
}

/// A secondary's statements (`Copies`), on a synced registry row.
async fn secondary_statement(c: &Copies, statement: &str, id: i64) {
    let failure = || CopyFailure {
        reason: "f".into(),
        mismatch: true,
        got: Some(vec![2; 32]),
        at: now(),
        retry_at: now() + TimeDelta::hours(1),
    };
    match statement {
        "claim" => drop(c.claim(1000, now(), now()).await.expect("claim")),
        "record a match" => drop(c.succeeded(id, started_at(), now()).await.expect("op")),
        "record no primary checksum" => drop(c.disabled(id, started_at()).await.expect("op")),
        "record a failure" => drop(c.failed(id, started_at(), failure()).await.expect("op")),
        "release stuck checks" => drop(
            c.release_stuck(started_at() + TimeDelta::hours(1))
                .await
                .expect("op"),
        ),
        "a disabled copy matches" => drop(c.disabled_succeeded(id, now()).await.expect("op")),
        "a disabled copy differs" => drop(
            c.disabled_mismatch(id, failure(), &[3; 32])
                .await
                .expect("op"),
        ),
        other => unreachable!("{other}"),
    }
}

#[tokio::test]
async fn every_verification_statement_matches_the_machine() {
    use VerificationEvent as E;
    use VerificationState as S;
    let not_running = [S::Pending, S::Succeeded, S::Failed, S::Disabled];
    let primary = [
        (E::Start, &[S::Pending][..], "claim pending"),
        (E::Start, &[S::Failed][..], "claim due retries"),
        (E::Start, &[S::Succeeded][..], "claim re-verifications"),
        (E::Succeed, &STARTED[..], "record a checksum"),
        (E::Fail, &STARTED[..], "record a failure"),
        (E::Fail, &STARTED[..], "fail timed out"),
        (E::Pending, &not_running[..], "reverify"),
        (E::Pending, &ALL[..], "mark pending (a changed object)"),
    ];
    let secondary = [
        (E::Start, &[S::Pending, S::Succeeded][..], "claim"),
        (E::Succeed, &STARTED[..], "record a match"),
        (E::Disable, &STARTED[..], "record no primary checksum"),
        (E::Fail, &STARTED[..], "record a failure"),
        (E::Pending, &STARTED[..], "release stuck checks"),
        (E::Succeed, &DISABLED[..], "a disabled copy matches"),
        (E::Fail, &DISABLED[..], "a disabled copy differs"),
    ];
    for db in crate::testing::all().await {
        let label = db.label().to_owned();
        create_tables(&db).await;
        let checksums = Checksums::new(&db, &WIDGET);
        let copies = Copies::new(&db, &WIDGET);
        let registry = Registry::new(&db, &WIDGET);
        let mut id = 0;
        for (event, only, statement) in primary {
            for from in ALL {
                id += 1;
                let sql = format!(
                    "INSERT INTO \"widgets\" (\"id\", \"file\") VALUES ({id}, 'w/{id}');\n\
                     INSERT INTO \"widget_states\" (\"widget_id\") VALUES ({id});"
                );
                on_pool!(db, write, pool => sqlx::raw_sql(AssertSqlSafe(sql)).execute(pool).await.expect("insert").rows_affected());
                put(&db, "widget_states", "widget_id", id, from).await;
                primary_statement(&db, &checksums, statement, id).await;
                let to = state(&db, "widget_states", "widget_id", id).await;
                assert_eq!(
                    to,
                    expected(event, only, from),
                    "{label}: primary, {statement} ({event:?}) from {from}"
                );
                // Out of the way of the next claim.
                let sql = format!("DELETE FROM \"widget_states\" WHERE \"widget_id\" = {id}");
                on_pool!(db, write, pool => sqlx::raw_sql(AssertSqlSafe(sql)).execute(pool).await.expect("delete").rows_affected());
            }
        }
        for (event, only, statement) in secondary {
            for from in ALL {
                id += 1;
                registry.insert_pending(&[id], now()).await.expect("row");
                let sql = format!(
                    "UPDATE \"widget_registry\" SET \"state\" = {}, \"object_key\" = 'w/{id}' WHERE \"widget_id\" = {id}",
                    SyncState::Synced.as_i16()
                );
                on_pool!(db, write, pool => sqlx::raw_sql(AssertSqlSafe(sql)).execute(pool).await.expect("synced").rows_affected());
                let row = registry
                    .find_by_model_id(id)
                    .await
                    .expect("find")
                    .expect("row")
                    .id;
                put(&db, "widget_registry", "id", row, from).await;
                secondary_statement(&copies, statement, row).await;
                let to = state(&db, "widget_registry", "id", row).await;
                assert_eq!(
                    to,
                    expected(event, only, from),
                    "{label}: secondary, {statement} ({event:?}) from {from}"
                );
                registry.delete(&[id]).await.expect("delete");
            }
        }
    }
}
