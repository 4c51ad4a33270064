#[geo_runtime::replicable(strategy = "blob")]
pub struct Widget {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub file: Vec<u8>,
}

fn main() {}
