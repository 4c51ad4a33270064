//! A blob's checksum where it is stored: the SHA-256 of the file or object its key names, read
//! in constant memory. The primary's verification hashes its objects with it, a secondary's its
//! copies, and `geo check` the copies it compares.

use super::super::Checksummed;
use crate::storage::{BlobStore, ObjectKey};

/// The SHA-256 of the object at `key` in `store`.
pub(crate) async fn checksum<S: BlobStore>(store: &S, key: &str) -> Checksummed {
    let key = match ObjectKey::parse(key) {
        Ok(k) => k,
        Err(e) => return Checksummed::Unreadable(e.to_string()),
    };
    match store.sha256(&key).await {
        Ok(Some((_, sum))) => Checksummed::Sum(sum),
        Ok(None) => Checksummed::Missing,
        Err(e) => Checksummed::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::storage::LocalStore;

    #[tokio::test]
    async fn a_stored_blob_a_missing_one_and_an_unsafe_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("widgets")).expect("mkdir");
        std::fs::write(dir.path().join("widgets/1"), b"hello").expect("write");
        let store = LocalStore::new(dir.path());
        let want: [u8; 32] = Sha256::digest(b"hello").into();
        assert_eq!(checksum(&store, "widgets/1").await, Checksummed::Sum(want));
        assert_eq!(checksum(&store, "widgets/2").await, Checksummed::Missing);
        assert!(matches!(
            checksum(&store, "../etc/passwd").await,
            Checksummed::Unreadable(_)
        ));
    }
}
