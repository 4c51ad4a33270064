#[geo_runtime::replicable(strategy = "blob")]
pub struct Widget(i64, String);

fn main() {}
