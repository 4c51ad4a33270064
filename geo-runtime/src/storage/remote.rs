//! Objects in any `object_store` backend (S3 with the `s3` feature; in-memory for tests).
//! Downloads are staged in a local directory (checked there), then uploaded on commit: an
//! object store makes each upload visible atomically, only once complete.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::WriteMultipart;
use object_store::path::Path as StorePath;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutPayload};

use super::{BlobStore, LocalStore, ObjectKey, Opened, StagedBlob, StorageError, WrittenBlob};

/// Uploads of one commit in flight at once.
const UPLOADS_AT_ONCE: usize = 8;

/// Objects up to this size are uploaded in one request; larger ones in parts.
const SINGLE_PUT: u64 = 8 * 1024 * 1024;

/// An `object_store` backend with a local staging directory.
#[derive(Debug, Clone)]
pub struct ObjectStoreBlobs {
    store: Arc<dyn ObjectStore>,
    staging: LocalStore,
}

/// A download staged locally, waiting for upload.
#[derive(Debug)]
pub struct RemoteStaged {
    key: ObjectKey,
    local: StagedBlob,
    path: std::path::PathBuf,
}

impl RemoteStaged {
    fn new(key: ObjectKey, local: StagedBlob) -> Self {
        RemoteStaged {
            path: local.temp_path().to_path_buf(),
            key,
            local,
        }
    }
}

fn store_error(op: &'static str, key: &ObjectKey, e: object_store::Error) -> StorageError {
    StorageError::Io {
        op,
        path: key.to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl ObjectStoreBlobs {
    /// Objects in `store`, downloads staged under `staging_dir`.
    pub fn new(store: Arc<dyn ObjectStore>, staging_dir: impl Into<std::path::PathBuf>) -> Self {
        ObjectStoreBlobs {
            store,
            staging: LocalStore::new(staging_dir),
        }
    }

    fn location(key: &ObjectKey) -> StorePath {
        // Checked keys are valid object_store paths (no empty, `.` or `..` parts).
        StorePath::from_iter(key.components())
    }

    async fn upload(&self, staged: &RemoteStaged) -> Result<WrittenBlob, StorageError> {
        let location = Self::location(&staged.key);
        let written = staged.local.written();
        let io = |op, e: std::io::Error| StorageError::Io {
            op,
            path: staged.path.display().to_string(),
            source: e,
        };
        if written.size <= SINGLE_PUT {
            let data = tokio::fs::read(&staged.path)
                .await
                .map_err(|e| io("read staged", e))?;
            self.store
                .put(&location, PutPayload::from(Bytes::from(data)))
                .await
                .map_err(|e| store_error("upload", &staged.key, e))?;
        } else {
            let upload = self
                .store
                .put_multipart(&location)
                .await
                .map_err(|e| store_error("start upload", &staged.key, e))?;
            let mut writer = WriteMultipart::new(upload);
            let file = tokio::fs::File::open(&staged.path)
                .await
                .map_err(|e| io("open staged", e))?;
            let mut chunks = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
            while let Some(chunk) = chunks.next().await {
                writer.put(chunk.map_err(|e| io("read staged", e))?);
            }
            writer
                .finish()
                .await
                .map_err(|e| store_error("finish upload", &staged.key, e))?;
        }
        Ok(written)
    }
}

impl BlobStore for ObjectStoreBlobs {
    type Staged = RemoteStaged;

    fn staged_size(staged: &RemoteStaged) -> u64 {
        staged.local.written().size
    }

    async fn stage_bytes(
        &self,
        key: &ObjectKey,
        data: Bytes,
        expected_sha256: Option<[u8; 32]>,
    ) -> Result<RemoteStaged, StorageError> {
        let local = self.staging.stage_bytes(key, data, expected_sha256).await?;
        Ok(RemoteStaged::new(key.clone(), local))
    }

    async fn stage_stream<S, E>(
        &self,
        key: &ObjectKey,
        body: S,
        expected_size: Option<u64>,
        expected_sha256: Option<[u8; 32]>,
    ) -> Result<RemoteStaged, StorageError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display + Send,
    {
        let local = self
            .staging
            .stage_stream_with(key, body, expected_size, expected_sha256, false)
            .await?;
        Ok(RemoteStaged::new(key.clone(), local))
    }

    /// Nothing to flush: the staging copy is uploaded from its temp file, and a crash before
    /// the upload leaves only that temp file, removed at the next start.
    async fn flush(&self, staged: Vec<RemoteStaged>) -> Vec<Result<RemoteStaged, StorageError>> {
        staged.into_iter().map(Ok).collect()
    }

    async fn publish(&self, staged: Vec<RemoteStaged>) -> Vec<Result<WrittenBlob, StorageError>> {
        // A few uploads at once (each is a round trip or several); results in order. Dropping
        // each staged object removes its staging file whatever the outcome.
        futures_util::stream::iter(staged)
            .map(|s| async move { self.upload(&s).await })
            .buffered(UPLOADS_AT_ONCE)
            .collect()
            .await
    }

    async fn stage_many_bytes(
        &self,
        items: Vec<(ObjectKey, Bytes, Option<[u8; 32]>)>,
    ) -> Vec<Result<RemoteStaged, StorageError>> {
        let keys: Vec<ObjectKey> = items.iter().map(|(k, _, _)| k.clone()).collect();
        // Staged locally in one trip to the blocking pool, as a local store does.
        BlobStore::stage_many_bytes(&self.staging, items)
            .await
            .into_iter()
            .zip(keys)
            .map(|(staged, key)| staged.map(|local| RemoteStaged::new(key, local)))
            .collect()
    }

    async fn read_or_open(
        &self,
        key: &ObjectKey,
        whole_below: u64,
    ) -> Result<Option<Opened>, StorageError> {
        let result = match self
            .store
            .get_opts(&Self::location(key), GetOptions::default())
            .await
        {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_error("get", key, e)),
        };
        let size = result.meta.size;
        if size <= whole_below {
            let bytes = result
                .bytes()
                .await
                .map_err(|e| store_error("read", key, e))?;
            return Ok(Some(Opened::Whole(bytes)));
        }
        let stream = result
            .into_stream()
            .map_err(|e| std::io::Error::other(e.to_string()));
        Ok(Some(Opened::Stream(Box::pin(stream), size)))
    }

    async fn list_keys(&self) -> Result<Vec<String>, StorageError> {
        let mut keys: Vec<String> = self
            .store
            .list(None)
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .map_err(|e| StorageError::Io {
                op: "list",
                path: String::new(),
                source: std::io::Error::other(e.to_string()),
            })?;
        keys.sort_unstable();
        Ok(keys)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<bool, StorageError> {
        let location = Self::location(key);
        let head = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        match self.store.get_opts(&location, head).await {
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(store_error("head", key, e)),
            Ok(_) => {}
        }
        match self.store.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(store_error("delete", key, e)),
        }
    }

    async fn remove_stale_temp_files(&self) -> Result<usize, StorageError> {
        self.staging.remove_stale_temp_files().await
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;
    use sha2::{Digest, Sha256};

    use super::*;

    #[tokio::test]
    async fn objects_round_trip_through_an_object_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ObjectStoreBlobs::new(Arc::new(InMemory::new()), dir.path());
        let key = ObjectKey::parse("a/b").expect("key");
        let big: Vec<u8> = (0..(SINGLE_PUT as usize + 3)).map(|i| i as u8).collect();
        let small = BlobStore::stage_bytes(&store, &key, Bytes::from_static(b"small"), None)
            .await
            .expect("stage");
        let key2 = ObjectKey::parse("a/big").expect("key");
        let large = BlobStore::stage_stream(
            &store,
            &key2,
            futures_util::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from(
                big.clone(),
            ))]),
            Some(big.len() as u64),
            Some(Sha256::digest(&big).into()),
        )
        .await
        .expect("stage");
        assert!(
            store
                .read_or_open(&key, 1 << 20)
                .await
                .expect("get")
                .is_none(),
            "visible before commit"
        );
        let results = store.commit(vec![small, large]).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        match store.read_or_open(&key, 1 << 20).await.expect("get") {
            Some(Opened::Whole(b)) => assert_eq!(b.as_ref(), b"small"),
            other => panic!("{other:?}"),
        }
        match store.read_or_open(&key2, 1024).await.expect("get") {
            Some(Opened::Stream(s, size)) => {
                assert_eq!(size, big.len() as u64);
                let got: Vec<Bytes> = s.try_collect().await.expect("stream");
                assert_eq!(got.concat(), big);
            }
            other => panic!("{other:?}"),
        }
        assert!(store.delete(&key).await.expect("delete"));
        assert!(!store.delete(&key).await.expect("delete again"));
        // Staging files are gone.
        assert_eq!(store.remove_stale_temp_files().await.expect("clean"), 0);
    }
}
