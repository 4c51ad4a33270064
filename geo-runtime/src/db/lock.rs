//! Transaction-scoped locks on object keys. Putting a copy in place (the sync's publish),
//! removing one (the removal worker) and deleting a file no row uses (`geo check
//! --delete-extra`) each decide from the registry and then act on the store; holding the key's
//! lock from the decision to the commit means two of them never interleave on one key, so no
//! file is removed under a copy that was just recorded, and no stale copy lands after a removal.
//!
//! PostgreSQL: `pg_advisory_xact_lock` on a 32-bit hash of each key (a collision only makes two
//! keys wait for each other), taken in hash order so that two transactions never wait for each
//! other in a cycle; released by the commit or rollback. SQLite: nothing to take, since a write
//! transaction (`BEGIN IMMEDIATE`) already holds the database's single writer lock.

use super::Conn;
use crate::error::DbError;

/// The advisory lock class of object keys ("geok"), so that the application's own advisory
/// locks on the same database never collide with ours.
const KEY_LOCK_CLASS: i32 = 0x6765_6f6b;

/// FNV-1a, folded to 32 bits: stable across builds and processes, unlike std's hasher.
fn key_hash(key: &str) -> i32 {
    let h = key.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    i32::from_ne_bytes(h.to_ne_bytes())
}

/// Locks `keys` until the end of the transaction `conn` is in.
pub(crate) async fn lock_object_keys<'k>(
    conn: Conn<'_>,
    keys: impl IntoIterator<Item = &'k str>,
) -> Result<(), DbError> {
    let Conn::Postgres(c) = conn else {
        return Ok(());
    };
    let mut hashes: Vec<i32> = keys.into_iter().map(key_hash).collect();
    if hashes.is_empty() {
        return Ok(());
    }
    hashes.sort_unstable();
    hashes.dedup();
    // One statement: the locks are taken in array order (the function scan's order).
    sqlx::query("SELECT count(pg_advisory_xact_lock($1, h)) FROM unnest($2::int4[]) AS t(h)")
        .bind(KEY_LOCK_CLASS)
        .bind(hashes)
        .fetch_one(&mut *c)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::key_hash;

    #[test]
    fn key_hashes_are_stable() {
        // FNV-1a 32 of "a" is 0xe40c292c.
        assert_eq!(
            key_hash("a"),
            i32::from_ne_bytes(0xe40c_292c_u32.to_ne_bytes())
        );
        assert_ne!(key_hash("widgets/1.bin"), key_hash("widgets/2.bin"));
    }
}
