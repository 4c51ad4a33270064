//! The mutations: resync or reverify one registry row, or every row in the background.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use async_graphql::dynamic::{FieldValue, ResolverContext};
use async_graphql::{Error, Value};

use crate::db::{Database, NodeRole};
use crate::operations::{self, Selection};
use crate::registry::Registry;
use crate::replicator::ReplicatorDescriptor;
use std::sync::Arc;

use super::{
    Ctx, Job, Jobs, SYNC_STATES, VERIFICATION_STATES, arg, class_name, ctx, enum_value, object,
    opt_string, parse_id, require_enabled,
};

fn descriptor_of(shared: &Ctx, class: &str) -> Result<&'static ReplicatorDescriptor, Error> {
    shared
        .descriptors
        .iter()
        .copied()
        .find(|d| class_name(d) == class)
        .ok_or_else(|| Error::new(format!("unknown registry class {class}")))
}

pub(super) async fn update_one<'a>(
    c: &ResolverContext<'a>,
) -> Result<Option<FieldValue<'a>>, Error> {
    let shared = ctx(c)?;
    let d = descriptor_of(shared, c.args.try_get("registryClass")?.enum_name()?)?;
    require_enabled(shared, d).await?;
    let registry_id = parse_id(c.args.try_get("registryId")?.string()?)?;
    let model_id = Registry::new(&shared.db, d)
        .model_id_of(registry_id)
        .await?;
    let Some(model_id) = model_id else {
        return Ok(Some(FieldValue::value(object([
            (
                "errors",
                Value::List(vec![Value::from(format!(
                    "no {} registry row {registry_id}",
                    d.replicable_name
                ))]),
            ),
            ("updated", Value::from(0)),
        ]))));
    };
    let selection = Selection::Ids(vec![model_id]);
    let updated = match c.args.try_get("action")?.enum_name()? {
        "RESYNC" => operations::resync(&shared.db, d, &selection).await?,
        _ => operations::reverify(&shared.db, NodeRole::Secondary, d, &selection).await?,
    };
    tracing::info!(
        replicable = d.replicable_name,
        registry_id,
        updated,
        "registry update through GraphQL"
    );
    Ok(Some(FieldValue::value(object([
        ("errors", Value::List(Vec::new())),
        ("updated", Value::from(updated)),
    ]))))
}

pub(super) fn job_value(id: i64, j: &Job) -> Value {
    object([
        ("id", Value::from(id.to_string())),
        ("registryClass", enum_value(&j.class)),
        ("action", enum_value(j.action)),
        ("status", Value::from(j.status)),
        ("processed", Value::from(j.processed)),
        ("error", opt_string(j.error.clone())),
    ])
}

pub(super) async fn update_all<'a>(
    c: &ResolverContext<'a>,
) -> Result<Option<FieldValue<'a>>, Error> {
    let shared = ctx(c)?;
    let class = c.args.try_get("registryClass")?.enum_name()?.to_owned();
    let d = descriptor_of(shared, &class)?;
    require_enabled(shared, d).await?;
    let action: &'static str = match c.args.try_get("action")?.enum_name()? {
        "RESYNC_ALL" => "RESYNC_ALL",
        _ => "REVERIFY_ALL",
    };
    let selection = bulk_selection(c)?;
    let jobs = shared.jobs.clone();
    let id = jobs.next.fetch_add(1, Ordering::Relaxed) + 1;
    let job = Job {
        class,
        action,
        status: "RUNNING",
        processed: 0,
        error: None,
    };
    let value = job_value(id as i64, &job);
    jobs.jobs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id, job);
    run_bulk(jobs, id, shared.db.clone(), d, action, selection);
    Ok(Some(FieldValue::value(object([
        ("errors", Value::List(Vec::new())),
        ("job", value),
    ]))))
}

/// The rows a bulk update takes: all, or those in a sync or verification state.
fn bulk_selection(c: &ResolverContext<'_>) -> Result<Selection, Error> {
    let sync_state = match arg(c, "replicationState") {
        Some(v) => {
            let name = v.enum_name()?;
            SYNC_STATES
                .iter()
                .find(|(_, n)| *n == name)
                .map(|(s, _)| *s)
        }
        None => None,
    };
    let verification_state = match arg(c, "verificationState") {
        Some(v) => {
            let name = v.enum_name()?;
            VERIFICATION_STATES
                .iter()
                .find(|(_, n)| *n == name)
                .map(|(s, _)| *s)
        }
        None => None,
    };
    Ok(Selection::All {
        sync_state,
        verification_state,
    })
}

/// Runs bulk job `id` in the background, recording its progress and outcome in `jobs`.
fn run_bulk(
    jobs: Arc<Jobs>,
    id: u64,
    db: Database,
    d: &'static ReplicatorDescriptor,
    action: &'static str,
    selection: Selection,
) {
    tokio::spawn(async move {
        let progress = |n: u64| jobs.update(id, |j| j.processed += n);
        let result = match action {
            "RESYNC_ALL" => operations::resync_with_progress(&db, d, &selection, &progress).await,
            _ => {
                operations::reverify_with_progress(
                    &db,
                    NodeRole::Secondary,
                    d,
                    &selection,
                    &progress,
                )
                .await
            }
        };
        match result {
            Ok(total) => {
                tracing::info!(
                    replicable = d.replicable_name,
                    action,
                    total,
                    "bulk registry update done"
                );
                jobs.update(id, |j| j.status = "DONE");
            }
            Err(e) => {
                tracing::warn!(replicable = d.replicable_name, action, error = %e, "bulk registry update failed");
                jobs.update(id, |j| {
                    j.status = "FAILED";
                    j.error = Some(e.to_string());
                });
            }
        }
    });
}
