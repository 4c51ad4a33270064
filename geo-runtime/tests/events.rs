//! The event log and the secondary's cursor on real SQLite and PostgreSQL.

mod common;

use std::time::Duration;

use common::{Gizmo, GizmoReplicator, Widget, WidgetReplicator, exec, pairs, scalar_i64};
use geo_runtime::db::dialect::now;
use geo_runtime::events::{
    CursorConfig, DbEventSource, Event, EventCursor, EventName, EventSource, SourceError,
    StartPosition,
};
use geo_runtime::registry::{Registry, SyncState};
use geo_runtime::{Database, Dialect, ReplicableModel, Replicator, flags};

fn config() -> CursorConfig {
    CursorConfig {
        start: StartPosition::Beginning,
        ..CursorConfig::default()
    }
}

fn cursor(secondary: &Database, primary: &Database, holder: &str) -> EventCursor<DbEventSource> {
    EventCursor::new(
        secondary,
        &common::set(),
        DbEventSource::new(primary),
        config(),
        holder,
    )
}

fn widget(id: i64) -> Widget {
    Widget {
        id,
        file: format!("w/{id}"),
    }
}

/// Inserts the model row and publishes `event` in one transaction.
async fn publish(db: &Database, w: &Widget, event: EventName) -> Option<i64> {
    let mut tx = db.begin_write().await.expect("begin");
    let id = w.publish(tx.conn(), event).await.expect("publish");
    tx.commit().await.expect("commit");
    id
}

async fn state(secondary: &Database, id: i64) -> Option<SyncState> {
    Registry::new(secondary, WidgetReplicator::DESCRIPTOR)
        .find_by_model_id(id)
        .await
        .expect("find")
        .map(|r| r.state)
}

#[tokio::test]
async fn events_commit_with_the_model_change_or_not_at_all() {
    for (primary, _) in pairs().await {
        let w = widget(1);
        // Rolled back with the model row: no event.
        let mut tx = primary.begin_write().await.expect("begin");
        let mut conn = tx.conn();
        match &mut conn {
            geo_runtime::db::Conn::Postgres(c) => {
                sqlx::query("INSERT INTO widgets VALUES (1, 'w/1')")
                    .execute(&mut **c)
                    .await
                    .expect("insert");
            }
            geo_runtime::db::Conn::Sqlite(c) => {
                sqlx::query("INSERT INTO widgets VALUES (1, 'w/1')")
                    .execute(&mut **c)
                    .await
                    .expect("insert");
            }
        }
        assert!(w.publish_created(conn).await.expect("publish").is_some());
        drop(tx);
        assert_eq!(
            scalar_i64(&primary, "SELECT count(*) FROM geo_events").await,
            0,
            "{}",
            primary.label()
        );
        assert_eq!(
            scalar_i64(&primary, "SELECT count(*) FROM widgets").await,
            0
        );

        // Committed: one event with the object key in its payload.
        let id = publish(&primary, &w, EventName::Created)
            .await
            .expect("published");
        let events = DbEventSource::new(&primary)
            .events_after(0, 10)
            .await
            .expect("read");
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(
            (e.id, e.event_name, e.model_record_id),
            (id, EventName::Created, 1)
        );
        assert_eq!(e.replicable_name, "widget");
        assert_eq!(e.payload.object_key.as_deref(), Some("w/1"));
    }
}

#[tokio::test]
async fn publishing_follows_the_feature_flag() {
    for (primary, _) in pairs().await {
        let g = Gizmo {
            id: 1,
            file: "g".into(),
        };
        let d = GizmoReplicator::DESCRIPTOR;
        assert!(
            !flags::is_enabled(&primary, d).await.expect("flag"),
            "off by default"
        );
        let mut tx = primary.begin_write().await.expect("begin");
        assert_eq!(
            g.publish_created(tx.conn()).await.expect("publish"),
            None,
            "{}",
            primary.label()
        );
        tx.commit().await.expect("commit");
        flags::set_enabled(&primary, d, true)
            .await
            .expect("switch on");
        let mut tx = primary.begin_write().await.expect("begin");
        assert!(
            g.publish_created(tx.conn())
                .await
                .expect("publish")
                .is_some()
        );
        tx.commit().await.expect("commit");
        flags::set_enabled(&primary, d, false)
            .await
            .expect("switch off");
        assert!(!flags::is_enabled(&primary, d).await.expect("flag"));
        assert_eq!(
            scalar_i64(&primary, "SELECT count(*) FROM geo_events").await,
            1
        );
    }
}

#[tokio::test]
async fn duplicate_events_give_one_row_and_events_drive_the_registry() {
    for (primary, secondary) in pairs().await {
        let label = primary.label().to_owned();
        let w = widget(7);
        for _ in 0..1000 {
            publish(&primary, &w, EventName::Created).await;
        }
        let c = cursor(&secondary, &primary, "a");
        let r = c.step().await.expect("step");
        assert!(r.held_lease);
        assert_eq!(
            (r.read, r.applied, r.gaps_detected),
            (1000, 1000, 0),
            "{label}: {r:?}"
        );
        assert_eq!(
            scalar_i64(&secondary, "SELECT count(*) FROM widget_registry").await,
            1,
            "{label}"
        );
        assert_eq!(state(&secondary, 7).await, Some(SyncState::Pending));
        assert_eq!(c.position().await.expect("position"), Some(r.position));

        // A synced row goes back to pending on `updated`.
        exec(&secondary, "UPDATE widget_registry SET state = 2").await;
        publish(&primary, &w, EventName::Updated).await;
        c.step().await.expect("step");
        assert_eq!(
            state(&secondary, 7).await,
            Some(SyncState::Pending),
            "{label}"
        );

        // `created` for a tracked, synced row changes nothing.
        exec(&secondary, "UPDATE widget_registry SET state = 2").await;
        publish(&primary, &w, EventName::Created).await;
        c.step().await.expect("step");
        assert_eq!(
            state(&secondary, 7).await,
            Some(SyncState::Synced),
            "{label}"
        );

        // `deleted` removes the row and schedules the object's removal.
        publish(&primary, &w, EventName::Deleted).await;
        c.step().await.expect("step");
        assert_eq!(state(&secondary, 7).await, None, "{label}");
        assert_eq!(
            scalar_i64(&secondary, "SELECT count(*) FROM geo_blob_removals WHERE replicable_name = 'widget' AND model_record_id = 7 AND object_key = 'w/7'").await,
            1,
            "{label}"
        );

        // Within one batch: created then deleted leaves nothing; deleted then created a pending row.
        publish(&primary, &widget(8), EventName::Created).await;
        publish(&primary, &widget(8), EventName::Deleted).await;
        publish(&primary, &widget(9), EventName::Deleted).await;
        publish(&primary, &widget(9), EventName::Created).await;
        let r = c.step().await.expect("step");
        assert_eq!(r.applied, 4);
        assert_eq!(state(&secondary, 8).await, None, "{label}");
        assert_eq!(
            state(&secondary, 9).await,
            Some(SyncState::Pending),
            "{label}"
        );
    }
}

#[tokio::test]
async fn a_late_commit_fills_its_gap() {
    for (primary, secondary) in pairs().await {
        let label = primary.label().to_owned();
        // Events 1 and 3 are visible; 2 commits later (written here with an explicit id, as a
        // slow transaction that took id 2 would).
        let insert = |id: i64, model: i64| {
            format!(
                "INSERT INTO geo_events (id, replicable_name, event_name, model_record_id, payload, created_at) VALUES ({id}, 'widget', 'created', {model}, '{{}}', {})",
                match primary.dialect() {
                    Dialect::Postgres => "now()".to_owned(),
                    Dialect::Sqlite => now().timestamp_micros().to_string(),
                }
            )
        };
        exec(&primary, &insert(1, 101)).await;
        exec(&primary, &insert(3, 103)).await;
        let c = cursor(&secondary, &primary, "a");
        let r = c.step().await.expect("step");
        assert_eq!(
            (r.applied, r.gaps_detected, r.position),
            (2, 1, 3),
            "{label}: {r:?}"
        );
        assert_eq!(c.gaps().await.expect("gaps"), [2]);
        assert_eq!(
            c.safe_position().await.expect("safe"),
            Some(1),
            "{label}: pruning must keep event 2's slot"
        );
        assert_eq!(state(&secondary, 102).await, None);

        exec(&primary, &insert(2, 102)).await;
        let r = c.step().await.expect("step");
        assert_eq!((r.gaps_filled, r.applied), (1, 1), "{label}: {r:?}");
        assert_eq!(
            state(&secondary, 102).await,
            Some(SyncState::Pending),
            "{label}"
        );
        assert!(c.gaps().await.expect("gaps").is_empty());
        assert_eq!(c.safe_position().await.expect("safe"), Some(3));
    }
}

#[tokio::test]
async fn a_transaction_held_open_on_postgres_is_applied_when_it_commits() {
    let Some(primary) = geo_runtime::testing::postgres().await else {
        return;
    };
    let secondary = geo_runtime::testing::postgres()
        .await
        .expect("second schema");
    common::primary(&primary).await;
    common::secondary(&secondary).await;
    // Transaction A takes an event id and stays open; B takes the next id and commits first.
    let mut slow = primary.begin_write().await.expect("begin");
    widget(1)
        .publish_created(slow.conn())
        .await
        .expect("publish")
        .expect("id");
    publish(&primary, &widget(2), EventName::Created)
        .await
        .expect("id");
    let c = cursor(&secondary, &primary, "a");
    let r = c.step().await.expect("step");
    assert_eq!((r.applied, r.gaps_detected), (1, 1), "{r:?}");
    assert_eq!(state(&secondary, 1).await, None);
    slow.commit().await.expect("late commit");
    let r = c.step().await.expect("step");
    assert_eq!(r.gaps_filled, 1, "{r:?}");
    assert_eq!(state(&secondary, 1).await, Some(SyncState::Pending));
}

#[tokio::test]
async fn a_gap_that_never_fills_is_given_up_loudly() {
    for (primary, secondary) in pairs().await {
        exec(&primary, &format!("INSERT INTO geo_events (id, replicable_name, event_name, model_record_id, payload, created_at) VALUES (5, 'widget', 'created', 5, '{{}}', {})",
            match primary.dialect() { Dialect::Postgres => "now()".to_owned(), Dialect::Sqlite => now().timestamp_micros().to_string() })).await;
        let c = EventCursor::new(
            &secondary,
            &common::set(),
            DbEventSource::new(&primary),
            CursorConfig {
                gap_timeout: Duration::ZERO,
                ..config()
            },
            "a",
        );
        let r = c.step().await.expect("step");
        assert_eq!(
            r.gaps_detected,
            4,
            "{}: ids 1-4 are missing",
            primary.label()
        );
        let r = c.step().await.expect("step");
        assert_eq!(r.gaps_abandoned, 4, "{r:?}");
        assert!(c.gaps().await.expect("gaps").is_empty());
    }
}

#[tokio::test]
async fn a_restarted_cursor_resumes_from_its_stored_position() {
    for (primary, secondary) in pairs().await {
        publish(&primary, &widget(1), EventName::Created).await;
        publish(&primary, &widget(1), EventName::Updated).await;
        let first = cursor(&secondary, &primary, "a");
        let r = first.step().await.expect("step");
        drop(first);
        exec(&secondary, "UPDATE widget_registry SET state = 2").await;
        // A new process: the events it already applied are not applied again (the row stays
        // synced); new ones are.
        let second = cursor(&secondary, &primary, "a");
        assert_eq!(second.position().await.expect("pos"), Some(r.position));
        let again = second.step().await.expect("step");
        assert_eq!(again.read, 0, "{}", primary.label());
        assert_eq!(state(&secondary, 1).await, Some(SyncState::Synced));
        publish(&primary, &widget(2), EventName::Created).await;
        assert_eq!(second.step().await.expect("step").applied, 1);
    }
}

#[tokio::test]
async fn a_new_cursor_starts_at_the_latest_event_by_default() {
    for (primary, secondary) in pairs().await {
        publish(&primary, &widget(1), EventName::Created).await;
        let c = EventCursor::new(
            &secondary,
            &common::set(),
            DbEventSource::new(&primary),
            CursorConfig::default(),
            "a",
        );
        let r = c.step().await.expect("step");
        assert_eq!(r.read, 0, "history is the backfill's job");
        publish(&primary, &widget(2), EventName::Created).await;
        assert_eq!(c.step().await.expect("step").applied, 1);
        assert_eq!(state(&secondary, 1).await, None);
        assert_eq!(state(&secondary, 2).await, Some(SyncState::Pending));
    }
}

#[tokio::test]
async fn only_one_cursor_is_active_per_tracking_database() {
    for (primary, secondary) in pairs().await {
        publish(&primary, &widget(1), EventName::Created).await;
        let a = cursor(&secondary, &primary, "host-a:1");
        let b = cursor(&secondary, &primary, "host-b:1");
        assert!(a.step().await.expect("a").held_lease);
        let rb = b.step().await.expect("b");
        assert!(!rb.held_lease, "{}: two active cursors", primary.label());
        assert_eq!(rb.read, 0);
        // When a's lease expires (it died), b takes over.
        let past = match secondary.dialect() {
            Dialect::Postgres => "now() - interval '1 minute'".to_owned(),
            Dialect::Sqlite => (now().timestamp_micros() - 60_000_000).to_string(),
        };
        exec(
            &secondary,
            &format!("UPDATE geo_leases SET expires_at = {past}"),
        )
        .await;
        assert!(b.step().await.expect("b").held_lease);
        assert!(!a.step().await.expect("a").held_lease);
    }
}

/// A source that hands the lease to another process while the batch is read, as a stalled
/// cursor whose lease expired would experience.
struct StealingSource {
    inner: DbEventSource,
    tracking: Database,
}

impl EventSource for StealingSource {
    async fn events_after(&self, after: i64, limit: usize) -> Result<Vec<Event>, SourceError> {
        exec(&self.tracking, "UPDATE geo_leases SET holder = 'thief'").await;
        self.inner.events_after(after, limit).await
    }
    async fn events_by_ids(&self, ids: &[i64]) -> Result<Vec<Event>, SourceError> {
        self.inner.events_by_ids(ids).await
    }
    async fn latest_event_id(&self) -> Result<i64, SourceError> {
        self.inner.latest_event_id().await
    }
}

#[tokio::test]
async fn a_cursor_that_lost_its_lease_commits_nothing() {
    for (primary, secondary) in pairs().await {
        publish(&primary, &widget(1), EventName::Created).await;
        let source = StealingSource {
            inner: DbEventSource::new(&primary),
            tracking: secondary.database().clone(),
        };
        let c = EventCursor::new(&secondary, &common::set(), source, config(), "victim");
        let err = c.step().await.expect_err("the lease was lost");
        assert!(
            matches!(err, geo_runtime::events::CursorError::LeaseLost),
            "{err:?}"
        );
        assert_eq!(
            state(&secondary, 1).await,
            None,
            "{}: applied without the lease",
            primary.label()
        );
        assert_eq!(c.position().await.expect("pos"), None);
    }
}

#[tokio::test]
async fn events_of_a_disabled_replicable_are_skipped_on_the_secondary() {
    for (primary, secondary) in pairs().await {
        flags::set_enabled(&primary, GizmoReplicator::DESCRIPTOR, true)
            .await
            .expect("on at the primary");
        let mut tx = primary.begin_write().await.expect("begin");
        Gizmo {
            id: 1,
            file: "g".into(),
        }
        .publish_created(tx.conn())
        .await
        .expect("publish");
        tx.commit().await.expect("commit");
        let r = cursor(&secondary, &primary, "a")
            .step()
            .await
            .expect("step");
        assert_eq!((r.applied, r.skipped), (0, 1), "{}", primary.label());
        assert_eq!(
            scalar_i64(&secondary, "SELECT count(*) FROM gizmo_registry").await,
            0
        );
    }
}

#[tokio::test]
async fn pruning_keeps_what_a_secondary_has_not_read() {
    use geo_runtime::events::{prune_events, record_secondary_cursor};
    for (primary, _) in pairs().await {
        for id in 1..=10 {
            publish(&primary, &widget(id), EventName::Created).await;
        }
        assert_eq!(
            prune_events(&primary, 50_000).await.expect("prune"),
            0,
            "no secondary known: keep all"
        );
        record_secondary_cursor(&primary, "s1", 8)
            .await
            .expect("cursor");
        record_secondary_cursor(&primary, "s2", 4)
            .await
            .expect("cursor");
        assert_eq!(
            prune_events(&primary, 50_000).await.expect("prune"),
            3,
            "below the lowest cursor (4)"
        );
        assert_eq!(
            scalar_i64(&primary, "SELECT min(id) FROM geo_events").await,
            4
        );
    }
}

/// An event source whose reads wait at a gate, so a test can interleave a cursor step with
/// other work: `entered` is signalled when a read begins, `open` lets it go on.
struct GatedEvents {
    inner: DbEventSource,
    entered: std::sync::Arc<tokio::sync::Notify>,
    open: std::sync::Arc<tokio::sync::Notify>,
}

impl EventSource for GatedEvents {
    async fn events_after(&self, after: i64, limit: usize) -> Result<Vec<Event>, SourceError> {
        self.entered.notify_one();
        self.open.notified().await;
        self.inner.events_after(after, limit).await
    }

    async fn events_by_ids(&self, ids: &[i64]) -> Result<Vec<Event>, SourceError> {
        self.inner.events_by_ids(ids).await
    }

    async fn latest_event_id(&self) -> Result<i64, SourceError> {
        self.inner.latest_event_id().await
    }
}

/// A listing of the primary's ids that, once read, waits at a gate before it is applied.
struct GatedListing {
    inner: geo_runtime::events::DbModelIdSource,
    listed: std::sync::Arc<tokio::sync::Notify>,
    open: std::sync::Arc<tokio::sync::Notify>,
}

impl geo_runtime::events::ModelIdSource for GatedListing {
    async fn model_ids_after(
        &self,
        descriptor: &'static geo_runtime::ReplicatorDescriptor,
        after: i64,
        limit: usize,
    ) -> Result<Vec<i64>, SourceError> {
        let ids = self.inner.model_ids_after(descriptor, after, limit).await;
        self.listed.notify_one();
        self.open.notified().await;
        ids
    }
}

/// A cursor step begins, a consistency pass lists the primary (nothing there yet), a record is
/// created, the cursor reads and applies it, and only then is the stale listing applied: the
/// row must survive. (It did not when the row's creation time was the step's start, which came
/// before the listing: the pass took it for an orphan.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_applied_while_a_stale_listing_is_in_flight_is_not_an_orphan() {
    use std::sync::Arc;
    use tokio::sync::Notify;
    for (primary, secondary) in pairs().await {
        let label = primary.label().to_owned();
        let (entered, events_open) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let c = EventCursor::new(
            &secondary,
            &common::set(),
            GatedEvents {
                inner: DbEventSource::new(&primary),
                entered: entered.clone(),
                open: events_open.clone(),
            },
            config(),
            "gated",
        );
        let stepping = tokio::spawn(async move { c.step().await });
        entered.notified().await;
        // The listing starts strictly after the step did (timestamps are in microseconds).
        let t = now();
        while now() <= t {
            tokio::task::yield_now().await;
        }
        let (listed, listing_open) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let pass = geo_runtime::worker::consistency::Consistency::new(
            &secondary,
            GatedListing {
                inner: geo_runtime::events::DbModelIdSource::new(&primary),
                listed: listed.clone(),
                open: listing_open.clone(),
            },
        );
        let passing = tokio::spawn(async move { pass.step(WidgetReplicator::DESCRIPTOR).await });
        listed.notified().await;

        publish(&primary, &widget(2), EventName::Created).await;
        events_open.notify_one();
        stepping.await.expect("join").expect("step");
        assert_eq!(
            state(&secondary, 2).await,
            Some(SyncState::Pending),
            "{label}: the cursor tracks the new record"
        );
        listing_open.notify_one();
        passing.await.expect("join").expect("pass");
        assert_eq!(
            state(&secondary, 2).await,
            Some(SyncState::Pending),
            "{label}: a row newer than the listing is not an orphan"
        );
    }
}

/// The keys whose removal is scheduled for model id `id`, sorted.
async fn removals_of(secondary: &Database, id: i64) -> Vec<String> {
    let sql = format!(
        "SELECT object_key FROM geo_blob_removals WHERE model_record_id = {id} ORDER BY object_key"
    );
    match secondary.dialect() {
        Dialect::Postgres => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(secondary.as_postgres().expect("pg"))
            .await
            .expect("removals"),
        Dialect::Sqlite => sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(secondary.as_sqlite_readers().expect("sqlite"))
            .await
            .expect("removals"),
    }
}

/// Every copy a batch of events retires is scheduled for removal: each key a `deleted` event
/// names, even when the record is created again under another key in the same batch, and the
/// key the registry recorded when the record moved without its event reaching us.
#[tokio::test]
async fn every_retired_copy_is_scheduled_for_removal() {
    for (primary, secondary) in pairs().await {
        let label = primary.label().to_owned();
        let c = cursor(&secondary, &primary, "a");
        let at = |id: i64, key: &str| Widget {
            id,
            file: key.to_owned(),
        };
        // One batch: deleted under a, created under b, deleted under b, created under c.
        publish(&primary, &at(1, "k/a"), EventName::Deleted).await;
        publish(&primary, &at(1, "k/b"), EventName::Created).await;
        publish(&primary, &at(1, "k/b"), EventName::Deleted).await;
        publish(&primary, &at(1, "k/c"), EventName::Created).await;
        // Deleted under a and created again under a: the deleted version's copy goes too (the
        // new one is synced afresh).
        publish(&primary, &at(2, "k/a2"), EventName::Deleted).await;
        publish(&primary, &at(2, "k/a2"), EventName::Created).await;
        c.step().await.expect("step");
        assert_eq!(removals_of(&secondary, 1).await, ["k/a", "k/b"], "{label}");
        assert_eq!(
            state(&secondary, 1).await,
            Some(SyncState::Pending),
            "{label}"
        );
        assert_eq!(removals_of(&secondary, 2).await, ["k/a2"], "{label}");

        // Record 3 synced here under k/old, then moved to k/new without an event, then deleted:
        // both copies are retired.
        publish(&primary, &at(3, "k/old"), EventName::Created).await;
        c.step().await.expect("step");
        let registry = Registry::new(&secondary, WidgetReplicator::DESCRIPTOR);
        common::synced_under(&secondary, 3, "k/old").await;
        publish(&primary, &at(3, "k/new"), EventName::Deleted).await;
        c.step().await.expect("step");
        assert_eq!(
            removals_of(&secondary, 3).await,
            ["k/new", "k/old"],
            "{label}"
        );

        // Record 4 synced under k/x, then deleted and created again under k/y in one batch: a
        // fresh row that records no copy, so nothing keeps k/x (even if k/y never arrives).
        publish(&primary, &at(4, "k/x"), EventName::Created).await;
        c.step().await.expect("step");
        common::synced_under(&secondary, 4, "k/x").await;
        publish(&primary, &at(4, "k/x"), EventName::Deleted).await;
        publish(&primary, &at(4, "k/y"), EventName::Created).await;
        c.step().await.expect("step");
        let fresh = registry
            .find_by_model_id(4)
            .await
            .expect("find")
            .expect("row");
        assert_eq!(
            (fresh.state, fresh.object_key.as_deref()),
            (SyncState::Pending, None),
            "{label}"
        );
        assert_eq!(removals_of(&secondary, 4).await, ["k/x"], "{label}");
    }
}
