//! The GraphQL API over real HTTP against a running secondary, on SQLite and PostgreSQL:
//! filtering and keyset pagination over 5,000 rows with every page checked, a resync that makes
//! a row sync again, a bulk reverify, access control, and the depth limit.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{WidgetRegistry, exec};
use geo_runtime::db::Dialect;
use geo_runtime::node::nodes::add_secondary;
use geo_runtime::node::{AdminConfig, Node, NodeConfig, PrimaryConfig, SecondaryConfig, Secret};
use geo_runtime::storage::{LocalStore, ObjectKey};
use geo_runtime::testkit::RegistryFactoryExt;
use geo_runtime::worker::verify::SecondaryVerifyConfig;
use geo_runtime::{ReplicableModel, Replicator, SyncState};
use serde_json::{Value, json};

const ROWS: i64 = 5000;

struct Api {
    url: String,
    token: Secret,
    http: reqwest::Client,
}

impl Api {
    async fn post(&self, query: &str, variables: Value, token: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .post(&self.url)
            .json(&json!({"query": query, "variables": variables}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let body = r.text().await.expect("body");
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    /// A query that must succeed; its `data`.
    async fn data(&self, query: &str, variables: Value) -> Value {
        let (status, body) = self.post(query, variables, Some(self.token.expose())).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("errors").is_none(), "{body}");
        body["data"].clone()
    }

    /// A query that must fail; its first error message.
    async fn error(&self, query: &str, variables: Value) -> String {
        let (_, body) = self.post(query, variables, Some(self.token.expose())).await;
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("an error: {body}"))
            .to_owned()
    }
}

const PAGE: &str = r#"query($first: Int, $after: String, $state: ReplicationStateEnum, $sort: RegistrySort, $keyword: String, $ids: [ID!]) {
  geoNode { widgetRegistries(first: $first, after: $after, replicationState: $state, sort: $sort, keyword: $keyword, ids: $ids) {
    edges { cursor node { id widgetId state objectKey verificationState lastSyncedAt verifiedAt } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  } }
}"#;

/// Every page of a connection; checks each page's order and cursors; returns the widget ids.
async fn all_pages(api: &Api, mut vars: Value, first: i64, descending: bool) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        vars["first"] = json!(first);
        vars["after"] = json!(after);
        let data = api.data(PAGE, vars.clone()).await;
        let conn = &data["geoNode"]["widgetRegistries"];
        let edges = conn["edges"].as_array().expect("edges");
        assert!(edges.len() as i64 <= first);
        let page: Vec<i64> = edges
            .iter()
            .map(|e| {
                e["node"]["widgetId"]
                    .as_str()
                    .expect("id")
                    .parse()
                    .expect("int")
            })
            .collect();
        let mut sorted = page.clone();
        sorted.sort_unstable();
        if descending {
            sorted.reverse();
        }
        assert_eq!(page, sorted, "a page is in order");
        if let (Some(prev), Some(next)) = (ids.last(), page.first()) {
            assert!(
                if descending { next < prev } else { next > prev },
                "pages follow each other"
            );
        }
        assert_eq!(conn["pageInfo"]["hasPreviousPage"], json!(after.is_some()));
        if let Some(last) = edges.last() {
            assert_eq!(conn["pageInfo"]["endCursor"], last["cursor"]);
        }
        ids.extend(page);
        if conn["pageInfo"]["hasNextPage"] == json!(true) {
            assert_eq!(edges.len() as i64, first, "a full page before the last");
            after = conn["pageInfo"]["endCursor"].as_str().map(str::to_owned);
        } else {
            return ids;
        }
    }
}

/// Every page in a timestamp order: (key in micros, NULL first, registry id) as listed.
async fn pages_by(api: &Api, mut vars: Value, first: i64, field: &str) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        vars["first"] = json!(first);
        vars["after"] = json!(after);
        let data = api.data(PAGE, vars.clone()).await;
        let conn = &data["geoNode"]["widgetRegistries"];
        for e in conn["edges"].as_array().expect("edges") {
            let key = e["node"][field].as_str().map_or(i64::MIN, |t| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .expect("time")
                    .timestamp_micros()
            });
            out.push((
                key,
                e["node"]["id"].as_str().expect("id").parse().expect("int"),
            ));
        }
        if conn["pageInfo"]["hasNextPage"] != json!(true) {
            return out;
        }
        after = conn["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
}

/// A cursor of the id order.
async fn all_cursor(api: &Api) -> String {
    let data = api.data(PAGE, json!({"first": 1})).await;
    data["geoNode"]["widgetRegistries"]["pageInfo"]["endCursor"]
        .as_str()
        .expect("cursor")
        .to_owned()
}

fn series(d: Dialect, n: i64) -> String {
    match d {
        Dialect::Postgres => format!("SELECT i FROM generate_series(1, {n}) AS i"),
        Dialect::Sqlite => format!(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) SELECT i FROM s"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registries_over_graphql() {
    for (pdb, sdb) in common::empty_pairs().await {
        let label = pdb.label().to_owned();
        // A primary with 5,000 widget records (their objects are not needed: the secondary's
        // rows for them are made by the factory), and one real widget with its object.
        exec(&pdb, "CREATE TABLE widgets (id BIGINT PRIMARY KEY, file TEXT NOT NULL); CREATE TABLE gizmos (id BIGINT PRIMARY KEY, file TEXT NOT NULL)").await;
        exec(
            &pdb,
            &format!(
                "INSERT INTO widgets (id, file) SELECT i, 'widgets/' || i FROM ({}) AS s",
                series(pdb.dialect(), ROWS)
            ),
        )
        .await;
        let pdir = tempfile::tempdir().expect("tempdir");
        let primary = Node::start(
            NodeConfig::Primary(PrimaryConfig::new(
                "127.0.0.1:0".parse().expect("addr"),
                pdir.path(),
            )),
            &pdb,
            &common::set(),
        )
        .await
        .expect("primary");
        let url = format!("http://{}", primary.local_addr().expect("addr"));

        // The secondary's registry, before it starts: in every state, stable while it runs.
        geo_runtime::db::migrate(&sdb, geo_runtime::NodeRole::Secondary, &common::set())
            .await
            .expect("migrate");
        for id in 1..=ROWS {
            let f = WidgetRegistry::factory(&sdb).model_id(id);
            let f = if id % 5 == 0 {
                f.failed("Non-success HTTP response status code 500")
            } else if id % 7 == 0 {
                // (A `started` row would be released as interrupted when the node starts.)
                f.failed("The file is missing on the Geo primary site")
            } else {
                f.synced().verification_succeeded([1; 32])
            };
            f.insert().await.expect("factory");
        }
        let creds = add_secondary(&pdb, "west", "http://west.invalid")
            .await
            .expect("register");
        let sdir = tempfile::tempdir().expect("tempdir");
        let mut config =
            SecondaryConfig::new("west", &url, &creds.access_key, creds.secret, sdir.path());
        geo_runtime::testing::fast_secondary(&mut config);
        config.sync.files_max_capacity = 4;
        // Nothing re-verifies on its own during the test: the bulk reverify's effect stays.
        config.verification = SecondaryVerifyConfig {
            idle_wait: Duration::from_secs(3600),
            ..SecondaryVerifyConfig::default()
        };
        let token = Secret::generate();
        config.admin = Some(AdminConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            token: token.clone(),
        });
        let secondary = Node::start(NodeConfig::Secondary(config), &sdb, &common::set())
            .await
            .expect("secondary");
        let api = Api {
            url: format!("http://{}/graphql", secondary.admin_addr().expect("admin")),
            token,
            http: reqwest::Client::new(),
        };

        // Access control: no token, a wrong token; introspection too.
        for t in [None, Some("wrong-token-of-some-length")] {
            let (status, body) = api.post("{ geoNode { name } }", json!({}), t).await;
            assert_eq!(status, 401, "{label}: {body}");
            let (status, _) = api
                .post("{ __schema { types { name } } }", json!({}), t)
                .await;
            assert_eq!(status, 401, "{label}: introspection");
        }
        let data = api.data("{ geoNode { name role } }", json!({})).await;
        assert_eq!(
            data["geoNode"],
            json!({"name": "west", "role": "secondary"})
        );

        // Every page of the synced rows, ascending.
        let synced: Vec<i64> = (1..=ROWS).filter(|i| i % 5 != 0 && i % 7 != 0).collect();
        let got = all_pages(&api, json!({"state": "SYNCED"}), 333, false).await;
        assert_eq!(got, synced, "{label}");
        // The failed ones, descending.
        let mut failed: Vec<i64> = (1..=ROWS).filter(|i| i % 5 == 0 || i % 7 == 0).collect();
        failed.reverse();
        let got = all_pages(
            &api,
            json!({"state": "FAILED", "sort": "ID_DESC"}),
            100,
            true,
        )
        .await;
        assert_eq!(got, failed, "{label}");
        // Backward paging: the last page, then the one before it, in the listed order.
        let back = r#"query($before: String) { geoNode { widgetRegistries(replicationState: SYNCED, last: 100, before: $before) {
            nodes { widgetId } pageInfo { hasNextPage hasPreviousPage startCursor } } } }"#;
        let data = api.data(back, json!({})).await;
        let conn = &data["geoNode"]["widgetRegistries"];
        let ids = |c: &Value| -> Vec<i64> {
            c["nodes"]
                .as_array()
                .expect("nodes")
                .iter()
                .map(|n| n["widgetId"].as_str().expect("id").parse().expect("int"))
                .collect()
        };
        assert_eq!(
            ids(conn),
            synced[synced.len() - 100..].to_vec(),
            "{label}: the last page"
        );
        assert_eq!(conn["pageInfo"]["hasPreviousPage"], json!(true));
        let data = api
            .data(back, json!({"before": conn["pageInfo"]["startCursor"]}))
            .await;
        let conn = &data["geoNode"]["widgetRegistries"];
        assert_eq!(
            ids(conn),
            synced[synced.len() - 200..synced.len() - 100].to_vec()
        );
        assert_eq!(conn["pageInfo"]["hasNextPage"], json!(true));
        assert_eq!(
            api.error(
                "{ geoNode { widgetRegistries(first: 1, last: 1) { nodes { id } } } }",
                json!({})
            )
            .await,
            "page forward (first/after) or backward (last/before), not both"
        );
        // Geo's timestamp orders, keyset-paged on (time, id).
        let listed = pages_by(
            &api,
            json!({"state": "SYNCED", "sort": "LAST_SYNCED_AT_DESC"}),
            400,
            "lastSyncedAt",
        )
        .await;
        let mut sorted = listed.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(listed, sorted, "{label}: last synced, newest first");
        assert_eq!(listed.len(), synced.len(), "{label}: every synced row once");
        let listed = pages_by(&api, json!({"sort": "VERIFIED_AT_ASC"}), 700, "verifiedAt").await;
        let mut sorted = listed.clone();
        sorted.sort_unstable();
        assert_eq!(listed, sorted, "{label}: verified at, never verified first");
        assert_eq!(listed.len() as i64, ROWS, "{label}: every row once");
        assert!(
            api.error(
                PAGE,
                json!({"sort": "VERIFIED_AT_ASC", "after": all_cursor(&api).await})
            )
            .await
            .contains("another sort order")
        );
        // Keyword (a substring of the object key) and ids.
        let got: BTreeSet<i64> = all_pages(&api, json!({"keyword": "widgets/12"}), 1000, false)
            .await
            .into_iter()
            .collect();
        let want: BTreeSet<i64> = synced
            .iter()
            .copied()
            .filter(|i| i.to_string().starts_with("12"))
            .collect();
        assert_eq!(got, want, "{label}: keyword");
        let got = all_pages(&api, json!({"ids": ["3", "4", "6"]}), 10, false).await;
        assert_eq!(got, vec![3, 4, 6]);
        // Bad input is refused with a clear message.
        assert_eq!(
            api.error(PAGE, json!({"first": 5000})).await,
            "first must be between 1 and 1000"
        );
        assert_eq!(
            api.error(PAGE, json!({"after": "not-a-cursor"})).await,
            "invalid cursor"
        );
        let deep = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { name } } } } } } } } }";
        assert!(
            api.error(deep, json!({})).await.contains("nested too deep"),
            "{label}: the depth limit"
        );
        // A replicable whose flag is off refuses, as Geo does.
        assert_eq!(
            api.error(
                "{ geoNode { gizmoRegistries { nodes { id } } } }",
                json!({})
            )
            .await,
            "replication of gizmos is disabled on this node (feature flag geo_gizmo_replication)"
        );

        // A real widget: created on the primary, synced; a resync mutation syncs it again.
        let real = common::Widget {
            id: ROWS + 1,
            file: "widgets/real.bin".into(),
        };
        LocalStore::new(pdir.path())
            .write_bytes(
                &ObjectKey::parse(&real.file).expect("key"),
                b"real bytes".to_vec().into(),
                None,
            )
            .await
            .expect("object");
        exec(
            &pdb,
            &format!(
                "INSERT INTO widgets (id, file) VALUES ({}, '{}')",
                real.id, real.file
            ),
        )
        .await;
        {
            let mut tx = pdb.begin_write().await.expect("tx");
            real.publish_created(tx.conn()).await.expect("publish");
            tx.commit().await.expect("commit");
        }
        let registry =
            geo_runtime::registry::Registry::new(&sdb, common::WidgetReplicator::DESCRIPTOR);
        common::eventually("the real widget syncs", Duration::from_secs(60), || async {
            let row = registry
                .find_by_model_id(real.id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no row")?;
            (row.state == SyncState::Synced)
                .then_some(())
                .ok_or(format!("{:?}", row.state))
        })
        .await;
        let row = registry
            .find_by_model_id(real.id)
            .await
            .expect("row")
            .expect("row");
        let first_attempt = row.sync_attempt;
        let data = api
            .data(
                "mutation($id: ID!) { geoRegistriesUpdate(registryClass: WIDGET_REGISTRY, registryId: $id, action: RESYNC) { errors updated } }",
                json!({"id": row.id.to_string()}),
            )
            .await;
        assert_eq!(
            data["geoRegistriesUpdate"],
            json!({"errors": [], "updated": 1}),
            "{label}"
        );
        common::eventually(
            "the resync syncs it again",
            Duration::from_secs(60),
            || async {
                let row = registry
                    .find_by_model_id(real.id)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("no row")?;
                (row.state == SyncState::Synced && row.sync_attempt > first_attempt)
                    .then_some(())
                    .ok_or(format!("{:?} attempt {}", row.state, row.sync_attempt))
            },
        )
        .await;
        let data = api
            .data(
                "mutation { geoRegistriesUpdate(registryClass: WIDGET_REGISTRY, registryId: \"999999\", action: RESYNC) { errors updated } }",
                json!({}),
            )
            .await;
        assert_eq!(
            data["geoRegistriesUpdate"]["errors"][0],
            "no widget registry row 999999"
        );

        // Bulk reverify of every synced row, in the background, with progress; twice.
        let expected = synced.len() as i64 + 1;
        for run in 0..2 {
            let data = api
                .data(
                    "mutation { geoRegistriesBulkUpdate(registryClass: WIDGET_REGISTRY, action: REVERIFY_ALL, replicationState: SYNCED) { errors job { id status } } }",
                    json!({}),
                )
                .await;
            let job = data["geoRegistriesBulkUpdate"]["job"]["id"]
                .as_str()
                .expect("job")
                .to_owned();
            let query = "query($id: ID!) { geoBulkUpdateJob(id: $id) { status processed error } }";
            common::eventually(
                "the bulk update finishes",
                Duration::from_secs(60),
                || async {
                    let d = api.data(query, json!({"id": job})).await;
                    (d["geoBulkUpdateJob"]["status"] == "DONE")
                        .then_some(())
                        .ok_or(d.to_string())
                },
            )
            .await;
            let d = api.data(query, json!({"id": job})).await;
            assert_eq!(
                d["geoBulkUpdateJob"]["processed"],
                json!(expected),
                "{label}: run {run}"
            );
        }
        let pending = all_pages(&api, json!({"state": "SYNCED"}), 1000, false).await;
        assert_eq!(pending.len() as i64, expected);
        let data = api
            .data(
                "{ geoNode { widgetRegistries(replicationState: SYNCED, first: 1000) { nodes { verificationState } } } }",
                json!({}),
            )
            .await;
        assert!(
            data["geoNode"]["widgetRegistries"]["nodes"]
                .as_array()
                .expect("nodes")
                .iter()
                .all(|n| n["verificationState"] == "PENDING"),
            "{label}: every synced row is waiting for verification again"
        );

        secondary.shutdown().await;
        primary.shutdown().await;
    }
}
