//! `docs/schema.graphql` is the schema the example application's nodes serve. When the schema
//! changes, this test fails until the file is regenerated:
//!
//! ```sh
//! cargo run -p geo-examples --bin geo -- graphql-schema > docs/schema.graphql
//! ```

use std::path::Path;

#[test]
fn the_published_schema_is_current() {
    let set = geo_examples::app::replicators().expect("replicators");
    let current = geo_runtime::graphql::sdl(&set).expect("schema");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/schema.graphql");
    let published = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        published == current,
        "docs/schema.graphql is out of date; regenerate it with\n  cargo run -p geo-examples --bin geo -- graphql-schema > docs/schema.graphql"
    );
    // The schema is built from the replicators, not a hand-kept list.
    for field in [
        "widgetRegistries(",
        "packageFileRegistries(",
        "uploadRegistries(",
    ] {
        assert!(current.contains(field), "{field}");
    }
    for ty in [
        "type WidgetRegistry {",
        "type PackageFileRegistryConnection {",
    ] {
        assert!(current.contains(ty), "{ty}");
    }
}
