#[geo_runtime::replicable(strategy = "blob")]
pub struct Widget {
    #[replicable(id)]
    pub id: i64,
    #[replicable]
    pub file: String,
}

fn main() {}
