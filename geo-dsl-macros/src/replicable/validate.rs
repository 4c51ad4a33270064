//! Cross-checks: turns darling's arguments and the struct into a [`ReplicableDef`], pushing every
//! problem into the accumulator with the span of the code at fault. Never returns early on the
//! first error, so the user sees all of them at once.

use darling::Error;
use darling::error::Accumulator;
use darling::util::Flag;
use proc_macro2::Span;
use syn::spanned::Spanned;

use super::args::{FieldArgs, ReplicableArgs, StrategyArg, VerificationArg};
use super::ir::{ReplicableDef, RoleField, Strategy, Verification};

/// The longest identifier PostgreSQL keeps without truncating it.
/// One named field and its parsed `#[replicable(...)]` roles.
pub(crate) struct FieldInfo {
    pub field: syn::Field,
    pub args: FieldArgs,
}

pub(crate) use geo_schema::ident::identifier_problem;

fn check_identifier(errors: &mut Accumulator, what: &str, value: &str, span: Span) -> bool {
    match identifier_problem(value) {
        None => true,
        Some(problem) => {
            errors.push(
                Error::custom(format!(
                    "`{value}` is not a valid {what}: {problem} (the rule is ^[a-z][a-z0-9_]{{0,62}}$)"
                ))
                .with_span(&span),
            );
            false
        }
    }
}

/// `PackageFile` → `package_file`, `HTTPFile` → `http_file` (heck's snake case of the name
/// without a raw identifier's `r#`).
pub(crate) fn snake_case(ident: &str) -> String {
    use heck::ToSnakeCase;
    ident.trim_start_matches("r#").to_snake_case()
}

/// English plural of a snake_case name, for the default table name and `…_plural`.
pub(crate) fn plural(name: &str) -> String {
    let consonant_y = name.ends_with('y')
        && !name
            .chars()
            .rev()
            .nth(1)
            .is_some_and(|c| "aeiou".contains(c));
    if consonant_y {
        format!("{}ies", &name[..name.len() - 1])
    } else if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|e| name.ends_with(e))
    {
        format!("{name}es")
    } else {
        format!("{name}s")
    }
}

/// Parses `#[replicable(...)]` on a field and reports what is not a role.
pub(crate) fn parse_field_attr(attr: &syn::Attribute, errors: &mut Accumulator) -> FieldArgs {
    const HINT: &str = "expected one of `#[replicable(id)]`, `#[replicable(blob)]`, `#[replicable(file_store)]`, `#[replicable(selective_sync)]`";
    match &attr.meta {
        syn::Meta::List(list) => {
            match darling::ast::NestedMeta::parse_meta_list(list.tokens.clone()) {
                Ok(items) if items.is_empty() => {
                    errors.push(Error::custom(HINT).with_span(&attr.meta));
                    FieldArgs::default()
                }
                Ok(items) => {
                    use darling::FromMeta;
                    errors
                        .handle(FieldArgs::from_list(&items))
                        .unwrap_or_default()
                }
                Err(e) => {
                    errors.push(Error::from(e));
                    FieldArgs::default()
                }
            }
        }
        other => {
            errors.push(Error::custom(HINT).with_span(other));
            FieldArgs::default()
        }
    }
}

fn role_of(args: &FieldArgs) -> Vec<(&'static str, &Flag)> {
    [
        ("id", &args.id),
        ("blob", &args.blob),
        ("file_store", &args.file_store),
        ("selective_sync", &args.selective_sync),
    ]
    .into_iter()
    .filter(|(_, f)| f.is_present())
    .collect()
}

/// Picks the one field with `role`; reports duplicates at the second flag and a missing required
/// role at the struct name.
fn single_role(
    fields: &[FieldInfo],
    role: &'static str,
    flag: impl Fn(&FieldArgs) -> &Flag,
    required: Option<&str>,
    ident: &syn::Ident,
    errors: &mut Accumulator,
) -> Option<RoleField> {
    let mut found: Option<&FieldInfo> = None;
    for f in fields {
        let fl = flag(&f.args);
        if !fl.is_present() {
            continue;
        }
        if let Some(first) = found {
            let first_name = first.field.ident.as_ref().map(ToString::to_string);
            errors.push(
                Error::custom(format!(
                    "only one field can be `#[replicable({role})]`; `{}` already is",
                    first_name.unwrap_or_default()
                ))
                .with_span(&fl.span()),
            );
            continue;
        }
        found = Some(f);
    }
    match found {
        Some(f) => {
            let ident = f.field.ident.clone()?;
            let column = ident.to_string().trim_start_matches("r#").to_owned();
            check_identifier(errors, "column name", &column, ident.span());
            Some(RoleField {
                ident,
                ty: f.field.ty.clone(),
                column,
            })
        }
        None => {
            if let Some(hint) = required {
                errors.push(Error::custom(hint.replace("{}", &ident.to_string())).with_span(ident));
            }
            None
        }
    }
}

/// Checks the struct shape, the arguments and the fields; `None` when codegen cannot run.
pub(crate) fn validate(
    input: &syn::DeriveInput,
    args: Option<ReplicableArgs>,
    fields: Option<Vec<FieldInfo>>,
    errors: &mut Accumulator,
) -> Option<ReplicableDef> {
    let ident = &input.ident;
    check_not_generic(input, errors);
    if let Some(fields) = &fields {
        check_one_role_per_field(fields, errors);
    }
    // Without arguments (darling reported why), no follow-on error about a missing strategy.
    let parsed = args.is_some();
    let args = args.unwrap_or_default();
    let strategy = match parsed {
        true => check_strategy(args.strategy.as_ref(), errors),
        false => None,
    };
    let names = check_names(ident, &args, errors);
    check_distinct_tables(&names, &args, errors);
    let fields = fields?;
    let roles = check_roles(&fields, strategy, ident, errors);
    Some(ReplicableDef {
        vis: input.vis.clone(),
        ident: ident.clone(),
        krate: args
            .krate
            .unwrap_or_else(|| syn::parse_quote!(::geo_runtime)),
        strategy: strategy?,
        feature_flag: format!("geo_{}_replication", names.name),
        name: names.name,
        name_plural: names.name_plural,
        model_table: names.model_table,
        registry_table: names.registry_table,
        foreign_key: names.foreign_key,
        verification: names.verification,
        enabled_by_default: args.enabled_by_default.unwrap_or(false),
        id: roles.id?,
        blob: roles.blob,
        file_store: roles.file_store,
        selective_sync: roles.selective_sync,
    })
}

/// A replicable's tables and SQL are fixed at compile time: no generics.
fn check_not_generic(input: &syn::DeriveInput, errors: &mut Accumulator) {
    if !input.generics.params.is_empty() || input.generics.where_clause.is_some() {
        errors.push(
            Error::custom(
                "#[replicable] does not support generic structs: a replicable's tables and SQL are fixed at compile time; make a concrete struct",
            )
            .with_span(&input.generics),
        );
    }
}

/// A field has one role: `id`, `blob`, `file_store` and `selective_sync` exclude each other.
fn check_one_role_per_field(fields: &[FieldInfo], errors: &mut Accumulator) {
    for f in fields {
        let roles = role_of(&f.args);
        for (name, flag) in roles.iter().skip(1) {
            errors.push(
                Error::custom(format!(
                    "a field has one role: this one is already `{}`, it cannot also be `{name}`",
                    roles[0].0
                ))
                .with_span(&flag.span()),
            );
        }
    }
}

/// `strategy` is required, and names an implemented strategy.
fn check_strategy(
    strategy: Option<&darling::util::SpannedValue<StrategyArg>>,
    errors: &mut Accumulator,
) -> Option<Strategy> {
    let Some(s) = strategy else {
        errors.push(
            Error::custom("missing `strategy`: write `#[replicable(strategy = \"blob\", …)]`")
                .with_span(&Span::call_site()),
        );
        return None;
    };
    match **s {
        StrategyArg::Blob => Some(Strategy::Blob),
        StrategyArg::Repository => {
            errors.push(
                Error::custom(
                    "strategy `repository` is not implemented yet; the available strategy is `blob`",
                )
                .with_span(&s.span()),
            );
            None
        }
    }
}

/// The names a replicable's SQL uses, given or derived from the struct's name.
struct Names {
    name: String,
    name_plural: String,
    /// Where the name comes from (the `name` key, or the struct's ident).
    name_span: Span,
    model_table: String,
    registry_table: String,
    foreign_key: String,
    verification: Verification,
}

/// The replicable's name, its tables and foreign key: each given one is a valid identifier, and
/// each derived one is too (reported once when the name itself is not).
fn check_names(ident: &syn::Ident, args: &ReplicableArgs, errors: &mut Accumulator) -> Names {
    let (name, name_ok) = check_name(ident, args, errors);
    let name_span = args
        .name
        .as_ref()
        .map_or_else(|| ident.span(), |n| n.span());
    let name_plural = plural(&name);
    // Names derived from `name`; when `name` itself is invalid it was reported once already.
    let derived_ident = |errors: &mut Accumulator, what: &str, value: String, key: Option<&str>| {
        if let (true, Some(problem)) = (name_ok, identifier_problem(&value)) {
            let fix = match key {
                Some(key) => format!("set `{key} = \"…\"` or a shorter `name`"),
                None => "set a shorter `name`".to_owned(),
            };
            errors.push(
                Error::custom(format!(
                    "the default {what} `{value}` is not valid ({problem}); {fix}"
                ))
                .with_span(&name_span),
            );
        }
        value
    };
    let model_table = match &args.table {
        Some(t) => {
            check_identifier(errors, "table name", t, t.span());
            t.to_string()
        }
        None => derived_ident(errors, "table name", name_plural.clone(), Some("table")),
    };
    let registry_table = match &args.registry {
        Some(r) => {
            check_identifier(errors, "registry table name", r, r.span());
            r.to_string()
        }
        None => derived_ident(
            errors,
            "registry table name",
            format!("{name}_registry"),
            Some("registry"),
        ),
    };
    let foreign_key = derived_ident(errors, "registry foreign key", format!("{name}_id"), None);
    let verification = match args.verification.as_deref() {
        Some(VerificationArg::Inline) => Verification::Inline,
        Some(VerificationArg::SeparateTable) | None => Verification::SeparateTable {
            table: derived_ident(
                errors,
                "verification state table",
                format!("{name}_states"),
                None,
            ),
        },
    };
    Names {
        name,
        name_plural,
        name_span,
        model_table,
        registry_table,
        foreign_key,
        verification,
    }
}

/// The replicable name: the `name` key, or the struct's name in snake case. Returns it and
/// whether it is a valid identifier.
fn check_name(
    ident: &syn::Ident,
    args: &ReplicableArgs,
    errors: &mut Accumulator,
) -> (String, bool) {
    match &args.name {
        Some(n) => {
            let ok = check_identifier(errors, "replicable name", n, n.span());
            (n.to_string(), ok)
        }
        None => {
            let derived = snake_case(&ident.to_string());
            let problem = identifier_problem(&derived);
            if let Some(problem) = problem {
                errors.push(
                    Error::custom(format!(
                        "cannot derive a replicable name from `{ident}` (`{derived}`: {problem}); set `name = \"…\"`"
                    ))
                    .with_span(ident),
                );
            }
            (derived, problem.is_none())
        }
    }
}

/// The model, registry and verification tables are three tables.
fn check_distinct_tables(names: &Names, args: &ReplicableArgs, errors: &mut Accumulator) {
    if names.registry_table == names.model_table {
        let span = args
            .registry
            .as_ref()
            .map_or_else(|| names.name_span, |r| r.span());
        errors.push(
            Error::custom(format!(
                "the registry table and the model table are both `{}`: the registry lives in the secondary's tracking database and needs its own name",
                names.model_table
            ))
            .with_span(&span),
        );
    }
    if let Verification::SeparateTable { table } = &names.verification
        && (table == &names.model_table || table == &names.registry_table)
    {
        errors.push(
            Error::custom(format!(
                "the verification state table `{table}` would be the same table as the model or the registry; choose another `table`/`registry`, or `verification = \"inline\"`"
            ))
            .with_span(&names.name_span),
        );
    }
}

/// The fields that carry a role.
struct Roles {
    id: Option<RoleField>,
    blob: Option<RoleField>,
    file_store: Option<RoleField>,
    selective_sync: Option<RoleField>,
}

/// One `id` field, and the fields the strategy needs (a `blob` field for the blob strategy);
/// at most one field per optional role.
fn check_roles(
    fields: &[FieldInfo],
    strategy: Option<Strategy>,
    ident: &syn::Ident,
    errors: &mut Accumulator,
) -> Roles {
    let id = single_role(
        fields,
        "id",
        |a| &a.id,
        Some("`{}` has no `#[replicable(id)]` field: mark the model's `i64` primary key with it"),
        ident,
        errors,
    );
    // Strategies that need a blob field (all of them, for now).
    let blob_required = strategy.map(|Strategy::Blob| {
        "the blob strategy needs a `#[replicable(blob)]` field on `{}`: mark the `String` field that holds the object key"
    });
    let blob = single_role(fields, "blob", |a| &a.blob, blob_required, ident, errors);
    let file_store = single_role(fields, "file_store", |a| &a.file_store, None, ident, errors);
    let selective_sync = single_role(
        fields,
        "selective_sync",
        |a| &a.selective_sync,
        None,
        ident,
        errors,
    );
    Roles {
        id,
        blob,
        file_store,
        selective_sync,
    }
}

/// The struct's named fields, or an error at the part of the item that is not one.
pub(crate) fn named_fields(
    input: &syn::DeriveInput,
    errors: &mut Accumulator,
) -> Option<Vec<syn::Field>> {
    let what = |kind: &str| {
        format!(
            "#[replicable] applies to a struct with named fields, and `{}` is {kind}",
            input.ident
        )
    };
    match &input.data {
        syn::Data::Struct(s) => match &s.fields {
            syn::Fields::Named(named) => Some(named.named.iter().cloned().collect()),
            syn::Fields::Unnamed(u) => {
                errors.push(
                    Error::custom(what("a tuple struct: name its fields")).with_span(&u.span()),
                );
                None
            }
            syn::Fields::Unit => {
                errors.push(Error::custom(what("a unit struct")).with_span(&input.ident));
                None
            }
        },
        syn::Data::Enum(e) => {
            errors.push(Error::custom(what("an enum")).with_span(&e.enum_token));
            None
        }
        syn::Data::Union(u) => {
            errors.push(Error::custom(what("a union")).with_span(&u.union_token));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conversion the macro used before heck, kept to show that no derived name changed.
    fn hand_written_snake_case(ident: &str) -> String {
        let chars: Vec<char> = ident.trim_start_matches("r#").chars().collect();
        let mut out = String::with_capacity(chars.len() + 4);
        for (i, &c) in chars.iter().enumerate() {
            if c.is_uppercase() {
                let prev = i.checked_sub(1).map(|p| chars[p]);
                let next = chars.get(i + 1).copied();
                let boundary = match prev {
                    Some(p) if p.is_lowercase() || p.is_ascii_digit() => true,
                    Some(p) if p.is_uppercase() => next.is_some_and(char::is_lowercase),
                    _ => false,
                };
                if boundary && !out.ends_with('_') {
                    out.push('_');
                }
                out.extend(c.to_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn heck_derives_the_names_the_hand_written_conversion_did() {
        for name in [
            "Widget",
            "PackageFile",
            "HTTPFile",
            "LfsObject2",
            "CiSecureFile",
            "MergeRequestDiff",
            "SnippetRepository",
            "PagesDeployment",
            "TerraformStateVersion",
            "DependencyProxyBlob",
            "DependencyProxyManifest",
            "CiJobArtifact",
            "GroupWikiRepository",
            "ProjectWikiRepository",
            "DesignManagementRepository",
            "ContainerRepository",
            "Upload",
            "Document",
            "r#Type",
            "URLPart",
            "S3Object",
            "X509Certificate",
            "V2Widget",
            "Widget2Thing",
        ] {
            assert_eq!(snake_case(name), hand_written_snake_case(name), "{name}");
        }
    }

    #[test]
    fn snake_case_names() {
        assert_eq!(snake_case("Widget"), "widget");
        assert_eq!(snake_case("PackageFile"), "package_file");
        assert_eq!(snake_case("HTTPFile"), "http_file");
        assert_eq!(snake_case("LfsObject2"), "lfs_object2");
        assert_eq!(snake_case("CiSecureFile"), "ci_secure_file");
    }

    #[test]
    fn plurals() {
        assert_eq!(plural("widget"), "widgets");
        assert_eq!(plural("package_file"), "package_files");
        assert_eq!(plural("repository"), "repositories");
        assert_eq!(plural("key"), "keys");
        assert_eq!(plural("box"), "boxes");
        assert_eq!(plural("status"), "statuses");
    }
}
