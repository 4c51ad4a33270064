//! The local file-system store. `object_store`'s local backend renames into place but does not
//! fsync the file or its directory, so a power cut can leave an empty or partial file at the
//! final path; this store does the durable sequence itself.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::Stream;
use sha2::{Digest, Sha256};

use super::{BlobStore, ObjectKey, Opened, SmallObject, StorageError, WrittenBlob};

mod blocking_io;
#[cfg(test)]
mod tests;
mod writer;

use blocking_io::{
    blocking, blocking_batch, commit_blocking, delete_many_blocking, flush_blocking, open_object,
    publish_blocking, read_small_blocking, read_stream, read_whole, stage_bytes_blocking,
};
use writer::{TempGuard, sync_dir, write_temp};

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

impl BlobStore for LocalStore {
    type Staged = StagedBlob;

    async fn usable(&self) -> Result<(), String> {
        let root = self.root.clone();
        let shown = root.display().to_string();
        let checked = tokio::task::spawn_blocking(move || {
            let meta = std::fs::metadata(&root).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => "it does not exist".to_owned(),
                _ => e.to_string(),
            })?;
            if !meta.is_dir() {
                return Err("it is not a directory".to_owned());
            }
            std::fs::read_dir(&root)
                .map(drop)
                .map_err(|e| format!("it cannot be read: {e}"))
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        checked.map_err(|reason| format!("{shown}: {reason}"))
    }

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
