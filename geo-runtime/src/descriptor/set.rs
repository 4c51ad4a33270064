//! Link-time registration of replicators (no hand-kept class list, unlike Geo's
//! `REPLICATOR_CLASSES`), plus an explicit fallback.

use super::{ReplicatorDescriptor, VerificationStorage};
use crate::error::RegistrationError;

/// One replicator submitted at link time by the code `#[replicable]` generates.
#[derive(Debug)]
pub struct RegisteredReplicator {
    descriptor: &'static ReplicatorDescriptor,
}

impl RegisteredReplicator {
    /// Wraps a descriptor; used by generated code.
    pub const fn new(descriptor: &'static ReplicatorDescriptor) -> Self {
        RegisteredReplicator { descriptor }
    }

    /// The replicator's descriptor.
    pub const fn descriptor(&self) -> &'static ReplicatorDescriptor {
        self.descriptor
    }
}

inventory::collect!(RegisteredReplicator);

/// The replicators one runtime works with, validated: names and tables are unique and every
/// identifier is safe in SQL. Sorted by replicable name, so every listing is stable.
#[derive(Debug, Clone, Default)]
pub struct ReplicatorSet {
    descriptors: Vec<&'static ReplicatorDescriptor>,
}

impl ReplicatorSet {
    /// Every replicator linked into this binary. Errors when none is, or when two clash.
    ///
    /// A replicator defined in another crate is linked only if that crate is used; write
    /// `use my_models as _;` in the binary when nothing else names it.
    pub fn linked() -> Result<Self, RegistrationError> {
        // Link order is not defined; sort first so that errors are the same on every build.
        let mut linked: Vec<&'static ReplicatorDescriptor> =
            inventory::iter::<RegisteredReplicator>
                .into_iter()
                .map(|r| r.descriptor)
                .collect();
        linked.sort_by_key(|d| (d.replicable_name, d.replicator_type));
        let mut set = ReplicatorSet::default();
        for descriptor in linked {
            set = set.with_descriptor(descriptor)?;
        }
        if set.descriptors.is_empty() {
            return Err(RegistrationError::Empty);
        }
        Ok(set)
    }

    /// An empty set, to fill with [`ReplicatorSet::register`].
    pub fn empty() -> Self {
        ReplicatorSet::default()
    }

    /// Adds a descriptor (a no-op when an equal one is already in the set).
    pub fn with_descriptor(
        mut self,
        descriptor: &'static ReplicatorDescriptor,
    ) -> Result<Self, RegistrationError> {
        if self.descriptors.contains(&descriptor) {
            return Ok(self);
        }
        validate_identifiers(descriptor)?;
        for existing in &self.descriptors {
            check_clash(existing, descriptor)?;
        }
        let at = self
            .descriptors
            .partition_point(|d| d.replicable_name < descriptor.replicable_name);
        self.descriptors.insert(at, descriptor);
        Ok(self)
    }

    /// The descriptors, sorted by replicable name.
    pub fn descriptors(&self) -> &[&'static ReplicatorDescriptor] {
        &self.descriptors
    }

    /// The descriptor for a replicable name.
    pub fn get(&self, replicable_name: &str) -> Option<&'static ReplicatorDescriptor> {
        self.descriptors
            .iter()
            .find(|d| d.replicable_name == replicable_name)
            .copied()
    }

    /// Number of replicators.
    pub fn len(&self) -> usize {
        self.descriptors.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.descriptors.is_empty()
    }
}

/// The tables a descriptor owns, with what it uses each for. The model table is not owned
/// (the application owns it), but two replicators on one model table would collide on inline
/// verification columns and on events, so it counts too.
fn tables(d: &ReplicatorDescriptor) -> Vec<(&'static str, &'static str)> {
    let mut t = vec![
        (d.registry_table, "registry table"),
        (d.model_table, "model table"),
    ];
    if let VerificationStorage::SeparateTable { table } = d.verification {
        t.push((table, "verification state table"));
    }
    t
}

fn check_clash(
    a: &ReplicatorDescriptor,
    b: &ReplicatorDescriptor,
) -> Result<(), RegistrationError> {
    if a.replicable_name == b.replicable_name {
        return Err(RegistrationError::DuplicateName {
            name: a.replicable_name,
            first: a.replicator_type,
            second: b.replicator_type,
        });
    }
    for (ta, ra) in tables(a) {
        for (tb, rb) in tables(b) {
            if ta == tb {
                return Err(RegistrationError::DuplicateTable {
                    table: ta,
                    first: a.replicator_type,
                    first_role: ra,
                    second: b.replicator_type,
                    second_role: rb,
                });
            }
        }
    }
    Ok(())
}

/// `^[a-z][a-z0-9_]{0,62}$`, the rule the macro enforces at compile time; checked again here
/// because a descriptor can be written by hand.
fn is_sql_identifier(s: &str) -> bool {
    geo_schema::ident::identifier_problem(s).is_none()
}

fn validate_identifiers(d: &ReplicatorDescriptor) -> Result<(), RegistrationError> {
    let mut named: Vec<(&'static str, &'static str)> = vec![
        ("replicable name", d.replicable_name),
        ("model table", d.model_table),
        ("model id column", d.model_id_column),
        ("model foreign key", d.model_foreign_key),
        ("registry table", d.registry_table),
        ("feature flag", d.feature_flag),
    ];
    if let VerificationStorage::SeparateTable { table } = d.verification {
        named.push(("verification state table", table));
    }
    for (what, col) in [
        ("blob column", d.blob_column),
        ("file store column", d.file_store_column),
        ("selective sync column", d.selective_sync_column),
    ] {
        if let Some(c) = col {
            named.push((what, c));
        }
    }
    for (what, value) in named {
        if !is_sql_identifier(value) {
            return Err(RegistrationError::InvalidIdentifier {
                model: d.model_type,
                what,
                value,
            });
        }
    }
    // Versions start at 1 and strictly increase within each role, so "applied" is well defined.
    for (role, migrations) in [
        ("primary", d.primary_migrations),
        ("secondary", d.secondary_migrations),
    ] {
        let mut last = 0;
        for m in migrations {
            if m.version <= last {
                return Err(RegistrationError::MigrationOrder {
                    model: d.model_type,
                    role,
                    version: m.version,
                });
            }
            last = m.version;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_sql_identifier;

    #[test]
    fn identifier_rule() {
        assert!(is_sql_identifier("widget_registry"));
        assert!(is_sql_identifier("a"));
        assert!(is_sql_identifier(&"a".repeat(63)));
        assert!(!is_sql_identifier(&"a".repeat(64)));
        for bad in ["", "Widget", "1abc", "_a", "a-b", "a b", "a;b", "a\"b", "é"] {
            assert!(!is_sql_identifier(bad), "{bad:?} accepted");
        }
    }
}
