//! Code generation: pure functions from the validated [`ReplicableDef`] to tokens. Generated
//! code names the runtime only as `<crate>::__private::…` and `::core::…`, so a user's
//! `Result` alias, a local module called `geo_runtime` or a missing `sqlx` dependency cannot
//! break it.

mod descriptor;
mod registry;
mod replicator;
mod verification;

use proc_macro2::{Ident, TokenStream};
use quote::{format_ident, quote};

use crate::replicable::ir::ReplicableDef;

/// Names shared by the generators.
pub(crate) struct Names {
    /// `::geo_runtime::__private`.
    pub p: TokenStream,
    /// `WidgetReplicator`.
    pub replicator: Ident,
    /// `WidgetRegistry`.
    pub registry: Ident,
}

impl Names {
    fn new(def: &ReplicableDef) -> Self {
        let krate = &def.krate;
        Names {
            p: quote!(#krate::__private),
            replicator: format_ident!("{}Replicator", def.ident),
            registry: format_ident!("{}Registry", def.ident),
        }
    }
}

/// Everything `#[replicable]` adds after the user's struct.
pub(crate) fn expand(def: &ReplicableDef) -> TokenStream {
    let names = Names::new(def);
    let replicator = replicator::expand(def, &names);
    let registry = registry::expand(def, &names);
    let verification = verification::expand(def, &names);
    let descriptor = descriptor::registration_and_checks(def, &names);
    quote! {
        #replicator
        #registry
        #verification
        #descriptor
    }
}
