//! The main job: a primary and a secondary on loopback replicate and verify a few thousand
//! records for real, then both stores are compared by SHA-256. See `geo_examples::demo`.
//!
//! ```sh
//! cargo run -p geo-examples --example demo                  # 3000 records in a temp directory
//! cargo run -p geo-examples --example demo -- 500 ./geo-demo   # how many, and where to keep it
//! ```

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    geo_examples::demo::main().await
}
