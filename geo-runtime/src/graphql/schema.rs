//! The schema, built from the replicator set: the shared types, then per replicable its
//! registry type, connection and `<name>Registries` field, then the roots.

use std::sync::PoisonError;

use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, InputValue, Object, Schema, TypeRef,
};
use async_graphql::{Name, Value};

use geo_schema::{ColumnType, REGISTRY_COLUMNS};

use crate::registry::query::RegistrySort;
use crate::replicator::{ReplicatorDescriptor, ReplicatorSet};
use async_graphql::dynamic::SchemaBuilder;

use super::mutations::{update_all, update_one};
use super::{
    MAX_COMPLEXITY, MAX_DEPTH, SYNC_STATES, VERIFICATION_STATES, camel, child, class_name, ctx,
    job_value, parse_id, prop, registries,
};

pub(super) fn builder(set: &ReplicatorSet) -> SchemaBuilder {
    let descriptors = set.descriptors().to_vec();
    let builder = Schema::build("Query", Some("Mutation"), None)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY);
    let mut builder = shared_types(builder, &descriptors);
    let mut geo_node = geo_node();
    for &d in &descriptors {
        for object in registry_types(d) {
            builder = builder.register(object);
        }
        geo_node = geo_node.field(registries_field(d));
    }
    builder
        .register(geo_node)
        .register(query_root())
        .register(mutation_root())
}

/// The types every schema has: the state and sort enums, page info, the bulk job, payloads.
fn shared_types(
    builder: SchemaBuilder,
    descriptors: &[&'static ReplicatorDescriptor],
) -> SchemaBuilder {
    builder
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
                .items(RegistrySort::ALL.map(RegistrySort::name)),
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
        )
}

/// `GeoNode`, before the replicables' connections are added.
fn geo_node() -> Object {
    Object::new("GeoNode")
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
        ))
}

/// A replicable's registry row type, its edge and connection types.
fn registry_types(d: &ReplicatorDescriptor) -> [Object; 3] {
    let type_name = format!("{}Registry", camel(d.replicable_name, true));
    let fk_field = format!("{}Id", camel(d.replicable_name, false));
    let mut registry = Object::new(&type_name)
        .description(format!("A secondary's registry row of a {}.", d.model_type))
        .field(prop("id", TypeRef::named_nn(TypeRef::ID)))
        .field(prop(&fk_field, TypeRef::named_nn(TypeRef::ID)));
    // One field per column the schema shows, named in camel case, typed by what it holds.
    for column in REGISTRY_COLUMNS.iter().filter(|c| c.in_graphql) {
        let ty = match column.ty {
            ColumnType::SyncState => TypeRef::named_nn("ReplicationStateEnum"),
            ColumnType::VerificationState => TypeRef::named_nn("VerificationStateEnum"),
            ColumnType::Count => TypeRef::named_nn(TypeRef::INT),
            ColumnType::Attempt | ColumnType::CreatedAt => TypeRef::named_nn(TypeRef::STRING),
            ColumnType::Time | ColumnType::Text | ColumnType::Failure | ColumnType::Bytes => {
                TypeRef::named(TypeRef::STRING)
            }
            ColumnType::Flag => TypeRef::named_nn(TypeRef::BOOLEAN),
        };
        registry = registry.field(prop(&camel(column.name, false), ty));
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
    [registry, edge, connection]
}

/// `GeoNode`'s `<name>Registries` connection field of a replicable, with its filters, sort
/// and paging arguments.
fn registries_field(d: &'static ReplicatorDescriptor) -> Field {
    let type_name = format!("{}Registry", camel(d.replicable_name, true));
    let field_name = format!("{}Registries", camel(d.replicable_name, false));
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
    .argument(InputValue::new("before", TypeRef::named(TypeRef::STRING)))
}

/// The query root: `geoNode` and `geoBulkUpdateJob`.
fn query_root() -> Object {
    Object::new("Query")
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
        )
}

/// The mutation root: one row, or all rows in the background.
fn mutation_root() -> Object {
    Object::new("Mutation")
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
        )
}
