//! The conformance suite catches broken replicables, and names the check that broke: one whose
//! records point at the wrong object, and one that never publishes deletes.

use std::time::Duration;

use geo_examples::app::{self, Kind, Widget};
use geo_runtime::testkit::{App, BoxError, Check, Fixture, SuiteOptions, run_check};
use geo_runtime::{Database, ReplicableModel};

fn options() -> SuiteOptions {
    SuiteOptions {
        records: 6,
        // A broken replicable never converges: give up quickly.
        deadline: Duration::from_secs(4),
    }
}

/// Stores each object under one key and records another in the model row.
#[derive(Debug)]
struct WrongObjectKey;

impl Fixture for WrongObjectKey {
    type Model = Widget;

    async fn create_tables(&self, db: &Database) -> Result<(), BoxError> {
        Ok(app::create_app_tables(db).await?)
    }

    async fn create(&self, app: &App, id: i64) -> Result<Widget, BoxError> {
        // The object goes to `.../<id>.bin`; the row says `.../<id>.dat`.
        app.write_object(
            &app::key(Kind::Widget, id),
            geo_runtime::testkit::content(id, 0),
        )
        .await?;
        let w = Widget {
            id,
            file: app::key(Kind::Widget, id).replace(".bin", ".dat"),
            project_id: 1,
        };
        insert_and_publish(app, &w).await?;
        Ok(w)
    }

    async fn update(&self, _: &App, _: &Widget, _: u32) -> Result<(), BoxError> {
        Ok(())
    }

    async fn delete(&self, _: &App, _: &Widget) -> Result<(), BoxError> {
        Ok(())
    }
}

async fn insert_and_publish(app: &App, w: &Widget) -> Result<(), BoxError> {
    let mut tx = app.db.begin_write().await?;
    match tx.conn() {
        geo_runtime::db::Conn::Postgres(c) => {
            sqlx::query("INSERT INTO widgets (id, file, project_id) VALUES ($1, $2, $3)")
                .bind(w.id)
                .bind(&w.file)
                .bind(w.project_id)
                .execute(&mut *c)
                .await?;
        }
        geo_runtime::db::Conn::Sqlite(c) => {
            sqlx::query("INSERT INTO widgets (id, file, project_id) VALUES (?1, ?2, ?3)")
                .bind(w.id)
                .bind(&w.file)
                .bind(w.project_id)
                .execute(&mut *c)
                .await?;
        }
    }
    w.publish_created(tx.conn()).await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes rows and objects but forgets the `deleted` event.
#[derive(Debug)]
struct SilentDeletes;

impl Fixture for SilentDeletes {
    type Model = Widget;

    async fn create_tables(&self, db: &Database) -> Result<(), BoxError> {
        Ok(app::create_app_tables(db).await?)
    }

    async fn create(&self, app: &App, id: i64) -> Result<Widget, BoxError> {
        app::App {
            db: app.db.clone(),
            store: app.store.clone(),
        }
        .create(Kind::Widget, id)
        .await?;
        Ok(Widget {
            id,
            file: app::key(Kind::Widget, id),
            project_id: id % 3,
        })
    }

    async fn update(&self, _: &App, _: &Widget, _: u32) -> Result<(), BoxError> {
        Ok(())
    }

    async fn delete(&self, app: &App, w: &Widget) -> Result<(), BoxError> {
        let mut tx = app.db.begin_write().await?;
        match tx.conn() {
            geo_runtime::db::Conn::Postgres(c) => {
                sqlx::query("DELETE FROM widgets WHERE id = $1")
                    .bind(w.id)
                    .execute(&mut *c)
                    .await?;
            }
            geo_runtime::db::Conn::Sqlite(c) => {
                sqlx::query("DELETE FROM widgets WHERE id = ?1")
                    .bind(w.id)
                    .execute(&mut *c)
                    .await?;
            }
        }
        tx.commit().await?;
        app.delete_object(&w.file).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_object_key_fails_the_created_check() {
    let e = run_check(Check::CreatedEventsReplicate, &WrongObjectKey, &options())
        .await
        .expect_err("the suite must catch it");
    assert_eq!(e.check, Check::CreatedEventsReplicate);
    assert!(
        e.reason
            .contains("The file is missing on the Geo primary site"),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("conformance check `created_events_replicate` failed on ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_delete_events_fail_the_deleted_check_only() {
    run_check(Check::CreatedEventsReplicate, &SilentDeletes, &options())
        .await
        .expect("creates are fine");
    let e = run_check(Check::DeletedEventsReplicate, &SilentDeletes, &options())
        .await
        .expect_err("the suite must catch it");
    assert_eq!(e.check, Check::DeletedEventsReplicate);
    assert_eq!(
        e.reason, "the application published no `deleted` event for record 3",
        "{e}"
    );
}
