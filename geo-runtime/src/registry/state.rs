//! The sync state machine, with Geo's numeric values and transitions.

use std::fmt;

use geo_schema::state::sync;

/// Sync state of a registry row. The numbers are Geo's and are stored as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(i16)]
pub enum SyncState {
    /// Waiting to be synced (a new row, an event, or a resync).
    Pending = sync::PENDING,
    /// A worker is syncing it.
    Started = sync::STARTED,
    /// The local copy is in place.
    Synced = sync::SYNCED,
    /// The last attempt failed; `retry_at` says when to try again.
    Failed = sync::FAILED,
}

impl SyncState {
    /// All states, in numeric order.
    pub const ALL: [SyncState; 4] = [
        SyncState::Pending,
        SyncState::Started,
        SyncState::Synced,
        SyncState::Failed,
    ];

    /// The stored value.
    pub const fn as_i16(self) -> i16 {
        self as i16
    }

    /// The state for a stored value.
    pub const fn from_i16(value: i16) -> Option<Self> {
        match value {
            sync::PENDING => Some(SyncState::Pending),
            sync::STARTED => Some(SyncState::Started),
            sync::SYNCED => Some(SyncState::Synced),
            sync::FAILED => Some(SyncState::Failed),
            _ => None,
        }
    }

    /// The state for a value read from the `state` column, or why it is none.
    pub(crate) fn stored(value: i16) -> Result<Self, crate::error::DbError> {
        Self::from_i16(value).ok_or(crate::error::DbError::InvalidValue {
            column: "state".into(),
            what: "sync state (0..=3)",
            value: value.to_string(),
        })
    }

    /// Lower-case name, as Geo's `state_name`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SyncState::Pending => "pending",
            SyncState::Started => "started",
            SyncState::Synced => "synced",
            SyncState::Failed => "failed",
        }
    }
}

impl fmt::Display for SyncState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What can happen to a registry row (Geo's state machine events). Each registry statement that
/// changes a row's state performs one of them, and its `WHERE` on the state is rendered from
/// [`SyncEvent::apply`] (see [`SyncEvent::guard`]), so the machine below is the one that runs.
///
/// Two differences from Geo, both narrowing what Geo allows: a row fails only while an attempt
/// runs ([`SyncEvent::Fail`]) or when its synced copy fails verification
/// ([`SyncEvent::FailVerification`]), never from pending or failed; and a claim starts only
/// pending or failed rows, since a synced row goes back to pending first (an `updated` event, a
/// resync, the consistency pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SyncEvent {
    /// Back to pending, from any state (an `updated` event).
    Pending,
    /// A worker claims the row: from pending or failed.
    Start,
    /// The sync succeeded: only from started, and only for the same attempt.
    Synced,
    /// The running attempt failed or timed out: from started only.
    Fail,
    /// The synced copy failed verification: from synced, to failed with the sync backoff.
    FailVerification,
    /// An operator (or the consistency pass) asked to sync again: from synced or failed.
    Resync,
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {event:?} a registry row that is {from}")]
pub struct InvalidTransition {
    /// The row's state.
    pub from: SyncState,
    /// The event refused.
    pub event: SyncEvent,
}

impl SyncEvent {
    /// Every event.
    pub const ALL: [SyncEvent; 6] = [
        SyncEvent::Pending,
        SyncEvent::Start,
        SyncEvent::Synced,
        SyncEvent::Fail,
        SyncEvent::FailVerification,
        SyncEvent::Resync,
    ];

    /// The state after this event, or why it is refused.
    pub const fn apply(self, from: SyncState) -> Result<SyncState, InvalidTransition> {
        use SyncState::*;
        let to = match (self, from) {
            (SyncEvent::Pending, _) => Some(Pending),
            (SyncEvent::Start, Pending | Failed) => Some(Started),
            (SyncEvent::Synced, Started) => Some(Synced),
            (SyncEvent::Fail, Started) => Some(Failed),
            (SyncEvent::FailVerification, Synced) => Some(Failed),
            (SyncEvent::Resync, Synced | Failed) => Some(Pending),
            _ => None,
        };
        match to {
            Some(s) => Ok(s),
            None => Err(InvalidTransition { from, event: self }),
        }
    }

    /// The states this event applies to, in numeric order.
    pub fn from_states(self) -> Vec<SyncState> {
        SyncState::ALL
            .into_iter()
            .filter(|&s| self.apply(s).is_ok())
            .collect()
    }

    /// The SQL condition that `state` (a column or an expression) is one this event applies to:
    /// `"state" = 1` or `"state" IN (2, 3)`.
    pub fn guard(self, state: &str) -> String {
        self.guard_only(state, &SyncState::ALL)
    }

    /// [`SyncEvent::guard`] narrowed to `only` (a statement that performs the event on some of
    /// its states, e.g. the claim of failed rows). States the event does not apply to are left
    /// out: they can never be rendered into a statement.
    pub fn guard_only(self, state: &str, only: &[SyncState]) -> String {
        let states: Vec<i16> = self
            .from_states()
            .into_iter()
            .filter(|s| only.contains(s))
            .map(SyncState::as_i16)
            .collect();
        crate::db::dialect::state_in(state, &states)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_values_are_geos() {
        assert_eq!(
            SyncState::ALL.map(SyncState::as_i16),
            [0, 1, 2, 3],
            "Geo's STATE_VALUES"
        );
        for s in SyncState::ALL {
            assert_eq!(SyncState::from_i16(s.as_i16()), Some(s));
        }
        assert_eq!(SyncState::from_i16(4), None);
        assert_eq!(SyncState::from_i16(-1), None);
    }

    #[test]
    fn guards_render_the_machine() {
        assert_eq!(SyncEvent::Fail.guard("\"state\""), "\"state\" = 1");
        assert_eq!(SyncEvent::Resync.guard("s"), "s IN (2, 3)");
        assert_eq!(SyncEvent::Pending.guard("s"), "s IN (0, 1, 2, 3)");
        assert_eq!(
            SyncEvent::Start.guard_only("s", &[SyncState::Failed]),
            "s = 3"
        );
        // A state the event does not apply to is never rendered.
        assert_eq!(
            SyncEvent::Start.guard_only("s", &[SyncState::Synced]),
            "1 = 0"
        );
    }

    #[test]
    fn transitions_match_geo_where_geo_is_strict() {
        use SyncState::*;
        let legal = [
            (SyncEvent::Pending, Pending, Pending),
            (SyncEvent::Pending, Started, Pending),
            (SyncEvent::Pending, Synced, Pending),
            (SyncEvent::Pending, Failed, Pending),
            (SyncEvent::Start, Pending, Started),
            (SyncEvent::Start, Failed, Started),
            (SyncEvent::Synced, Started, Synced),
            (SyncEvent::Fail, Started, Failed),
            (SyncEvent::FailVerification, Synced, Failed),
            (SyncEvent::Resync, Synced, Pending),
            (SyncEvent::Resync, Failed, Pending),
        ];
        let events = SyncEvent::ALL;
        for event in events {
            for from in SyncState::ALL {
                let expected = legal
                    .iter()
                    .find(|(e, f, _)| *e == event && *f == from)
                    .map(|(_, _, to)| *to);
                match expected {
                    Some(to) => assert_eq!(event.apply(from), Ok(to), "{event:?} from {from}"),
                    None => assert_eq!(
                        event.apply(from),
                        Err(InvalidTransition { from, event }),
                        "{event:?} from {from} must be refused"
                    ),
                }
            }
        }
    }
}
