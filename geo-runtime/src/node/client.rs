//! The secondary's client of the primary's API: signs every request, follows redirects only
//! within the primary's origin (so the authorization header never leaves it), and fails a
//! transfer that stalls longer than the idle-read timeout.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::AUTHORIZATION;
use reqwest::{StatusCode, Url};

use super::auth::{RequestScope, Secret, authorization};
use super::server::{
    BATCH_INLINE_MAX, ChecksumsPage, CursorReport, EventsPage, FrameStatus, IdsPage, MAX_PAGE,
    ObjectFrame,
};
use crate::events::{Event, EventSource, SourceError};
use crate::events::{ListedVersions, Listing, ModelIdSource};
use crate::replicator::{RecordVersion, ReplicatorDescriptor};
use crate::storage::parse_sha256;

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
        let status = response.status();
        if !status.is_success() {
            return Err(SourceError::Transport(format!("primary answered {status}")));
        }
        response.json().await.map_err(transport)
    }

    /// `GET /geo/v1/retrieve/<name>/<id>`: the response, to stream (the caller checks status).
    pub async fn retrieve(
        &self,
        replicable_name: &str,
        id: i64,
    ) -> Result<reqwest::Response, SourceError> {
        let url = self.url(&format!("/geo/v1/retrieve/{replicable_name}/{id}"))?;
        let scope = RequestScope::Retrieve {
            replicable_name: replicable_name.to_owned(),
            replicable_id: id,
        };
        self.get(url, &scope).await
    }

    /// `GET /geo/v1/retrieve/<name>?ids=…`: several small objects in one response, to read
    /// with [`FrameReader`] (the caller checks the status).
    pub async fn retrieve_many(
        &self,
        replicable_name: &str,
        ids: &[i64],
    ) -> Result<reqwest::Response, SourceError> {
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        let mut url = self.url(&format!("/geo/v1/retrieve/{replicable_name}"))?;
        url.query_pairs_mut().append_pair("ids", &list);
        self.get(url, &RequestScope::retrieve_many(replicable_name, &list))
            .await
    }

    /// The primary's verified checksums of `ids` (`None`: not verified yet); records the primary
    /// no longer has are left out.
    pub async fn primary_checksums(
        &self,
        replicable_name: &str,
        ids: &[i64],
    ) -> Result<Vec<(i64, Option<[u8; 32]>)>, SourceError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let mut url = self.url(&format!("/geo/v1/checksums/{replicable_name}"))?;
            let list = chunk
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            url.query_pairs_mut().append_pair("ids", &list);
            let scope = RequestScope::Replicables {
                replicable_name: replicable_name.to_owned(),
            };
            let page: ChecksumsPage = self.get_json(url, &scope).await?;
            out.extend(
                page.checksums
                    .into_iter()
                    .map(|(id, hex)| (id, hex.as_deref().and_then(crate::storage::parse_sha256))),
            );
        }
        Ok(out)
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
            return Err(SourceError::Transport(format!(
                "primary answered {}",
                response.status()
            )));
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

/// Longest frame header accepted in a batch response.
const MAX_FRAME_HEADER: usize = 4096;

/// Reads the frames of a batch response ([`PrimaryClient::retrieve_many`]) as they arrive.
pub struct FrameReader {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: bytes::BytesMut,
}

impl std::fmt::Debug for FrameReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameReader")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl FrameReader {
    /// Reads `response`'s body.
    pub fn new(response: reqwest::Response) -> Self {
        use futures_util::StreamExt;
        FrameReader {
            body: response.bytes_stream().boxed(),
            buf: bytes::BytesMut::new(),
        }
    }

    /// Reads more of the body; false at its end.
    async fn fill(&mut self) -> Result<bool, String> {
        use futures_util::StreamExt;
        match self.body.next().await {
            Some(Ok(chunk)) => {
                self.buf.extend_from_slice(&chunk);
                Ok(true)
            }
            Some(Err(e)) => Err(e.to_string()),
            None => Ok(false),
        }
    }

    /// The next frame and, for an `ok` frame, the object's bytes; `None` at the end of the
    /// body. A malformed frame, an inline object larger than [`BATCH_INLINE_MAX`], or a body
    /// that ends inside a frame is an error (the rest of the response is unusable).
    pub async fn next(&mut self) -> Result<Option<(ObjectFrame, bytes::Bytes)>, String> {
        let mut searched = 0;
        let line = loop {
            if let Some(at) = self.buf[searched..].iter().position(|&b| b == b'\n') {
                break self.buf.split_to(searched + at + 1);
            }
            searched = self.buf.len();
            if searched > MAX_FRAME_HEADER {
                return Err("malformed batch response: frame header too long".into());
            }
            if !self.fill().await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err("the batch response ended inside a frame".into())
                };
            }
        };
        let frame: ObjectFrame = serde_json::from_slice(&line[..line.len() - 1])
            .map_err(|e| format!("malformed batch response: {e}"))?;
        if frame.status != FrameStatus::Ok {
            return Ok(Some((frame, bytes::Bytes::new())));
        }
        let size = frame
            .size
            .filter(|&s| s <= BATCH_INLINE_MAX)
            .ok_or("malformed batch response: an inline object without a size or too large")?;
        let size = usize::try_from(size).map_err(|e| e.to_string())?;
        while self.buf.len() < size {
            if !self.fill().await? {
                return Err(format!(
                    "the batch response ended inside object {}: {} of {size} bytes",
                    frame.id,
                    self.buf.len()
                ));
            }
        }
        let data = self.buf.split_to(size).freeze();
        Ok(Some((frame, data)))
    }
}

fn transport(e: reqwest::Error) -> SourceError {
    // reqwest's message may contain the URL, never headers.
    SourceError::Transport(e.to_string())
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
        Ok(self
            .events_page(&[("after", i64::MAX.to_string()), ("limit", "1".into())])
            .await?
            .latest_id)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(body: Vec<u8>) -> FrameReader {
        FrameReader::new(reqwest::Response::from(axum::http::Response::new(body)))
    }

    fn frame(line: &str, data: &[u8]) -> Vec<u8> {
        let mut out = line.as_bytes().to_vec();
        out.push(b'\n');
        out.extend_from_slice(data);
        out
    }

    #[tokio::test]
    async fn frames_and_their_objects_are_read_in_order() {
        let mut body = frame(r#"{"id":1,"status":"ok","key":"a/1","size":3}"#, b"abc");
        body.extend(frame(r#"{"id":2,"status":"file_missing"}"#, b""));
        body.extend(frame(r#"{"id":3,"status":"ok","key":"a/3","size":0}"#, b""));
        let mut r = reader(body);
        let (f, data) = r.next().await.expect("frame").expect("some");
        assert_eq!(
            (f.id, f.status, data.as_ref()),
            (1, FrameStatus::Ok, &b"abc"[..])
        );
        let (f, _) = r.next().await.expect("frame").expect("some");
        assert_eq!((f.id, f.status), (2, FrameStatus::FileMissing));
        let (f, data) = r.next().await.expect("frame").expect("some");
        assert_eq!((f.id, data.len()), (3, 0));
        assert!(r.next().await.expect("end").is_none());
    }

    #[tokio::test]
    async fn a_broken_response_is_an_error_not_a_short_object() {
        let cut = frame(r#"{"id":1,"status":"ok","key":"a/1","size":10}"#, b"abc");
        let oversized = frame(
            &format!(
                r#"{{"id":1,"status":"ok","key":"a/1","size":{}}}"#,
                BATCH_INLINE_MAX + 1
            ),
            b"",
        );
        let no_size = frame(r#"{"id":1,"status":"ok","key":"a/1"}"#, b"");
        let endless = vec![b'x'; MAX_FRAME_HEADER + 10];
        let garbage = frame("not json", b"");
        let half_header = br#"{"id":1,"sta"#.to_vec();
        for (what, body, want) in [
            (
                "cut inside an object",
                cut,
                "ended inside object 1: 3 of 10 bytes",
            ),
            (
                "an inline object over the limit",
                oversized,
                "without a size or too large",
            ),
            (
                "an inline object without a size",
                no_size,
                "without a size or too large",
            ),
            ("a header without an end", endless, "frame header too long"),
            (
                "a header that is not JSON",
                garbage,
                "malformed batch response",
            ),
            ("cut inside a header", half_header, "ended inside a frame"),
        ] {
            let e = reader(body).next().await.expect_err(what);
            assert!(e.contains(want), "{what}: {e}");
        }
    }
}
