//! The example application's replicables run the conformance suite: one line per replicable,
//! one test per check. The fixtures drive the application's own write paths (`geo_examples::app`).

use geo_examples::app::{self, Kind, PackageFile, Widget};
use geo_runtime::Database;
use geo_runtime::testkit::{App, BoxError, Fixture};

/// The application's `App` over the suite's primary.
fn application(app: &App) -> app::App {
    app::App {
        db: app.db.clone(),
        store: app.store.clone(),
    }
}

#[derive(Debug)]
pub struct WidgetFixture;

impl Fixture for WidgetFixture {
    type Model = Widget;

    async fn create_tables(&self, db: &Database) -> Result<(), BoxError> {
        Ok(app::create_app_tables(db).await?)
    }

    async fn create(&self, app: &App, id: i64) -> Result<Widget, BoxError> {
        application(app).create(Kind::Widget, id).await?;
        Ok(Widget {
            id,
            file: app::key(Kind::Widget, id),
            project_id: id % 3,
        })
    }

    async fn update(&self, app: &App, model: &Widget, version: u32) -> Result<(), BoxError> {
        Ok(application(app)
            .update(Kind::Widget, model.id, version)
            .await?)
    }

    async fn delete(&self, app: &App, model: &Widget) -> Result<(), BoxError> {
        Ok(application(app).delete(Kind::Widget, model.id).await?)
    }
}

#[derive(Debug)]
pub struct PackageFileFixture;

impl Fixture for PackageFileFixture {
    type Model = PackageFile;

    async fn create_tables(&self, db: &Database) -> Result<(), BoxError> {
        Ok(app::create_app_tables(db).await?)
    }

    async fn create(&self, app: &App, id: i64) -> Result<PackageFile, BoxError> {
        application(app).create(Kind::PackageFile, id).await?;
        Ok(PackageFile {
            id,
            file: app::key(Kind::PackageFile, id),
            file_store: Some(1),
        })
    }

    async fn update(&self, app: &App, model: &PackageFile, version: u32) -> Result<(), BoxError> {
        Ok(application(app)
            .update(Kind::PackageFile, model.id, version)
            .await?)
    }

    async fn delete(&self, app: &App, model: &PackageFile) -> Result<(), BoxError> {
        Ok(application(app).delete(Kind::PackageFile, model.id).await?)
    }
}

geo_runtime::conformance_suite!(widget, WidgetFixture);
geo_runtime::conformance_suite!(package_file, PackageFileFixture);
