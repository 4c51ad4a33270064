//! Workers: the loops that drive the state machines. This module holds the consistency pass
//! (backfill and orphans); the sync scheduler and the verification workers join it.

pub mod consistency;
pub mod removal;
pub mod sync;
