//! The status at scale: 1,000,000 registry rows on a secondary and 1,000,000 records on a
//! primary, SQLite and (with GEO_TEST_DATABASE_URL) PostgreSQL.
//!
//! - collection: one [`StatusCollector::refresh`] (what runs every `status_interval` in the
//!   background), next to a bare `SELECT COUNT(*)` of the same table in the same run;
//! - a request: `GET /status` and `GET /metrics` over real HTTP on loopback from the admin
//!   endpoint, which serves the collected snapshot (median and p99 of 200 requests).
//!
//! `cargo bench -p geo-runtime --bench status` (release). `GEO_BENCH_SCALE=0.1` for a quick run.

use std::time::{Duration, Instant};

use geo_runtime::db::{self, Dialect};
use geo_runtime::node::Secret;
use geo_runtime::node::admin;
use geo_runtime::status::StatusCollector;
use geo_runtime::telemetry::Metrics;
use geo_runtime::testing::{self, TestDatabase};
use geo_runtime::{Database, NodeRole, ReplicatorSet};
use sqlx::AssertSqlSafe;
use tokio_util::sync::CancellationToken;

mod common;
use common::{exec, scale};

async fn count(db: &Database, table: &str) -> Duration {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    let t = Instant::now();
    let n: i64 = match db.dialect() {
        Dialect::Postgres => sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(db.as_postgres().expect("pg"))
            .await
            .expect("count"),
        Dialect::Sqlite => sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(db.as_sqlite_readers().expect("sqlite"))
            .await
            .expect("count"),
    };
    assert!(n > 0);
    t.elapsed()
}

fn series(d: Dialect, n: i64) -> String {
    match d {
        Dialect::Postgres => format!("SELECT i FROM generate_series(1, {n}) AS i"),
        Dialect::Sqlite => format!(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) SELECT i FROM s"
        ),
    }
}

fn now_sql(d: Dialect) -> &'static str {
    match d {
        Dialect::Postgres => "now()",
        Dialect::Sqlite => "CAST(unixepoch('subsec') * 1000000 AS INTEGER)",
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and p99 of `n` GETs of `path` from the admin endpoint.
async fn requests(base: &str, path: &str, token: &Secret, n: usize) -> (Duration, Duration, usize) {
    let client = reqwest::Client::new();
    let mut times = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let t = Instant::now();
        let r = client
            .get(format!("{base}{path}"))
            .bearer_auth(token.expose())
            .send()
            .await
            .expect("request");
        assert!(r.status().is_success(), "{}", r.status());
        bytes = r.bytes().await.expect("body").len();
        times.push(t.elapsed());
    }
    times.sort();
    (times[n / 2], times[n * 99 / 100], bytes)
}

async fn serve(collector: StatusCollector, token: &Secret) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cancel = CancellationToken::new();
    let router = admin::router(token.clone(), collector, Metrics::new());
    tokio::spawn(admin::serve(listener, router, cancel.clone()));
    (format!("http://{addr}"), cancel)
}

async fn run(label: &str, primary: TestDatabase, secondary: TestDatabase, rows: i64) {
    let set = ReplicatorSet::linked().expect("set");
    let token = Secret::generate();

    // A secondary with `rows` registry rows spread over every state.
    db::migrate(&secondary, NodeRole::Secondary, &set)
        .await
        .expect("migrate");
    let d = secondary.dialect();
    exec(
        &secondary,
        &format!(
            "INSERT INTO widget_registry (widget_id, state, verification_state, checksum_mismatch, created_at) \
             SELECT i, CASE WHEN i % 100 = 0 THEN 3 WHEN i % 50 = 0 THEN 0 ELSE 2 END, \
             CASE WHEN i % 100 = 1 THEN 3 WHEN i % 10 = 0 THEN 0 ELSE 2 END, \
             {}, {} FROM ({}) AS s",
            match d {
                Dialect::Postgres => "i % 1000 = 1",
                Dialect::Sqlite => "i % 1000 = 1",
            },
            now_sql(d),
            series(d, rows)
        ),
    )
    .await;
    exec(&secondary, "ANALYZE").await;

    // A primary with `rows` records and their verification states.
    exec(
        &primary,
        "CREATE TABLE widgets (id BIGINT PRIMARY KEY, file TEXT NOT NULL)",
    )
    .await;
    db::migrate(&primary, NodeRole::Primary, &set)
        .await
        .expect("migrate");
    let d = primary.dialect();
    exec(
        &primary,
        &format!(
            "INSERT INTO widgets (id, file) SELECT i, 'w/' || i FROM ({}) AS s",
            series(d, rows)
        ),
    )
    .await;
    exec(
        &primary,
        &format!(
            "INSERT INTO widget_states (widget_id, verification_state) SELECT i, CASE WHEN i % 100 = 0 THEN 3 ELSE 2 END FROM ({}) AS s",
            series(d, rows)
        ),
    )
    .await;
    exec(&primary, "ANALYZE").await;

    for (role, db, table) in [
        ("secondary", &secondary, "widget_registry"),
        ("primary", &primary, "widgets"),
    ] {
        let node_role = if role == "primary" {
            NodeRole::Primary
        } else {
            NodeRole::Secondary
        };
        let collector = StatusCollector::new(db, node_role, &set, role);
        // Warm the caches once, then take the best of three of each.
        collector.refresh().await.expect("refresh");
        count(db, table).await;
        let mut collect = Duration::MAX;
        let mut anchor = Duration::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let s = collector.refresh().await.expect("refresh");
            collect = collect.min(t.elapsed());
            anchor = anchor.min(count(db, table).await);
            assert_eq!(s.replicables[0].count, rows, "{label} {role}");
        }
        let (base, cancel) = serve(collector, &token).await;
        let (status_p50, status_p99, status_bytes) = requests(&base, "/status", &token, 200).await;
        let (metrics_p50, metrics_p99, _) = requests(&base, "/metrics", &token, 200).await;
        cancel.cancel();
        println!(
            "{label:<10} {role:<9} {rows:>9} rows | collection {:>8.1} ms (bare COUNT(*) {:>7.1} ms, ratio {:>4.2}) | GET /status p50 {:>5.2} ms p99 {:>5.2} ms ({status_bytes} B) | GET /metrics p50 {:>5.2} ms p99 {:>5.2} ms",
            ms(collect),
            ms(anchor),
            collect.as_secs_f64() / anchor.as_secs_f64(),
            ms(status_p50),
            ms(status_p99),
            ms(metrics_p50),
            ms(metrics_p99),
        );
    }
}

#[tokio::main]
async fn main() {
    let rows = scale(1_000_000);
    println!("status at scale: {rows} rows per table; requests over HTTP on loopback");
    run(
        "sqlite",
        testing::sqlite().await,
        testing::sqlite().await,
        rows,
    )
    .await;
    if let Some(p) = testing::postgres().await {
        let s = testing::postgres().await.expect("a second schema");
        run("postgres", p, s, rows).await;
    } else {
        println!("postgres: skipped (set GEO_TEST_DATABASE_URL)");
    }
}
