#[geo_runtime::replicable(strategy = "blob", registry = "WidgetRegistry")]
pub struct Widget {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub file: String,
}

fn main() {}
