//! Paging through a registry: filters, Geo's sort orders and keyset cursors. The GraphQL API
//! reads registries through it (and so will the admin page), so there is one query, not one per
//! caller.
//!
//! A cursor holds the row's id and, for a timestamp order, its sort key; a page is one indexed
//! range scan at any depth, never OFFSET, and pages stay stable while rows change.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::AssertSqlSafe;

use super::sql::row_columns;
use super::{Registry, RegistryRecord, SyncState};
use crate::db::dialect::{IdList, in_id_list, param, quote};
use crate::db::{Dialect, on_pool};
use crate::error::DbError;
use crate::verification::VerificationState;

/// Geo's `RegistrySort`: by id, or by a timestamp then id, each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegistrySort {
    /// By id, ascending (the default).
    #[default]
    IdAsc,
    /// By id, descending.
    IdDesc,
    /// By last sync time (never synced first), then id.
    LastSyncedAtAsc,
    /// By last sync time, newest first, then id.
    LastSyncedAtDesc,
    /// By verification time (never verified first), then id.
    VerifiedAtAsc,
    /// By verification time, newest first, then id.
    VerifiedAtDesc,
}

impl RegistrySort {
    /// Every order.
    pub const ALL: [RegistrySort; 6] = [
        RegistrySort::IdAsc,
        RegistrySort::IdDesc,
        RegistrySort::LastSyncedAtAsc,
        RegistrySort::LastSyncedAtDesc,
        RegistrySort::VerifiedAtAsc,
        RegistrySort::VerifiedAtDesc,
    ];

    /// Geo's name of the order (`ID_ASC`, `LAST_SYNCED_AT_DESC`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            RegistrySort::IdAsc => "ID_ASC",
            RegistrySort::IdDesc => "ID_DESC",
            RegistrySort::LastSyncedAtAsc => "LAST_SYNCED_AT_ASC",
            RegistrySort::LastSyncedAtDesc => "LAST_SYNCED_AT_DESC",
            RegistrySort::VerifiedAtAsc => "VERIFIED_AT_ASC",
            RegistrySort::VerifiedAtDesc => "VERIFIED_AT_DESC",
        }
    }

    /// The order of a name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The timestamp column it sorts on first, if any.
    const fn column(self) -> Option<&'static str> {
        match self {
            RegistrySort::IdAsc | RegistrySort::IdDesc => None,
            RegistrySort::LastSyncedAtAsc | RegistrySort::LastSyncedAtDesc => {
                Some("last_synced_at")
            }
            RegistrySort::VerifiedAtAsc | RegistrySort::VerifiedAtDesc => Some("verified_at"),
        }
    }

    const fn descending(self) -> bool {
        matches!(
            self,
            RegistrySort::IdDesc | RegistrySort::LastSyncedAtDesc | RegistrySort::VerifiedAtDesc
        )
    }

    /// The sort key of a row: microseconds since the epoch, never as the smallest value.
    fn key_of(self, r: &RegistryRecord) -> Option<i64> {
        let t = match self.column()? {
            "last_synced_at" => r.last_synced_at,
            _ => r.verified_at,
        };
        Some(t.map_or(i64::MIN, |t| t.timestamp_micros()))
    }

    /// The same key in SQL, NULL as the smallest value, so (key, id) is a total order both
    /// dialects compute alike.
    fn key_sql(self, dialect: Dialect) -> Option<String> {
        let column = quote(self.column()?);
        Some(match dialect {
            Dialect::Sqlite => format!("COALESCE({column}, {})", i64::MIN),
            Dialect::Postgres => format!(
                "COALESCE(CAST(EXTRACT(EPOCH FROM {column}) * 1000000 AS BIGINT), {})",
                i64::MIN
            ),
        })
    }

    /// The cursor of row `r` in this order.
    pub fn cursor(self, r: &RegistryRecord) -> String {
        URL_SAFE_NO_PAD.encode(match self.key_of(r) {
            Some(k) => format!("registry:{}:{k}", r.id),
            None => format!("registry:{}", r.id),
        })
    }

    /// Reads a cursor of this order.
    pub fn parse_cursor(self, s: &str) -> Result<Cursor, CursorError> {
        let text = URL_SAFE_NO_PAD
            .decode(s)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(CursorError::Invalid)?;
        let mut parts = text
            .strip_prefix("registry:")
            .ok_or(CursorError::Invalid)?
            .split(':');
        let id = parts
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or(CursorError::Invalid)?;
        let key = match (self.column(), parts.next(), parts.next()) {
            (Some(_), Some(k), None) => k.parse().map_err(|_| CursorError::Invalid)?,
            (None, None, None) => 0,
            (_, _, Some(_)) => return Err(CursorError::Invalid),
            _ => return Err(CursorError::OtherOrder),
        };
        Ok(Cursor { id, key })
    }
}

/// A position in a registry: a row's id and its sort key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    id: i64,
    key: i64,
}

/// A cursor that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// Not a cursor of this API.
    #[error("invalid cursor")]
    Invalid,
    /// A cursor of another sort order.
    #[error("the cursor belongs to another sort order")]
    OtherOrder,
}

/// Which rows a page holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryFilter {
    /// Only these registry ids.
    pub ids: Option<Vec<i64>>,
    /// Only rows in this sync state.
    pub sync_state: Option<SyncState>,
    /// Only rows in this verification state.
    pub verification_state: Option<VerificationState>,
    /// Only rows whose object key contains this text (`%` and `_` match themselves).
    pub keyword: Option<String>,
}

/// One page to read: forward from `after` (Relay's `first`/`after`), or backward from it
/// (`last`/`before`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Which rows.
    pub filter: RegistryFilter,
    /// In which order.
    pub sort: RegistrySort,
    /// Rows at most (at least 1).
    pub size: i64,
    /// Read backward from the cursor.
    pub backward: bool,
    /// Start after (forward) or before (backward) this position.
    pub after: Option<Cursor>,
}

/// A page of registry rows, in the requested order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The rows.
    pub records: Vec<RegistryRecord>,
    /// Whether rows follow the page.
    pub has_next: bool,
    /// Whether rows precede the page.
    pub has_previous: bool,
}

/// A value bound to a page's statement.
enum Bind {
    I64(i64),
    I16(i16),
    Text(String),
    Ids(Vec<i64>),
}

/// A page's statement as it is built: conditions and their values.
struct Statement {
    dialect: Dialect,
    filters: Vec<String>,
    binds: Vec<Bind>,
}

impl Statement {
    /// Binds `b`; returns its placeholder.
    fn bind(&mut self, b: Bind) -> String {
        self.binds.push(b);
        param(self.dialect, self.binds.len())
    }

    fn filter(&mut self, f: &RegistryFilter) {
        if let Some(ids) = &f.ids {
            self.binds.push(Bind::Ids(ids.clone()));
            let list = in_id_list(self.dialect, "\"id\"", self.binds.len());
            self.filters.push(list);
        }
        if let Some(s) = f.sync_state {
            let p = self.bind(Bind::I16(s.as_i16()));
            self.filters.push(format!("\"state\" = {p}"));
        }
        if let Some(s) = f.verification_state {
            let p = self.bind(Bind::I16(s.as_i16()));
            self.filters.push(format!("\"verification_state\" = {p}"));
        }
        if let Some(keyword) = &f.keyword {
            let escaped = keyword
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            let p = self.bind(Bind::Text(format!("%{escaped}%")));
            self.filters
                .push(format!("\"object_key\" LIKE {p} ESCAPE '\\'"));
        }
    }

    /// Rows past `after` in the direction read (`cmp`: `<` or `>`).
    fn after(&mut self, after: Cursor, key_sql: Option<&str>, cmp: &str) {
        let id = self.bind(Bind::I64(after.id));
        match key_sql {
            None => self.filters.push(format!("\"id\" {cmp} {id}")),
            Some(key) => {
                let k = self.bind(Bind::I64(after.key));
                self.filters.push(format!(
                    "({key} {cmp} {k} OR ({key} = {k} AND \"id\" {cmp} {id}))"
                ));
            }
        }
    }
}

impl Registry {
    /// One page of this registry's rows.
    pub async fn page(&self, request: &PageRequest) -> Result<Page, DbError> {
        let d = self.descriptor();
        let dialect = self.db.dialect();
        let size = request.size.max(1);
        // A backward page is read in the opposite order, then reversed.
        let descending = request.sort.descending() != request.backward;
        let key_sql = request.sort.key_sql(dialect);
        let mut st = Statement {
            dialect,
            filters: Vec::new(),
            binds: Vec::new(),
        };
        st.filter(&request.filter);
        if let Some(after) = request.after {
            st.after(
                after,
                key_sql.as_deref(),
                if descending { "<" } else { ">" },
            );
        }
        let limit = st.bind(Bind::I64(size + 1));
        let columns = row_columns(d);
        let direction = if descending { "DESC" } else { "ASC" };
        let order = match &key_sql {
            None => format!("\"id\" {direction}"),
            Some(key) => format!("{key} {direction}, \"id\" {direction}"),
        };
        let filters = match st.filters.is_empty() {
            true => String::new(),
            false => format!("WHERE {}", st.filters.join(" AND ")),
        };
        let sql = format!(
            "SELECT {columns} FROM {} {filters} ORDER BY {order} LIMIT {limit}",
            quote(d.registry_table),
        );
        let mut records: Vec<RegistryRecord> = on_pool!(self.db, read, pool => {
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for b in st.binds {
                q = match b {
                    Bind::I64(v) => q.bind(v),
                    Bind::I16(v) => q.bind(v),
                    Bind::Text(v) => q.bind(v),
                    Bind::Ids(v) => q.bind(IdList(v)),
                };
            }
            let rows = q.fetch_all(pool).await?;
            rows.iter()
                .map(|r| RegistryRecord::decode(r, d.model_foreign_key))
                .collect::<Result<Vec<_>, DbError>>()?
        });
        let more = records.len() as i64 > size;
        records.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        if request.backward {
            records.reverse();
        }
        let (has_next, has_previous) = match request.backward {
            true => (request.after.is_some(), more),
            false => (more, request.after.is_some()),
        };
        Ok(Page {
            records,
            has_next,
            has_previous,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: i64, synced_micros: Option<i64>) -> RegistryRecord {
        RegistryRecord {
            id,
            model_record_id: id,
            state: SyncState::Synced,
            retry_count: 0,
            retry_at: None,
            last_synced_at: synced_micros.and_then(chrono::DateTime::from_timestamp_micros),
            sync_attempt: 1,
            object_key: None,
            last_sync_failure: None,
            created_at: chrono::DateTime::UNIX_EPOCH,
            verification_state: VerificationState::Pending,
            verification_started_at: None,
            verified_at: None,
            verification_retry_at: None,
            verification_retry_count: 0,
            verification_checksum: None,
            verification_checksum_mismatched: None,
            checksum_mismatch: false,
            verification_failure: None,
        }
    }

    #[test]
    fn cursors_round_trip_and_belong_to_their_order() {
        let r = record(42, Some(1_700_000_000_000_000));
        for sort in RegistrySort::ALL {
            let c = sort.cursor(&r);
            let parsed = sort.parse_cursor(&c).expect("own cursor");
            assert_eq!(parsed.id, 42, "{sort:?}");
            assert_eq!(RegistrySort::from_name(sort.name()), Some(sort));
        }
        let by_time = RegistrySort::LastSyncedAtAsc.cursor(&r);
        assert_eq!(
            RegistrySort::LastSyncedAtAsc.parse_cursor(&by_time),
            Ok(Cursor {
                id: 42,
                key: 1_700_000_000_000_000
            })
        );
        // Never synced sorts first.
        let never = RegistrySort::LastSyncedAtAsc.cursor(&record(7, None));
        assert_eq!(
            RegistrySort::LastSyncedAtDesc.parse_cursor(&never),
            Ok(Cursor {
                id: 7,
                key: i64::MIN
            })
        );
        assert_eq!(
            RegistrySort::IdAsc.parse_cursor(&by_time),
            Err(CursorError::OtherOrder)
        );
        let by_id = RegistrySort::IdAsc.cursor(&r);
        assert_eq!(
            RegistrySort::VerifiedAtAsc.parse_cursor(&by_id),
            Err(CursorError::OtherOrder)
        );
        for bad in [
            "",
            "!!",
            "cmVnaXN0cnk6",
            "eDox",
            &URL_SAFE_NO_PAD.encode("registry:1:2:3"),
        ] {
            assert_eq!(
                RegistrySort::LastSyncedAtAsc.parse_cursor(bad),
                Err(CursorError::Invalid),
                "{bad}"
            );
        }
    }
}
