//! The primary's API refuses every request that is not exactly right, before reading anything,
//! returns no object bytes when it refuses, and never logs a token or a secret.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Widget, exec};
use geo_runtime::ReplicableModel;
use geo_runtime::node::auth::{RequestScope, Secret, authorization};
use geo_runtime::node::nodes::{add_secondary, set_enabled};
use geo_runtime::node::{Node, NodeConfig, PrimaryConfig};
use geo_runtime::storage::{LocalStore, ObjectKey};
use geo_runtime::testing;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

const MARKER: &[u8] = b"PRIVATE-OBJECT-BYTES-7f3a";

/// Sends `url` with each case's authorization (none when `None`): each gets its status and no
/// object bytes. The headers sent are added to `tokens`.
async fn refused(
    http: &reqwest::Client,
    url: &str,
    cases: Vec<(&str, Option<String>, u16)>,
    tokens: &mut Vec<String>,
    label: &str,
) {
    for (what, header, status) in cases {
        let mut request = http.get(url);
        if let Some(h) = &header {
            request = request.header("authorization", h);
            tokens.push(h.clone());
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status().as_u16(), status, "{label}: {what}");
        let body = response.bytes().await.expect("body");
        assert!(
            !body.windows(MARKER.len()).any(|w| w == MARKER),
            "{what}: object bytes in a refusal"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_wrong_request_is_refused_without_bytes_or_secrets_in_logs() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    for db in testing::all().await {
        exec(&db, "CREATE TABLE widgets (id BIGINT PRIMARY KEY, file TEXT NOT NULL); CREATE TABLE gizmos (id BIGINT PRIMARY KEY, file TEXT NOT NULL)").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let node = Node::start(
            NodeConfig::Primary(PrimaryConfig::new(
                "127.0.0.1:0".parse().expect("addr"),
                dir.path(),
            )),
            &db,
            &common::set(),
        )
        .await
        .expect("primary");
        let base = format!("http://{}", node.local_addr().expect("addr"));
        let store = LocalStore::new(dir.path());
        let key = ObjectKey::parse("w/1").expect("key");
        store
            .write(
                &key,
                futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
                    bytes::Bytes::from_static(MARKER),
                )]),
                None,
                None,
            )
            .await
            .expect("object");
        exec(&db, "INSERT INTO widgets VALUES (1, 'w/1')").await;
        let _ = Widget {
            id: 1,
            file: "w/1".into(),
        }
        .model_record_id();

        let good = add_secondary(&db, "good", "http://good.invalid")
            .await
            .expect("node");
        let off = add_secondary(&db, "off", "http://off.invalid")
            .await
            .expect("node");
        assert!(set_enabled(&db, "off", false).await.expect("disable"));

        let scope = RequestScope::Retrieve {
            replicable_name: "widget".into(),
            replicable_id: 1,
        };
        let url = format!("{base}/geo/v1/retrieve/widget/1");
        let http = reqwest::Client::new();
        let none_token = format!(
            "Geo {}:{}.{}.",
            good.access_key,
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"data":"{\"scope\":\"retrieve\",\"replicable_name\":\"widget\",\"replicable_id\":1}","jti":"x","iat":0,"nbf":0,"exp":99999999999}"#)
        );
        let other_id = RequestScope::Retrieve {
            replicable_name: "widget".into(),
            replicable_id: 2,
        };
        let cases: Vec<(&str, Option<String>, u16)> = vec![
            ("no token", None, 401),
            (
                "expired token",
                Some(authorization(
                    &good.access_key,
                    &good.secret,
                    &scope,
                    now() - 200,
                )),
                401,
            ),
            (
                "token for another id",
                Some(authorization(
                    &good.access_key,
                    &good.secret,
                    &other_id,
                    now(),
                )),
                401,
            ),
            (
                "wrong secret",
                Some(authorization(
                    &good.access_key,
                    &Secret::new("not-the-secret-at-all-0123456789abcdef"),
                    &scope,
                    now(),
                )),
                401,
            ),
            ("alg none", Some(none_token), 401),
            (
                "unknown node",
                Some(authorization("nobody", &good.secret, &scope, now())),
                401,
            ),
            (
                "disabled node",
                Some(authorization(&off.access_key, &off.secret, &scope, now())),
                403,
            ),
        ];
        let mut tokens = Vec::new();
        refused(&http, &url, cases, &mut tokens, db.label()).await;
        // Each refusal says its class, for the secondary's operator.
        for (what, header, code) in [
            (
                "expired token",
                authorization(&good.access_key, &good.secret, &scope, now() - 200),
                "AUTH_CLOCK_SKEW",
            ),
            (
                "unknown node",
                authorization("nobody", &good.secret, &scope, now()),
                "AUTH_FAILED",
            ),
            (
                "disabled node",
                authorization(&off.access_key, &off.secret, &scope, now()),
                "NODE_DISABLED",
            ),
        ] {
            let body: serde_json::Value = http
                .get(&url)
                .header("authorization", header)
                .send()
                .await
                .expect("request")
                .json()
                .await
                .expect("a JSON refusal");
            assert_eq!(body["geo_code"], code, "{what}: {body}");
        }
        // The right request gets the object.
        let ok = http
            .get(&url)
            .header(
                "authorization",
                authorization(&good.access_key, &good.secret, &scope, now()),
            )
            .send()
            .await
            .expect("request");
        assert_eq!(ok.status().as_u16(), 200);
        assert_eq!(ok.headers()["x-geo-object-key"], "w/1");
        assert_eq!(ok.bytes().await.expect("body").as_ref(), MARKER);

        // The batch endpoint: a token is valid for its exact id list only.
        let batch_url = format!("{base}/geo/v1/retrieve/widget?ids=1,2");
        let batch_cases: Vec<(&str, Option<String>, u16)> = vec![
            ("batch, no token", None, 401),
            (
                "batch, token for another list",
                Some(authorization(
                    &good.access_key,
                    &good.secret,
                    &RequestScope::retrieve_many("widget", "1"),
                    now(),
                )),
                401,
            ),
            (
                "batch, token for one object",
                Some(authorization(&good.access_key, &good.secret, &scope, now())),
                401,
            ),
            (
                "batch, token for another replicable",
                Some(authorization(
                    &good.access_key,
                    &good.secret,
                    &RequestScope::retrieve_many("gizmo", "1,2"),
                    now(),
                )),
                401,
            ),
            (
                "batch, disabled node",
                Some(authorization(
                    &off.access_key,
                    &off.secret,
                    &RequestScope::retrieve_many("widget", "1,2"),
                    now(),
                )),
                403,
            ),
        ];
        refused(&http, &batch_url, batch_cases, &mut tokens, db.label()).await;
        let ok = http
            .get(&batch_url)
            .header(
                "authorization",
                authorization(
                    &good.access_key,
                    &good.secret,
                    &RequestScope::retrieve_many("widget", "1,2"),
                    now(),
                ),
            )
            .send()
            .await
            .expect("request");
        assert_eq!(ok.status().as_u16(), 200);
        let body = ok.bytes().await.expect("body");
        let text = String::from_utf8_lossy(&body);
        let first: serde_json::Value =
            serde_json::from_str(text.lines().next().unwrap_or_default()).expect("a JSON frame");
        assert_eq!(first["id"], 1, "the first frame: {first}");
        assert_eq!(first["status"], "ok", "the first frame: {first}");
        assert_eq!(first["key"], "w/1", "the first frame: {first}");
        assert_eq!(first["size"], MARKER.len(), "the first frame: {first}");
        assert!(
            body.windows(MARKER.len()).any(|w| w == MARKER),
            "the object follows its frame"
        );
        assert!(
            text.ends_with("{\"id\":2,\"status\":\"record_missing\"}\n"),
            "a missing record is answered in its frame: {text}"
        );
        // An id asked for twice is answered twice.
        let twice = http
            .get(format!("{base}/geo/v1/retrieve/widget?ids=1,1"))
            .header(
                "authorization",
                authorization(
                    &good.access_key,
                    &good.secret,
                    &RequestScope::retrieve_many("widget", "1,1"),
                    now(),
                ),
            )
            .send()
            .await
            .expect("request")
            .bytes()
            .await
            .expect("body");
        assert_eq!(
            twice.windows(MARKER.len()).filter(|w| *w == MARKER).count(),
            2,
            "{}",
            String::from_utf8_lossy(&twice)
        );

        node.shutdown().await;
        let logged = String::from_utf8_lossy(&logs.0.lock().expect("logs")).to_string();
        assert!(logged.contains("refused a request"), "refusals are logged");
        for secret in [good.secret.expose(), off.secret.expose()] {
            assert!(!logged.contains(secret), "a secret reached the logs");
        }
        for token in &tokens {
            let jwt = token.split(':').nth(1).expect("jwt");
            assert!(!logged.contains(jwt), "a token reached the logs");
        }
    }
}
