// The struct name is fine, but `<name>_registry` would pass PostgreSQL's 63-character limit.
#[geo_runtime::replicable(strategy = "blob")]
pub struct AVeryLongModelNameThatIsStillAValidRustIdentifierButNotATable {
    #[replicable(id)]
    pub id: i64,
    #[replicable(blob)]
    pub file: String,
}

fn main() {}
