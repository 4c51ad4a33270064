//! The sync state machine, with Geo's numeric values and transitions.

use std::fmt;

/// Sync state of a registry row. The numbers are Geo's and are stored as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(i16)]
pub enum SyncState {
    /// Waiting to be synced (a new row, an event, or a resync).
    Pending = 0,
    /// A worker is syncing it.
    Started = 1,
    /// The local copy is in place.
    Synced = 2,
    /// The last attempt failed; `retry_at` says when to try again.
    Failed = 3,
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
            0 => Some(SyncState::Pending),
            1 => Some(SyncState::Started),
            2 => Some(SyncState::Synced),
            3 => Some(SyncState::Failed),
            _ => None,
        }
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

/// What can happen to a registry row (Geo's state machine events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncEvent {
    /// Back to pending, from any state (an `updated` event, a new attempt).
    Pending,
    /// A worker starts syncing: from pending, synced or failed, never from started.
    Start,
    /// The sync succeeded: only from started, and only for the same attempt.
    Synced,
    /// The attempt failed: from any state.
    Fail,
    /// An operator asked to sync again: from synced or failed.
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
    /// The state after this event, or why it is refused.
    pub const fn apply(self, from: SyncState) -> Result<SyncState, InvalidTransition> {
        use SyncState::*;
        let to = match (self, from) {
            (SyncEvent::Pending, _) => Some(Pending),
            (SyncEvent::Start, Pending | Synced | Failed) => Some(Started),
            (SyncEvent::Synced, Started) => Some(Synced),
            (SyncEvent::Fail, _) => Some(Failed),
            (SyncEvent::Resync, Synced | Failed) => Some(Pending),
            _ => None,
        };
        match to {
            Some(s) => Ok(s),
            None => Err(InvalidTransition { from, event: self }),
        }
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
    fn transitions_match_geo() {
        use SyncState::*;
        let legal = [
            (SyncEvent::Pending, Pending, Pending),
            (SyncEvent::Pending, Started, Pending),
            (SyncEvent::Pending, Synced, Pending),
            (SyncEvent::Pending, Failed, Pending),
            (SyncEvent::Start, Pending, Started),
            (SyncEvent::Start, Synced, Started),
            (SyncEvent::Start, Failed, Started),
            (SyncEvent::Synced, Started, Synced),
            (SyncEvent::Fail, Pending, Failed),
            (SyncEvent::Fail, Started, Failed),
            (SyncEvent::Fail, Synced, Failed),
            (SyncEvent::Fail, Failed, Failed),
            (SyncEvent::Resync, Synced, Pending),
            (SyncEvent::Resync, Failed, Pending),
        ];
        let events = [
            SyncEvent::Pending,
            SyncEvent::Start,
            SyncEvent::Synced,
            SyncEvent::Fail,
            SyncEvent::Resync,
        ];
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
