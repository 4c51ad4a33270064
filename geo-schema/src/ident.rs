//! SQL identifiers: the one rule every table and column name follows (checked by the macro at
//! compile time and by the runtime for hand-written descriptors), and the names of indexes and
//! constraints derived from them.

/// PostgreSQL's limit on identifier length, in bytes.
pub const MAX_IDENT: usize = 63;

/// Why `s` is not a safe SQL identifier (`^[a-z][a-z0-9_]{0,62}$`), or `None` when it is one.
pub fn identifier_problem(s: &str) -> Option<&'static str> {
    let b = s.as_bytes();
    if b.is_empty() {
        Some("it is empty")
    } else if b.len() > MAX_IDENT {
        Some("it is longer than 63 characters, PostgreSQL's limit")
    } else if !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_') {
        Some(
            "only a-z, 0-9 and _ are allowed (names are checked at compile time so they can never inject SQL)",
        )
    } else if b.iter().any(u8::is_ascii_uppercase) {
        Some("it has upper-case letters; use lower case")
    } else if !b[0].is_ascii_lowercase() {
        Some("it must start with a letter a-z")
    } else {
        None
    }
}

/// An index name of at most 63 bytes: `index_<table>_on_<what>`, shortened with a hash of the
/// full name when too long, so PostgreSQL never truncates two names into one.
pub fn index_name(table: &str, what: &str) -> String {
    let full = format!("index_{table}_on_{what}");
    if full.len() <= MAX_IDENT {
        return full;
    }
    // FNV-1a: stable across compilers and platforms, unlike std's hasher.
    let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let keep = MAX_IDENT - 9;
    format!("{}_{:08x}", &full[..keep], hash as u32)
}

/// A constraint name of at most 63 bytes, shortened as [`index_name`] does.
pub fn constraint_name(table: &str, what: &str) -> String {
    index_name(table, what).replacen("index_", "check_", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        assert_eq!(identifier_problem("widget_registry"), None);
        assert_eq!(identifier_problem(&"w".repeat(63)), None);
        for bad in ["", "Widget", "w;drop", "w x", "w\"x", "1w", "_w"] {
            assert!(identifier_problem(bad).is_some(), "{bad:?}");
        }
        assert!(identifier_problem(&"w".repeat(64)).is_some());
    }

    #[test]
    fn index_names_fit_postgres() {
        assert_eq!(
            index_name("widget_registry", "widget_id"),
            "index_widget_registry_on_widget_id"
        );
        let long = "a".repeat(63);
        let a = index_name(&long, "state");
        let b = index_name(&long, "retry_at");
        assert!(a.len() <= 63 && b.len() <= 63);
        assert_ne!(a, b, "shortened names must stay distinct");
    }
}
