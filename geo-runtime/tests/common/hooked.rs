//! A local store with hooks around some of its operations: a test's way to step into a race
//! (hold a flush until the registry changed, change a record while it is hashed).

use std::fmt::Debug;
use std::future::Future;

use bytes::Bytes;
use geo_runtime::storage::{BlobStore, LocalStore, ObjectKey, Opened, StorageError, WrittenBlob};

/// What runs around the store's operations; each does nothing unless overridden.
pub trait Hooks: Clone + Debug + Send + Sync + 'static {
    /// Before a batch is flushed.
    fn before_flush(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// After an object was hashed.
    fn after_sha256(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// [`LocalStore`] with [`Hooks`].
#[derive(Debug, Clone)]
pub struct Hooked<H> {
    pub inner: LocalStore,
    pub hooks: H,
}

impl<H: Hooks> BlobStore for Hooked<H> {
    type Staged = <LocalStore as BlobStore>::Staged;
    fn staged_size(staged: &Self::Staged) -> u64 {
        <LocalStore as BlobStore>::staged_size(staged)
    }
    async fn stage_bytes(
        &self,
        key: &ObjectKey,
        data: Bytes,
        sha: Option<[u8; 32]>,
    ) -> Result<Self::Staged, StorageError> {
        BlobStore::stage_bytes(&self.inner, key, data, sha).await
    }
    async fn stage_stream<St, E>(
        &self,
        key: &ObjectKey,
        body: St,
        size: Option<u64>,
        sha: Option<[u8; 32]>,
    ) -> Result<Self::Staged, StorageError>
    where
        St: futures_util::Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display + Send,
    {
        BlobStore::stage_stream(&self.inner, key, body, size, sha).await
    }
    async fn flush(&self, staged: Vec<Self::Staged>) -> Vec<Result<Self::Staged, StorageError>> {
        self.hooks.before_flush().await;
        BlobStore::flush(&self.inner, staged).await
    }
    async fn publish(&self, staged: Vec<Self::Staged>) -> Vec<Result<WrittenBlob, StorageError>> {
        BlobStore::publish(&self.inner, staged).await
    }
    async fn read_or_open(
        &self,
        key: &ObjectKey,
        whole_below: u64,
    ) -> Result<Option<Opened>, StorageError> {
        BlobStore::read_or_open(&self.inner, key, whole_below).await
    }
    async fn delete(&self, key: &ObjectKey) -> Result<bool, StorageError> {
        BlobStore::delete(&self.inner, key).await
    }
    async fn remove_stale_temp_files(&self) -> Result<usize, StorageError> {
        BlobStore::remove_stale_temp_files(&self.inner).await
    }
    async fn sha256(&self, key: &ObjectKey) -> Result<Option<(u64, [u8; 32])>, StorageError> {
        let result = BlobStore::sha256(&self.inner, key).await;
        self.hooks.after_sha256().await;
        result
    }
}
