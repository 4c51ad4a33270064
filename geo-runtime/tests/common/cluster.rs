//! A primary and its secondaries on loopback, for real: nodes started from their
//! configurations, HTTP with JWT auth, files on disk, and an application that writes its model
//! rows and events in one transaction.

use std::path::Path;
use std::time::Duration;

use geo_runtime::db::Conn;
use geo_runtime::node::nodes::add_secondary;
use geo_runtime::node::{Node, NodeConfig, NodeHandle, PrimaryConfig, SecondaryConfig};
use geo_runtime::storage::{LocalStore, ObjectKey};
use geo_runtime::testing::TestDatabase;
use geo_runtime::{Database, ReplicableModel};

use super::{Widget, WidgetReplicator, eventually, exec, scalar_i64};
use geo_runtime::Replicator;
use geo_runtime::registry::Registry;

/// A running primary and its application.
pub struct Primary {
    pub db: TestDatabase,
    pub store: LocalStore,
    pub handle: NodeHandle,
    pub url: String,
    pub addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

/// Starts a primary on `db` (the application's tables created first).
pub async fn start_primary(db: TestDatabase) -> Primary {
    exec(&db, "CREATE TABLE widgets (id BIGINT PRIMARY KEY, file TEXT NOT NULL); CREATE TABLE gizmos (id BIGINT PRIMARY KEY, file TEXT NOT NULL)").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = PrimaryConfig::new("127.0.0.1:0".parse().expect("addr"), dir.path());
    let handle = Node::start(NodeConfig::Primary(config), &db, &super::set())
        .await
        .expect("primary");
    let addr = handle.local_addr().expect("addr");
    Primary {
        store: LocalStore::new(dir.path()),
        url: format!("http://{addr}"),
        addr,
        db,
        _dir: dir,
        handle,
    }
}

/// Short waits everywhere, so tests converge in moments.
pub fn fast(config: &mut SecondaryConfig) {
    geo_runtime::testing::fast_secondary(config);
}

/// Registers a secondary `name` on `primary` and starts it against `url` (the primary's, or a
/// proxy's), with `configure` applied after [`fast`].
pub async fn start_secondary(
    primary: &Primary,
    url: &str,
    db: &Database,
    root: &Path,
    name: &str,
    configure: impl FnOnce(&mut SecondaryConfig),
) -> NodeHandle {
    let creds = add_secondary(&primary.db, name, "http://secondary.invalid")
        .await
        .expect("register");
    let mut config = SecondaryConfig::new(name, url, &creds.access_key, creds.secret, root);
    fast(&mut config);
    configure(&mut config);
    Node::start(NodeConfig::Secondary(config), db, &super::set())
        .await
        .expect("secondary")
}

/// Runs `sql` (PostgreSQL placeholders `$1`, `$2`; `?1`, `?2` on SQLite) with `id` and, when
/// given, `text`, in the caller's transaction.
async fn run(conn: Conn<'_>, sql: &str, id: i64, text: Option<&str>) {
    let rows = match conn {
        Conn::Postgres(c) => {
            let q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).bind(id);
            match text {
                Some(t) => q.bind(t.to_owned()),
                None => q,
            }
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected())
        }
        Conn::Sqlite(c) => {
            let q = sqlx::query(sqlx::AssertSqlSafe(sql.replace('$', "?"))).bind(id);
            match text {
                Some(t) => q.bind(t.to_owned()),
                None => q,
            }
            .execute(&mut *c)
            .await
            .map(|r| r.rows_affected())
        }
    };
    rows.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

impl Primary {
    /// Writes `data` at `key` in the primary's store.
    pub async fn put(&self, key: &str, data: &[u8]) {
        let key = ObjectKey::parse(key).expect("key");
        self.store
            .write(
                &key,
                futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
                    bytes::Bytes::copy_from_slice(data),
                )]),
                None,
                None,
            )
            .await
            .expect("write on the primary");
    }

    /// The key widget `id` is stored under now, if it exists.
    pub async fn key_of(&self, id: i64) -> Option<String> {
        let sql = match self.db.dialect() {
            geo_runtime::Dialect::Postgres => "SELECT file FROM widgets WHERE id = $1",
            geo_runtime::Dialect::Sqlite => "SELECT file FROM widgets WHERE id = ?1",
        };
        match self.db.dialect() {
            geo_runtime::Dialect::Postgres => sqlx::query_scalar(sql)
                .bind(id)
                .fetch_optional(self.db.as_postgres().expect("pg"))
                .await
                .expect("read"),
            geo_runtime::Dialect::Sqlite => sqlx::query_scalar(sql)
                .bind(id)
                .fetch_optional(self.db.as_sqlite_readers().expect("sqlite"))
                .await
                .expect("read"),
        }
    }

    /// The application creates widget `id` with `data` at `key`: the object first, then the row
    /// and its event in one transaction.
    pub async fn create(&self, id: i64, key: &str, data: &[u8]) {
        self.put(key, data).await;
        let w = Widget {
            id,
            file: key.to_owned(),
        };
        let mut tx = self.db.begin_write().await.expect("begin");
        run(
            tx.conn(),
            "INSERT INTO widgets VALUES ($1, $2)",
            w.id,
            Some(&w.file),
        )
        .await;
        w.publish_created(tx.conn()).await.expect("publish");
        tx.commit().await.expect("commit");
    }

    /// The application replaces widget `id`'s object with `data` at `key` (the same key or
    /// another); an object moved away from its old key is removed there. With `publish` false the
    /// change is made without its event, as when the event is lost.
    pub async fn update(&self, id: i64, key: &str, data: &[u8], publish: bool) {
        let old = self.key_of(id).await.expect("the widget exists");
        self.put(key, data).await;
        let w = Widget {
            id,
            file: key.to_owned(),
        };
        let mut tx = self.db.begin_write().await.expect("begin");
        run(
            tx.conn(),
            "UPDATE widgets SET file = $2 WHERE id = $1",
            w.id,
            Some(&w.file),
        )
        .await;
        let event = w.publish_updated(tx.conn()).await.expect("publish");
        if !publish && let Some(event) = event {
            // Lost: the model change commits, its event never reaches a secondary.
            run(
                tx.conn(),
                "DELETE FROM geo_events WHERE id = $1",
                event,
                None,
            )
            .await;
        }
        tx.commit().await.expect("commit");
        if old != key {
            self.store
                .delete(&ObjectKey::parse(&old).expect("key"))
                .await
                .expect("remove the old object");
        }
    }

    /// The application deletes widget `id`: the event (carrying its key) and the row in one
    /// transaction, then the object.
    pub async fn delete(&self, id: i64) {
        let key = self.key_of(id).await.expect("the widget exists");
        let w = Widget {
            id,
            file: key.clone(),
        };
        let mut tx = self.db.begin_write().await.expect("begin");
        w.publish_deleted(tx.conn()).await.expect("publish");
        run(tx.conn(), "DELETE FROM widgets WHERE id = $1", id, None).await;
        tx.commit().await.expect("commit");
        self.store
            .delete(&ObjectKey::parse(&key).expect("key"))
            .await
            .expect("delete the object");
    }
}

/// Every file under `root` (paths relative to it, `/`-separated) and its SHA-256.
pub fn tree(root: &Path) -> std::collections::BTreeMap<String, [u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut out = std::collections::BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                let rel = p
                    .strip_prefix(root)
                    .expect("under the root")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.insert(rel, Sha256::digest(&bytes).into());
            }
        }
    }
    out
}

/// The secondary's store holds exactly the primary's objects (paths and SHA-256), its registry
/// has a synced row for each live widget and nothing else, and no removal is pending.
pub async fn same_as_primary(primary: &Primary, sdb: &Database, root: &Path) -> Result<(), String> {
    let want = tree(primary.store.root());
    let got = tree(root);
    if got != want {
        let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
        let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
        let differ: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
            .map(|(k, _)| k)
            .collect();
        return Err(format!(
            "trees differ: extra on the secondary {extra:?}, missing {missing:?}, different {differ:?}"
        ));
    }
    let counts = Registry::new(sdb, WidgetReplicator::DESCRIPTOR)
        .count_by_state()
        .await
        .map_err(|e| e.to_string())?;
    let live = scalar_i64(&primary.db, "SELECT count(*) FROM widgets").await;
    if counts.synced != live || counts.total() != live {
        return Err(format!("registry {counts:?}, {live} live widgets"));
    }
    let removals = scalar_i64(sdb, "SELECT count(*) FROM geo_blob_removals").await;
    if removals != 0 {
        return Err(format!("{removals} removals pending"));
    }
    Ok(())
}

pub async fn converge(primary: &Primary, sdb: &Database, root: &Path, label: &str) {
    eventually(
        &format!("{label}: the secondary matches the primary"),
        Duration::from_secs(60),
        || same_as_primary(primary, sdb, root),
    )
    .await;
}
