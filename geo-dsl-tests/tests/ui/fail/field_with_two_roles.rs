#[geo_runtime::replicable(strategy = "blob")]
pub struct Widget {
    #[replicable(id, blob)]
    pub id: i64,
    pub file: String,
}

fn main() {}
