#[geo_runtime::replicable(strategy = "blob")]
pub struct Widget<K> {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub file: K,
}

fn main() {}
