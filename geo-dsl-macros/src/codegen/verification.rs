//! Accessors on the model for the primary's verification state, wherever it is stored (Geo's
//! delegation from the model to its state table).

use proc_macro2::TokenStream;
use quote::quote;

use super::Names;
use crate::replicable::ir::{ReplicableDef, Verification};

pub(super) fn expand(def: &ReplicableDef, names: &Names) -> TokenStream {
    let Names { p, replicator, .. } = names;
    let ReplicableDef { vis, ident, .. } = def;
    let place = match &def.verification {
        Verification::Inline => format!("the verification columns of `{}`", def.model_table),
        Verification::SeparateTable { table } => format!(
            "`{table}`, keyed by the model id (a record without a state row reads as pending)"
        ),
    };
    let read_doc = format!(" Reads this record's verification state from {place}.");
    let write_doc = format!(
        " Writes this record's verification state to {place}. Errors when the record is not in \
         `{}`.",
        def.model_table
    );
    quote! {
        #[automatically_derived]
        impl #ident {
            #[doc = #read_doc]
            #vis async fn verification_details(
                &self,
                db: &#p::Database,
            ) -> #p::Result<#p::VerificationDetails, #p::DbError> {
                #p::load_verification(
                    db,
                    <#replicator as #p::Replicator>::DESCRIPTOR,
                    #replicator::__geo_model_record_id(self),
                )
                .await
            }

            #[doc = #write_doc]
            #vis async fn set_verification_details(
                &self,
                db: &#p::Database,
                details: &#p::VerificationDetails,
            ) -> #p::Result<(), #p::DbError> {
                #p::save_verification(
                    db,
                    <#replicator as #p::Replicator>::DESCRIPTOR,
                    #replicator::__geo_model_record_id(self),
                    details,
                )
                .await
            }
        }
    }
}
