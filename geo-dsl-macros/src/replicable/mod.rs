//! `#[replicable]`: parse, validate, generate. [`expand`] never fails and never panics: on any
//! error it emits the user's struct unchanged (minus our field attributes), stub types so that
//! code naming them does not cascade into more errors, and every error at its span.

pub(crate) mod args;
pub(crate) mod ir;
pub(crate) mod validate;

use darling::FromMeta;
use darling::ast::NestedMeta;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use self::args::{FieldArgs, ReplicableArgs};
use self::validate::FieldInfo;

/// Expands `#[replicable(args)] item`.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut input: syn::DeriveInput = match syn::parse2(item.clone()) {
        Ok(input) => input,
        Err(e) => {
            // Not a struct/enum/union at all: keep the tokens so the IDE still sees the item.
            let e = e.to_compile_error();
            return quote!(#item #e);
        }
    };
    let (errors, def) = analyse(args, &mut input);
    let generated = match (errors, def) {
        (Ok(()), Some(def)) => crate::codegen::expand(&def),
        (Err(e), _) => {
            let stubs = stubs(&input);
            let e = e.write_errors();
            quote!(#e #stubs)
        }
        // analyse returns no definition only after reporting an error; be safe anyway.
        (Ok(()), None) => {
            let stubs = stubs(&input);
            quote!(::core::compile_error!("#[replicable] could not expand this item"); #stubs)
        }
    };
    quote! {
        #input
        #generated
    }
}

/// The validated definition, or every error (for tests of the SQL).
#[cfg(test)]
pub(crate) fn validated(
    args: TokenStream,
    item: TokenStream,
) -> darling::Result<ir::ReplicableDef> {
    let mut input: syn::DeriveInput = syn::parse2(item)?;
    match analyse(args, &mut input) {
        (Ok(()), Some(def)) => Ok(def),
        (Err(e), _) => Err(e),
        (Ok(()), None) => Err(darling::Error::custom("no definition")),
    }
}

/// Strips our field attributes from `input` and validates everything; all errors together.
fn analyse(
    args: TokenStream,
    input: &mut syn::DeriveInput,
) -> (darling::Result<()>, Option<ir::ReplicableDef>) {
    let mut errors = darling::Error::accumulator();

    let field_args = take_field_attrs(input, &mut errors);
    let args = match NestedMeta::parse_meta_list(args) {
        Ok(items) => {
            // Unknown keys are reported here, so that darling still parses the known ones and
            // their mistakes are reported in the same compile.
            let known: Vec<NestedMeta> = items
                .into_iter()
                .filter(|item| {
                    let path = match item {
                        NestedMeta::Meta(meta) => meta.path(),
                        NestedMeta::NameValueInvalidExpr(invalid) => &invalid.path,
                        // darling reports stray literals itself.
                        NestedMeta::Lit(_) => return true,
                    };
                    {
                        let ok = args::KEYS.iter().any(|k| path.is_ident(k));
                        if !ok {
                            errors.push(
                                darling::Error::unknown_field_path_with_alts(path, args::KEYS)
                                    .with_span(path),
                            );
                        }
                        ok
                    }
                })
                .collect();
            errors.handle(ReplicableArgs::from_list(&known))
        }
        Err(e) => {
            errors.push(darling::Error::from(e));
            None
        }
    };
    let fields = validate::named_fields(input, &mut errors).map(|fields| {
        fields
            .into_iter()
            .zip(field_args)
            .map(|(field, args)| FieldInfo { field, args })
            .collect()
    });
    let def = validate::validate(input, args, fields, &mut errors);
    (errors.finish(), def)
}

/// Removes every `#[replicable(...)]` from the fields (rustc does not know it as a field
/// attribute) and parses the ones on a struct's fields, in field order.
fn take_field_attrs(
    input: &mut syn::DeriveInput,
    errors: &mut darling::error::Accumulator,
) -> Vec<FieldArgs> {
    let mut parsed = Vec::new();
    let mut take = |field: &mut syn::Field, keep: bool| {
        let mut args = FieldArgs::default();
        let mut seen = false;
        field.attrs.retain(|attr| {
            // `#[replicable(..)]`, or a path to it (`#[geo_runtime::replicable(..)]`).
            let ours = attr
                .path()
                .segments
                .last()
                .is_some_and(|s| s.ident == "replicable");
            if !ours {
                return true;
            }
            if keep {
                let more = validate::parse_field_attr(attr, errors);
                if seen {
                    errors.push(
                        darling::Error::custom(
                            "one `#[replicable(...)]` per field: a field has a single role",
                        )
                        .with_span(&attr.meta),
                    );
                } else {
                    args = more;
                }
                seen = true;
            }
            false
        });
        if keep {
            parsed.push(args);
        }
    };
    match &mut input.data {
        syn::Data::Struct(s) => {
            let named = matches!(s.fields, syn::Fields::Named(_));
            s.fields.iter_mut().for_each(|f| take(f, named));
        }
        syn::Data::Enum(e) => e
            .variants
            .iter_mut()
            .flat_map(|v| v.fields.iter_mut())
            .for_each(|f| take(f, false)),
        syn::Data::Union(u) => u.fields.named.iter_mut().for_each(|f| take(f, false)),
    }
    parsed
}

/// Unit stand-ins for the generated types, so that code naming `WidgetReplicator` or
/// `WidgetRegistry` reports only the attribute's own errors.
fn stubs(input: &syn::DeriveInput) -> TokenStream {
    let vis = &input.vis;
    let replicator = format_ident!("{}Replicator", input.ident);
    let registry = format_ident!("{}Registry", input.ident);
    quote! {
        #[doc(hidden)]
        #[allow(dead_code)]
        #vis struct #replicator;
        #[doc(hidden)]
        #[allow(dead_code)]
        #vis struct #registry;
    }
}
