#[geo_runtime::replicable(
    strategy = "blob",
    registry = "widget_registry_with_a_name_that_is_far_too_long_for_postgresql_x"
)]
pub struct Widget {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub file: String,
}

fn main() {}
