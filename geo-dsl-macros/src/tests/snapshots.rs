//! Snapshots of what `#[replicable]` generates (pretty-printed with prettyplease) and of the SQL
//! for both dialects. Any change to generated SQL shows up here: applied migrations are
//! checksummed in users' databases, so a changed migration text must be a deliberate new
//! migration version, never an accident. Update with `INSTA_UPDATE=always cargo test -p
//! geo-dsl-macros` and review the diff.

use proc_macro2::TokenStream;
use quote::quote;

use crate::replicable;
use crate::sql::{self, Dialect};

fn pretty(tokens: TokenStream) -> String {
    let file: syn::File = syn::parse2(tokens).expect("the expansion parses as a file");
    prettyplease::unparse(&file)
}

fn widget() -> (TokenStream, TokenStream) {
    (
        quote!(
            strategy = "blob",
            registry = "widget_registry",
            table = "widgets"
        ),
        quote! {
            #[derive(Debug, Clone)]
            pub struct Widget {
                #[replicable(id)]
                pub id: i64,
                #[replicable(blob)]
                pub file: String,
                #[replicable(file_store)]
                pub file_store: Option<i16>,
                #[replicable(selective_sync)]
                pub project_id: i64,
            }
        },
    )
}

fn gadget() -> (TokenStream, TokenStream) {
    (
        quote!(
            strategy = "blob",
            verification = "inline",
            enabled_by_default
        ),
        quote! {
            pub(crate) struct Gadget {
                #[replicable(id)]
                pub id: i64,
                #[replicable(blob)]
                pub path: Option<String>,
            }
        },
    )
}

/// The validated IR for SQL snapshots.
fn def(args: TokenStream, item: TokenStream) -> replicable::ir::ReplicableDef {
    replicable::validated(args, item).expect("valid input")
}

#[test]
fn expansion_separate_table() {
    let (args, item) = widget();
    insta::assert_snapshot!(pretty(replicable::expand(args, item)));
}

#[test]
fn expansion_inline() {
    let (args, item) = gadget();
    insta::assert_snapshot!(pretty(replicable::expand(args, item)));
}

#[test]
fn expansion_on_error_keeps_the_struct_and_reports_everything() {
    let out = replicable::expand(
        quote!(strategy = "blob", table = "Bad Name", registy = "x"),
        quote! {
            pub struct Widget {
                #[replicable(blob)]
                pub file: String,
            }
        },
    );
    insta::assert_snapshot!(pretty(out));
}

#[test]
fn sql_separate_table() {
    let (args, item) = widget();
    let def = def(args, item);
    let mut out = String::new();
    for d in [Dialect::Postgres, Dialect::Sqlite] {
        out += &format!(
            "-- {d:?}: primary migration 1\n{}\n",
            sql::verification_migration(&def, d)
        );
        out += &format!(
            "-- {d:?}: secondary migration 1\n{}\n",
            sql::registry_migration(&def, d)
        );
        out += &format!(
            "-- {d:?}: secondary migration 2\n{}\n",
            sql::registry_invariants_migration(&def, d)
        );
    }
    insta::assert_snapshot!(out);
}

#[test]
fn sql_inline() {
    let (args, item) = gadget();
    let def = def(args, item);
    let mut out = String::new();
    for d in [Dialect::Postgres, Dialect::Sqlite] {
        out += &format!(
            "-- {d:?}: primary migration 1\n{}\n",
            sql::verification_migration(&def, d)
        );
    }
    insta::assert_snapshot!(out);
}

#[test]
fn reserved_words_are_quoted() {
    let def = def(
        quote!(strategy = "blob", table = "order", registry = "user"),
        quote! {
            struct Order {
                #[replicable(id)]
                id: i64,
                #[replicable(blob)]
                r#type: String,
            }
        },
    );
    let ddl = sql::registry_migration(&def, Dialect::Postgres);
    assert!(ddl.starts_with("CREATE TABLE \"user\" ("), "{ddl}");
    let states = sql::verification_migration(&def, Dialect::Sqlite);
    assert!(states.contains("REFERENCES \"order\" (\"id\")"), "{states}");
}
