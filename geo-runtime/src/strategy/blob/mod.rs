//! The blob strategy: a file or object, moved over HTTP, checked against the primary's SHA-256.
//!
//! - [`BlobSource`]: what the primary answers for one object or a batch of them, typed
//!   ([`Retrieved`], [`Frame`]); the node's client implements it over the wire.
//! - `fetch`: a claimed row's object, from the source into the store's staging area (checked
//!   against size and checksum, not yet durable), with the reason in words when it fails.
//! - `serve`: the primary's answers, one object (streamed when large) or many small ones.
//! - `commit`: a group of staged copies made durable, then published and recorded synced in
//!   one transaction under the rows' and keys' locks.

pub(crate) mod checksum;
pub(crate) mod commit;
pub(crate) mod fetch;
pub(crate) mod serve;
mod source;

pub use fetch::SMALL_OBJECT;
pub use source::{
    Answer, BlobSource, Frame, FrameSource, Incoming, PrimaryChecksum, Retrieved, RetrievedMany,
};

/// Objects up to this size travel inline in a batch answer; larger ones are answered
/// [`Answer::Separately`], to be fetched on their own (streamed).
pub const BATCH_INLINE_MAX: u64 = 64 * 1024;

/// Most objects asked for in one batch request (the primary refuses more).
pub const MAX_BATCH: usize = 256;
