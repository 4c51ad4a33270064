// Generated code must not depend on what the user's module has in scope: shadowed prelude
// names, local modules named like the crates the runtime uses, and strict lints.
#![deny(warnings)]
#![deny(missing_docs)]
//! Hygiene.

#[allow(dead_code)]
type Result<T> = std::result::Result<T, ()>;
#[allow(dead_code)]
struct Option;
#[allow(dead_code)]
struct Some;
#[allow(dead_code)]
struct None;
#[allow(dead_code)]
struct Ok;
#[allow(dead_code)]
struct Err;
#[allow(dead_code)]
struct Vec;
#[allow(dead_code)]
trait Debug {}
#[allow(dead_code)]
trait Clone {}
#[allow(dead_code)]
mod geo_runtime {}
#[allow(dead_code)]
mod core {}
#[allow(dead_code)]
mod sqlx {}
#[allow(dead_code)]
mod inventory {}
#[allow(dead_code)]
mod chrono {}

/// The models live in a private module and are crate-visible.
mod models {
    /// A package file.
    #[::geo_runtime::replicable(strategy = "blob")]
    pub(crate) struct PackageFile {
        /// Id.
        #[replicable(id)]
        pub(crate) id: i64,
        /// Key.
        #[replicable(blob)]
        pub(crate) file: ::std::string::String,
        /// The package's kind; a raw identifier becomes the column `type`.
        #[replicable(selective_sync)]
        pub(crate) r#type: ::std::string::String,
    }
}

fn main() {
    use ::geo_runtime::Replicator as _;
    let model = models::PackageFile { id: 1, file: "f".into(), r#type: "npm".into() };
    let replicator = <models::PackageFileReplicator as ::geo_runtime::Replicator>::from_model_record(model);
    assert_eq!(replicator.model_record().map(|m| m.id), ::std::option::Option::Some(1));
    assert_eq!(models::PackageFileReplicator::DESCRIPTOR.selective_sync_column, ::std::option::Option::Some("type"));
    assert_eq!(models::PackageFileReplicator::DESCRIPTOR.model_table, "package_files");
    let _ = models::PackageFileRegistry::TABLE_NAME;
}
