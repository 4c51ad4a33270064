//! `geo check`'s view of the store as a whole: files no registry row accounts for are reported
//! (`+ path`), and deleted only while still unaccounted for. On SQLite and PostgreSQL.

mod common;

use common::exec;
use geo_runtime::check::{ExtraRemoval, delete_extra, extra_files};
use geo_runtime::storage::LocalStore;

fn put(root: &std::path::Path, key: &str) {
    let path = root.join(key);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, key.as_bytes()).expect("write");
}

#[tokio::test]
async fn files_no_row_accounts_for_are_reported_and_deleted_only_while_still_extra() {
    for db in common::secondaries().await {
        let label = db.label().to_owned();
        let set = common::set();
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let store = LocalStore::new(root);
        // A synced copy, a copy waiting for removal, two leftovers, a file put there by hand,
        // and a temp file of a write under way.
        for key in [
            "w/1.bin",
            "w/2.bin",
            "w/3.bin",
            "old/4.bin",
            "notes copy.txt",
            "w/.geo-tmp-0123",
        ] {
            put(root, key);
        }
        common::synced_under(&db, 1, "w/1.bin").await;
        let at = match db.dialect() {
            geo_runtime::Dialect::Postgres => "now()",
            geo_runtime::Dialect::Sqlite => "0",
        };
        exec(&db, &format!("INSERT INTO geo_blob_removals (replicable_name, model_record_id, object_key, created_at) VALUES ('widget', 2, 'w/2.bin', {at})")).await;

        let report = extra_files(&db, &set, &store).await.expect("check");
        assert_eq!(report.files, 5, "{label}: {report:?}");
        assert_eq!(report.pending_removal, 1, "{label}");
        assert_eq!(
            report.extra,
            ["notes copy.txt", "old/4.bin", "w/3.bin"],
            "{label}"
        );
        assert_eq!(
            common::scalar_i64(&db, "SELECT extra_files FROM geo_store_checks").await,
            3,
            "{label}: the result is recorded for the status"
        );

        // w/3.bin gets its row after the listing (a sync published it meanwhile): kept.
        common::synced_under(&db, 3, "w/3.bin").await;
        let outcome = delete_extra(&db, &set, &store, &report)
            .await
            .expect("delete");
        let by_key = |k: &str| {
            outcome
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, o)| o.clone())
                .expect("an outcome per key")
        };
        assert_eq!(by_key("old/4.bin"), ExtraRemoval::Deleted, "{label}");
        assert_eq!(by_key("w/3.bin"), ExtraRemoval::InUse, "{label}");
        assert!(
            matches!(by_key("notes copy.txt"), ExtraRemoval::UnsafeKey(_)),
            "{label}"
        );
        assert!(!root.join("old/4.bin").exists(), "{label}");
        assert!(root.join("w/3.bin").exists(), "{label}");
        assert!(root.join("notes copy.txt").exists(), "{label}");
        assert!(
            root.join("w/.geo-tmp-0123").exists(),
            "{label}: temp files are not ours to judge"
        );
        assert_eq!(
            common::scalar_i64(&db, "SELECT extra_files FROM geo_store_checks").await,
            1,
            "{label}: only the file put there by hand is left"
        );
    }
}
