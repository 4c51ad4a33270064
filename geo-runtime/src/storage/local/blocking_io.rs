//! The blocking side of the store: reads, writes, flushes and renames run on the blocking pool,
//! a batch to a task.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::super::{SmallObject, StorageError, WrittenBlob};
use super::{StagedBlob, TEMP_PREFIX, io};

/// One failure per object of a batch the blocking pool could not run.
pub(super) fn all_failed<T>(n: usize, e: &StorageError) -> Vec<Result<T, StorageError>> {
    (0..n)
        .map(|_| {
            Err(StorageError::Source {
                bytes: 0,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Runs file-system work on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Source {
            bytes: 0,
            reason: e.to_string(),
        })
}

/// Runs a batch's file-system work on the blocking pool: one result per object, each a failure
/// when the pool could not run it.
pub(super) async fn blocking_batch<T: Send + 'static>(
    n: usize,
    f: impl FnOnce() -> Vec<Result<T, StorageError>> + Send + 'static,
) -> Vec<Result<T, StorageError>> {
    blocking(f).await.unwrap_or_else(|e| all_failed(n, &e))
}

/// Batches of more files (or directories) than this are flushed with one `syncfs` instead of
/// one `fsync` each: a batch of small downloads costs two flushes, while one object does not
/// flush the whole file system.
pub(super) const SYNCFS_ABOVE: usize = 8;

/// Flushes `paths` (files: their data; directories: their entries).
pub(super) fn flush_paths(root: &Path, paths: &[&Path]) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    if paths.len() > SYNCFS_ABOVE {
        let dir = std::fs::File::open(root)?;
        return rustix::fs::syncfs(&dir).map_err(std::io::Error::from);
    }
    let _ = root;
    for path in paths {
        let file = std::fs::File::open(path)?;
        if file.metadata()?.is_dir() {
            file.sync_all()?;
        } else {
            file.sync_data()?;
        }
    }
    Ok(())
}

/// The error of a flush that failed for a whole batch, for each object of it.
pub(super) fn batch_error(op: &'static str, path: &Path, reason: &str) -> StorageError {
    StorageError::Io {
        op,
        path: path.display().to_string(),
        source: std::io::Error::other(reason.to_owned()),
    }
}

/// Flushes the data of the staged objects not flushed yet (one `syncfs` for a large batch).
pub(super) fn flush_blocking(
    root: &Path,
    mut staged: Vec<StagedBlob>,
) -> Vec<Result<StagedBlob, StorageError>> {
    let unflushed: Vec<&Path> = staged
        .iter()
        .filter(|s| !s.durable)
        .map(|s| s.tmp.as_path())
        .collect();
    if let Err(e) = flush_paths(root, &unflushed) {
        let reason = e.to_string();
        return staged
            .iter()
            .map(|s| Err(batch_error("flush staged data", &s.tmp, &reason)))
            .collect();
    }
    for s in &mut staged {
        s.durable = true;
    }
    staged.into_iter().map(Ok).collect()
}

/// Renames flushed staged objects into place, then flushes their directories.
pub(super) fn publish_blocking(
    root: &Path,
    mut staged: Vec<StagedBlob>,
) -> Vec<Result<WrittenBlob, StorageError>> {
    let mut results: Vec<Result<WrittenBlob, StorageError>> = Vec::with_capacity(staged.len());
    for s in &mut staged {
        if !s.durable {
            results.push(Err(io("publish", &s.path)(std::io::Error::other(
                "the staged data was not flushed",
            ))));
            continue;
        }
        match std::fs::rename(&s.tmp, &s.path) {
            Ok(()) => {
                s.tmp = PathBuf::new();
                results.push(Ok(s.written));
            }
            Err(e) => results.push(Err(io("rename into place", &s.path)(e))),
        }
    }
    let dirs: std::collections::BTreeSet<&Path> = staged
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .filter_map(|(s, _)| s.path.parent())
        .collect();
    if let Err(e) = flush_paths(root, &dirs.into_iter().collect::<Vec<_>>()) {
        let reason = e.to_string();
        return results
            .into_iter()
            .map(|r| r.and_then(|_| Err(batch_error("flush directories", root, &reason))))
            .collect();
    }
    results
}

/// [`flush_blocking`] then [`publish_blocking`], in one trip to the blocking pool.
pub(super) fn commit_blocking(
    root: &Path,
    staged: Vec<StagedBlob>,
) -> Vec<Result<WrittenBlob, StorageError>> {
    let (ready, slots) = super::super::split_ready(flush_blocking(root, staged));
    super::super::fill_slots(slots, publish_blocking(root, ready))
}

/// Removes the files at `paths`, then flushes their directories once.
pub(super) fn delete_many_blocking(
    root: &Path,
    paths: &[PathBuf],
) -> Vec<Result<bool, StorageError>> {
    let mut results: Vec<Result<bool, StorageError>> = paths
        .iter()
        .map(|p| match std::fs::remove_file(p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io("remove", p)(e)),
        })
        .collect();
    let dirs: std::collections::BTreeSet<&Path> = paths
        .iter()
        .zip(&results)
        .filter(|(_, r)| matches!(r, Ok(true)))
        .filter_map(|(p, _)| p.parent())
        .collect();
    if let Err(e) = flush_paths(root, &dirs.into_iter().collect::<Vec<_>>()) {
        let reason = e.to_string();
        for r in &mut results {
            if matches!(r, Ok(true)) {
                *r = Err(batch_error("flush directories", root, &reason));
            }
        }
    }
    results
}

/// The object at `path`, opened, and its size; `None` when there is no such file.
pub(super) fn open_object(path: &Path) -> Result<Option<(std::fs::File, u64)>, StorageError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("open", path)(e)),
    };
    let meta = file.metadata().map_err(io("stat", path))?;
    Ok(meta.is_file().then_some((file, meta.len())))
}

/// Reads an opened object of `len` bytes whole.
pub(super) fn read_whole(
    mut file: std::fs::File,
    len: u64,
    path: &Path,
) -> Result<Bytes, StorageError> {
    use std::io::Read;
    let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.read_to_end(&mut data).map_err(io("read", path))?;
    Ok(Bytes::from(data))
}

/// Reads `path` whole when it is at most `max` bytes.
pub(super) fn read_small_blocking(path: &Path, max: u64) -> Result<SmallObject, StorageError> {
    Ok(match open_object(path)? {
        None => SmallObject::Missing,
        Some((_, len)) if len > max => SmallObject::TooLarge(len),
        Some((file, len)) => SmallObject::Whole(read_whole(file, len, path)?),
    })
}

/// Stages one body; `made` remembers the directories this batch already created, so a batch
/// of objects in a few directories does not ask for each of them again.
pub(super) fn stage_bytes_blocking(
    root: &Path,
    path: PathBuf,
    data: &[u8],
    expected_sha256: Option<[u8; 32]>,
    made: &mut std::collections::HashSet<PathBuf>,
) -> Result<StagedBlob, StorageError> {
    use std::io::Write;
    let sha256: [u8; 32] = Sha256::digest(data).into();
    if let Some(expected) = expected_sha256
        && expected != sha256
    {
        return Err(StorageError::ChecksumMismatch {
            expected: hex::encode(expected),
            actual: hex::encode(sha256),
        });
    }
    let dir = path.parent().unwrap_or(root).to_path_buf();
    if !made.contains(&dir) {
        std::fs::create_dir_all(&dir).map_err(io("create directory", &dir))?;
        made.insert(dir.clone());
    }
    let tmp = dir.join(format!("{TEMP_PREFIX}{:016x}", fastrand::u64(..)));
    let staged = StagedBlob {
        tmp,
        path,
        written: WrittenBlob {
            size: data.len() as u64,
            sha256,
        },
        durable: false,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&staged.tmp)
        .map_err(io("create", &staged.tmp))?;
    file.write_all(data).map_err(io("write", &staged.tmp))?;
    Ok(staged)
}

/// Bytes read at a time when an object is streamed out.
pub(super) const READ_CHUNK: usize = 256 * 1024;

/// Streams `file` from a thread of the blocking pool: each read lands in its own buffer and is
/// sent as is (no copy between a runtime buffer and the stream's), a few reads ahead of the
/// network. The thread stops when the stream is dropped.
pub(super) fn read_stream(mut file: std::fs::File, path: PathBuf) -> super::super::ByteStream {
    use std::io::Read;
    #[cfg(target_os = "linux")]
    {
        // More readahead for a file read once, front to back. Advice only.
        let _ = rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::Sequential);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(2);
    tokio::task::spawn_blocking(move || {
        loop {
            // `take` + `read_to_end` fills the buffer without zeroing it first.
            let mut buf = Vec::with_capacity(READ_CHUNK);
            let read = match (&mut file).take(READ_CHUNK as u64).read_to_end(&mut buf) {
                Ok(0) => return,
                Ok(_) => Ok(Bytes::from(buf)),
                Err(e) => Err(std::io::Error::new(
                    e.kind(),
                    format!("read {}: {e}", path.display()),
                )),
            };
            let failed = read.is_err();
            if tx.blocking_send(read).is_err() || failed {
                return;
            }
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}
