//! Tests of geo-dsl that need whole crates: trybuild UI tests (`tests/ui`), hygiene, and the
//! generated code against real SQLite and PostgreSQL databases. The models used by several test
//! binaries live here.

pub mod models;
