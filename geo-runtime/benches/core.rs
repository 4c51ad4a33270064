//! Throughput of the runtime core, printed, for SQLite and (with GEO_TEST_DATABASE_URL)
//! PostgreSQL, each next to an anchor measured in the same run:
//!
//! - the event cursor: events applied per second (anchor: one set-based INSERT of as many
//!   registry rows, the ceiling of what applying can cost);
//! - the lease loop: rows claimed and marked synced per second (anchor: the raw
//!   `UPDATE … WHERE id IN (SELECT … LIMIT 100 [FOR UPDATE SKIP LOCKED]) RETURNING` loop);
//! - the consistency pass: model ids reconciled per second over 1,000,000 ids (anchor: one
//!   set-based INSERT of 1,000,000 registry rows); then the same pass once every copy is synced,
//!   comparing each page's digest of keys and checksums (anchor: the first pass).
//!
//! `cargo bench -p geo-runtime --bench core` (release). `GEO_BENCH_SCALE=0.1` for a quick run.

use std::time::{Duration, Instant};

use geo_runtime::db::{self, Dialect, dialect::now};
use geo_runtime::events::DbModelIdSource;
use geo_runtime::events::{CursorConfig, DbEventSource, EventCursor, StartPosition};
use geo_runtime::registry::Registry;
use geo_runtime::testing::{self, TestDatabase};
use geo_runtime::worker::consistency::Consistency;
use geo_runtime::{Database, NodeRole, Replicator, ReplicatorSet};
use sqlx::AssertSqlSafe;

mod common;
use common::{WidgetReplicator, exec, scale};

/// `SELECT i FROM <1..=n>` for either dialect.
fn series(d: Dialect, n: i64) -> String {
    match d {
        Dialect::Postgres => format!("SELECT i FROM generate_series(1, {n}) AS i"),
        Dialect::Sqlite => format!(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) SELECT i FROM s"
        ),
    }
}

fn now_sql(d: Dialect) -> String {
    match d {
        Dialect::Postgres => "now()".into(),
        Dialect::Sqlite => now().timestamp_micros().to_string(),
    }
}

struct Figure {
    what: &'static str,
    rows: i64,
    took: Duration,
    anchor: Option<(&'static str, Duration)>,
}

impl Figure {
    fn print(&self, dialect: &str) {
        let rate = self.rows as f64 / self.took.as_secs_f64();
        let mut line = format!(
            "{dialect:<10} {:<34} {:>9} rows in {:>7.3} s = {:>9.0} rows/s",
            self.what,
            self.rows,
            self.took.as_secs_f64(),
            rate
        );
        if let Some((name, anchor)) = self.anchor {
            let anchor_rate = self.rows as f64 / anchor.as_secs_f64();
            line += &format!(
                "   | anchor {name}: {anchor_rate:>9.0} rows/s, ratio {:.2}",
                rate / anchor_rate
            );
        }
        println!("{line}");
    }
}

async fn fresh(pg: bool) -> Option<TestDatabase> {
    if pg {
        testing::postgres().await
    } else {
        Some(testing::sqlite().await)
    }
}

async fn cursor_bench(pg: bool, set: &ReplicatorSet) -> Option<Figure> {
    let primary = fresh(pg).await?;
    let secondary = fresh(pg).await?;
    let d = primary.dialect();
    exec(
        &primary,
        "CREATE TABLE widgets (id BIGINT PRIMARY KEY, file TEXT NOT NULL)",
    )
    .await;
    db::migrate(&primary, NodeRole::Primary, set)
        .await
        .expect("migrate");
    db::migrate(&secondary, NodeRole::Secondary, set)
        .await
        .expect("migrate");
    let n = scale(200_000);
    exec(&primary, &format!(
        "INSERT INTO geo_events (replicable_name, event_name, model_record_id, payload, created_at) SELECT 'widget', 'created', i, '{{\"object_key\":\"w\"}}', {} FROM ({}) AS t",
        now_sql(d), series(d, n)
    )).await;
    let cursor = EventCursor::new(
        &secondary,
        set,
        DbEventSource::new(&primary),
        CursorConfig {
            start: StartPosition::Beginning,
            ..CursorConfig::default()
        },
        "bench",
    );
    let t = Instant::now();
    let mut applied = 0;
    loop {
        let r = cursor.step().await.expect("step");
        applied += r.applied;
        if r.read == 0 {
            break;
        }
    }
    let took = t.elapsed();
    assert_eq!(applied as i64, n);
    // Anchor: the same rows in one statement.
    let anchor_db = fresh(pg).await?;
    db::migrate(&anchor_db, NodeRole::Secondary, set)
        .await
        .expect("migrate");
    let t = Instant::now();
    exec(
        &anchor_db,
        &format!(
            "INSERT INTO widget_registry (widget_id, created_at) SELECT i, {} FROM ({}) AS t",
            now_sql(d),
            series(d, n)
        ),
    )
    .await;
    Some(Figure {
        what: "event cursor: events applied",
        rows: n,
        took,
        anchor: Some(("one INSERT…SELECT", t.elapsed())),
    })
}

/// The raw claim-only loop (`sql` claims up to 100 rows) until nothing is left; its duration.
async fn raw_claim_loop(db: &Database, sql: &str) -> Duration {
    let t = Instant::now();
    loop {
        let ids: Vec<i64> = match db.dialect() {
            Dialect::Postgres => {
                sqlx::query_scalar(AssertSqlSafe(sql))
                    .fetch_all(db.as_postgres().expect("pg"))
                    .await
            }
            Dialect::Sqlite => {
                sqlx::query_scalar(AssertSqlSafe(sql))
                    .fetch_all(db.as_sqlite_writer().expect("sqlite"))
                    .await
            }
        }
        .expect("raw claim");
        if ids.is_empty() {
            return t.elapsed();
        }
    }
}

async fn lease_bench(pg: bool, set: &ReplicatorSet, batch: usize) -> Option<Figure> {
    let db = fresh(pg).await?;
    let d = db.dialect();
    db::migrate(&db, NodeRole::Secondary, set)
        .await
        .expect("migrate");
    let n = scale(200_000);
    exec(
        &db,
        &format!(
            "INSERT INTO widget_registry (widget_id, created_at) SELECT i, {} FROM ({}) AS t",
            now_sql(d),
            series(d, n)
        ),
    )
    .await;
    let r = Registry::new(&db, WidgetReplicator::DESCRIPTOR);
    let t = Instant::now();
    let mut done = 0;
    loop {
        let claimed = r.claim(batch, now()).await.expect("claim");
        if claimed.is_empty() {
            break;
        }
        done += r.mark_synced(&claimed).await.expect("synced").len();
    }
    let took = t.elapsed();
    assert_eq!(done as i64, n);
    // Anchor: the raw claim-only loop, batch of 100, on the same rows set back to pending.
    exec(&db, "UPDATE widget_registry SET state = 0").await;
    let lock = if pg { " FOR UPDATE SKIP LOCKED" } else { "" };
    let sql = format!(
        "UPDATE widget_registry SET state = 1 WHERE id IN (SELECT id FROM widget_registry WHERE state = 0 ORDER BY id LIMIT 100{lock}) RETURNING id"
    );
    let raw = raw_claim_loop(&db, &sql).await;
    if batch == 100 {
        // Context: the same raw loop on a bare table (id, state) with only a partial pending
        // index, the shape of the published anchor; the registry's indexes are the difference.
        exec(&db, &format!(
            "CREATE TABLE bare (id BIGINT PRIMARY KEY, state SMALLINT NOT NULL DEFAULT 0); CREATE INDEX bare_pending ON bare (id) WHERE state = 0; INSERT INTO bare (id) SELECT i FROM ({}) AS t",
            series(d, n)
        )).await;
        let sql = format!(
            "UPDATE bare SET state = 1 WHERE id IN (SELECT id FROM bare WHERE state = 0 ORDER BY id LIMIT 100{lock}) RETURNING id"
        );
        let bare = raw_claim_loop(&db, &sql).await;
        Figure {
            what: "raw claim-only loop, bare table",
            rows: n,
            took: bare,
            anchor: None,
        }
        .print(if pg { "postgres" } else { "sqlite" });
    }
    let what = if batch == 100 {
        "lease loop: claimed+synced (batch 100)"
    } else {
        "lease loop: claimed+synced (batch 1000)"
    };
    Some(Figure {
        what,
        rows: n,
        took,
        anchor: Some(("raw claim-only loop, 100", raw)),
    })
}

async fn consistency_bench(pg: bool, set: &ReplicatorSet) -> Option<[Figure; 2]> {
    let primary = fresh(pg).await?;
    let secondary = fresh(pg).await?;
    let d = primary.dialect();
    exec(
        &primary,
        "CREATE TABLE widgets (id BIGINT PRIMARY KEY, file TEXT NOT NULL)",
    )
    .await;
    db::migrate(&primary, NodeRole::Primary, set)
        .await
        .expect("migrate");
    db::migrate(&secondary, NodeRole::Secondary, set)
        .await
        .expect("migrate");
    let n = scale(1_000_000);
    exec(
        &primary,
        &format!(
            "INSERT INTO widgets SELECT i, 'w' FROM ({}) AS t",
            series(d, n)
        ),
    )
    .await;
    let pass = Consistency::new(&secondary, DbModelIdSource::new(&primary));
    let t = Instant::now();
    let report = pass
        .run_pass(WidgetReplicator::DESCRIPTOR)
        .await
        .expect("pass");
    let took = t.elapsed();
    assert_eq!(report.created as i64, n);
    // Steady state: every copy synced under the primary's key; the pass hashes both sides'
    // versions page by page and finds nothing to do.
    exec(
        &secondary,
        &format!(
            "UPDATE widget_registry SET state = 2, object_key = 'w', last_synced_at = {}",
            now_sql(d)
        ),
    )
    .await;
    let t = Instant::now();
    let again = pass
        .run_pass(WidgetReplicator::DESCRIPTOR)
        .await
        .expect("pass");
    let steady = t.elapsed();
    assert_eq!((again.created, again.removed, again.changed), (0, 0, 0));
    let anchor_db = fresh(pg).await?;
    db::migrate(&anchor_db, NodeRole::Secondary, set)
        .await
        .expect("migrate");
    let t = Instant::now();
    exec(
        &anchor_db,
        &format!(
            "INSERT INTO widget_registry (widget_id, created_at) SELECT i, {} FROM ({}) AS t",
            now_sql(d),
            series(d, n)
        ),
    )
    .await;
    Some([
        Figure {
            what: "consistency pass: ids backfilled",
            rows: n,
            took,
            anchor: Some(("one INSERT…SELECT", t.elapsed())),
        },
        Figure {
            what: "consistency pass: synced, compared",
            rows: n,
            took: steady,
            anchor: Some(("the backfill pass", took)),
        },
    ])
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes --bench; a plain `cargo test --benches` run passes nothing: both run.
    let set = ReplicatorSet::linked().expect("linked");
    println!(
        "geo-runtime core benchmark ({} cores); figures are medians of nothing: one run each, compare the ratios",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for pg in [false, true] {
        let label = if pg { "postgres" } else { "sqlite" };
        if pg && std::env::var(testing::DATABASE_URL_VAR).is_err() {
            println!(
                "{label:<10} SKIPPED: set {} to measure PostgreSQL",
                testing::DATABASE_URL_VAR
            );
            continue;
        }
        let mut figures: Vec<Figure> = [
            cursor_bench(pg, &set).await,
            lease_bench(pg, &set, 100).await,
            lease_bench(pg, &set, 1000).await,
        ]
        .into_iter()
        .flatten()
        .collect();
        figures.extend(consistency_bench(pg, &set).await.into_iter().flatten());
        for f in figures {
            f.print(label);
        }
    }
}
