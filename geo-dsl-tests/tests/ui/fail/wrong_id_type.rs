#[geo_runtime::replicable(strategy = "blob")]
pub struct Widget {
    #[replicable(id)]
    pub id: String,
    #[replicable(blob)]
    pub file: String,
}

fn main() {}
