#[geo_runtime::replicable(strategy = "blob", table = "widgets; DROP TABLE users")]
pub struct Widget {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub file: String,
}

fn main() {}
