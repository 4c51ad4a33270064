//! The consistency pass (backfill and orphans) on real SQLite and PostgreSQL.

mod common;

use common::{WidgetReplicator, exec, pairs, scalar_i64};
use geo_runtime::Replicator;
use geo_runtime::db::Dialect;
use geo_runtime::events::DbModelIdSource;
use geo_runtime::worker::consistency::Consistency;

/// Fills `widgets` on the primary with ids 1..=n except multiples of 7.
async fn model_rows(primary: &geo_runtime::Database, n: i64) {
    let sql = match primary.dialect() {
        Dialect::Postgres => format!(
            "INSERT INTO widgets SELECT i, 'w/' || i FROM generate_series(1, {n}) AS i WHERE i % 7 <> 0"
        ),
        Dialect::Sqlite => format!(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) INSERT INTO widgets SELECT i, 'w/' || i FROM s WHERE i % 7 <> 0"
        ),
    };
    exec(primary, &sql).await;
}

/// Registry rows the secondary already has, synced under the primary's keys: every third id up
/// to `n`, plus orphans above it.
async fn registry_rows(secondary: &geo_runtime::Database, n: i64, orphans_above: i64) {
    let (series, now) = match secondary.dialect() {
        Dialect::Postgres => (
            format!(
                "SELECT i FROM generate_series(1, {}) AS i",
                n + orphans_above
            ),
            "now()".to_owned(),
        ),
        Dialect::Sqlite => (
            format!(
                "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {}) SELECT i FROM s",
                n + orphans_above
            ),
            "0".to_owned(),
        ),
    };
    exec(
        secondary,
        &format!("INSERT INTO widget_registry (widget_id, state, object_key, created_at) SELECT i, 2, 'w/' || i, {now} FROM ({series}) AS t WHERE i % 3 = 0 OR i > {n}"),
    )
    .await;
}

#[tokio::test]
async fn a_pass_over_100_000_ids_creates_exactly_the_missing_rows_and_removes_exactly_the_orphans()
{
    const N: i64 = 100_000;
    const ABOVE: i64 = 500;
    for (primary, secondary) in pairs().await {
        let label = primary.label().to_owned();
        model_rows(&primary, N).await;
        registry_rows(&secondary, N, ABOVE).await;
        let on_primary = N - N / 7;
        let tracked_and_present = (1..=N).filter(|i| i % 3 == 0 && i % 7 != 0).count() as i64;
        let orphans_in_range = (1..=N).filter(|i| i % 3 == 0 && i % 7 == 0).count() as i64;

        let pass = Consistency::new(&secondary, DbModelIdSource::new(&primary));
        let report = pass
            .run_pass(WidgetReplicator::DESCRIPTOR)
            .await
            .expect("pass");
        assert!(report.completed);
        assert_eq!(
            report.created as i64,
            on_primary - tracked_and_present,
            "{label}: {report:?}"
        );
        assert_eq!(
            report.removed as i64,
            orphans_in_range + ABOVE,
            "{label}: {report:?}"
        );
        // The copies here are the primary's objects (same keys, nothing verified to compare).
        assert_eq!(report.changed, 0, "{label}: {report:?}");

        // The registry now tracks exactly the primary's ids.
        assert_eq!(
            scalar_i64(&secondary, "SELECT count(*) FROM widget_registry").await,
            on_primary
        );
        assert_eq!(
            scalar_i64(
                &secondary,
                "SELECT count(*) FROM widget_registry WHERE widget_id % 7 = 0"
            )
            .await,
            0
        );
        assert_eq!(
            scalar_i64(
                &secondary,
                &format!("SELECT count(*) FROM widget_registry WHERE widget_id > {N}")
            )
            .await,
            0
        );
        // New rows are pending; rows that were there keep their state.
        assert_eq!(
            scalar_i64(
                &secondary,
                "SELECT count(*) FROM widget_registry WHERE state = 2"
            )
            .await,
            tracked_and_present
        );
        // Every orphan's object is scheduled for removal.
        assert_eq!(
            scalar_i64(
                &secondary,
                "SELECT count(*) FROM geo_blob_removals WHERE replicable_name = 'widget'"
            )
            .await,
            orphans_in_range + ABOVE
        );

        // A second pass finds nothing to do.
        let again = pass
            .run_pass(WidgetReplicator::DESCRIPTOR)
            .await
            .expect("pass");
        assert_eq!((again.created, again.removed), (0, 0), "{label}");
    }
}

#[tokio::test]
async fn a_pass_resumes_where_it_stopped() {
    for (primary, secondary) in pairs().await {
        model_rows(&primary, 1000).await;
        let first =
            Consistency::new(&secondary, DbModelIdSource::new(&primary)).with_batch_size(100);
        first
            .step(WidgetReplicator::DESCRIPTOR)
            .await
            .expect("step");
        first
            .step(WidgetReplicator::DESCRIPTOR)
            .await
            .expect("step");
        let position = first
            .position(WidgetReplicator::DESCRIPTOR)
            .await
            .expect("position");
        assert!(position > 0);
        drop(first);
        // A restarted worker continues from the stored position, not from 1.
        let second =
            Consistency::new(&secondary, DbModelIdSource::new(&primary)).with_batch_size(100);
        let r = second
            .step(WidgetReplicator::DESCRIPTOR)
            .await
            .expect("step");
        assert_eq!(r.created, 100, "{}", primary.label());
        let rest = second
            .run_pass(WidgetReplicator::DESCRIPTOR)
            .await
            .expect("pass");
        assert!(rest.completed);
        assert_eq!(
            scalar_i64(&secondary, "SELECT count(*) FROM widget_registry").await,
            1000 - 1000 / 7
        );
        assert_eq!(
            second
                .position(WidgetReplicator::DESCRIPTOR)
                .await
                .expect("position"),
            0,
            "a completed pass starts over"
        );
    }
}

/// A primary listing that is stale by the time it is applied: while it is read, the event
/// cursor tracks a record created just after (simulated by inserting its registry row).
struct StaleListing {
    secondary: geo_runtime::Database,
}

impl geo_runtime::events::ModelIdSource for StaleListing {
    async fn model_ids_after(
        &self,
        _: &'static geo_runtime::ReplicatorDescriptor,
        _: i64,
        _: usize,
    ) -> Result<Vec<i64>, geo_runtime::events::SourceError> {
        geo_runtime::registry::Registry::new(&self.secondary, WidgetReplicator::DESCRIPTOR)
            .insert_pending(&[7], geo_runtime::db::dialect::now())
            .await?;
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn a_row_the_cursor_created_after_the_listing_is_not_an_orphan() {
    for (primary, secondary) in pairs().await {
        let label = primary.label().to_owned();
        // An old row whose record is really gone, and the fresh one from the cursor.
        let an_hour_ago = match secondary.dialect() {
            Dialect::Postgres => "now() - interval '1 hour'".to_owned(),
            Dialect::Sqlite => {
                (geo_runtime::db::dialect::now().timestamp_micros() - 3_600_000_000).to_string()
            }
        };
        exec(
            &secondary,
            &format!("INSERT INTO widget_registry (widget_id, state, created_at) VALUES (3, 2, {an_hour_ago})"),
        )
        .await;
        let pass = Consistency::new(
            &secondary,
            StaleListing {
                secondary: secondary.database().clone(),
            },
        );
        let report = pass
            .run_pass(WidgetReplicator::DESCRIPTOR)
            .await
            .expect("pass");
        assert_eq!(report.removed, 1, "{label}: only the old orphan");
        assert_eq!(
            scalar_i64(
                &secondary,
                "SELECT COUNT(*) FROM widget_registry WHERE widget_id = 7"
            )
            .await,
            1,
            "{label}: the row tracked after the listing stays"
        );
    }
}
