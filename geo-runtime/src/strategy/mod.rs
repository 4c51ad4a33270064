//! Strategies: how one kind of data moves from the primary to a secondary, is served, is
//! checksummed and is removed. The workers hold the schedule (claims, rounds, retries, the
//! registry's states); a strategy holds what is particular to its data. Geo's blob strategy is
//! [`blob`]; a new strategy is a new module here plus its registration in the workers' dispatch
//! on [`Strategy`](crate::replicator::Strategy).

pub mod blob;
