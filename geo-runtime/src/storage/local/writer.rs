//! Streaming a body to its temp file: a writer thread fed through a bounded queue, hashing as it
//! writes, with write-back started as it goes; a guard removes the temp file of an abandoned
//! stream.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use super::super::{StorageError, WrittenBlob};
use super::blocking_io::blocking;
use super::io;

/// Network chunks are handed to the writer thread in batches of about this many bytes…
pub(super) const WRITE_BATCH: usize = 512 * 1024;
/// …through a queue this deep: a download holds a few MiB at most, whatever its size.
pub(super) const WRITE_QUEUE: usize = 2;
/// Writeback of a streamed file is started every this many bytes, so the disk works while the
/// rest arrives and the final flush waits for the tail only.
pub(super) const WRITEBACK_WINDOW: u64 = 8 << 20;

/// What the network side sends the writer thread.
pub(super) enum ToWriter {
    Data(Vec<Bytes>),
    /// The body is complete: flush (when asked) and report. Without it the writer stops
    /// without flushing (the download failed).
    End,
}

/// The temp file of a streamed write, removed when the write is abandoned (unless disarmed).
/// The writer thread may outlive the download that fed it, so both look at `abandoned`: the
/// guard sets it before it removes the file, and the thread removes the file itself when it
/// finds it set once done; whichever comes last, nothing is left behind.
pub(super) struct TempGuard {
    tmp: PathBuf,
    abandoned: std::sync::Arc<std::sync::atomic::AtomicBool>,
    armed: bool,
}

impl TempGuard {
    pub(super) fn new(tmp: PathBuf) -> Self {
        TempGuard {
            tmp,
            abandoned: Default::default(),
            armed: true,
        }
    }

    pub(super) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            self.abandoned
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

pub(super) async fn write_temp<S, E>(
    tmp: &Path,
    body: S,
    expected_size: Option<u64>,
    expected_sha256: Option<[u8; 32]>,
    flush: bool,
    guard: &TempGuard,
) -> Result<WrittenBlob, StorageError>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    // Hashing and writing run on their own thread: the network side never waits for them, and
    // concurrent downloads hash on several cores.
    let (tx, rx) = tokio::sync::mpsc::channel(WRITE_QUEUE);
    let writer = tokio::task::spawn_blocking({
        let tmp = tmp.to_path_buf();
        let abandoned = guard.abandoned.clone();
        move || {
            let written = write_temp_blocking(&tmp, rx, flush);
            if written.is_err() || abandoned.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = std::fs::remove_file(&tmp);
            }
            written
        }
    });
    let fed = feed(body, &tx, expected_size).await;
    drop(tx);
    let written = writer.await.unwrap_or_else(|e| {
        Err(StorageError::Source {
            bytes: 0,
            reason: e.to_string(),
        })
    });
    let (size, sha256) = match (fed, written) {
        // The writer failed on its own (a full disk…): that is the cause, whatever the feeding
        // saw; a `Source` error from it only echoes a feeding that stopped.
        (_, Err(e)) if !matches!(e, StorageError::Source { .. }) => return Err(e),
        (Err(e), _) | (Ok(()), Err(e)) => return Err(e),
        (Ok(()), Ok(written)) => written,
    };
    if let Some(expected) = expected_size
        && size != expected
    {
        return Err(StorageError::SizeMismatch {
            expected,
            actual: size,
        });
    }
    if let Some(expected) = expected_sha256
        && expected != sha256
    {
        return Err(StorageError::ChecksumMismatch {
            expected: hex::encode(expected),
            actual: hex::encode(sha256),
        });
    }
    Ok(WrittenBlob { size, sha256 })
}

/// Passes `body` to the writer in batches, failing early on more bytes than announced.
pub(super) async fn feed<S, E>(
    body: S,
    tx: &tokio::sync::mpsc::Sender<ToWriter>,
    expected_size: Option<u64>,
) -> Result<(), StorageError>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    let gone = || StorageError::Source {
        bytes: 0,
        reason: "the writer stopped".into(),
    };
    let mut body = std::pin::pin!(body);
    let mut size: u64 = 0;
    let mut batch = Vec::new();
    let mut batched = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| StorageError::Source {
            bytes: size,
            reason: e.to_string(),
        })?;
        size += chunk.len() as u64;
        if let Some(expected) = expected_size
            && size > expected
        {
            return Err(StorageError::SizeMismatch {
                expected,
                actual: size,
            });
        }
        batched += chunk.len();
        batch.push(chunk);
        if batched >= WRITE_BATCH {
            batched = 0;
            tx.send(ToWriter::Data(std::mem::take(&mut batch)))
                .await
                .map_err(|_| gone())?;
        }
    }
    if !batch.is_empty() {
        tx.send(ToWriter::Data(batch)).await.map_err(|_| gone())?;
    }
    tx.send(ToWriter::End).await.map_err(|_| gone())
}

/// The writer thread of [`write_temp`]: creates `tmp`, hashes and writes what arrives, starts
/// writeback every [`WRITEBACK_WINDOW`] and, once the body is complete, flushes the data when
/// `flush`. Returns the size and SHA-256 written.
pub(super) fn write_temp_blocking(
    tmp: &Path,
    mut rx: tokio::sync::mpsc::Receiver<ToWriter>,
    flush: bool,
) -> Result<(u64, [u8; 32]), StorageError> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(io("create", tmp))?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut written_back: u64 = 0;
    loop {
        match rx.blocking_recv() {
            Some(ToWriter::Data(batch)) => {
                for chunk in batch {
                    hasher.update(&chunk);
                    file.write_all(&chunk).map_err(io("write", tmp))?;
                    size += chunk.len() as u64;
                }
                if flush && size - written_back >= WRITEBACK_WINDOW {
                    start_writeback(&file, written_back, size);
                    written_back = size;
                }
            }
            Some(ToWriter::End) => break,
            None => {
                return Err(StorageError::Source {
                    bytes: size,
                    reason: "the download stopped".into(),
                });
            }
        }
    }
    if flush {
        file.sync_data().map_err(io("flush", tmp))?;
    }
    Ok((size, hasher.finalize().into()))
}

/// Starts writing `[from, to)` of `file` to disk without waiting for it (and lets the kernel
/// drop what an earlier call already wrote from the page cache: a copy is not read back soon).
pub(super) fn start_writeback(file: &std::fs::File, from: u64, to: u64) {
    #[cfg(target_os = "linux")]
    {
        // POSIX_FADV_DONTNEED starts writeback of the dirty pages in the range and drops the
        // clean ones. Advice only: a failure changes nothing but the speed.
        let start = from.saturating_sub(WRITEBACK_WINDOW);
        let _ = rustix::fs::fadvise(
            file,
            start,
            std::num::NonZeroU64::new(to - start),
            rustix::fs::Advice::DontNeed,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, from, to);
}

pub(super) async fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let d = dir.to_path_buf();
    blocking(move || {
        std::fs::File::open(&d)
            .and_then(|f| f.sync_all())
            .map_err(io("fsync directory", &d))
    })
    .await?
}
