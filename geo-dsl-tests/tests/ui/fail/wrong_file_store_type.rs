#[geo_runtime::replicable(strategy = "blob")]
pub struct Widget {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub file: String,
    #[replicable(file_store)]
    pub store: String,
}

fn main() {}
