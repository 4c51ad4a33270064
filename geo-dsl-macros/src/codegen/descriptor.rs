//! The static `ReplicatorDescriptor` (with the migrations of both dialects),
//! link-time registration, and the compile-time checks of the field types.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::Names;
use crate::replicable::ir::{ReplicableDef, Strategy, Verification};
use crate::sql::{self, Dialect};

fn opt_str(s: Option<&str>, p: &TokenStream) -> TokenStream {
    match s {
        Some(s) => quote!(#p::Some(#s)),
        None => quote!(#p::None),
    }
}

/// The descriptor literal (used as `&<literal>` in a const).
pub(super) fn expand(def: &ReplicableDef, names: &Names) -> TokenStream {
    let p = &names.p;
    let name = &def.name;
    let plural = &def.name_plural;
    let model_type = def.ident.to_string();
    let replicator_type = names.replicator.to_string();
    let strategy = match def.strategy {
        Strategy::Blob => quote!(#p::Strategy::Blob),
    };
    let model_table = &def.model_table;
    let id_column = &def.id.column;
    let fk = &def.foreign_key;
    let registry_table = &def.registry_table;
    let (verification, primary_description) = match &def.verification {
        Verification::Inline => (
            quote!(#p::VerificationStorage::Inline),
            format!("verification state columns on {model_table}"),
        ),
        Verification::SeparateTable { table } => (
            quote!(#p::VerificationStorage::SeparateTable { table: #table }),
            format!("verification state table {table}"),
        ),
    };
    let flag = &def.feature_flag;
    let enabled = def.enabled_by_default;
    let blob = opt_str(def.blob.as_ref().map(|f| f.column.as_str()), p);
    let file_store = opt_str(def.file_store.as_ref().map(|f| f.column.as_str()), p);
    let selective_sync = opt_str(def.selective_sync.as_ref().map(|f| f.column.as_str()), p);
    let primary_pg = sql::verification_migration(def, Dialect::Postgres);
    let primary_sqlite = sql::verification_migration(def, Dialect::Sqlite);
    let secondary_pg = sql::registry_migration(def, Dialect::Postgres);
    let secondary_sqlite = sql::registry_migration(def, Dialect::Sqlite);
    let secondary_description = format!("registry table {registry_table}");
    let invariants_pg = sql::registry_invariants_migration(def, Dialect::Postgres);
    let invariants_sqlite = sql::registry_invariants_migration(def, Dialect::Sqlite);
    let invariants_description = format!(
        "registry {registry_table}: every row reachable by a scheduler (CHECK constraints)"
    );
    quote! {
        #p::ReplicatorDescriptor {
            replicable_name: #name,
            replicable_name_plural: #plural,
            model_type: #model_type,
            replicator_type: #replicator_type,
            strategy: #strategy,
            model_table: #model_table,
            model_id_column: #id_column,
            model_foreign_key: #fk,
            registry_table: #registry_table,
            verification: #verification,
            feature_flag: #flag,
            enabled_by_default: #enabled,
            blob_column: #blob,
            file_store_column: #file_store,
            selective_sync_column: #selective_sync,
            primary_migrations: &[#p::MigrationDef {
                version: 1,
                description: #primary_description,
                postgres: #primary_pg,
                sqlite: #primary_sqlite,
            }],
            secondary_migrations: &[
                #p::MigrationDef {
                    version: 1,
                    description: #secondary_description,
                    postgres: #secondary_pg,
                    sqlite: #secondary_sqlite,
                },
                #p::MigrationDef {
                    version: 2,
                    description: #invariants_description,
                    postgres: #invariants_pg,
                    sqlite: #invariants_sqlite,
                },
            ],
        }
    }
}

/// Link-time registration, and a const assertion for the role fields no generated code reads (the
/// others are checked where they are read), spanned at the field's type.
pub(super) fn registration_and_checks(def: &ReplicableDef, names: &Names) -> TokenStream {
    let Names { p, replicator, .. } = names;
    let mut checks = Vec::new();
    let mut check = |ty: &syn::Type, assert: &str| {
        let assert = syn::Ident::new(assert, ty.span());
        checks.push(quote_spanned! {ty.span()=>
            const _: () = #p::#assert::<#ty>();
        });
    };
    if let Some(f) = &def.selective_sync {
        check(&f.ty, "assert_selective_sync_column");
    }
    quote! {
        #(#checks)*

        const _: () = {
            #p::inventory::submit! {
                #p::RegisteredReplicator::new(<#replicator as #p::Replicator>::DESCRIPTOR)
            }
        };
    }
}
