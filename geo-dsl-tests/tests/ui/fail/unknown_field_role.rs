#[geo_runtime::replicable(strategy = "blob")]
pub struct Widget {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blobb)]
    pub file: String,
}

fn main() {}
