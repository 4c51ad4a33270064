#[geo_runtime::replicable(strategy = "blob", registy = "widget_registry")]
pub struct Widget {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub file: String,
}

fn main() {}
