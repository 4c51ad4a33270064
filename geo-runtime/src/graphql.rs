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
//! background, in batches of [`operations::BATCH`]. Progress is read with `geoBulkUpdateJob(id)`.
//! Both only move rows back to pending, so running them twice is harmless.
//!
//! A replicable whose feature flag is off refuses with a clear message, as Geo does. Queries are
//! limited in depth and complexity.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, InputValue, Object, ResolverContext, Schema, SchemaError,
    TypeRef,
};
use async_graphql::{Error, Name, Value};
use axum::extract::State;
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::AssertSqlSafe;

use crate::db::dialect::{IdList, in_id_list, param, quote};
use crate::db::{Database, NodeRole, on_pool};
use crate::flags;
use crate::operations::{self, Selection};
use crate::registry::{REGISTRY_COLUMNS, RegistryRecord, SyncState};
use crate::replicator::{ReplicatorDescriptor, ReplicatorSet};
use crate::verification::VerificationState;

/// Deepest query accepted.
pub const MAX_DEPTH: usize = 8;
/// Most complex query accepted (a field counts 1; a page of 1,000 nodes with 20 fields fits).
pub const MAX_COMPLEXITY: usize = 2_000;
/// Largest page.
pub const MAX_PAGE: i64 = 1_000;
/// Page size when `first` is not given.
pub const DEFAULT_PAGE: i64 = 50;

/// `package_file` → `packageFile`; `Package` prefix with `upper`.
fn camel(name: &str, upper: bool) -> String {
    let mut out = String::with_capacity(name.len());
    let mut up = upper;
    for c in name.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
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

fn builder(set: &ReplicatorSet) -> async_graphql::dynamic::SchemaBuilder {
    let descriptors = set.descriptors().to_vec();
    let mut builder = Schema::build("Query", Some("Mutation"), None)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY);

    builder = builder
        .register(
            Enum::new("ReplicationStateEnum")
                .description("Sync state of a registry row.")
                .items(SYNC_STATES.iter().map(|(_, n)| *n)),
        )
        .register(
            Enum::new("VerificationStateEnum")
                .description("Verification state of a registry row's copy.")
                .items(VERIFICATION_STATES.iter().map(|(_, n)| *n)),
        )
        .register(
            Enum::new("RegistrySort")
                .description("Order of a registries connection.")
                .items(SORTS.iter().map(|s| s.name)),
        )
        .register(Enum::new("RegistryAction").items(["RESYNC", "REVERIFY"]))
        .register(Enum::new("RegistriesBulkAction").items(["RESYNC_ALL", "REVERIFY_ALL"]))
        .register(
            Enum::new("RegistryClass")
                .description("A replicable's registry.")
                .items(descriptors.iter().map(|d| class_name(d))),
        )
        .register(
            Object::new("PageInfo")
                .field(prop("hasNextPage", TypeRef::named_nn(TypeRef::BOOLEAN)))
                .field(prop("hasPreviousPage", TypeRef::named_nn(TypeRef::BOOLEAN)))
                .field(prop("startCursor", TypeRef::named(TypeRef::STRING)))
                .field(prop("endCursor", TypeRef::named(TypeRef::STRING))),
        )
        .register(
            Object::new("GeoBulkUpdateJob")
                .description("A background resync or reverify of many registry rows.")
                .field(prop("id", TypeRef::named_nn(TypeRef::ID)))
                .field(prop("registryClass", TypeRef::named_nn("RegistryClass")))
                .field(prop("action", TypeRef::named_nn("RegistriesBulkAction")))
                .field(
                    prop("status", TypeRef::named_nn(TypeRef::STRING))
                        .description("RUNNING, DONE or FAILED."),
                )
                .field(
                    prop("processed", TypeRef::named_nn(TypeRef::INT))
                        .description("Rows moved back to pending so far."),
                )
                .field(prop("error", TypeRef::named(TypeRef::STRING))),
        )
        .register(
            Object::new("GeoRegistriesUpdatePayload")
                .field(prop("errors", TypeRef::named_nn_list_nn(TypeRef::STRING)))
                .field(prop("updated", TypeRef::named_nn(TypeRef::INT))),
        )
        .register(
            Object::new("GeoRegistriesBulkUpdatePayload")
                .field(prop("errors", TypeRef::named_nn_list_nn(TypeRef::STRING)))
                .field(Field::new("job", TypeRef::named("GeoBulkUpdateJob"), |c| {
                    FieldFuture::new(async move { Ok(child(&c, "job")) })
                })),
        );

    let mut geo_node = Object::new("GeoNode")
        .description("This node and its registries.")
        .field(Field::new(
            "name",
            TypeRef::named_nn(TypeRef::STRING),
            |c| FieldFuture::new(async move { Ok(Some(Value::from(ctx(&c)?.name.clone()))) }),
        ))
        .field(Field::new(
            "role",
            TypeRef::named_nn(TypeRef::STRING),
            |c| FieldFuture::new(async move { Ok(Some(Value::from(ctx(&c)?.role.as_str()))) }),
        ));
    for &d in &descriptors {
        let type_name = format!("{}Registry", camel(d.replicable_name, true));
        let fk_field = format!("{}Id", camel(d.replicable_name, false));
        let mut registry = Object::new(&type_name)
            .description(format!("A secondary's registry row of a {}.", d.model_type))
            .field(prop("id", TypeRef::named_nn(TypeRef::ID)))
            .field(prop(&fk_field, TypeRef::named_nn(TypeRef::ID)));
        for (name, ty) in [
            ("state", TypeRef::named_nn("ReplicationStateEnum")),
            ("retryCount", TypeRef::named_nn(TypeRef::INT)),
            ("lastSyncFailure", TypeRef::named(TypeRef::STRING)),
            ("retryAt", TypeRef::named(TypeRef::STRING)),
            ("lastSyncedAt", TypeRef::named(TypeRef::STRING)),
            ("createdAt", TypeRef::named_nn(TypeRef::STRING)),
            ("objectKey", TypeRef::named(TypeRef::STRING)),
            (
                "verificationState",
                TypeRef::named_nn("VerificationStateEnum"),
            ),
            ("verificationStartedAt", TypeRef::named(TypeRef::STRING)),
            ("verifiedAt", TypeRef::named(TypeRef::STRING)),
            ("verificationRetryAt", TypeRef::named(TypeRef::STRING)),
            ("verificationRetryCount", TypeRef::named_nn(TypeRef::INT)),
            ("verificationChecksum", TypeRef::named(TypeRef::STRING)),
            (
                "verificationChecksumMismatched",
                TypeRef::named(TypeRef::STRING),
            ),
            ("checksumMismatch", TypeRef::named_nn(TypeRef::BOOLEAN)),
            ("verificationFailure", TypeRef::named(TypeRef::STRING)),
        ] {
            registry = registry.field(prop(name, ty));
        }
        let edge = Object::new(format!("{type_name}Edge"))
            .field(prop("cursor", TypeRef::named_nn(TypeRef::STRING)))
            .field(Field::new("node", TypeRef::named_nn(&type_name), |c| {
                FieldFuture::new(async move { Ok(child(&c, "node")) })
            }));
        let connection = Object::new(format!("{type_name}Connection"))
            .field(Field::new(
                "edges",
                TypeRef::named_nn_list_nn(format!("{type_name}Edge")),
                |c| FieldFuture::new(async move { Ok(child(&c, "edges")) }),
            ))
            .field(Field::new(
                "nodes",
                TypeRef::named_nn_list_nn(&type_name),
                |c| FieldFuture::new(async move { Ok(child(&c, "nodes")) }),
            ))
            .field(Field::new("pageInfo", TypeRef::named_nn("PageInfo"), |c| {
                FieldFuture::new(async move { Ok(child(&c, "pageInfo")) })
            }));
        builder = builder
            .register(registry)
            .register(edge)
            .register(connection);
        let field_name = format!("{}Registries", camel(d.replicable_name, false));
        geo_node = geo_node.field(
            Field::new(
                field_name,
                TypeRef::named(format!("{type_name}Connection")),
                move |c| FieldFuture::new(async move { registries(&c, d).await }),
            )
            .description(format!(
                "The registry of {} on this secondary.",
                d.replicable_name_plural
            ))
            .argument(
                InputValue::new("ids", TypeRef::named_nn_list(TypeRef::ID))
                    .description("Registry row ids."),
            )
            .argument(InputValue::new(
                "replicationState",
                TypeRef::named("ReplicationStateEnum"),
            ))
            .argument(InputValue::new(
                "verificationState",
                TypeRef::named("VerificationStateEnum"),
            ))
            .argument(
                InputValue::new("keyword", TypeRef::named(TypeRef::STRING))
                    .description("A substring of the object key."),
            )
            .argument(
                InputValue::new("sort", TypeRef::named("RegistrySort"))
                    .default_value(Value::Enum(Name::new("ID_ASC"))),
            )
            .argument(
                InputValue::new("first", TypeRef::named(TypeRef::INT))
                    .description("Page size (default 50, at most 1000)."),
            )
            .argument(InputValue::new("after", TypeRef::named(TypeRef::STRING)))
            .argument(
                InputValue::new("last", TypeRef::named(TypeRef::INT))
                    .description("Page size, paging backward (at most 1000)."),
            )
            .argument(InputValue::new("before", TypeRef::named(TypeRef::STRING))),
        );
    }
    builder = builder.register(geo_node);

    let query = Object::new("Query")
        .field(Field::new("geoNode", TypeRef::named_nn("GeoNode"), |_| {
            FieldFuture::new(async move { Ok(Some(FieldValue::value(Value::Null))) })
        }))
        .field(
            Field::new(
                "geoBulkUpdateJob",
                TypeRef::named("GeoBulkUpdateJob"),
                |c| {
                    FieldFuture::new(async move {
                        let id = parse_id(c.args.try_get("id")?.string()?)?;
                        let jobs = ctx(&c)?
                            .jobs
                            .jobs
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        Ok(jobs
                            .get(&(id as u64))
                            .map(|j| FieldValue::value(job_value(id, j))))
                    })
                },
            )
            .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID))),
        );
    let mutation = Object::new("Mutation")
        .field(
            Field::new(
                "geoRegistriesUpdate",
                TypeRef::named_nn("GeoRegistriesUpdatePayload"),
                |c| FieldFuture::new(async move { update_one(&c).await }),
            )
            .description("Resync or reverify one registry row.")
            .argument(InputValue::new("registryClass", TypeRef::named_nn("RegistryClass")))
            .argument(InputValue::new("registryId", TypeRef::named_nn(TypeRef::ID)))
            .argument(InputValue::new("action", TypeRef::named_nn("RegistryAction"))),
        )
        .field(
            Field::new(
                "geoRegistriesBulkUpdate",
                TypeRef::named_nn("GeoRegistriesBulkUpdatePayload"),
                |c| FieldFuture::new(async move { update_all(&c).await }),
            )
            .description("Resync or reverify every registry row (optionally only those in a state), in the background.")
            .argument(InputValue::new("registryClass", TypeRef::named_nn("RegistryClass")))
            .argument(InputValue::new("action", TypeRef::named_nn("RegistriesBulkAction")))
            .argument(InputValue::new("replicationState", TypeRef::named("ReplicationStateEnum")))
            .argument(InputValue::new("verificationState", TypeRef::named("VerificationStateEnum"))),
        );
    builder.register(query).register(mutation)
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

fn node(d: &ReplicatorDescriptor, r: RegistryRecord) -> Value {
    let fk = format!("{}Id", camel(d.replicable_name, false));
    let state = SYNC_STATES
        .iter()
        .find(|(s, _)| *s == r.state)
        .map_or("PENDING", |(_, n)| n);
    let vstate = VERIFICATION_STATES
        .iter()
        .find(|(s, _)| *s == r.verification_state)
        .map_or("PENDING", |(_, n)| n);
    let mut m: async_graphql::indexmap::IndexMap<Name, Value> = Default::default();
    m.insert(Name::new(fk), Value::from(r.model_record_id.to_string()));
    if let Value::Object(rest) = object([
        ("id", Value::from(r.id.to_string())),
        ("state", enum_value(state)),
        ("retryCount", Value::from(r.retry_count)),
        ("lastSyncFailure", opt_string(r.last_sync_failure)),
        ("retryAt", ts(r.retry_at)),
        ("lastSyncedAt", ts(r.last_synced_at)),
        ("createdAt", ts(Some(r.created_at))),
        ("objectKey", opt_string(r.object_key)),
        ("verificationState", enum_value(vstate)),
        ("verificationStartedAt", ts(r.verification_started_at)),
        ("verifiedAt", ts(r.verified_at)),
        ("verificationRetryAt", ts(r.verification_retry_at)),
        (
            "verificationRetryCount",
            Value::from(r.verification_retry_count),
        ),
        (
            "verificationChecksum",
            opt_string(r.verification_checksum.as_deref().map(hex::encode)),
        ),
        (
            "verificationChecksumMismatched",
            opt_string(
                r.verification_checksum_mismatched
                    .as_deref()
                    .map(hex::encode),
            ),
        ),
        ("checksumMismatch", Value::from(r.checksum_mismatch)),
        ("verificationFailure", opt_string(r.verification_failure)),
    ]) {
        m.extend(rest);
    }
    Value::Object(m)
}

/// A sort order of Geo's `RegistrySort`: by id, or by a timestamp then id.
struct Sort {
    name: &'static str,
    column: Option<&'static str>,
    descending: bool,
}

const SORTS: [Sort; 6] = [
    Sort {
        name: "ID_ASC",
        column: None,
        descending: false,
    },
    Sort {
        name: "ID_DESC",
        column: None,
        descending: true,
    },
    Sort {
        name: "LAST_SYNCED_AT_ASC",
        column: Some("last_synced_at"),
        descending: false,
    },
    Sort {
        name: "LAST_SYNCED_AT_DESC",
        column: Some("last_synced_at"),
        descending: true,
    },
    Sort {
        name: "VERIFIED_AT_ASC",
        column: Some("verified_at"),
        descending: false,
    },
    Sort {
        name: "VERIFIED_AT_DESC",
        column: Some("verified_at"),
        descending: true,
    },
];

/// A timestamp sort's key in SQL: microseconds since the epoch, NULL as the smallest value, so
/// (key, id) is a total order both dialects compute alike.
fn sort_key(dialect: crate::Dialect, column: &str) -> String {
    match dialect {
        crate::Dialect::Sqlite => format!("COALESCE({}, {})", quote(column), i64::MIN),
        crate::Dialect::Postgres => format!(
            "COALESCE(CAST(EXTRACT(EPOCH FROM {}) * 1000000 AS BIGINT), {})",
            quote(column),
            i64::MIN
        ),
    }
}

/// The same key computed from a row.
fn key_of(r: &RegistryRecord, column: &str) -> i64 {
    let t = match column {
        "last_synced_at" => r.last_synced_at,
        _ => r.verified_at,
    };
    t.map_or(i64::MIN, |t| t.timestamp_micros())
}

/// A cursor: the row's id and, for a timestamp sort, its key.
fn cursor(r: &RegistryRecord, sort: &Sort) -> String {
    let key = sort.column.map(|c| key_of(r, c));
    URL_SAFE_NO_PAD.encode(match key {
        Some(k) => format!("registry:{}:{k}", r.id),
        None => format!("registry:{}", r.id),
    })
}

fn parse_cursor(s: &str, sort: &Sort) -> Result<(i64, i64), Error> {
    let invalid = || Error::new("invalid cursor");
    let text = URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(invalid)?;
    let mut parts = text
        .strip_prefix("registry:")
        .ok_or_else(invalid)?
        .split(':');
    let id = parts
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(invalid)?;
    let key = match (sort.column, parts.next()) {
        (Some(_), Some(k)) => k.parse().map_err(|_| invalid())?,
        (None, None) => 0,
        _ => return Err(Error::new("the cursor belongs to another sort order")),
    };
    Ok((id, key))
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

enum Bind {
    I64(i64),
    I16(i16),
    Text(String),
    Ids(Vec<i64>),
}

async fn registries<'a>(
    c: &ResolverContext<'a>,
    d: &'static ReplicatorDescriptor,
) -> Result<Option<FieldValue<'a>>, Error> {
    let shared = ctx(c)?;
    require_enabled(shared, d).await?;
    let dialect = shared.db.dialect();
    // Forward (`first`/`after`) or backward (`last`/`before`) paging, as Relay specifies.
    let backward = arg(c, "last").is_some() || arg(c, "before").is_some();
    if backward && (arg(c, "first").is_some() || arg(c, "after").is_some()) {
        return Err(Error::new(
            "page forward (first/after) or backward (last/before), not both",
        ));
    }
    let (size_arg, cursor_arg) = if backward {
        ("last", "before")
    } else {
        ("first", "after")
    };
    let first = match arg(c, size_arg) {
        Some(v) => v.i64()?,
        None => DEFAULT_PAGE,
    };
    if !(1..=MAX_PAGE).contains(&first) {
        return Err(Error::new(format!(
            "{size_arg} must be between 1 and {MAX_PAGE}"
        )));
    }
    let sort = match arg(c, "sort") {
        Some(v) => {
            let name = v.enum_name()?;
            SORTS
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| Error::new("unknown sort"))?
        }
        None => &SORTS[0],
    };
    // A backward page is read in the opposite order, then reversed.
    let descending = sort.descending != backward;
    let key_sql = sort.column.map(|c| sort_key(dialect, c));
    let mut filters = Vec::new();
    let mut binds = Vec::new();
    let next = |b: Bind, binds: &mut Vec<Bind>| {
        binds.push(b);
        binds.len()
    };
    if let Some(ids) = arg(c, "ids") {
        let ids = ids
            .list()?
            .iter()
            .map(|v| v.string().and_then(parse_id))
            .collect::<Result<Vec<i64>, Error>>()?;
        let n = next(Bind::Ids(ids), &mut binds);
        filters.push(in_id_list(dialect, "\"id\"", n));
    }
    if let Some(state) = arg(c, "replicationState") {
        let name = state.enum_name()?;
        let s = SYNC_STATES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(s, _)| *s as i16)
            .ok_or_else(|| Error::new("unknown state"))?;
        let n = next(Bind::I16(s), &mut binds);
        filters.push(format!("\"state\" = {}", param(dialect, n)));
    }
    if let Some(state) = arg(c, "verificationState") {
        let name = state.enum_name()?;
        let s = VERIFICATION_STATES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(s, _)| s.as_i16())
            .ok_or_else(|| Error::new("unknown verification state"))?;
        let n = next(Bind::I16(s), &mut binds);
        filters.push(format!("\"verification_state\" = {}", param(dialect, n)));
    }
    if let Some(keyword) = arg(c, "keyword") {
        let escaped = keyword
            .string()?
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let n = next(Bind::Text(format!("%{escaped}%")), &mut binds);
        filters.push(format!(
            "\"object_key\" LIKE {} ESCAPE '\\'",
            param(dialect, n)
        ));
    }
    let after = arg(c, cursor_arg)
        .map(|v| v.string().and_then(|s| parse_cursor(s, sort)))
        .transpose()?;
    let cmp = if descending { "<" } else { ">" };
    if let Some((after_id, after_key)) = after {
        let n = next(Bind::I64(after_id), &mut binds);
        match &key_sql {
            None => filters.push(format!("\"id\" {cmp} {}", param(dialect, n))),
            Some(key) => {
                let k = next(Bind::I64(after_key), &mut binds);
                filters.push(format!(
                    "({key} {cmp} {k} OR ({key} = {k} AND \"id\" {cmp} {n}))",
                    k = param(dialect, k),
                    n = param(dialect, n)
                ));
            }
        }
    }
    let n = next(Bind::I64(first + 1), &mut binds);
    let columns = ["id", d.model_foreign_key]
        .into_iter()
        .chain(REGISTRY_COLUMNS)
        .map(quote)
        .collect::<Vec<_>>()
        .join(", ");
    let direction = if descending { "DESC" } else { "ASC" };
    let order = match &key_sql {
        None => format!("\"id\" {direction}"),
        Some(key) => format!("{key} {direction}, \"id\" {direction}"),
    };
    let sql = format!(
        "SELECT {columns} FROM {} {} ORDER BY {order} LIMIT {}",
        quote(d.registry_table),
        if filters.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", filters.join(" AND "))
        },
        param(dialect, n)
    );
    let mut records: Vec<RegistryRecord> = on_pool!(shared.db, read, pool => {
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for b in binds {
            q = match b {
                Bind::I64(v) => q.bind(v),
                Bind::I16(v) => q.bind(v),
                Bind::Text(v) => q.bind(v),
                Bind::Ids(v) => q.bind(IdList(v)),
            };
        }
        let rows = q.fetch_all(pool).await.map_err(crate::DbError::from)?;
        rows.iter()
            .map(|r| RegistryRecord::decode(r, d.model_foreign_key))
            .collect::<Result<Vec<_>, crate::DbError>>()?
    });
    let more = records.len() as i64 > first;
    records.truncate(usize::try_from(first).unwrap_or(usize::MAX));
    if backward {
        records.reverse();
    }
    let (has_next, has_previous) = if backward {
        (after.is_some(), more)
    } else {
        (more, after.is_some())
    };
    let start = records.first().map(|r| cursor(r, sort));
    let end = records.last().map(|r| cursor(r, sort));
    let edges: Vec<Value> = records
        .iter()
        .map(|r| {
            object([
                ("cursor", Value::from(cursor(r, sort))),
                ("node", node(d, r.clone())),
            ])
        })
        .collect();
    let nodes: Vec<Value> = records.into_iter().map(|r| node(d, r)).collect();
    Ok(Some(FieldValue::value(object([
        ("edges", Value::List(edges)),
        ("nodes", Value::List(nodes)),
        (
            "pageInfo",
            object([
                ("hasNextPage", Value::from(has_next)),
                ("hasPreviousPage", Value::from(has_previous)),
                ("startCursor", opt_string(start)),
                ("endCursor", opt_string(end)),
            ]),
        ),
    ]))))
}

fn descriptor_of(shared: &Ctx, class: &str) -> Result<&'static ReplicatorDescriptor, Error> {
    shared
        .descriptors
        .iter()
        .copied()
        .find(|d| class_name(d) == class)
        .ok_or_else(|| Error::new(format!("unknown registry class {class}")))
}

async fn update_one<'a>(c: &ResolverContext<'a>) -> Result<Option<FieldValue<'a>>, Error> {
    let shared = ctx(c)?;
    let d = descriptor_of(shared, c.args.try_get("registryClass")?.enum_name()?)?;
    require_enabled(shared, d).await?;
    let registry_id = parse_id(c.args.try_get("registryId")?.string()?)?;
    let sql = format!(
        "SELECT {} FROM {} WHERE \"id\" = {}",
        quote(d.model_foreign_key),
        quote(d.registry_table),
        param(shared.db.dialect(), 1)
    );
    let model_id: Option<i64> = on_pool!(shared.db, read, pool => sqlx::query_scalar(AssertSqlSafe(sql)).bind(registry_id).fetch_optional(pool).await.map_err(crate::DbError::from)?);
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

fn job_value(id: i64, j: &Job) -> Value {
    object([
        ("id", Value::from(id.to_string())),
        ("registryClass", enum_value(&j.class)),
        ("action", enum_value(j.action)),
        ("status", Value::from(j.status)),
        ("processed", Value::from(j.processed)),
        ("error", opt_string(j.error.clone())),
    ])
}

async fn update_all<'a>(c: &ResolverContext<'a>) -> Result<Option<FieldValue<'a>>, Error> {
    let shared = ctx(c)?;
    let class = c.args.try_get("registryClass")?.enum_name()?.to_owned();
    let d = descriptor_of(shared, &class)?;
    require_enabled(shared, d).await?;
    let action: &'static str = match c.args.try_get("action")?.enum_name()? {
        "RESYNC_ALL" => "RESYNC_ALL",
        _ => "REVERIFY_ALL",
    };
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
    let selection = Selection::All {
        sync_state,
        verification_state,
    };
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
    let db = shared.db.clone();
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
    Ok(Some(FieldValue::value(object([
        ("errors", Value::List(Vec::new())),
        ("job", value),
    ]))))
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
