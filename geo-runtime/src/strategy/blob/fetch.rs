//! Fetching a claimed row's object from the primary into the store's staging area: checked
//! against the announced size and the primary's checksum while it streams, not yet durable.
//! Small objects travel many to a request (per-request costs would otherwise dominate a 4 KiB
//! object); larger ones are streamed one to a request.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::source::{Answer, BlobSource, FrameSource, Incoming, Retrieved, RetrievedMany};
use crate::descriptor::ReplicatorDescriptor;
use crate::registry::ClaimedRow;
use crate::storage::{BlobStore, ObjectKey, StorageError};
use crate::telemetry::Metrics;

/// Objects up to this size are read whole and written in one step; larger ones are streamed.
pub const SMALL_OBJECT: u64 = 1024 * 1024;

/// Why a fetch failed: its metrics label (`reason`), the reason recorded on the row, and
/// whether the object is missing on the primary (which gets the long backoff). The one-object
/// and the batch fetches word their failures alike through it.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) kind: &'static str,
    pub(crate) reason: String,
    pub(crate) missing: bool,
}

impl Failed {
    pub(crate) fn new(kind: &'static str, reason: impl Into<String>) -> Self {
        Failed {
            kind,
            reason: reason.into(),
            missing: false,
        }
    }

    /// The transfer broke (connection, stall, short or unusable body).
    pub(crate) fn transport(e: impl std::fmt::Display) -> Self {
        Failed::new("transport", format!("Error downloading file: {e}"))
    }

    /// The store could not take the object.
    pub(crate) fn storage(e: &StorageError) -> Self {
        Failed::new(e.kind(), format!("Error downloading file: {e}"))
    }

    fn protocol(e: impl Into<String>) -> Self {
        Failed::new("protocol", e)
    }

    fn http_status(code: u16) -> Self {
        Failed::new(
            "http_status",
            format!("Non-success HTTP response status code {code}"),
        )
    }

    fn file_missing() -> Self {
        Failed {
            missing: true,
            ..Failed::new(
                "missing_on_primary",
                "The file is missing on the Geo primary site",
            )
        }
    }

    fn record_missing() -> Self {
        Failed::new(
            "record_missing_on_primary",
            "The record is missing on the Geo primary site",
        )
    }
}

/// A claimed row's copy, staged (at a temp path, checked, not yet durable).
#[derive(Debug)]
pub(crate) struct Fetched<T> {
    pub(crate) row: ClaimedRow,
    /// The object key, as the primary sent it.
    pub(crate) key: String,
    pub(crate) staged: T,
    /// Whether the primary sent its checksum (and the bytes matched it).
    pub(crate) checked: bool,
}

/// What a batch fetch did, row by row.
#[derive(Debug)]
pub(crate) struct FetchedMany<T> {
    /// Each row's copy or failure.
    pub(crate) results: Vec<(ClaimedRow, Result<Fetched<T>, Failed>)>,
    /// Rows whose objects are too large to travel in a batch: to fetch one by one.
    pub(crate) alone: Vec<ClaimedRow>,
}

/// An object sent inline in a batch: its key, the primary's checksum, the bytes.
type Inline = (ObjectKey, Option<[u8; 32]>, Bytes);

/// Fetches from `source` into `store`.
#[derive(Debug)]
pub(crate) struct Fetch<'a, C, S> {
    pub(crate) source: &'a C,
    pub(crate) store: &'a S,
    pub(crate) metrics: &'a Metrics,
    /// Larger objects are refused (the row fails with the reason).
    pub(crate) max_object_size: Option<u64>,
}

impl<C: BlobSource, S: BlobStore> Fetch<'_, C, S> {
    /// Refuses an object over `max_object_size`.
    fn check_size(&self, size: Option<u64>) -> Result<(), Failed> {
        match (size, self.max_object_size) {
            (Some(size), Some(max)) if size > max => Err(Failed::new(
                "too_large",
                format!("The object is too large to sync: {size} bytes, the limit is {max}"),
            )),
            _ => Ok(()),
        }
    }

    fn observe(&self, d: &ReplicatorDescriptor, seconds: f64) {
        self.metrics.download_time(d.replicable_name, seconds);
    }

    /// The objects of `rows` in one request, staged.
    pub(crate) async fn many(
        self,
        d: &ReplicatorDescriptor,
        rows: Vec<ClaimedRow>,
    ) -> FetchedMany<S::Staged> {
        let started = std::time::Instant::now();
        let ids: Vec<i64> = rows.iter().map(|r| r.model_record_id).collect();
        let fail_all = |f: Failed| FetchedMany {
            results: rows
                .iter()
                .map(|row| (*row, Err(Failed::new(f.kind, f.reason.clone()))))
                .collect(),
            alone: Vec::new(),
        };
        let frames = match self.source.retrieve_many(d.replicable_name, &ids).await {
            Ok(RetrievedMany::Frames(frames)) => frames,
            Ok(RetrievedMany::Status(code)) => return fail_all(Failed::http_status(code)),
            Err(e) => return fail_all(Failed::transport(e)),
        };
        let (mut out, inline) = self.read_frames(frames, &rows).await;
        let took = started.elapsed().as_secs_f64();
        out.results.extend(self.stage_inline(d, inline, took).await);
        out
    }

    /// Reads a batch answer: each row's failure, the rows to fetch alone, and the inline
    /// objects to stage. Rows the answer never reached (it broke, or ended early) fail.
    async fn read_frames(
        &self,
        mut frames: C::Frames,
        rows: &[ClaimedRow],
    ) -> (FetchedMany<S::Staged>, Vec<(ClaimedRow, Inline)>) {
        let mut waiting: HashMap<i64, ClaimedRow> =
            rows.iter().map(|r| (r.model_record_id, *r)).collect();
        let mut out = FetchedMany {
            results: Vec::with_capacity(rows.len()),
            alone: Vec::new(),
        };
        let mut inline = Vec::new();
        let broken = loop {
            let frame = match frames.next_frame().await {
                Ok(Some(frame)) => frame,
                Ok(None) => break None,
                Err(e) => break Some(e),
            };
            let Some(row) = waiting.remove(&frame.id) else {
                break Some(format!(
                    "the primary answered for record {}, which was not asked for",
                    frame.id
                ));
            };
            match self.judge(frame.answer) {
                Ok(Some(object)) => inline.push((row, object)),
                Ok(None) => out.alone.push(row),
                Err(f) => out.results.push((row, Err(f))),
            }
        };
        let reason = broken.unwrap_or_else(|| "the primary's response ended early".into());
        for row in waiting.into_values() {
            out.results.push((row, Err(Failed::transport(&reason))));
        }
        (out, inline)
    }

    /// What one frame means for its row: an inline object, `None` to fetch it alone, or why
    /// it failed.
    fn judge(&self, answer: Answer) -> Result<Option<Inline>, Failed> {
        match answer {
            Answer::Object { key, sha256, data } => self
                .check_size(Some(data.len() as u64))
                .map(|()| Some((key, sha256, data))),
            Answer::Separately { size } => self.check_size(size).map(|()| None),
            Answer::FileMissing => Err(Failed::file_missing()),
            Answer::RecordMissing => Err(Failed::record_missing()),
            Answer::Error => Err(Failed::new(
                "http_status",
                "The primary could not read the object",
            )),
            Answer::Malformed(e) => Err(Failed::protocol(e)),
        }
    }

    /// Stages the inline objects of a batch in one go (`took`: the batch's download time).
    async fn stage_inline(
        &self,
        d: &ReplicatorDescriptor,
        inline: Vec<(ClaimedRow, Inline)>,
        took: f64,
    ) -> Vec<(ClaimedRow, Result<Fetched<S::Staged>, Failed>)> {
        let (meta, items): (Vec<_>, Vec<_>) = inline
            .into_iter()
            .map(|(row, (key, sha, data))| {
                let meta = (row, key.as_str().to_owned(), sha.is_some());
                (meta, (key, data, sha))
            })
            .unzip();
        let staged = self.store.stage_many_bytes(items).await;
        meta.into_iter()
            .zip(staged)
            .map(|((row, key, checked), staged)| {
                let result = match staged {
                    Ok(staged) => {
                        self.observe(d, took);
                        Ok(Fetched {
                            row,
                            key,
                            staged,
                            checked,
                        })
                    }
                    Err(e) => Err(Failed::storage(&e)),
                };
                (row, result)
            })
            .collect()
    }

    /// One object, staged (streamed when large).
    pub(crate) async fn one(
        self,
        d: &ReplicatorDescriptor,
        row: ClaimedRow,
    ) -> Result<Fetched<S::Staged>, Failed> {
        let started = std::time::Instant::now();
        let incoming = match self
            .source
            .retrieve(d.replicable_name, row.model_record_id)
            .await
            .map_err(Failed::transport)?
        {
            Retrieved::Object(incoming) => incoming,
            Retrieved::FileMissing => return Err(Failed::file_missing()),
            Retrieved::RecordMissing => return Err(Failed::record_missing()),
            Retrieved::Status(code) => return Err(Failed::http_status(code)),
            Retrieved::Malformed(e) => return Err(Failed::protocol(e)),
        };
        let Incoming {
            key,
            sha256,
            size,
            body,
        } = incoming;
        self.check_size(size)?;
        let staged = match size {
            // Small objects: read whole, then written in one step.
            Some(size) if size <= SMALL_OBJECT => {
                let data = read_whole(body, size).await?;
                self.store.stage_bytes(&key, data, sha256).await
            }
            _ => self.store.stage_stream(&key, body, size, sha256).await,
        }
        .map_err(|e| Failed::storage(&e))?;
        self.observe(d, started.elapsed().as_secs_f64());
        tracing::debug!(
            bytes = S::staged_size(&staged),
            download_time_s = started.elapsed().as_secs_f64(),
            checksum_checked = sha256.is_some(),
            "blob downloaded"
        );
        Ok(Fetched {
            row,
            key: key.as_str().to_owned(),
            staged,
            checked: sha256.is_some(),
        })
    }
}

/// A body of the announced `size`, read whole (without a copy when it comes in one chunk).
async fn read_whole<B>(mut body: B, size: u64) -> Result<Bytes, Failed>
where
    B: futures_util::Stream<Item = Result<Bytes, String>> + Unpin,
{
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut read = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(Failed::transport)?;
        read += chunk.len() as u64;
        if read > size {
            break;
        }
        chunks.push(chunk);
    }
    if read != size {
        return Err(Failed::storage(&StorageError::SizeMismatch {
            expected: size,
            actual: read,
        }));
    }
    Ok(match chunks.len() {
        1 => chunks.swap_remove(0),
        _ => {
            let mut data = BytesMut::with_capacity(usize::try_from(size).unwrap_or(0));
            for chunk in chunks {
                data.extend_from_slice(&chunk);
            }
            data.freeze()
        }
    })
}
