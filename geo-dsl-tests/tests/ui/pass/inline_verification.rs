// Verification columns on the model table; a model that is not Clone uses into_replicator().
use geo_runtime::{BlobReplicator, ReplicableModel, Replicator, VerificationStorage};

#[geo_runtime::replicable(strategy = "blob", verification = "inline")]
pub struct LfsObject {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub file: Option<String>,
}

fn main() {
    let replicator = LfsObject { id: 1, file: None }.into_replicator();
    assert_eq!(replicator.object_key(), None);
    assert!(replicator.is_local(), "no file_store column means local");
    let d = LfsObjectReplicator::DESCRIPTOR;
    assert_eq!(d.model_table, "lfs_objects");
    assert_eq!(d.registry_table, "lfs_object_registry");
    assert_eq!(d.verification, VerificationStorage::Inline);
    assert_eq!(d.verification_table(), "lfs_objects");
    assert!(!d.enabled_by_default);
    assert!(d.primary_migrations[0].postgres.starts_with("ALTER TABLE \"lfs_objects\""));
}
