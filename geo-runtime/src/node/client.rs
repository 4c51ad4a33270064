//! The secondary's client of the primary's API: signs every request, follows redirects only
//! within the primary's origin (so the authorization header never leaves it), and fails a
//! transfer that stalls longer than the idle-read timeout.

use chrono::{DateTime, Utc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::AUTHORIZATION;
use reqwest::{StatusCode, Url};

use super::auth::{RequestScope, Secret, authorization};
use super::wire::{
    AUTH_CLOCK_SKEW, AUTH_FAILED, FILE_NOT_FOUND, FrameReader, FrameStatus, HEADER_OBJECT_KEY,
    HEADER_SHA256, NODE_DISABLED,
};
use super::wire::{ChecksumsPage, CursorReport, EventsPage, IdsPage, MAX_PAGE};
use crate::events::{Event, EventSource, Refusal, SourceError};
use crate::events::{ListedVersions, Listing, ModelIdSource};
use crate::replicator::{RecordVersion, ReplicatorDescriptor};
use crate::storage::{ObjectKey, parse_sha256};
use crate::strategy::blob::{
    Answer, BlobSource, Frame, FrameSource, Incoming, PrimaryChecksum, Retrieved, RetrievedMany,
};
use futures_util::{StreamExt, TryStreamExt};

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The primary's URL is not an http(s) URL.
    #[error("invalid primary URL: {0}")]
    Url(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// A client of one primary, with this secondary's credentials.
#[derive(Clone)]
pub struct PrimaryClient {
    base: Url,
    access_key: String,
    secret: Secret,
    http: reqwest::Client,
}

impl std::fmt::Debug for PrimaryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrimaryClient")
            .field("base", &self.base.as_str())
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl PrimaryClient {
    /// A client of the primary at `base_url` (`http://host:port`), failing a transfer that
    /// receives nothing for `idle_timeout`.
    pub fn new(
        base_url: &str,
        access_key: &str,
        secret: Secret,
        idle_timeout: Duration,
    ) -> Result<Self, ClientError> {
        let base = Url::parse(base_url).map_err(|e| ClientError::Url(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            return Err(ClientError::Url(format!(
                "{base_url}: expected http(s)://host[:port]"
            )));
        }
        let origin = base.origin();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(idle_timeout)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(64)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.url().origin() == origin && attempt.previous().len() < 5 {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(PrimaryClient {
            base,
            access_key: access_key.to_owned(),
            secret,
            http,
        })
    }

    fn url(&self, path: &str) -> Result<Url, SourceError> {
        self.base
            .join(path)
            .map_err(|e| SourceError::Transport(e.to_string()))
    }

    fn auth(&self, scope: &RequestScope) -> String {
        authorization(&self.access_key, &self.secret, scope, unix_now())
    }

    /// `GET url`, signed for `scope`; the caller checks the status.
    async fn get(&self, url: Url, scope: &RequestScope) -> Result<reqwest::Response, SourceError> {
        self.http
            .get(url)
            .header(AUTHORIZATION, self.auth(scope))
            .send()
            .await
            .map_err(transport)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: Url,
        scope: &RequestScope,
    ) -> Result<T, SourceError> {
        let response = self.get(url, scope).await?;
        if !response.status().is_success() {
            return Err(refused(response).await);
        }
        response.json().await.map_err(transport)
    }

    /// `POST /geo/v1/cursor`: tells the primary every event up to `last_event_id` was applied.
    pub async fn report_cursor(&self, last_event_id: i64) -> Result<(), SourceError> {
        let url = self.url("/geo/v1/cursor")?;
        let response = self
            .http
            .post(url)
            .header(AUTHORIZATION, self.auth(&RequestScope::Status))
            .json(&CursorReport { last_event_id })
            .send()
            .await
            .map_err(transport)?;
        if response.status() != StatusCode::NO_CONTENT {
            return Err(refused(response).await);
        }
        Ok(())
    }

    async fn events_page(&self, query: &[(&str, String)]) -> Result<EventsPage, SourceError> {
        let mut url = self.url("/geo/v1/events")?;
        url.query_pairs_mut()
            .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        self.get_json(url, &RequestScope::Events).await
    }
}

impl BlobSource for PrimaryClient {
    type Body = futures_util::stream::BoxStream<'static, Result<bytes::Bytes, String>>;
    type Frames = TypedFrames;

    /// `GET /geo/v1/retrieve/<name>/<id>`.
    async fn retrieve(&self, replicable: &str, id: i64) -> Result<Retrieved<Self::Body>, String> {
        let url = self
            .url(&format!("/geo/v1/retrieve/{replicable}/{id}"))
            .map_err(|e| e.to_string())?;
        let scope = RequestScope::Retrieve {
            replicable_name: replicable.to_owned(),
            replicable_id: id,
        };
        let response = self.get(url, &scope).await.map_err(|e| e.to_string())?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let code = body.get("geo_code").and_then(|c| c.as_str());
            return Ok(if code == Some(FILE_NOT_FOUND) {
                Retrieved::FileMissing
            } else {
                Retrieved::RecordMissing
            });
        }
        if !status.is_success() {
            return Ok(Retrieved::Status(status.as_u16()));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (key, sha256) = match object_meta(
            header(HEADER_OBJECT_KEY).as_deref(),
            header(HEADER_SHA256).as_deref(),
        ) {
            Ok(meta) => meta,
            Err(e) => return Ok(Retrieved::Malformed(e)),
        };
        let size = response.content_length();
        let body = response.bytes_stream().map_err(|e| e.to_string()).boxed();
        Ok(Retrieved::Object(Incoming {
            key,
            sha256,
            size,
            body,
        }))
    }

    /// `GET /geo/v1/retrieve/<name>?ids=…`.
    async fn retrieve_many(
        &self,
        replicable: &str,
        ids: &[i64],
    ) -> Result<RetrievedMany<TypedFrames>, String> {
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        let mut url = self
            .url(&format!("/geo/v1/retrieve/{replicable}"))
            .map_err(|e| e.to_string())?;
        url.query_pairs_mut().append_pair("ids", &list);
        let response = self
            .get(url, &RequestScope::retrieve_many(replicable, &list))
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if !status.is_success() {
            return Ok(RetrievedMany::Status(status.as_u16()));
        }
        let body = response.bytes_stream().map_err(|e| e.to_string());
        Ok(RetrievedMany::Frames(TypedFrames(FrameReader::new(body))))
    }

    async fn primary_checksums(
        &self,
        replicable: &str,
        ids: &[i64],
    ) -> Result<Vec<PrimaryChecksum>, SourceError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let mut url = self.url(&format!("/geo/v1/checksums/{replicable}"))?;
            let list = chunk
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            url.query_pairs_mut().append_pair("ids", &list);
            let scope = RequestScope::Replicables {
                replicable_name: replicable.to_owned(),
            };
            let page: ChecksumsPage = self.get_json(url, &scope).await?;
            out.extend(
                page.checksums
                    .into_iter()
                    .map(|(id, hex)| (id, hex.as_deref().and_then(parse_sha256))),
            );
        }
        Ok(out)
    }
}

/// The frames of a batch answer, typed: keys and checksums parsed and checked.
#[derive(Debug)]
pub struct TypedFrames(FrameReader);

impl FrameSource for TypedFrames {
    async fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        let Some((frame, data)) = self.0.next().await? else {
            return Ok(None);
        };
        let answer = match frame.status {
            FrameStatus::Ok => match object_meta(frame.key.as_deref(), frame.sha256.as_deref()) {
                Ok((key, sha256)) => Answer::Object { key, sha256, data },
                Err(e) => Answer::Malformed(e),
            },
            FrameStatus::Separately => Answer::Separately { size: frame.size },
            FrameStatus::FileMissing => Answer::FileMissing,
            FrameStatus::RecordMissing => Answer::RecordMissing,
            FrameStatus::Error => Answer::Error,
        };
        Ok(Some(Frame {
            id: frame.id,
            answer,
        }))
    }
}

/// The object key and checksum the primary sent (a header or a frame), checked.
fn object_meta(
    key: Option<&str>,
    sha256: Option<&str>,
) -> Result<(ObjectKey, Option<[u8; 32]>), String> {
    let key = key.ok_or("the primary sent no object key")?;
    let key = ObjectKey::parse(key).map_err(|e| e.to_string())?;
    let sha256 = sha256
        .map(|h| parse_sha256(h).ok_or("the primary sent a malformed checksum"))
        .transpose()?;
    Ok((key, sha256))
}

/// A transport failure with its causes (`connection refused`, a timeout) after reqwest's
/// message, which names the URL (host and port), never a header.
fn transport(e: reqwest::Error) -> SourceError {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    SourceError::Transport(text)
}

/// A non-success answer as a [`SourceError::Refused`], classified from the primary's
/// `geo_code` (or, when there is none, from what answered: a `Bearer` challenge is an admin
/// endpoint, a bare 404 another service).
async fn refused(response: reqwest::Response) -> SourceError {
    let status = response.status();
    let bearer = response
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer"));
    let body: Option<serde_json::Value> = response.json().await.ok();
    let field = |name: &str| {
        body.as_ref()
            .and_then(|b| b.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let message = field("message").unwrap_or_else(|| status.to_string());
    let class = match (field("geo_code").as_deref(), status) {
        (Some(AUTH_CLOCK_SKEW), _) => Refusal::ClockSkew,
        (Some(NODE_DISABLED), _) => Refusal::Disabled,
        (Some(AUTH_FAILED), _) => Refusal::Authentication,
        (None, StatusCode::UNAUTHORIZED) if bearer => Refusal::WrongEndpoint,
        (None, StatusCode::UNAUTHORIZED) => Refusal::Authentication,
        (None, StatusCode::FORBIDDEN) => Refusal::Disabled,
        (None, StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED) if body.is_none() => {
            Refusal::WrongEndpoint
        }
        _ => Refusal::Other,
    };
    SourceError::Refused {
        class,
        status: status.as_u16(),
        message,
    }
}

impl EventSource for PrimaryClient {
    async fn events_after(&self, after: i64, limit: usize) -> Result<Vec<Event>, SourceError> {
        Ok(self
            .events_page(&[("after", after.to_string()), ("limit", limit.to_string())])
            .await?
            .events)
    }

    async fn events_by_ids(&self, ids: &[i64]) -> Result<Vec<Event>, SourceError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for chunk in ids.chunks(1000) {
            let list = chunk
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            out.extend(self.events_page(&[("ids", list)]).await?.events);
        }
        Ok(out)
    }

    async fn latest_event_id(&self) -> Result<i64, SourceError> {
        Ok(self.latest_event().await?.0)
    }

    async fn latest_event(&self) -> Result<(i64, Option<DateTime<Utc>>), SourceError> {
        let page = self
            .events_page(&[("after", i64::MAX.to_string()), ("limit", "1".into())])
            .await?;
        Ok((page.latest_id, page.latest_at))
    }
}

impl PrimaryClient {
    /// A page of `GET /geo/v1/replicables/<name>` with `query`.
    async fn ids_page(
        &self,
        descriptor: &'static ReplicatorDescriptor,
        query: &[(&str, String)],
    ) -> Result<IdsPage, SourceError> {
        let mut url = self.url(&format!(
            "/geo/v1/replicables/{}",
            descriptor.replicable_name
        ))?;
        url.query_pairs_mut().extend_pairs(query);
        let scope = RequestScope::Replicables {
            replicable_name: descriptor.replicable_name.to_owned(),
        };
        self.get_json(url, &scope).await
    }
}

/// A hex SHA-256 from the primary, checked.
fn primary_sha256(hex: &str, what: &str) -> Result<[u8; 32], SourceError> {
    parse_sha256(hex)
        .ok_or_else(|| SourceError::Protocol(format!("the primary sent a malformed {what}")))
}

impl ModelIdSource for PrimaryClient {
    async fn model_ids_after(
        &self,
        descriptor: &'static ReplicatorDescriptor,
        after: i64,
        limit: usize,
    ) -> Result<Vec<i64>, SourceError> {
        let query = [
            ("after_id", after.to_string()),
            ("limit", limit.to_string()),
        ];
        Ok(self.ids_page(descriptor, &query).await?.ids)
    }

    async fn listing(
        &self,
        descriptor: &'static ReplicatorDescriptor,
        after: i64,
        limit: usize,
    ) -> Result<Listing, SourceError> {
        let query = [
            ("after_id", after.to_string()),
            ("limit", limit.to_string()),
            ("digest", "true".to_owned()),
        ];
        let page = self.ids_page(descriptor, &query).await?;
        // A primary from before digests answers ids only: the pass then compares ids only.
        let versions = match page.digest.as_deref() {
            None => None,
            Some(hex) => Some(ListedVersions {
                digest: primary_sha256(hex, "listing digest")?,
                unverified: page.unverified,
            }),
        };
        Ok(Listing {
            ids: page.ids,
            versions,
        })
    }

    async fn versions_between(
        &self,
        descriptor: &'static ReplicatorDescriptor,
        after: i64,
        until: i64,
    ) -> Result<Vec<RecordVersion>, SourceError> {
        let mut out = Vec::new();
        let mut after = after;
        loop {
            let query = [
                ("after_id", after.to_string()),
                ("until_id", until.to_string()),
                ("versions", "true".to_owned()),
            ];
            let page = self.ids_page(descriptor, &query).await?;
            let versions = page.versions.unwrap_or_default();
            if versions.len() != page.ids.len() {
                return Err(SourceError::Protocol(
                    "the primary sent versions that do not match its ids".into(),
                ));
            }
            let full = page.ids.len() >= MAX_PAGE;
            for (id, (key, sha)) in page.ids.into_iter().zip(versions) {
                after = id;
                out.push(RecordVersion {
                    id,
                    key,
                    sha256: sha.map(|h| primary_sha256(&h, "checksum")).transpose()?,
                });
            }
            if !full {
                return Ok(out);
            }
        }
    }
}
