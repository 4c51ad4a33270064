// Default verification (a `widget_states` table), every optional key and field attribute.
use geo_runtime::{BlobReplicator, ReplicableModel, Replicator, VerificationStorage};

#[geo_runtime::replicable(
    strategy = "blob",
    registry = "widget_registry",
    table = "widgets",
    name = "widget",
    verification = "separate_table",
    enabled_by_default = true
)]
#[derive(Debug, Clone, PartialEq)]
pub struct Widget {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub file: String,
    #[replicable(file_store)]
    pub file_store: i32,
    #[replicable(selective_sync)]
    pub project_id: i64,
    pub size: u64,
}

fn main() {
    let widget = Widget { id: 3, file: "w/3".into(), file_store: 2, project_id: 1, size: 10 };
    let replicator = widget.replicator();
    assert_eq!(replicator.model_record(), Some(&widget));
    assert_eq!(replicator.model_record_id(), 3);
    assert_eq!(replicator.object_key(), Some("w/3"));
    assert!(!replicator.is_local(), "file_store 2 is object storage");
    assert_eq!(replicator.into_model_record(), Some(widget.clone()));

    let by_id = WidgetReplicator::for_model_record_id(3);
    assert_eq!(by_id.model_record(), None);
    assert_eq!(by_id.object_key(), None);

    let d = WidgetReplicator::DESCRIPTOR;
    assert_eq!(d.replicable_name, "widget");
    assert_eq!(d.replicable_name_plural, "widgets");
    assert_eq!(d.feature_flag, "geo_widget_replication");
    assert!(d.enabled_by_default);
    assert_eq!(d.verification, VerificationStorage::SeparateTable { table: "widget_states" });
    assert_eq!(d.file_store_column, Some("file_store"));
    assert_eq!(d.selective_sync_column, Some("project_id"));
    assert_eq!(WidgetRegistry::TABLE_NAME, "widget_registry");
    assert_eq!(WidgetRegistry::MODEL_FOREIGN_KEY, "widget_id");
    assert_eq!(
        [WidgetRegistry::STATE_PENDING, WidgetRegistry::STATE_STARTED, WidgetRegistry::STATE_SYNCED, WidgetRegistry::STATE_FAILED],
        [0, 1, 2, 3]
    );
    assert_eq!(format!("{by_id:?}"), "WidgetReplicator { model_record_id: 3, model_record_loaded: false }");
}
