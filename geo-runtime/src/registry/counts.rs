//! Counting a registry: one pass over the table with conditional sums (no grouping, so no sort
//! or temporary table), the one implementation behind the status, the metrics and
//! [`Registry::count_by_state`].

use sqlx::AssertSqlSafe;

use super::{Registry, SyncState};
use crate::db::dialect::quote;
use crate::db::on_pool;
use crate::descriptor::ReplicatorDescriptor;
use crate::error::DbError;
use crate::verification::VerificationState;

/// Rows per sync state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Pending rows.
    pub pending: i64,
    /// Started rows.
    pub started: i64,
    /// Synced rows.
    pub synced: i64,
    /// Failed rows.
    pub failed: i64,
}

impl StateCounts {
    /// All rows.
    pub fn total(&self) -> i64 {
        self.pending + self.started + self.synced + self.failed
    }
}

/// Everything Geo's status counts in a registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RegistryCounts {
    /// All rows.
    pub(crate) registry: i64,
    /// Rows per sync state.
    pub(crate) states: StateCounts,
    /// Copies that are, or are to be, verified: synced and not disabled, or failed
    /// verification (such a copy goes back to the sync and counts as failed until it is synced
    /// again, whatever its sync state).
    pub(crate) verification_total: i64,
    /// Synced copies whose verification succeeded.
    pub(crate) verified: i64,
    /// Copies whose verification failed.
    pub(crate) verification_failed: i64,
    /// Copies whose last verification found a mismatch.
    pub(crate) checksum_mismatch: i64,
}

/// The counting statement: `COUNT(*)` then one sum per figure, in [`RegistryCounts`] order.
fn counts_sql(d: &ReplicatorDescriptor) -> String {
    let sum = |cond: String| {
        format!("CAST(COALESCE(SUM(CASE WHEN {cond} THEN 1 ELSE 0 END), 0) AS BIGINT)")
    };
    let state = |s: SyncState| format!("\"state\" = {}", s.as_i16());
    let verification =
        |op: &str, s: VerificationState| format!("\"verification_state\" {op} {}", s.as_i16());
    let synced = state(SyncState::Synced);
    let sums = [
        sum(state(SyncState::Pending)),
        sum(state(SyncState::Started)),
        sum(synced.clone()),
        sum(state(SyncState::Failed)),
        sum(format!(
            "({synced} AND {}) OR {}",
            verification("<>", VerificationState::Disabled),
            verification("=", VerificationState::Failed)
        )),
        sum(format!(
            "{synced} AND {}",
            verification("=", VerificationState::Succeeded)
        )),
        sum(verification("=", VerificationState::Failed)),
        sum("\"checksum_mismatch\"".to_owned()),
    ];
    format!(
        "SELECT COUNT(*), {} FROM {}",
        sums.join(", "),
        quote(d.registry_table)
    )
}

impl Registry {
    /// Geo's counts of this registry, in one pass over the table.
    pub(crate) async fn counts(&self) -> Result<RegistryCounts, DbError> {
        let sql = counts_sql(self.descriptor);
        type Sums = (i64, i64, i64, i64, i64, i64, i64, i64, i64);
        let (registry, pending, started, synced, failed, vtotal, verified, vfailed, mismatched): Sums =
            on_pool!(self.db, read, pool => sqlx::query_as(AssertSqlSafe(sql)).fetch_one(pool).await?);
        Ok(RegistryCounts {
            registry,
            states: StateCounts {
                pending,
                started,
                synced,
                failed,
            },
            verification_total: vtotal,
            verified,
            verification_failed: vfailed,
            checksum_mismatch: mismatched,
        })
    }

    /// Rows per state.
    pub async fn count_by_state(&self) -> Result<StateCounts, DbError> {
        Ok(self.counts().await?.states)
    }
}
