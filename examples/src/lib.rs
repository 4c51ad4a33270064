//! The example application of geo-dsl: three models with files ([`app`]), the demo that
//! replicates them between two nodes ([`demo`]), and the operator CLI built for them
//! (`src/bin/geo.rs`).

pub mod app;
pub mod demo;
