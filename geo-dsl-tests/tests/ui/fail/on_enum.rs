#[geo_runtime::replicable(strategy = "blob")]
pub enum Widget {
    Small { id: i64 },
    Large { id: i64 },
}

fn main() {}
