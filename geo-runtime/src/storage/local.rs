//! The local file-system store. `object_store`'s local backend renames into place but does not
//! fsync the file or its directory, so a power cut can leave an empty or partial file at the
//! final path; this store does the durable sequence itself.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use super::{BlobStore, ObjectKey, Opened, SmallObject, StorageError, WrittenBlob};

/// An object written to its temp file, not yet durable nor at its final path.
#[derive(Debug)]
pub struct StagedBlob {
    tmp: PathBuf,
    path: PathBuf,
    written: WrittenBlob,
    /// The data is already flushed (streamed objects are flushed by their writer thread, so a
    /// batch's commit waits for none of them).
    durable: bool,
}

impl StagedBlob {
    /// What was written.
    pub fn written(&self) -> WrittenBlob {
        self.written
    }

    /// The temp file holding the bytes.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }
}

impl Drop for StagedBlob {
    // A staged object that is never committed leaves nothing behind.
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// One failure per object of a batch the blocking pool could not run.
fn all_failed<T>(n: usize, e: &StorageError) -> Vec<Result<T, StorageError>> {
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
async fn blocking<T: Send + 'static>(
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
async fn blocking_batch<T: Send + 'static>(
    n: usize,
    f: impl FnOnce() -> Vec<Result<T, StorageError>> + Send + 'static,
) -> Vec<Result<T, StorageError>> {
    blocking(f).await.unwrap_or_else(|e| all_failed(n, &e))
}

/// Batches of more files (or directories) than this are flushed with one `syncfs` instead of
/// one `fsync` each: a batch of small downloads costs two flushes, while one object does not
/// flush the whole file system.
const SYNCFS_ABOVE: usize = 8;

/// Flushes `paths` (files: their data; directories: their entries).
fn flush_paths(root: &Path, paths: &[&Path]) -> std::io::Result<()> {
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
fn batch_error(op: &'static str, path: &Path, reason: &str) -> StorageError {
    StorageError::Io {
        op,
        path: path.display().to_string(),
        source: std::io::Error::other(reason.to_owned()),
    }
}

/// Flushes the data of the staged objects not flushed yet (one `syncfs` for a large batch).
fn flush_blocking(
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
fn publish_blocking(
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
fn commit_blocking(root: &Path, staged: Vec<StagedBlob>) -> Vec<Result<WrittenBlob, StorageError>> {
    let (ready, slots) = super::split_ready(flush_blocking(root, staged));
    super::fill_slots(slots, publish_blocking(root, ready))
}

/// Removes the files at `paths`, then flushes their directories once.
fn delete_many_blocking(root: &Path, paths: &[PathBuf]) -> Vec<Result<bool, StorageError>> {
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
fn open_object(path: &Path) -> Result<Option<(std::fs::File, u64)>, StorageError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("open", path)(e)),
    };
    let meta = file.metadata().map_err(io("stat", path))?;
    Ok(meta.is_file().then_some((file, meta.len())))
}

/// Reads an opened object of `len` bytes whole.
fn read_whole(mut file: std::fs::File, len: u64, path: &Path) -> Result<Bytes, StorageError> {
    use std::io::Read;
    let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.read_to_end(&mut data).map_err(io("read", path))?;
    Ok(Bytes::from(data))
}

/// Reads `path` whole when it is at most `max` bytes.
fn read_small_blocking(path: &Path, max: u64) -> Result<SmallObject, StorageError> {
    Ok(match open_object(path)? {
        None => SmallObject::Missing,
        Some((_, len)) if len > max => SmallObject::TooLarge(len),
        Some((file, len)) => SmallObject::Whole(read_whole(file, len, path)?),
    })
}

/// Stages one body; `made` remembers the directories this batch already created, so a batch
/// of objects in a few directories does not ask for each of them again.
fn stage_bytes_blocking(
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
const READ_CHUNK: usize = 256 * 1024;

/// Streams `file` from a thread of the blocking pool: each read lands in its own buffer and is
/// sent as is (no copy between a runtime buffer and the stream's), a few reads ahead of the
/// network. The thread stops when the stream is dropped.
fn read_stream(mut file: std::fs::File, path: PathBuf) -> super::ByteStream {
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

/// Temp files start with this; they are never at a final path and are removed at start-up.
pub const TEMP_PREFIX: &str = ".geo-tmp-";

/// Objects under a root directory, at `root/<key>`.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

fn io<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> StorageError + 'p {
    move |source| StorageError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

impl LocalStore {
    /// A store rooted at `root` (created when missing).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `key` lives. Only checked keys get here, so the path is always under the root.
    pub fn path(&self, key: &ObjectKey) -> PathBuf {
        let mut p = self.root.clone();
        p.extend(key.components());
        p
    }

    /// Opens `key` for serving: objects up to `whole_below` bytes are read at once (one trip to
    /// the blocking pool instead of one per read), larger ones are opened for streaming. `None`
    /// when there is no such object.
    pub async fn read_or_open(
        &self,
        key: &ObjectKey,
        whole_below: u64,
    ) -> Result<Option<Opened>, StorageError> {
        let path = self.path(key);
        blocking(move || {
            Ok(match open_object(&path)? {
                None => None,
                Some((file, len)) if len <= whole_below => {
                    Some(Opened::Whole(read_whole(file, len, &path)?))
                }
                Some((file, len)) => Some(Opened::Stream(read_stream(file, path), len)),
            })
        })
        .await?
    }

    /// Streams `body` into `key` durably. The SHA-256 is computed while streaming and compared
    /// with `expected_sha256`, the size with `expected_size`, when given; on any failure the temp
    /// file is removed and nothing is at the final path (an earlier version stays untouched).
    pub async fn write<S, E>(
        &self,
        key: &ObjectKey,
        body: S,
        expected_size: Option<u64>,
        expected_sha256: Option<[u8; 32]>,
    ) -> Result<WrittenBlob, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let staged = self
            .stage_stream(key, body, expected_size, expected_sha256)
            .await?;
        self.commit(vec![staged])
            .await
            .pop()
            .unwrap_or_else(|| unreachable!("one result per staged object"))
    }

    /// Writes a body already in memory durably, with the same guarantees as
    /// [`LocalStore::write`].
    pub async fn write_bytes(
        &self,
        key: &ObjectKey,
        data: Bytes,
        expected_sha256: Option<[u8; 32]>,
    ) -> Result<WrittenBlob, StorageError> {
        let staged = self.stage_bytes(key, data, expected_sha256).await?;
        self.commit(vec![staged])
            .await
            .pop()
            .unwrap_or_else(|| unreachable!("one result per staged object"))
    }

    /// Writes a body already in memory to a temp file next to `key`'s final path, checking its
    /// SHA-256, without making it durable yet: [`LocalStore::commit`] does that for a whole batch.
    pub async fn stage_bytes(
        &self,
        key: &ObjectKey,
        data: Bytes,
        expected_sha256: Option<[u8; 32]>,
    ) -> Result<StagedBlob, StorageError> {
        let path = self.path(key);
        let root = self.root.clone();
        blocking(move || {
            stage_bytes_blocking(&root, path, &data, expected_sha256, &mut Default::default())
        })
        .await?
    }

    /// Streams a body to a temp file next to `key`'s final path (SHA-256 and size checked as in
    /// [`LocalStore::write`]), without publishing it yet. The file is hashed and written by a
    /// thread of the blocking pool while the body arrives, with writeback started as it goes and
    /// its data flushed at the end, so that [`LocalStore::commit`] has only the rename left.
    pub async fn stage_stream<S, E>(
        &self,
        key: &ObjectKey,
        body: S,
        expected_size: Option<u64>,
        expected_sha256: Option<[u8; 32]>,
    ) -> Result<StagedBlob, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        self.stage_stream_with(key, body, expected_size, expected_sha256, true)
            .await
    }

    /// [`LocalStore::stage_stream`], flushing the data only when `flush` (a staging copy on its
    /// way to an object store needs no flush).
    pub(super) async fn stage_stream_with<S, E>(
        &self,
        key: &ObjectKey,
        body: S,
        expected_size: Option<u64>,
        expected_sha256: Option<[u8; 32]>,
        flush: bool,
    ) -> Result<StagedBlob, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let path = self.path(key);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io("create directory", &dir))?;
        let tmp = dir.join(format!("{TEMP_PREFIX}{:016x}", fastrand::u64(..)));
        // Removes the temp file however this ends: an error, or the download dropped half-way
        // (a cancelled transfer).
        let guard = TempGuard::new(tmp.clone());
        let written = write_temp(&tmp, body, expected_size, expected_sha256, flush, &guard).await?;
        guard.disarm();
        Ok(StagedBlob {
            tmp,
            path,
            written,
            durable: flush,
        })
    }

    /// Makes a batch of staged objects durable and publishes them: flush their data, rename each
    /// into place, flush the directory entries; only then is any of them reported written. On
    /// Linux the flushes are two `syncfs` calls for the whole batch instead of two `fsync`s per
    /// object. An object whose rename fails is reported failed and its temp file removed.
    pub async fn commit(&self, staged: Vec<StagedBlob>) -> Vec<Result<WrittenBlob, StorageError>> {
        if staged.is_empty() {
            return Vec::new();
        }
        let root = self.root.clone();
        let n = staged.len();
        blocking_batch(n, move || commit_blocking(&root, staged)).await
    }

    /// Removes `key`; true when it existed. The directory is fsynced so the removal survives a
    /// power cut.
    pub async fn delete(&self, key: &ObjectKey) -> Result<bool, StorageError> {
        let path = self.path(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    sync_dir(dir).await?;
                }
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io("remove", &path)(e)),
        }
    }

    /// Removes temp files a crash left behind; returns how many. Run at start-up, before any
    /// write.
    pub async fn remove_stale_temp_files(&self) -> Result<usize, StorageError> {
        let root = self.root.clone();
        blocking(move || {
            let mut removed = 0;
            let mut dirs = vec![root];
            while let Some(dir) = dirs.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io("read directory", &dir)(e)),
                };
                for entry in entries {
                    let entry = entry.map_err(io("read directory", &dir))?;
                    let kind = entry.file_type().map_err(io("stat", &dir))?;
                    if kind.is_dir() {
                        dirs.push(entry.path());
                    } else if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                        std::fs::remove_file(entry.path()).map_err(io("remove", &dir))?;
                        removed += 1;
                    }
                }
            }
            Ok(removed)
        })
        .await?
    }
}

/// Network chunks are handed to the writer thread in batches of about this many bytes…
const WRITE_BATCH: usize = 512 * 1024;
/// …through a queue this deep: a download holds a few MiB at most, whatever its size.
const WRITE_QUEUE: usize = 2;
/// Writeback of a streamed file is started every this many bytes, so the disk works while the
/// rest arrives and the final flush waits for the tail only.
const WRITEBACK_WINDOW: u64 = 8 << 20;

/// What the network side sends the writer thread.
enum ToWriter {
    Data(Vec<Bytes>),
    /// The body is complete: flush (when asked) and report. Without it the writer stops
    /// without flushing (the download failed).
    End,
}

/// The temp file of a streamed write, removed when the write is abandoned (unless disarmed).
/// The writer thread may outlive the download that fed it, so both look at `abandoned`: the
/// guard sets it before it removes the file, and the thread removes the file itself when it
/// finds it set once done; whichever comes last, nothing is left behind.
struct TempGuard {
    tmp: PathBuf,
    abandoned: std::sync::Arc<std::sync::atomic::AtomicBool>,
    armed: bool,
}

impl TempGuard {
    fn new(tmp: PathBuf) -> Self {
        TempGuard {
            tmp,
            abandoned: Default::default(),
            armed: true,
        }
    }

    fn disarm(mut self) {
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

async fn write_temp<S, E>(
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
async fn feed<S, E>(
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
fn write_temp_blocking(
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
fn start_writeback(file: &std::fs::File, from: u64, to: u64) {
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

async fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    let d = dir.to_path_buf();
    blocking(move || {
        std::fs::File::open(&d)
            .and_then(|f| f.sync_all())
            .map_err(io("fsync directory", &d))
    })
    .await?
}

impl BlobStore for LocalStore {
    type Staged = StagedBlob;

    fn staged_size(staged: &StagedBlob) -> u64 {
        staged.written.size
    }

    async fn stage_bytes(
        &self,
        key: &ObjectKey,
        data: Bytes,
        expected_sha256: Option<[u8; 32]>,
    ) -> Result<StagedBlob, StorageError> {
        LocalStore::stage_bytes(self, key, data, expected_sha256).await
    }

    async fn stage_stream<S, E>(
        &self,
        key: &ObjectKey,
        body: S,
        expected_size: Option<u64>,
        expected_sha256: Option<[u8; 32]>,
    ) -> Result<StagedBlob, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display + Send,
    {
        LocalStore::stage_stream(self, key, body, expected_size, expected_sha256).await
    }

    async fn flush(&self, staged: Vec<StagedBlob>) -> Vec<Result<StagedBlob, StorageError>> {
        if staged.iter().all(|s| s.durable) {
            return staged.into_iter().map(Ok).collect();
        }
        let root = self.root.clone();
        let n = staged.len();
        blocking_batch(n, move || flush_blocking(&root, staged)).await
    }

    async fn publish(&self, staged: Vec<StagedBlob>) -> Vec<Result<WrittenBlob, StorageError>> {
        if staged.is_empty() {
            return Vec::new();
        }
        let root = self.root.clone();
        let n = staged.len();
        blocking_batch(n, move || publish_blocking(&root, staged)).await
    }

    async fn commit(&self, staged: Vec<StagedBlob>) -> Vec<Result<WrittenBlob, StorageError>> {
        LocalStore::commit(self, staged).await
    }

    async fn delete_many(&self, keys: Vec<ObjectKey>) -> Vec<Result<bool, StorageError>> {
        if keys.is_empty() {
            return Vec::new();
        }
        let root = self.root.clone();
        let n = keys.len();
        let paths: Vec<PathBuf> = keys.iter().map(|k| self.path(k)).collect();
        blocking_batch(n, move || delete_many_blocking(&root, &paths)).await
    }

    async fn stage_many_bytes(
        &self,
        items: Vec<(ObjectKey, Bytes, Option<[u8; 32]>)>,
    ) -> Vec<Result<StagedBlob, StorageError>> {
        let n = items.len();
        let root = self.root.clone();
        let items: Vec<_> = items
            .into_iter()
            .map(|(key, data, sha)| (self.path(&key), data, sha))
            .collect();
        blocking_batch(n, move || {
            let mut made = std::collections::HashSet::new();
            items
                .into_iter()
                .map(|(path, data, sha)| stage_bytes_blocking(&root, path, &data, sha, &mut made))
                .collect()
        })
        .await
    }

    async fn read_small_many(
        &self,
        keys: Vec<ObjectKey>,
        max: u64,
    ) -> Vec<Result<SmallObject, StorageError>> {
        let n = keys.len();
        let paths: Vec<PathBuf> = keys.iter().map(|k| self.path(k)).collect();
        blocking_batch(n, move || {
            paths.iter().map(|p| read_small_blocking(p, max)).collect()
        })
        .await
    }

    async fn read_or_open(
        &self,
        key: &ObjectKey,
        whole_below: u64,
    ) -> Result<Option<Opened>, StorageError> {
        LocalStore::read_or_open(self, key, whole_below).await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<bool, StorageError> {
        LocalStore::delete(self, key).await
    }

    async fn remove_stale_temp_files(&self) -> Result<usize, StorageError> {
        LocalStore::remove_stale_temp_files(self).await
    }

    async fn list_keys(&self) -> Result<Vec<String>, StorageError> {
        let root = self.root.clone();
        blocking(move || {
            let mut keys = Vec::new();
            let mut dirs = vec![(root.clone(), String::new())];
            while let Some((dir, prefix)) = dirs.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io("read directory", &dir)(e)),
                };
                for entry in entries {
                    let entry = entry.map_err(io("read directory", &dir))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let kind = entry.file_type().map_err(io("stat", &dir))?;
                    let key = format!("{prefix}{name}");
                    if kind.is_dir() {
                        dirs.push((entry.path(), format!("{key}/")));
                    } else if !name.starts_with(TEMP_PREFIX) {
                        keys.push(key);
                    }
                }
            }
            keys.sort_unstable();
            Ok(keys)
        })
        .await?
    }

    /// Hashed on the blocking pool, 1 MiB at a time: never on the async threads.
    async fn sha256(&self, key: &ObjectKey) -> Result<Option<(u64, [u8; 32])>, StorageError> {
        let path = self.path(key);
        blocking(move || {
            use std::io::Read;
            let mut file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io("open", &path)(e)),
            };
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut size = 0u64;
            loop {
                let n = file.read(&mut buf).map_err(io("read", &path))?;
                if n == 0 {
                    break;
                }
                size += n as u64;
                hasher.update(&buf[..n]);
            }
            Ok(Some((size, hasher.finalize().into())))
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(
        parts: Vec<Result<&'static [u8], &'static str>>,
    ) -> impl Stream<Item = Result<Bytes, &'static str>> + Send {
        futures_util::stream::iter(parts.into_iter().map(|p| p.map(Bytes::from_static)))
    }

    fn sha(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    #[tokio::test]
    async fn writes_durably_and_leaves_nothing_on_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path());
        let key = ObjectKey::parse("a/b/obj").expect("key");
        let w = store
            .write(
                &key,
                chunks(vec![Ok(b"hello "), Ok(b"world")]),
                Some(11),
                Some(sha(b"hello world")),
            )
            .await
            .expect("write");
        assert_eq!(w.size, 11);
        assert_eq!(
            std::fs::read(store.path(&key)).expect("read"),
            b"hello world"
        );

        // A failing source, a wrong checksum and a short body: the old bytes stay, no temp file.
        let fails = [
            store
                .write(
                    &key,
                    chunks(vec![Ok(b"new"), Err("connection reset")]),
                    None,
                    None,
                )
                .await,
            store
                .write(
                    &key,
                    chunks(vec![Ok(b"other")]),
                    None,
                    Some(sha(b"hello world")),
                )
                .await,
            store
                .write(&key, chunks(vec![Ok(b"short")]), Some(100), None)
                .await,
        ];
        assert!(
            matches!(fails[0], Err(StorageError::Source { bytes: 3, .. })),
            "{:?}",
            fails[0]
        );
        assert!(
            matches!(fails[1], Err(StorageError::ChecksumMismatch { .. })),
            "{:?}",
            fails[1]
        );
        assert!(
            matches!(
                fails[2],
                Err(StorageError::SizeMismatch {
                    expected: 100,
                    actual: 5
                })
            ),
            "{:?}",
            fails[2]
        );
        assert_eq!(
            std::fs::read(store.path(&key)).expect("read"),
            b"hello world"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .expect("ls")
            .map(|e| e.expect("e").file_name())
            .collect();
        assert_eq!(names, ["obj"], "temp files left behind");

        assert!(store.delete(&key).await.expect("delete"));
        assert!(!store.delete(&key).await.expect("delete again"));
        assert!(
            store
                .read_or_open(&key, 1 << 20)
                .await
                .expect("open")
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_staged_batch_is_published_together_and_a_dropped_one_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path());
        let a = ObjectKey::parse("d/a").expect("key");
        let b = ObjectKey::parse("d/b").expect("key");
        let sa = store
            .stage_bytes(&a, Bytes::from_static(b"aaa"), Some(sha(b"aaa")))
            .await
            .expect("stage");
        let sb = store
            .stage_stream(&b, chunks(vec![Ok(b"b"), Ok(b"bb")]), Some(3), None)
            .await
            .expect("stage");
        assert!(
            !store.path(&a).exists() && !store.path(&b).exists(),
            "staged objects are not at their final paths"
        );
        let results = store.commit(vec![sa, sb]).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(std::fs::read(store.path(&a)).expect("a"), b"aaa");
        assert_eq!(std::fs::read(store.path(&b)).expect("b"), b"bbb");
        // A wrong checksum is refused at staging; a staged object dropped uncommitted vanishes.
        assert!(
            store
                .stage_bytes(&a, Bytes::from_static(b"x"), Some(sha(b"y")))
                .await
                .is_err()
        );
        drop(
            store
                .stage_bytes(
                    &ObjectKey::parse("d/c").expect("key"),
                    Bytes::from_static(b"c"),
                    None,
                )
                .await
                .expect("stage"),
        );
        let mut names: Vec<_> = std::fs::read_dir(dir.path().join("d"))
            .expect("ls")
            .map(|e| e.expect("e").file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);
    }

    #[tokio::test]
    async fn a_body_over_several_writeback_windows_arrives_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path());
        let key = ObjectKey::parse("big/obj").expect("key");
        // 20 MiB + 1 byte in 64 KiB network-sized chunks: three writeback windows, a partial
        // last write batch.
        let data: Vec<u8> = (0..(20 << 20) + 1).map(|i: u32| (i % 251) as u8).collect();
        let parts: Vec<Result<Bytes, &'static str>> = data
            .chunks(64 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let staged = store
            .stage_stream(
                &key,
                futures_util::stream::iter(parts),
                Some(data.len() as u64),
                Some(sha(&data)),
            )
            .await
            .expect("stage");
        assert!(staged.durable, "a streamed object is flushed by its writer");
        assert_eq!(staged.written().size, data.len() as u64);
        let results = store.commit(vec![staged]).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert!(std::fs::read(store.path(&key)).expect("read") == data);
    }

    #[tokio::test]
    async fn stale_temp_files_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("x/y")).expect("mkdir");
        std::fs::write(dir.path().join("x/y/.geo-tmp-123"), b"partial").expect("write");
        std::fs::write(dir.path().join("x/y/keep"), b"data").expect("write");
        let store = LocalStore::new(dir.path());
        assert_eq!(store.remove_stale_temp_files().await.expect("clean"), 1);
        assert!(dir.path().join("x/y/keep").exists());
        assert!(!dir.path().join("x/y/.geo-tmp-123").exists());
    }
}
