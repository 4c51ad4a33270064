#[geo_runtime::replicable(strategy = "blobs")]
pub struct Widget {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub file: String,
}

fn main() {}
