//! Faults between a primary and a secondary, injected by a proxy on loopback: a 500, a
//! connection closed mid-body, a corrupted byte, a key that points outside the store, a primary
//! that goes down. In every case nothing but the primary's bytes ever sits at a final path, no
//! temp file is left, the reason is recorded, and the secondary converges once the fault clears.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use common::{Widget, WidgetReplicator, exec};
use futures_util::StreamExt;
use geo_runtime::events::{CursorConfig, StartPosition};
use geo_runtime::node::nodes::add_secondary;
use geo_runtime::node::{Node, NodeConfig, NodeHandle, PrimaryConfig, SecondaryConfig};
use geo_runtime::registry::Registry;
use geo_runtime::storage::{LocalStore, ObjectKey};
use geo_runtime::worker::sync::SyncConfig;
use geo_runtime::{
    Database, ReplicableModel, Replicator, SyncState, VerificationDetails, VerificationState,
};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Status500,
    CloseMidBody,
    CorruptByte,
    EvilKey,
    /// Headers and half the body, then silence with the connection open.
    Stall,
    /// The body in chunks with pauses shorter than the idle timeout, longer than it in total.
    SlowSteady,
    /// 503 for every object.
    Status503,
}

/// Object requests the proxy saw (nextest runs each test in its own process).
static RETRIEVES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Object requests being handled now, and the most at once.
static IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static MAX_IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// A pause before each object request is forwarded, so requests overlap.
static DELAY_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct InFlight;

impl InFlight {
    fn enter() -> Self {
        let now = IN_FLIGHT.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        MAX_IN_FLIGHT.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The test process's resident memory, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    fault: Arc<Mutex<Fault>>,
    http: reqwest::Client,
}

async fn forward(State(p): State<Proxy>, req: Request) -> Response {
    let fault = *p.fault.lock().expect("fault");
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |x| x.as_str())
        .to_owned();
    let retrieve = path.starts_with("/geo/v1/retrieve/");
    // A batch response: frame lines, each followed by an object's bytes.
    let batch = retrieve && path.contains("?ids=");
    let _in_flight = retrieve.then(InFlight::enter);
    if retrieve {
        RETRIEVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let delay = DELAY_MS.load(std::sync::atomic::Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }
    if retrieve && fault == Fault::Status500 {
        return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
    }
    if retrieve && fault == Fault::Status503 {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
    }
    let mut upstream = p
        .http
        .request(req.method().clone(), format!("{}{path}", p.upstream));
    for (name, value) in req.headers() {
        if name == "authorization" || name == "content-type" {
            upstream = upstream.header(name, value);
        }
    }
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let Ok(response) = upstream.body(body).send().await else {
        return (axum::http::StatusCode::BAD_GATEWAY, "upstream down").into_response();
    };
    let status = response.status();
    let headers = response.headers().clone();
    let mut bytes = response.bytes().await.unwrap_or_default().to_vec();
    let mut out = Response::builder().status(status);
    for (name, value) in &headers {
        if name == "x-geo-object-key" && retrieve && fault == Fault::EvilKey {
            out = out.header(name, "../../escaped");
        } else if name != "transfer-encoding" {
            out = out.header(name, value);
        }
    }
    if batch && status.is_success() && !bytes.is_empty() {
        match fault {
            // The last byte belongs to the last object.
            Fault::CorruptByte => {
                if let Some(last) = bytes.last_mut() {
                    *last ^= 0x55;
                }
            }
            Fault::EvilKey => {
                // Byte by byte: the objects between the frame lines are not text.
                let (from, to) = (&b"\"key\":\"w/"[..], &b"\"key\":\"../../w/"[..]);
                let mut out = Vec::with_capacity(bytes.len());
                let mut i = 0;
                while i < bytes.len() {
                    if bytes[i..].starts_with(from) {
                        out.extend_from_slice(to);
                        i += from.len();
                    } else {
                        out.push(bytes[i]);
                        i += 1;
                    }
                }
                bytes = out;
            }
            _ => {}
        }
    }
    if retrieve && status.is_success() && !bytes.is_empty() {
        match fault {
            Fault::CorruptByte if !batch => bytes[0] ^= 0x55,
            Fault::CloseMidBody => {
                // Half the body, then the connection breaks (Content-Length promised more).
                let half = bytes::Bytes::from(bytes[..bytes.len() / 2].to_vec());
                let stream =
                    futures_util::stream::iter(vec![Ok(half), Err(std::io::Error::other("cut"))]);
                return out.body(Body::from_stream(stream)).expect("response");
            }
            Fault::Stall => {
                let half = bytes::Bytes::from(bytes[..bytes.len() / 2].to_vec());
                let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(half)])
                    .chain(futures_util::stream::pending());
                return out.body(Body::from_stream(stream)).expect("response");
            }
            Fault::SlowSteady => {
                let chunks: Vec<bytes::Bytes> = bytes
                    .chunks(bytes.len().div_ceil(4))
                    .map(bytes::Bytes::copy_from_slice)
                    .collect();
                let stream = futures_util::stream::iter(chunks).then(|c| async move {
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    Ok::<_, std::io::Error>(c)
                });
                return out.body(Body::from_stream(stream)).expect("response");
            }
            _ => {}
        }
    }
    out.body(Body::from(bytes)).expect("response")
}

async fn start_proxy(
    upstream: &str,
    fault: Arc<Mutex<Fault>>,
    addr: SocketAddr,
) -> (SocketAddr, tokio_util::sync::CancellationToken) {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind proxy");
    let local = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(forward).with_state(Proxy {
        upstream: upstream.to_owned(),
        fault,
        http: reqwest::Client::new(),
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
    });
    (local, stop)
}

struct Setup {
    primary_db: geo_runtime::testing::TestDatabase,
    primary_store: LocalStore,
    primary: NodeHandle,
    secondary_db: geo_runtime::testing::TestDatabase,
    secondary: Option<NodeHandle>,
    secondary_config: SecondaryConfig,
    root: tempfile::TempDir,
    _primary_dir: tempfile::TempDir,
    fault: Arc<Mutex<Fault>>,
    proxy_addr: SocketAddr,
    proxy_stop: tokio_util::sync::CancellationToken,
    upstream: String,
}

async fn setup() -> Setup {
    let primary_db = geo_runtime::testing::sqlite().await;
    exec(&primary_db, "CREATE TABLE widgets (id BIGINT PRIMARY KEY, file TEXT NOT NULL); CREATE TABLE gizmos (id BIGINT PRIMARY KEY, file TEXT NOT NULL)").await;
    let primary_dir = tempfile::tempdir().expect("tempdir");
    let primary = Node::start(
        NodeConfig::Primary(PrimaryConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            primary_dir.path(),
        )),
        &primary_db,
        &common::set(),
    )
    .await
    .expect("primary");
    let upstream = format!("http://{}", primary.local_addr().expect("addr"));
    let fault = Arc::new(Mutex::new(Fault::None));
    let (proxy_addr, proxy_stop) = start_proxy(
        &upstream,
        fault.clone(),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await;
    let creds = add_secondary(&primary_db, "s", "http://s.invalid")
        .await
        .expect("register");
    let secondary_db = geo_runtime::testing::sqlite().await;
    let root = tempfile::tempdir().expect("tempdir");
    let mut config = SecondaryConfig::new(
        "s",
        &format!("http://{proxy_addr}"),
        &creds.access_key,
        creds.secret,
        root.path(),
    );
    config.sync = SyncConfig {
        files_max_capacity: 4,
        idle_wait: Duration::from_millis(20),
        max_object_size: None,
        // These faults are about the one-object path; `batch_faults` below covers batches.
        batch_size: 1,
        ..SyncConfig::default()
    };
    config.cursor = CursorConfig {
        idle_wait: Duration::from_millis(20),
        start: StartPosition::Beginning,
        ..CursorConfig::default()
    };
    config.idle_timeout = Duration::from_secs(2);
    Setup {
        primary_store: LocalStore::new(primary_dir.path()),
        primary_db,
        primary,
        secondary_db,
        secondary: None,
        secondary_config: config,
        root,
        _primary_dir: primary_dir,
        fault,
        proxy_addr,
        proxy_stop,
        upstream,
    }
}

/// Starts the secondary (its cursor reads the log from the beginning).
async fn start_secondary(s: &mut Setup) {
    let node = Node::start(
        NodeConfig::Secondary(s.secondary_config.clone()),
        &s.secondary_db,
        &common::set(),
    )
    .await
    .expect("secondary");
    s.secondary = Some(node);
}

async fn stop(s: Setup) {
    if let Some(node) = s.secondary {
        node.shutdown().await;
    }
    s.proxy_stop.cancel();
    s.primary.shutdown().await;
}

/// Widgets from 1000 on are small enough to travel in batches; the others go one to a request.
fn body(id: i64) -> Vec<u8> {
    let size = if id >= 1000 {
        5_000 + id as usize % 1000
    } else {
        200_000 + id as usize
    };
    (0..size)
        .map(|i| (i as u64 * 31 + id as u64) as u8)
        .collect()
}

/// A widget on the primary with a verified checksum (so the transfer can be checked).
async fn create(s: &Setup, id: i64) {
    let key = ObjectKey::parse(&format!("w/{id}")).expect("key");
    let data = body(id);
    s.primary_store
        .write(
            &key,
            futures_util::stream::iter([Ok::<_, std::convert::Infallible>(bytes::Bytes::from(
                data.clone(),
            ))]),
            None,
            None,
        )
        .await
        .expect("write");
    exec(
        &s.primary_db,
        &format!("INSERT INTO widgets VALUES ({id}, 'w/{id}')"),
    )
    .await;
    let w = Widget {
        id,
        file: format!("w/{id}"),
    };
    // Publishing `created` resets verification to pending; the checksum is recorded after it,
    // as the primary's verification worker would.
    let mut tx = s.primary_db.begin_write().await.expect("begin");
    w.publish_created(tx.conn()).await.expect("publish");
    tx.commit().await.expect("commit");
    let now = geo_runtime::db::dialect::now();
    w.set_verification_details(
        &s.primary_db,
        &VerificationDetails {
            verification_state: VerificationState::Succeeded,
            verified_at: Some(now),
            verification_checksum: Some(Sha256::digest(&data).to_vec()),
            ..VerificationDetails::default()
        },
    )
    .await
    .expect("checksum");
}

/// Every file under the secondary's root is the primary's bytes, and no temp file is left.
fn only_primary_bytes(root: &Path) {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            assert!(
                !name.starts_with(".geo-tmp-"),
                "temp file left: {}",
                p.display()
            );
            let id: i64 = name
                .parse()
                .unwrap_or_else(|_| panic!("unexpected file {}", p.display()));
            assert_eq!(
                std::fs::read(&p).expect("read"),
                body(id),
                "{} is not the primary's bytes",
                p.display()
            );
        }
    }
    assert!(
        !root.parent().expect("parent").join("escaped").exists(),
        "wrote outside the root"
    );
}

async fn wait_for(s: &Setup, ids: &[i64], state: SyncState, reason: Option<&str>) {
    let registry = Registry::new(&s.secondary_db, WidgetReplicator::DESCRIPTOR);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut done = true;
        for id in ids {
            match registry.find_by_model_id(*id).await.expect("find") {
                Some(row) if row.state == state => {
                    if let Some(reason) = reason {
                        let failure = row.last_sync_failure.unwrap_or_default();
                        assert!(
                            failure.contains(reason),
                            "widget {id}: reason {failure:?}, want {reason:?}"
                        );
                    }
                }
                _ => done = false,
            }
        }
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "widgets {ids:?} never reached {state}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The clock moves past every retry time (instead of waiting out Geo's backoff).
async fn time_passes(db: &Database) {
    exec(
        db,
        "UPDATE widget_registry SET retry_at = 0 WHERE state = 3",
    )
    .await;
}

async fn check_fault(fault: Fault, reason: &str) {
    let mut s = setup().await;
    *s.fault.lock().expect("fault") = fault;
    let ids = [1, 2, 3];
    for id in ids {
        create(&s, id).await;
    }
    // Started once the primary has the objects' checksums, so every transfer is checked.
    start_secondary(&mut s).await;
    wait_for(&s, &ids, SyncState::Failed, Some(reason)).await;
    recovers_once_the_fault_clears(s, &ids).await;
}

/// Only the primary's bytes are on disk; the fault clears and the backoff is skipped; every
/// object syncs and is verified at once, checked against the primary's checksum while it was
/// written.
async fn recovers_once_the_fault_clears(s: Setup, ids: &[i64]) {
    only_primary_bytes(s.root.path());
    *s.fault.lock().expect("fault") = Fault::None;
    time_passes(&s.secondary_db).await;
    wait_for(&s, ids, SyncState::Synced, None).await;
    only_primary_bytes(s.root.path());
    let registry = Registry::new(&s.secondary_db, WidgetReplicator::DESCRIPTOR);
    for &id in ids {
        assert!(s.root.path().join(format!("w/{id}")).exists());
        let row = registry
            .find_by_model_id(id)
            .await
            .expect("find")
            .expect("row");
        assert_eq!(row.verification_state, VerificationState::Succeeded);
        assert_eq!(
            row.verification_checksum,
            Some(Sha256::digest(body(id)).to_vec())
        );
    }
    stop(s).await;
}

/// [`check_fault`] for objects that travel in batches: a fault may spoil a whole response or
/// only the objects it touched, so the test waits until every row has settled, wants at least
/// one failed with `reason` and only the primary's bytes on disk, then clears the fault.
async fn check_batch_fault(fault: Fault, reason: &str) {
    let mut s = setup().await;
    s.secondary_config.sync.batch_size = 32;
    *s.fault.lock().expect("fault") = fault;
    let ids: Vec<i64> = (1001..=1012).collect();
    for &id in &ids {
        create(&s, id).await;
    }
    start_secondary(&mut s).await;
    let registry = Registry::new(&s.secondary_db, WidgetReplicator::DESCRIPTOR);
    let deadline = Instant::now() + Duration::from_secs(60);
    let failed = loop {
        let mut rows = Vec::new();
        for &id in &ids {
            rows.extend(registry.find_by_model_id(id).await.expect("find"));
        }
        let settled = rows.len() == ids.len()
            && rows
                .iter()
                .all(|r| matches!(r.state, SyncState::Synced | SyncState::Failed));
        if settled {
            break rows
                .into_iter()
                .filter(|r| r.state == SyncState::Failed)
                .collect::<Vec<_>>();
        }
        assert!(Instant::now() < deadline, "rows never settled: {rows:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!failed.is_empty(), "the fault failed no row");
    for row in &failed {
        let failure = row.last_sync_failure.clone().unwrap_or_default();
        assert!(
            failure.contains(reason),
            "widget {}: reason {failure:?}, want {reason:?}",
            row.model_record_id
        );
    }
    recovers_once_the_fault_clears(s, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_a_500_fails_the_attempts_and_a_retry_succeeds() {
    check_batch_fault(
        Fault::Status500,
        "Non-success HTTP response status code 500",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_a_connection_closed_mid_body_fails_only_what_did_not_arrive() {
    check_batch_fault(Fault::CloseMidBody, "Error downloading file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_a_corrupted_object_is_caught_by_its_checksum() {
    check_batch_fault(Fault::CorruptByte, "checksum mismatch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_a_key_pointing_outside_the_store_is_refused() {
    check_batch_fault(Fault::EvilKey, "unsafe object key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_fails_the_attempt_and_a_retry_succeeds() {
    check_fault(
        Fault::Status500,
        "Non-success HTTP response status code 500",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_mid_body_leaves_nothing_at_the_final_path() {
    check_fault(Fault::CloseMidBody, "Error downloading file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_byte_is_caught_by_the_checksum() {
    check_fault(Fault::CorruptByte, "checksum mismatch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_pointing_outside_the_store_is_refused() {
    check_fault(Fault::EvilKey, "unsafe object key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_transfer_is_cut_by_the_idle_timeout() {
    check_fault(Fault::Stall, "Error downloading file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_steady_transfer_is_not_cut() {
    let mut s = setup().await;
    *s.fault.lock().expect("fault") = Fault::SlowSteady;
    create(&s, 1).await;
    let started = Instant::now();
    start_secondary(&mut s).await;
    wait_for(&s, &[1], SyncState::Synced, None).await;
    // Longer than the 2 s idle timeout in total, never idle that long: it went through.
    assert!(started.elapsed() > Duration::from_secs(2));
    let row = Registry::new(&s.secondary_db, WidgetReplicator::DESCRIPTOR)
        .find_by_model_id(1)
        .await
        .expect("find")
        .expect("row");
    assert_eq!(row.retry_count, 0, "synced at the first attempt");
    only_primary_bytes(s.root.path());
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_storm_stays_within_the_backoff_and_recovers_on_its_own() {
    const N: i64 = 500;
    let mut s = setup().await;
    *s.fault.lock().expect("fault") = Fault::Status503;
    for id in 1..=N {
        create(&s, id).await;
    }
    start_secondary(&mut s).await;
    let ids: Vec<i64> = (1..=N).collect();
    wait_for(&s, &ids, SyncState::Failed, Some("status code 503")).await;
    let after_first_round = RETRIEVES.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(after_first_round, N as usize, "one request per object");
    // Geo's backoff: nothing is due for at least 15 s; nothing is asked meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        RETRIEVES.load(std::sync::atomic::Ordering::Relaxed),
        after_first_round,
        "no request before the backoff elapses"
    );
    // The retry times are spread (jitter), not one thundering herd.
    let micros: Vec<i64> = match s.secondary_db.as_sqlite_readers() {
        Some(pool) => sqlx::query_scalar("SELECT retry_at FROM widget_registry ORDER BY retry_at")
            .fetch_all(pool)
            .await
            .expect("retry times"),
        None => unreachable!("the fault suite runs on SQLite"),
    };
    let distinct: std::collections::BTreeSet<i64> = micros.iter().map(|m| m / 1000).collect();
    assert!(
        distinct.len() > (N as usize) * 9 / 10,
        "{} distinct retry times",
        distinct.len()
    );
    let spread_s = (micros[micros.len() - 1] - micros[0]) as f64 / 1e6;
    assert!(spread_s > 20.0, "retry times spread over {spread_s:.1} s");
    // The primary recovers; the retries come due and everything syncs, with no operator.
    *s.fault.lock().expect("fault") = Fault::None;
    time_passes(&s.secondary_db).await;
    wait_for(&s, &ids, SyncState::Synced, None).await;
    assert!(
        RETRIEVES.load(std::sync::atomic::Ordering::Relaxed) <= 2 * N as usize,
        "each object asked at most twice"
    );
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_over_the_maximum_size_is_refused_with_its_reason() {
    let mut s = setup().await;
    s.secondary_config.sync.max_object_size = Some(100_000);
    create(&s, 1).await;
    start_secondary(&mut s).await;
    wait_for(
        &s,
        &[1],
        SyncState::Failed,
        Some("too large to sync: 200001 bytes, the limit is 100000"),
    )
    .await;
    assert!(!s.root.path().join("w/1").exists());
    only_primary_bytes(s.root.path());
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_due_rows_never_exceed_the_download_capacity() {
    const N: i64 = 10_000;
    let mut s = setup().await;
    // Records without objects: each download is one short request (the object is missing).
    exec(
        &s.primary_db,
        &format!("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < {N}) INSERT INTO widgets SELECT i, 'w/' || i FROM r"),
    )
    .await;
    DELAY_MS.store(1, std::sync::atomic::Ordering::Relaxed);
    let rss_before = rss_kib();
    start_secondary(&mut s).await;
    let ids: Vec<i64> = (1..=N).collect();
    let registry = Registry::new(&s.secondary_db, WidgetReplicator::DESCRIPTOR);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let c = registry.count_by_state().await.expect("counts");
        if c.failed == N {
            break;
        }
        assert!(Instant::now() < deadline, "{c:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for(
        &s,
        &ids[..10],
        SyncState::Failed,
        Some("missing on the Geo primary site"),
    )
    .await;
    let max = MAX_IN_FLIGHT.load(std::sync::atomic::Ordering::SeqCst);
    let capacity = s.secondary_config.sync.files_max_capacity;
    assert!(
        max <= capacity,
        "{max} downloads at once, capacity {capacity}"
    );
    assert!(max >= 2, "the capacity is used: {max} at once");
    // Each row once (a few early failures may come due for their first retry meanwhile).
    assert!(RETRIEVES.load(std::sync::atomic::Ordering::Relaxed) >= N as usize);
    let grown_mib = rss_kib().saturating_sub(rss_before) / 1024;
    assert!(
        grown_mib < 64,
        "resident memory grew {grown_mib} MiB over {N} rows"
    );
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "moves 5 GiB: run by CI's fault-suite step (`--run-ignored only`)"]
async fn a_5_gib_sparse_object_syncs_in_flat_memory_with_the_right_checksum() {
    const SIZE: u64 = 5 << 30;
    let mut s = setup().await;
    let key = ObjectKey::parse("w/1").expect("key");
    let path = s.primary_store.path(&key);
    std::fs::create_dir_all(path.parent().expect("dir")).expect("dir");
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(SIZE))
        .expect("sparse file");
    // Its SHA-256, computed independently, one zeroed MiB at a time.
    let zeros = vec![0_u8; 1 << 20];
    let mut h = Sha256::new();
    for _ in 0..(SIZE >> 20) {
        h.update(&zeros);
    }
    let want = h.finalize().to_vec();
    exec(&s.primary_db, "INSERT INTO widgets VALUES (1, 'w/1')").await;
    let w = Widget {
        id: 1,
        file: "w/1".into(),
    };
    let mut tx = s.primary_db.begin_write().await.expect("begin");
    w.publish_created(tx.conn()).await.expect("publish");
    tx.commit().await.expect("commit");
    w.set_verification_details(
        &s.primary_db,
        &VerificationDetails {
            verification_state: VerificationState::Succeeded,
            verified_at: Some(geo_runtime::db::dialect::now()),
            verification_checksum: Some(want.clone()),
            ..VerificationDetails::default()
        },
    )
    .await
    .expect("checksum");
    let rss_before = rss_kib();
    s.secondary_config.idle_timeout = Duration::from_secs(30);
    // Straight to the primary: the test proxy buffers whole bodies.
    s.secondary_config.primary_url = s.upstream.clone();
    start_secondary(&mut s).await;
    let registry = Registry::new(&s.secondary_db, WidgetReplicator::DESCRIPTOR);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut peak = 0;
    loop {
        peak = peak.max(rss_kib());
        let row = registry.find_by_model_id(1).await.expect("find");
        if let Some(row) = row.filter(|r| r.state == SyncState::Synced) {
            // Checked against the primary's checksum while it streamed.
            assert_eq!(row.verification_checksum, Some(want.clone()));
            break;
        }
        assert!(Instant::now() < deadline, "never synced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let copy = s.root.path().join("w/1");
    assert_eq!(std::fs::metadata(&copy).expect("copy").len(), SIZE);
    let grown_mib = peak.saturating_sub(rss_before) / 1024;
    assert!(
        grown_mib < 100,
        "resident memory grew {grown_mib} MiB while moving 5 GiB"
    );
    std::fs::remove_file(&copy).expect("free the space");
    stop(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_goes_down_and_comes_back() {
    let mut s = setup().await;
    start_secondary(&mut s).await;
    create(&s, 1).await;
    wait_for(&s, &[1], SyncState::Synced, None).await;
    // Down: the proxy stops listening; the cursor and the sync fail and retry meanwhile.
    s.proxy_stop.cancel();
    create(&s, 2).await;
    // Back on the same address: the cursor catches up and the sync resumes.
    let (_, restarted) = loop {
        match tokio::net::TcpListener::bind(s.proxy_addr).await {
            Ok(l) => {
                drop(l);
                break start_proxy(&s.upstream, s.fault.clone(), s.proxy_addr).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    time_passes(&s.secondary_db).await;
    wait_for(&s, &[1, 2], SyncState::Synced, None).await;
    only_primary_bytes(s.root.path());
    restarted.cancel();
    stop(s).await;
}
