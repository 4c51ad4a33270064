//! Secondaries' secrets at rest: sealed with the primary's key, never readable from the
//! database alone, bound to their row, sealed in place when a key is configured later, and
//! used by a running primary to authenticate its secondaries.

mod common;

use std::time::Duration;

use common::{exec, scalar_i64};
use geo_runtime::events::EventSource;
use geo_runtime::node::nodes::{
    NodeCredentials, NodeError, add_secondary, clear_secret_count, find_by_access_key, register,
    seal_clear_secrets,
};
use geo_runtime::node::{Node, NodeConfig, PrimaryClient, PrimaryConfig, SecretsKey};
use geo_runtime::{Database, Dialect, testing};
use sqlx::AssertSqlSafe;

async fn stored_secret(db: &Database, name: &str) -> String {
    let sql = format!("SELECT secret FROM geo_nodes WHERE name = '{name}'");
    match db.dialect() {
        Dialect::Postgres => sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(db.as_postgres().expect("pg"))
            .await
            .expect("secret"),
        Dialect::Sqlite => sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(db.as_sqlite_readers().expect("sqlite"))
            .await
            .expect("secret"),
    }
}

/// A client of `node` with a secondary's credentials.
fn client_of(node: &geo_runtime::node::NodeHandle, creds: &NodeCredentials) -> PrimaryClient {
    PrimaryClient::new(
        &format!("http://{}", node.local_addr().expect("addr")),
        &creds.access_key,
        creds.secret.clone(),
        Duration::from_secs(10),
    )
    .expect("client")
}

async fn databases() -> Vec<testing::TestDatabase> {
    let mut dbs = vec![testing::sqlite().await];
    dbs.extend(testing::postgres().await);
    for db in &dbs {
        common::primary(db).await;
    }
    dbs
}

#[tokio::test]
async fn a_sealed_secret_opens_only_with_its_key_and_on_its_own_row() {
    let key = SecretsKey::generate().expect("key");
    let other = SecretsKey::generate().expect("key");
    for db in databases().await {
        let label = db.label().to_owned();
        let creds = register(&db, "eu", "https://eu.example", Some(&key))
            .await
            .expect("register");
        let stored = stored_secret(&db, "eu").await;
        assert!(stored.starts_with("geo:v1:"), "{label}: sealed: {stored}");
        assert!(
            !stored.contains(creds.secret.expose()),
            "{label}: the secret is not readable from the database"
        );
        let found = find_by_access_key(&db, &creds.access_key, Some(&key))
            .await
            .expect("find")
            .expect("known");
        assert_eq!(found.secret, creds.secret, "{label}");

        let refused = |r: Result<_, NodeError>, what: &str| match r {
            Err(NodeError::NoKey(name) | NodeError::WrongKey(name)) => {
                assert_eq!(name, "eu", "{label}: {what}");
            }
            Err(e) => panic!("{label}: {what}: {e}"),
            Ok(_) => panic!("{label}: {what}: opened"),
        };
        refused(
            find_by_access_key(&db, &creds.access_key, None).await,
            "no key",
        );
        refused(
            find_by_access_key(&db, &creds.access_key, Some(&other)).await,
            "another key",
        );
        // The sealed value copied onto another node's row does not open there.
        let second = register(&db, "us", "https://us.example", Some(&key))
            .await
            .expect("register");
        exec(
            &db,
            &format!("UPDATE geo_nodes SET secret = '{stored}' WHERE name = 'us'"),
        )
        .await;
        match find_by_access_key(&db, &second.access_key, Some(&key)).await {
            Err(NodeError::WrongKey(name)) => assert_eq!(name, "us", "{label}"),
            other => panic!("{label}: a moved secret: {other:?}"),
        }
    }
}

#[tokio::test]
async fn secrets_stored_in_clear_are_sealed_in_place() {
    let key = SecretsKey::generate().expect("key");
    for db in databases().await {
        let label = db.label().to_owned();
        let a = add_secondary(&db, "a", "https://a.example")
            .await
            .expect("a");
        let b = add_secondary(&db, "b", "https://b.example")
            .await
            .expect("b");
        assert_eq!(stored_secret(&db, "a").await, a.secret.expose(), "{label}");
        assert_eq!(clear_secret_count(&db).await.expect("count"), 2, "{label}");
        assert_eq!(seal_clear_secrets(&db, &key).await.expect("seal"), 2);
        assert_eq!(clear_secret_count(&db).await.expect("count"), 0, "{label}");
        assert_eq!(
            seal_clear_secrets(&db, &key).await.expect("again"),
            0,
            "{label}: sealing twice changes nothing"
        );
        for (name, creds) in [("a", &a), ("b", &b)] {
            assert!(stored_secret(&db, name).await.starts_with("geo:v1:"));
            let found = find_by_access_key(&db, &creds.access_key, Some(&key))
                .await
                .expect("find")
                .expect("known");
            assert_eq!(found.secret, creds.secret, "{label}: {name}");
        }
        assert_eq!(
            scalar_i64(&db, "SELECT COUNT(*) FROM geo_nodes").await,
            2,
            "{label}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_with_a_key_seals_at_start_and_authenticates_with_sealed_secrets() {
    let key = SecretsKey::generate().expect("key");
    for db in databases().await {
        let label = db.label().to_owned();
        // Registered before the key was configured: in clear until the primary starts.
        let creds = add_secondary(&db, "eu", "https://eu.example")
            .await
            .expect("register");
        let dir = tempfile::tempdir().expect("tempdir");
        let set = common::set();
        let start = |key: Option<SecretsKey>| {
            let mut config = PrimaryConfig::new("127.0.0.1:0".parse().expect("addr"), dir.path());
            config.secrets_key = key;
            Node::start(NodeConfig::Primary(config), &db, &set)
        };
        let node = start(Some(key.clone())).await.expect("primary");
        assert!(
            stored_secret(&db, "eu").await.starts_with("geo:v1:"),
            "{label}: sealed at start"
        );
        let client = client_of(&node, &creds);
        client
            .latest_event_id()
            .await
            .unwrap_or_else(|e| panic!("{label}: a sealed secret authenticates: {e}"));
        node.shutdown().await;

        // The same database under a primary with another key: refused, not let through.
        let node = start(Some(SecretsKey::generate().expect("key")))
            .await
            .expect("primary");
        let client = client_of(&node, &creds);
        let refused = client.latest_event_id().await.expect_err("wrong key");
        assert!(refused.to_string().contains("500"), "{label}: {refused}");
        node.shutdown().await;
    }
}

#[test]
fn keys_parse_from_hex_and_base64_and_never_print() {
    let key = SecretsKey::generate().expect("key");
    let b64 = key.to_base64();
    assert_eq!(SecretsKey::parse(&b64).expect("base64"), key);
    assert_eq!(
        SecretsKey::parse(b64.trim_end_matches('=')).expect("unpadded"),
        key
    );
    let hex: String = "ab".repeat(32);
    assert!(SecretsKey::parse(&hex).is_ok());
    assert!(SecretsKey::parse("too short").is_err());
    assert!(
        SecretsKey::parse(&"ab".repeat(16))
            .expect_err("16 bytes")
            .contains("32 bytes")
    );
    assert_eq!(format!("{key:?}"), "SecretsKey(<redacted>)");
    assert!(!format!("{key:?}").contains(&b64));
}
