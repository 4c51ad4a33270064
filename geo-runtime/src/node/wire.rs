//! The wire format the primary's server and the secondary's client share: headers, error codes,
//! limits, and the frames of a batch response (written by [`write_frame`], read by
//! [`FrameReader`]).

use serde::{Deserialize, Serialize};

use crate::events::Event;

/// Response header: the object's SHA-256 (hex) when the primary has a verified checksum.
pub const HEADER_SHA256: &str = "x-geo-sha256";
/// Response header: the object's key on the primary.
pub const HEADER_OBJECT_KEY: &str = "x-geo-object-key";
/// `geo_code` of a 404 whose record exists but whose object does not.
pub const FILE_NOT_FOUND: &str = "FILE_NOT_FOUND";
/// `geo_code` of a refusal whose token verifies but is outside its validity window.
pub(crate) const AUTH_CLOCK_SKEW: &str = "AUTH_CLOCK_SKEW";
/// `geo_code` of a refusal of a registered but disabled node.
pub(crate) const NODE_DISABLED: &str = "NODE_DISABLED";
/// `geo_code` of any other authentication failure (unknown access key, bad signature, …).
pub(crate) const AUTH_FAILED: &str = "AUTH_FAILED";

pub(crate) use crate::strategy::blob::{BATCH_INLINE_MAX, MAX_BATCH};

/// The content type of a batch response.
pub(crate) const BATCH_CONTENT_TYPE: &str = "application/vnd.geo-objects";

/// The header of one object in a batch response: one line of JSON, followed by `size` bytes of
/// the object when the status is [`FrameStatus::Ok`]. Frames come in the order of the request's
/// ids, one per id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ObjectFrame {
    /// The model record.
    pub(crate) id: i64,
    /// What follows.
    pub(crate) status: FrameStatus,
    /// The object's key on the primary (`ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<String>,
    /// The object's size (`ok` and `separately`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) size: Option<u64>,
    /// Hex SHA-256, when the primary has verified the object (`ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sha256: Option<String>,
}

/// The outcome of one object in a batch response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FrameStatus {
    /// The object's bytes follow.
    Ok,
    /// There is no such record on the primary.
    RecordMissing,
    /// The record exists but its object does not (`FILE_NOT_FOUND`).
    FileMissing,
    /// The object is larger than [`BATCH_INLINE_MAX`]: fetch it on its own.
    Separately,
    /// The primary could not read the object (it logged why).
    Error,
}

/// Appends `frame`, and the object's bytes when it has them, to a batch response body.
pub(crate) fn write_frame(out: &mut Vec<u8>, frame: &ObjectFrame, data: Option<&[u8]>) {
    // Serialising a struct of strings and numbers cannot fail.
    let _ = serde_json::to_writer(&mut *out, frame);
    out.push(b'\n');
    if let Some(bytes) = data {
        out.extend_from_slice(bytes);
    }
}

/// Longest frame header accepted in a batch response.
const MAX_FRAME_HEADER: usize = 4096;

/// Reads the frames of a batch response as they arrive.
pub(crate) struct FrameReader {
    body: futures_util::stream::BoxStream<'static, Result<bytes::Bytes, String>>,
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
    /// Reads the body `body`.
    pub(crate) fn new(
        body: impl futures_util::Stream<Item = Result<bytes::Bytes, String>> + Send + 'static,
    ) -> Self {
        use futures_util::StreamExt;
        FrameReader {
            body: body.boxed(),
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
            Some(Err(e)) => Err(e),
            None => Ok(false),
        }
    }

    /// The next frame and, for an `ok` frame, the object's bytes; `None` at the end of the
    /// body. A malformed frame, an inline object larger than [`BATCH_INLINE_MAX`], or a body
    /// that ends inside a frame is an error (the rest of the response is unusable).
    pub(crate) async fn next(&mut self) -> Result<Option<(ObjectFrame, bytes::Bytes)>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(body: Vec<u8>) -> FrameReader {
        FrameReader::new(futures_util::stream::iter([Ok(bytes::Bytes::from(body))]))
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

// The JSON bodies of the routes (`nodes.md` lists them).

/// Largest page of events or ids served at once.
pub(crate) const MAX_PAGE: usize = 10_000;

/// A page of events.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct EventsPage {
    /// The events, in id order.
    pub(crate) events: Vec<Event>,
    /// The highest event id in the log.
    pub(crate) latest_id: i64,
    /// When that event was written (absent from an older primary, or with an empty log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) latest_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A page of model ids.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct IdsPage {
    /// Ascending ids.
    pub(crate) ids: Vec<i64>,
    /// With `digest=true`: the hex of the page's
    /// [`versions_digest`](crate::replicator::versions_digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) digest: Option<String>,
    /// With `digest=true`: the ids of the page whose checksum is not verified yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) unverified: Vec<i64>,
    /// With `versions=true`: each id's `[key, hex SHA-256]` (null when unknown), in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) versions: Option<Vec<(Option<String>, Option<String>)>>,
}

/// How far a secondary has read.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CursorReport {
    /// Every event at or below this id has been applied.
    pub(crate) last_event_id: i64,
}

/// The primary's verified checksums of some records.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ChecksumsPage {
    /// `(id, hex SHA-256 or null)` for each requested record that exists.
    pub(crate) checksums: Vec<(i64, Option<String>)>,
}
