//! What a secondary asks the primary for a blob, and the typed answers.

use std::future::Future;

use bytes::Bytes;
use futures_util::Stream;

use crate::events::SourceError;
use crate::storage::ObjectKey;

/// A record's checksum on the primary: `None` while the primary has not verified it.
pub type PrimaryChecksum = (i64, Option<[u8; 32]>);

/// The primary's objects as the blob strategy sees them. The node's client implements it over
/// HTTP; a test can implement it over anything.
pub trait BlobSource: Send + Sync {
    /// The body of one object, streamed.
    type Body: Stream<Item = Result<Bytes, String>> + Send + Unpin + 'static;
    /// The frames of a batch answer.
    type Frames: FrameSource;

    /// One object of `replicable`'s record `id`. `Err` is a transport failure (the request
    /// could not be made or answered).
    fn retrieve(
        &self,
        replicable: &str,
        id: i64,
    ) -> impl Future<Output = Result<Retrieved<Self::Body>, String>> + Send;

    /// The small objects of several records in one answer, one frame per id.
    fn retrieve_many(
        &self,
        replicable: &str,
        ids: &[i64],
    ) -> impl Future<Output = Result<RetrievedMany<Self::Frames>, String>> + Send;

    /// The primary's verified checksums of `ids` (`None`: not verified yet); records the primary
    /// no longer has are left out.
    fn primary_checksums(
        &self,
        replicable: &str,
        ids: &[i64],
    ) -> impl Future<Output = Result<Vec<PrimaryChecksum>, SourceError>> + Send;
}

/// The answer for one object.
#[derive(Debug)]
pub enum Retrieved<B> {
    /// The object follows.
    Object(Incoming<B>),
    /// The record exists, its object does not.
    FileMissing,
    /// There is no such record.
    RecordMissing,
    /// Another HTTP status.
    Status(u16),
    /// The answer broke the protocol (e.g. an unsafe key or a malformed checksum).
    Malformed(String),
}

/// An object on its way, with what the primary says about it.
#[derive(Debug)]
pub struct Incoming<B> {
    /// The object's key on the primary, checked.
    pub key: ObjectKey,
    /// The primary's verified checksum, when it has one.
    pub sha256: Option<[u8; 32]>,
    /// The announced size, when known.
    pub size: Option<u64>,
    /// The bytes.
    pub body: B,
}

/// The answer for a batch.
#[derive(Debug)]
pub enum RetrievedMany<F> {
    /// The frames, one per id asked for, in order.
    Frames(F),
    /// Another HTTP status.
    Status(u16),
}

/// The frames of a batch answer, read as they arrive.
pub trait FrameSource: Send {
    /// The next frame; `None` at the end. An error means the rest of the answer is unusable.
    fn next_frame(&mut self) -> impl Future<Output = Result<Option<Frame>, String>> + Send;
}

/// One record's answer in a batch.
#[derive(Debug)]
pub struct Frame {
    /// The model record.
    pub id: i64,
    /// What the primary answered.
    pub answer: Answer,
}

/// What a frame says.
#[derive(Debug, Clone)]
pub enum Answer {
    /// The object, inline.
    Object {
        /// The object's key on the primary, checked.
        key: ObjectKey,
        /// The primary's verified checksum, when it has one.
        sha256: Option<[u8; 32]>,
        /// The bytes.
        data: Bytes,
    },
    /// Too large for a batch: fetch it on its own.
    Separately {
        /// Its size, when the primary said.
        size: Option<u64>,
    },
    /// The record exists, its object does not.
    FileMissing,
    /// There is no such record.
    RecordMissing,
    /// The primary could not read the object (it logged why).
    Error,
    /// The frame broke the protocol.
    Malformed(String),
}
