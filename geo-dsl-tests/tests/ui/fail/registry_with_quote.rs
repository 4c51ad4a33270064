#[geo_runtime::replicable(strategy = "blob", registry = "widget\"registry")]
pub struct Widget {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub file: String,
}

fn main() {}
