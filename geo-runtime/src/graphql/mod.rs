//! The GraphQL API of registries (feature `graphql`), served at `POST /graphql` on the node's
//! admin endpoint, behind its bearer token like every other admin route (introspection
//! included).
//!
//! The schema is built at start from the registered replicators, with no hand-kept list. For each
//! replicable there is a `<name>Registries` connection on `geoNode` (Geo's names) and a
//! `<Name>Registry` type with Geo's fields. Connections filter by `ids`, `replicationState`,
//! `verificationState` and `keyword` (a substring of the object key). They sort in Geo's orders
//! (by id, last sync time or verification time, each way) and paginate with keyset cursors
//! (`first`/`after` forward, `last`/`before` backward; a cursor holds the sort key and the
//! id), never OFFSET: by id a page costs
//! one indexed range scan at any depth, and pages stay stable while rows change.
//!
//! Mutations: `geoRegistriesUpdate` resyncs or reverifies one registry row;
//! `geoRegistriesBulkUpdate` resyncs or reverifies every row (optionally in one state) in the
//! background, in batches of [`operations::BATCH`](crate::operations::BATCH). Progress is read with `geoBulkUpdateJob(id)`.
//! Both only move rows back to pending, so running them twice is harmless.
//!
//! A replicable whose feature flag is off refuses with a clear message, as Geo does. Queries are
//! limited in depth and complexity.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use async_graphql::dynamic::{
    Field, FieldFuture, FieldValue, ResolverContext, Schema, SchemaError, TypeRef,
};
use async_graphql::{Error, Name, Value};
use axum::extract::State;
use axum::routing::post;

use crate::db::{Database, NodeRole};
use crate::flags;
use crate::registry::query::{Page, PageRequest, RegistryFilter, RegistrySort};
use crate::registry::{ColumnValue, Registry, RegistryRecord, SyncState};
use crate::replicator::{ReplicatorDescriptor, ReplicatorSet};
use crate::verification::VerificationState;

mod mutations;
mod schema;

use mutations::job_value;
use schema::builder;

/// Deepest query accepted.
pub const MAX_DEPTH: usize = 8;
/// Most complex query accepted (a field counts 1; a page of 1,000 nodes with 20 fields fits).
pub const MAX_COMPLEXITY: usize = 2_000;
/// Largest page.
pub const MAX_PAGE: i64 = 1_000;
/// Page size when `first` is not given.
pub const DEFAULT_PAGE: i64 = 50;

/// `package_file` → `packageFile`, or `PackageFile` with `upper` (heck's camel cases).
fn camel(name: &str, upper: bool) -> String {
    use heck::{ToLowerCamelCase, ToUpperCamelCase};
    if upper {
        name.to_upper_camel_case()
    } else {
        name.to_lower_camel_case()
    }
}

/// `widget` → `WIDGET_REGISTRY` (Geo's `registryClass` values).
fn class_name(d: &ReplicatorDescriptor) -> String {
    format!("{}_REGISTRY", d.replicable_name.to_ascii_uppercase())
}

const SYNC_STATES: [(SyncState, &str); 4] = [
    (SyncState::Pending, "PENDING"),
    (SyncState::Started, "STARTED"),
    (SyncState::Synced, "SYNCED"),
    (SyncState::Failed, "FAILED"),
];

const VERIFICATION_STATES: [(VerificationState, &str); 5] = [
    (VerificationState::Pending, "PENDING"),
    (VerificationState::Started, "STARTED"),
    (VerificationState::Succeeded, "SUCCEEDED"),
    (VerificationState::Failed, "FAILED"),
    (VerificationState::Disabled, "DISABLED"),
];

/// A background bulk update and how far it got.
#[derive(Debug, Clone)]
struct Job {
    class: String,
    action: &'static str,
    status: &'static str,
    processed: u64,
    error: Option<String>,
}

#[derive(Debug, Default)]
struct Jobs {
    next: AtomicU64,
    jobs: Mutex<HashMap<u64, Job>>,
}

impl Jobs {
    fn update(&self, id: u64, f: impl FnOnce(&mut Job)) {
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(job) = jobs.get_mut(&id) {
            f(job);
        }
    }
}

/// What the resolvers share.
#[derive(Debug, Clone)]
struct Ctx {
    db: Database,
    role: NodeRole,
    name: String,
    descriptors: Vec<&'static ReplicatorDescriptor>,
    jobs: Arc<Jobs>,
}

fn ctx<'a>(c: &ResolverContext<'a>) -> Result<&'a Ctx, Error> {
    c.data::<Ctx>()
}

/// Builds the schema for the replicators of `set`, over a node's database.
pub fn schema(
    db: &Database,
    role: NodeRole,
    set: &ReplicatorSet,
    node_name: &str,
) -> Result<Schema, SchemaError> {
    let shared = Ctx {
        db: db.clone(),
        role,
        name: node_name.to_owned(),
        descriptors: set.descriptors().to_vec(),
        jobs: Arc::default(),
    };
    builder(set).data(shared).finish()
}

/// The schema in SDL, for `docs/schema.graphql` (no database needed).
pub fn sdl(set: &ReplicatorSet) -> Result<String, SchemaError> {
    Ok(builder(set).finish()?.sdl())
}

/// A field read from the parent's object value.
fn prop(name: &str, ty: TypeRef) -> Field {
    let key = name.to_owned();
    Field::new(name, ty, move |c| {
        let key = key.clone();
        FieldFuture::new(async move {
            let value = c
                .parent_value
                .as_value()
                .and_then(|v| match v {
                    Value::Object(m) => m.get(key.as_str()).cloned(),
                    _ => None,
                })
                .unwrap_or(Value::Null);
            Ok(match value {
                Value::Null => None,
                v => Some(v),
            })
        })
    })
}

/// A child object or list from the parent's value, as field values.
fn child<'a>(c: &ResolverContext<'a>, key: &str) -> Option<FieldValue<'a>> {
    let Some(Value::Object(m)) = c.parent_value.as_value() else {
        return None;
    };
    match m.get(key)? {
        Value::List(items) => Some(FieldValue::list(
            items.iter().cloned().map(FieldValue::value),
        )),
        Value::Null => None,
        v => Some(FieldValue::value(v.clone())),
    }
}

fn object(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (Name::new(k), v)).collect())
}

fn ts(t: Option<chrono::DateTime<chrono::Utc>>) -> Value {
    t.map_or(Value::Null, |t| Value::from(t.to_rfc3339()))
}

fn opt_string(s: Option<String>) -> Value {
    s.map_or(Value::Null, Value::from)
}

fn enum_value(name: &str) -> Value {
    Value::Enum(Name::new(name))
}

/// A column's value as GraphQL shows it: states as enum values, checksums in hex, times as
/// RFC 3339 strings.
fn column_value(value: ColumnValue<'_>) -> Value {
    match value {
        ColumnValue::SyncState(state) => enum_value(
            SYNC_STATES
                .iter()
                .find(|(s, _)| *s == state)
                .map_or("PENDING", |(_, name)| name),
        ),
        ColumnValue::VerificationState(state) => enum_value(
            VERIFICATION_STATES
                .iter()
                .find(|(s, _)| *s == state)
                .map_or("PENDING", |(_, name)| name),
        ),
        ColumnValue::I32(n) => Value::from(n),
        ColumnValue::I64(n) => Value::from(n.to_string()),
        ColumnValue::OptionalTimestamp(t) => ts(t),
        ColumnValue::Timestamp(t) => ts(Some(t)),
        ColumnValue::OptionalString(t) => opt_string(t.map(str::to_owned)),
        ColumnValue::OptionalBytes(b) => opt_string(b.map(hex::encode)),
        ColumnValue::Bool(b) => Value::from(b),
    }
}

fn node(d: &ReplicatorDescriptor, r: RegistryRecord) -> Value {
    let fk = format!("{}Id", camel(d.replicable_name, false));
    let mut m: async_graphql::indexmap::IndexMap<Name, Value> = Default::default();
    m.insert(Name::new(fk), Value::from(r.model_record_id.to_string()));
    m.insert(Name::new("id"), Value::from(r.id.to_string()));
    for (column, value) in r.values() {
        if column.in_graphql {
            m.insert(Name::new(camel(column.name, false)), column_value(value));
        }
    }
    Value::Object(m)
}

/// An argument that was given and is not null (an unset variable reads as null).
fn arg<'a>(
    c: &'a ResolverContext<'_>,
    name: &str,
) -> Option<async_graphql::dynamic::ValueAccessor<'a>> {
    c.args.get(name).filter(|v| !v.is_null())
}

fn parse_id(s: &str) -> Result<i64, Error> {
    s.parse()
        .map_err(|_| Error::new(format!("invalid id {s:?}: ids are integers")))
}

async fn require_enabled(c: &Ctx, d: &ReplicatorDescriptor) -> Result<(), Error> {
    if c.role != NodeRole::Secondary {
        return Err(Error::new(
            "registries live on secondaries; this node is a primary",
        ));
    }
    if !flags::is_enabled(&c.db, d).await? {
        return Err(Error::new(format!(
            "replication of {} is disabled on this node (feature flag {})",
            d.replicable_name_plural, d.feature_flag
        )));
    }
    Ok(())
}

async fn registries<'a>(
    c: &ResolverContext<'a>,
    d: &'static ReplicatorDescriptor,
) -> Result<Option<FieldValue<'a>>, Error> {
    let shared = ctx(c)?;
    require_enabled(shared, d).await?;
    let request = page_request(c)?;
    let page = Registry::new(&shared.db, d).page(&request).await?;
    Ok(Some(FieldValue::value(connection(d, page, request.sort))))
}

/// The page a connection's arguments ask for: forward (`first`/`after`) or backward
/// (`last`/`before`) paging, as Relay specifies, with the filters and the sort order.
fn page_request(c: &ResolverContext<'_>) -> Result<PageRequest, Error> {
    let backward = arg(c, "last").is_some() || arg(c, "before").is_some();
    if backward && (arg(c, "first").is_some() || arg(c, "after").is_some()) {
        return Err(Error::new(
            "page forward (first/after) or backward (last/before), not both",
        ));
    }
    let (size_arg, cursor_arg) = match backward {
        true => ("last", "before"),
        false => ("first", "after"),
    };
    let size = arg(c, size_arg).map_or(Ok(DEFAULT_PAGE), |v| v.i64())?;
    if !(1..=MAX_PAGE).contains(&size) {
        return Err(Error::new(format!(
            "{size_arg} must be between 1 and {MAX_PAGE}"
        )));
    }
    let sort = match arg(c, "sort") {
        Some(v) => {
            RegistrySort::from_name(v.enum_name()?).ok_or_else(|| Error::new("unknown sort"))?
        }
        None => RegistrySort::default(),
    };
    let after = arg(c, cursor_arg)
        .map(|v| {
            v.string()
                .and_then(|s| sort.parse_cursor(s).map_err(|e| Error::new(e.to_string())))
        })
        .transpose()?;
    Ok(PageRequest {
        filter: filter(c)?,
        sort,
        size,
        backward,
        after,
    })
}

/// The filters of a connection's arguments.
fn filter(c: &ResolverContext<'_>) -> Result<RegistryFilter, Error> {
    let mut filter = RegistryFilter::default();
    if let Some(ids) = arg(c, "ids") {
        let ids = ids
            .list()?
            .iter()
            .map(|v| v.string().and_then(parse_id))
            .collect::<Result<Vec<i64>, Error>>()?;
        filter.ids = Some(ids);
    }
    if let Some(state) = arg(c, "replicationState") {
        let name = state.enum_name()?;
        let found = SYNC_STATES.iter().find(|(_, n)| *n == name);
        filter.sync_state = Some(found.ok_or_else(|| Error::new("unknown state"))?.0);
    }
    if let Some(state) = arg(c, "verificationState") {
        let name = state.enum_name()?;
        let found = VERIFICATION_STATES.iter().find(|(_, n)| *n == name);
        let found = found.ok_or_else(|| Error::new("unknown verification state"))?;
        filter.verification_state = Some(found.0);
    }
    if let Some(keyword) = arg(c, "keyword") {
        filter.keyword = Some(keyword.string()?.to_owned());
    }
    Ok(filter)
}

/// A page as a Relay connection: edges with their cursors, nodes, page info.
fn connection(d: &ReplicatorDescriptor, page: Page, sort: RegistrySort) -> Value {
    let start = page.records.first().map(|r| sort.cursor(r));
    let end = page.records.last().map(|r| sort.cursor(r));
    let edges: Vec<Value> = page
        .records
        .iter()
        .map(|r| {
            object([
                ("cursor", Value::from(sort.cursor(r))),
                ("node", node(d, r.clone())),
            ])
        })
        .collect();
    let nodes: Vec<Value> = page.records.into_iter().map(|r| node(d, r)).collect();
    object([
        ("edges", Value::List(edges)),
        ("nodes", Value::List(nodes)),
        (
            "pageInfo",
            object([
                ("hasNextPage", Value::from(page.has_next)),
                ("hasPreviousPage", Value::from(page.has_previous)),
                ("startCursor", opt_string(start)),
                ("endCursor", opt_string(end)),
            ]),
        ),
    ])
}

/// `POST /graphql` over `schema` (mount it on the admin router, behind its token).
pub fn router(schema: Schema) -> axum::Router {
    axum::Router::new()
        .route("/graphql", post(execute))
        .with_state(schema)
}

async fn execute(
    State(schema): State<Schema>,
    request: async_graphql_axum::GraphQLRequest,
) -> async_graphql_axum::GraphQLResponse {
    schema.execute(request.into_inner()).await.into()
}
