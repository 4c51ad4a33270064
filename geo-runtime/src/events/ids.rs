//! What the primary holds for a replicable, as the consistency pass and `geo check` read it:
//! its model ids, page by page, and each record's version (object key and verified checksum).
//! Beside [`EventSource`](super::EventSource): fed by the primary's database in process, or by
//! the node API over HTTP.

use std::future::Future;

use super::SourceError;
use crate::db::Database;
use crate::descriptor::ReplicatorDescriptor;
use crate::model::{RecordVersion, model_ids_after, model_versions, versions_digest};

/// A page of the primary's ids, with the digest of their versions when the source has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Ascending ids.
    pub ids: Vec<i64>,
    /// The digest of the page's versions ([`versions_digest`]), and the ids among them whose
    /// checksum the primary has not verified yet (hashed without one).
    pub versions: Option<ListedVersions>,
}

/// See [`Listing::versions`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListedVersions {
    /// [`versions_digest`] of the page.
    pub digest: [u8; 32],
    /// Ids of the page without a verified checksum, ascending.
    pub unverified: Vec<i64>,
}

impl ListedVersions {
    /// The digest and unverified ids of `versions`.
    pub fn of(versions: &[RecordVersion]) -> Self {
        ListedVersions {
            digest: versions_digest(
                versions
                    .iter()
                    .map(|v| (v.id, v.key.as_deref(), v.sha256.as_ref())),
            ),
            unverified: versions
                .iter()
                .filter(|v| v.sha256.is_none())
                .map(|v| v.id)
                .collect(),
        }
    }
}

/// The model ids the primary has for a replicable, and what each record holds now.
pub trait ModelIdSource: Send + Sync {
    /// Up to `limit` ids above `after`, ascending.
    fn model_ids_after(
        &self,
        descriptor: &'static ReplicatorDescriptor,
        after: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<i64>, SourceError>> + Send;

    /// Up to `limit` ids above `after` with the digest of their versions. The default has no
    /// digest: the pass then compares ids only.
    fn listing(
        &self,
        descriptor: &'static ReplicatorDescriptor,
        after: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Listing, SourceError>> + Send {
        async move {
            Ok(Listing {
                ids: self.model_ids_after(descriptor, after, limit).await?,
                versions: None,
            })
        }
    }

    /// The versions of the records with ids in `(after, until]`, ascending (asked for only when
    /// a page's digest differs from the secondary's).
    fn versions_between(
        &self,
        descriptor: &'static ReplicatorDescriptor,
        after: i64,
        until: i64,
    ) -> impl Future<Output = Result<Vec<RecordVersion>, SourceError>> + Send {
        let _ = (descriptor, after, until);
        async { Ok(Vec::new()) }
    }
}

/// Reads model ids from the primary's database (an in-process primary; the node API serves the
/// same over HTTP).
#[derive(Debug, Clone)]
pub struct DbModelIdSource {
    primary: Database,
}

impl DbModelIdSource {
    /// A source over the primary's database.
    pub fn new(primary: &Database) -> Self {
        DbModelIdSource {
            primary: primary.clone(),
        }
    }
}

impl ModelIdSource for DbModelIdSource {
    async fn model_ids_after(
        &self,
        descriptor: &'static ReplicatorDescriptor,
        after: i64,
        limit: usize,
    ) -> Result<Vec<i64>, SourceError> {
        Ok(model_ids_after(&self.primary, descriptor, after, limit).await?)
    }

    async fn listing(
        &self,
        descriptor: &'static ReplicatorDescriptor,
        after: i64,
        limit: usize,
    ) -> Result<Listing, SourceError> {
        let versions = model_versions(&self.primary, descriptor, after, None, limit).await?;
        Ok(Listing {
            ids: versions.iter().map(|v| v.id).collect(),
            versions: Some(ListedVersions::of(&versions)),
        })
    }

    async fn versions_between(
        &self,
        descriptor: &'static ReplicatorDescriptor,
        after: i64,
        until: i64,
    ) -> Result<Vec<RecordVersion>, SourceError> {
        Ok(model_versions(&self.primary, descriptor, after, Some(until), usize::MAX).await?)
    }
}
