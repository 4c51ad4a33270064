//! The columns geo-dsl adds: a secondary's registry (after its `id` and the model foreign key)
//! and the primary's verification state (in the model table or a `<name>_states` table). Each
//! column is declared once here, with its SQL type per dialect, its Rust type and its meaning;
//! the macro renders the migrations and the registry type from these lists, the runtime its
//! statements, its row decoding and its GraphQL fields.

use crate::Dialect;
use crate::state;

/// What a column holds, which decides its SQL type in each dialect and its Rust type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// A sync state number, never null (pending by default).
    SyncState,
    /// A verification state number, never null (pending by default).
    VerificationState,
    /// A count (failures in a row), never null, 0 by default.
    Count,
    /// An attempt number, never null, 0 by default.
    Attempt,
    /// A point in time, or null.
    Time,
    /// When the row was created, never null, now by default.
    CreatedAt,
    /// Text, or null.
    Text,
    /// A failure message of at most 255 characters (Geo's `varchar(255)`), or null.
    Failure,
    /// Bytes (a checksum), or null.
    Bytes,
    /// A flag, false by default.
    Flag,
}

/// The Rust type a column is read into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RustType {
    /// The runtime's `SyncState`.
    SyncState,
    /// The runtime's `VerificationState`.
    VerificationState,
    /// `i32`.
    I32,
    /// `i64`.
    I64,
    /// `Option<DateTime<Utc>>`.
    OptionalTimestamp,
    /// `DateTime<Utc>`.
    Timestamp,
    /// `Option<String>`.
    OptionalString,
    /// `Option<Vec<u8>>`.
    OptionalBytes,
    /// `bool`.
    Bool,
}

impl ColumnType {
    /// The column's definition after its name in a `CREATE TABLE` (or `ADD COLUMN`) of
    /// `dialect`; `column` is its name, which a `CHECK` names.
    pub fn definition(self, dialect: Dialect, column: &str) -> String {
        let state = |max: i16| {
            format!(
                "{} NOT NULL DEFAULT 0 CHECK (\"{column}\" BETWEEN 0 AND {max})",
                dialect.small_int()
            )
        };
        match self {
            ColumnType::SyncState => state(state::sync::MAX),
            ColumnType::VerificationState => state(state::verification::MAX),
            ColumnType::Count => "INTEGER NOT NULL DEFAULT 0".to_owned(),
            ColumnType::Attempt => format!("{} NOT NULL DEFAULT 0", dialect.big_int()),
            ColumnType::Time => dialect.timestamp().to_owned(),
            ColumnType::CreatedAt => {
                format!("{} NOT NULL DEFAULT {}", dialect.timestamp(), dialect.now())
            }
            ColumnType::Text => dialect.text().to_owned(),
            ColumnType::Failure => dialect.text_255(column),
            ColumnType::Bytes => dialect.bytes().to_owned(),
            ColumnType::Flag => dialect.boolean_not_null_false(column),
        }
    }

    /// The Rust type the column is read into.
    pub const fn rust(self) -> RustType {
        match self {
            ColumnType::SyncState => RustType::SyncState,
            ColumnType::VerificationState => RustType::VerificationState,
            ColumnType::Count => RustType::I32,
            ColumnType::Attempt => RustType::I64,
            ColumnType::Time => RustType::OptionalTimestamp,
            ColumnType::CreatedAt => RustType::Timestamp,
            ColumnType::Text | ColumnType::Failure => RustType::OptionalString,
            ColumnType::Bytes => RustType::OptionalBytes,
            ColumnType::Flag => RustType::Bool,
        }
    }
}

/// One column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Column {
    /// Its name.
    pub name: &'static str,
    /// What it holds.
    pub ty: ColumnType,
    /// What it means (the generated field's documentation).
    pub doc: &'static str,
    /// Whether the GraphQL API shows it (the attempt number is internal).
    pub in_graphql: bool,
}

const fn column(name: &'static str, ty: ColumnType, doc: &'static str) -> Column {
    Column {
        name,
        ty,
        doc,
        in_graphql: true,
    }
}

const VERIFICATION_STATE: Column = column(
    "verification_state",
    ColumnType::VerificationState,
    "Verification state.",
);
const VERIFICATION_STARTED_AT: Column = column(
    "verification_started_at",
    ColumnType::Time,
    "When the running verification started.",
);
const VERIFIED_AT: Column = column(
    "verified_at",
    ColumnType::Time,
    "When it was last verified.",
);
const VERIFICATION_RETRY_AT: Column = column(
    "verification_retry_at",
    ColumnType::Time,
    "Earliest time of the next verification after a failure.",
);
const VERIFICATION_RETRY_COUNT: Column = column(
    "verification_retry_count",
    ColumnType::Count,
    "Consecutive failed verifications.",
);
const VERIFICATION_CHECKSUM: Column =
    column("verification_checksum", ColumnType::Bytes, "Its SHA-256.");
const VERIFICATION_FAILURE: Column = column(
    "verification_failure",
    ColumnType::Failure,
    "Why the latest verification failed (at most 255 characters).",
);

/// A secondary's registry columns after `id` and the model foreign key, in table order (the
/// order the generated migration creates them and the runtime selects them).
pub const REGISTRY_COLUMNS: [Column; 17] = [
    column("state", ColumnType::SyncState, "Sync state."),
    column(
        "retry_count",
        ColumnType::Count,
        "Consecutive failed attempts.",
    ),
    column(
        "retry_at",
        ColumnType::Time,
        "Earliest time of the next attempt after a failure.",
    ),
    column(
        "last_synced_at",
        ColumnType::Time,
        "Start of the latest attempt; cleared when the row goes back to pending.",
    ),
    // Numbers each attempt, so that only the attempt that started a sync can finish it.
    Column {
        in_graphql: false,
        ..column(
            "sync_attempt",
            ColumnType::Attempt,
            "Number of the latest attempt; only that attempt may mark the row synced or failed.",
        )
    },
    // Where the synced copy is stored (the primary's object key), so that it can be removed
    // when its model disappears.
    column(
        "object_key",
        ColumnType::Text,
        "The object key of the synced copy.",
    ),
    column(
        "last_sync_failure",
        ColumnType::Failure,
        "Why the latest attempt failed (at most 255 characters).",
    ),
    column(
        "created_at",
        ColumnType::CreatedAt,
        "When the row was created.",
    ),
    Column {
        doc: "Verification state of the local copy.",
        ..VERIFICATION_STATE
    },
    VERIFICATION_STARTED_AT,
    Column {
        doc: "When the local copy was last verified.",
        ..VERIFIED_AT
    },
    VERIFICATION_RETRY_AT,
    VERIFICATION_RETRY_COUNT,
    Column {
        doc: "SHA-256 of the local copy.",
        ..VERIFICATION_CHECKSUM
    },
    column(
        "verification_checksum_mismatched",
        ColumnType::Bytes,
        "The checksum that did not match.",
    ),
    column(
        "checksum_mismatch",
        ColumnType::Flag,
        "Whether the last verification found a mismatch.",
    ),
    VERIFICATION_FAILURE,
];

/// The primary's verification columns, in table order (in `<name>_states` after the model
/// foreign key, or added to the model table).
pub const VERIFICATION_COLUMNS: [Column; 7] = [
    VERIFICATION_STATE,
    VERIFICATION_STARTED_AT,
    VERIFICATION_RETRY_AT,
    VERIFIED_AT,
    VERIFICATION_RETRY_COUNT,
    Column {
        doc: "SHA-256 of the object, as the primary last computed it.",
        ..VERIFICATION_CHECKSUM
    },
    VERIFICATION_FAILURE,
];

/// The names of `columns`, in order (usable in constants).
pub const fn names<const N: usize>(columns: &[Column; N]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = columns[i].name;
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_per_dialect() {
        assert_eq!(
            ColumnType::SyncState.definition(Dialect::Postgres, "state"),
            "SMALLINT NOT NULL DEFAULT 0 CHECK (\"state\" BETWEEN 0 AND 3)"
        );
        assert_eq!(
            ColumnType::Failure.definition(Dialect::Sqlite, "last_sync_failure"),
            "TEXT CHECK (length(\"last_sync_failure\") <= 255)"
        );
        assert_eq!(
            names(&VERIFICATION_COLUMNS)[..2],
            ["verification_state", "verification_started_at"]
        );
    }

    #[test]
    fn every_name_is_an_identifier_and_appears_once() {
        for list in [&REGISTRY_COLUMNS[..], &VERIFICATION_COLUMNS[..]] {
            for (i, c) in list.iter().enumerate() {
                assert_eq!(crate::ident::identifier_problem(c.name), None, "{}", c.name);
                assert!(
                    list[..i].iter().all(|o| o.name != c.name),
                    "{} twice",
                    c.name
                );
            }
        }
    }
}

#[cfg(test)]
mod docs {
    use super::*;

    /// The column names of the first table after `heading` in `text`, in order.
    fn documented(text: &str, heading: &str) -> Vec<String> {
        let section = text
            .split(heading)
            .nth(1)
            .unwrap_or_else(|| panic!("reference.md has no `{heading}`"));
        section
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_reference_lists_every_column_in_order() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/reference.md");
        let text = std::fs::read_to_string(path).expect("read docs/reference.md");
        assert_eq!(
            documented(&text, "## Registry columns"),
            names(&REGISTRY_COLUMNS),
            "docs/reference.md, Registry columns"
        );
        assert_eq!(
            documented(&text, "## Verification columns"),
            names(&VERIFICATION_COLUMNS),
            "docs/reference.md, Verification columns"
        );
    }
}
