//! Workers: the loops that drive the state machines: the consistency pass (backfill and
//! orphans), the blob sync, the removal of objects whose models are gone, and the primary's
//! verification.

pub mod consistency;
pub mod removal;
pub mod sync;
pub mod verify;
