#[geo_runtime::replicable(strategy = "repository")]
pub struct Snippet {
    #[replicable(id)]
    pub id: i64,
}

fn main() {}
