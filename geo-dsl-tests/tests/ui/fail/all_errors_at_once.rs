// Every mistake is reported in one compile, and the struct itself still exists (the last line
// compiles: no "cannot find type `Widget`").
#[geo_runtime::replicable(strategy = "blob", table = "Widgets", regsitry = "x", enabled_by_default)]
pub struct Widget {
    #[replicable(blobb)]
    pub file: String,
    pub id: i64,
}

fn main() {
    let _still_there = Widget { file: String::new(), id: 1 };
}
