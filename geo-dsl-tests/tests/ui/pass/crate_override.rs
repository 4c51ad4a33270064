// A crate that re-exports the runtime: `crate = "…"` points generated code at the re-export, and
// a local `geo_runtime` module that shadows nothing real must not matter.
mod platform {
    pub use geo_runtime::*;
}

#[allow(dead_code)]
mod geo_runtime {}

#[platform::replicable(strategy = "blob", crate = "crate::platform")]
pub struct Upload {
    #[platform::replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub path: String,
}

fn main() {
    use platform::Replicator;
    assert_eq!(UploadReplicator::replicable_name(), "upload");
    assert_eq!(UploadRegistry::TABLE_NAME, "upload_registry");
}
