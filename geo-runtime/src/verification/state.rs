//! Geo's verification state machine.

use std::fmt;

use geo_schema::state::verification;

/// Verification state, with Geo's numeric values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(i16)]
pub enum VerificationState {
    /// Waiting for a checksum.
    #[default]
    Pending = verification::PENDING,
    /// A worker is computing the checksum.
    Started = verification::STARTED,
    /// The checksum was computed (primary) or matched the primary's (secondary).
    Succeeded = verification::SUCCEEDED,
    /// Checksumming failed, or the checksums did not match.
    Failed = verification::FAILED,
    /// Not verified (e.g. the primary has no good checksum yet).
    Disabled = verification::DISABLED,
}

impl VerificationState {
    /// All states, in numeric order.
    pub const ALL: [VerificationState; 5] = [
        VerificationState::Pending,
        VerificationState::Started,
        VerificationState::Succeeded,
        VerificationState::Failed,
        VerificationState::Disabled,
    ];

    /// The stored value.
    pub const fn as_i16(self) -> i16 {
        self as i16
    }

    /// The state for a stored value.
    pub const fn from_i16(value: i16) -> Option<Self> {
        match value {
            verification::PENDING => Some(VerificationState::Pending),
            verification::STARTED => Some(VerificationState::Started),
            verification::SUCCEEDED => Some(VerificationState::Succeeded),
            verification::FAILED => Some(VerificationState::Failed),
            verification::DISABLED => Some(VerificationState::Disabled),
            _ => None,
        }
    }

    /// The state for a value read from a `verification_state` column, or why it is none.
    pub(crate) fn stored(value: i16) -> Result<Self, crate::error::DbError> {
        Self::from_i16(value).ok_or(crate::error::DbError::InvalidValue {
            column: "verification_state".into(),
            what: "verification state (0..=4)",
            value: value.to_string(),
        })
    }

    /// Geo's name: `verification_pending`, …
    pub const fn as_str(self) -> &'static str {
        match self {
            VerificationState::Pending => "verification_pending",
            VerificationState::Started => "verification_started",
            VerificationState::Succeeded => "verification_succeeded",
            VerificationState::Failed => "verification_failed",
            VerificationState::Disabled => "verification_disabled",
        }
    }
}

impl fmt::Display for VerificationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Events of the verification state machine. Each statement that changes a verification state
/// performs one of them, and its `WHERE` on the state is rendered from
/// [`VerificationEvent::apply`] (see [`VerificationEvent::guard`]), so the machine below is the
/// one that runs, on the primary's records and on a secondary's copies alike.
///
/// Narrower than Geo's, which lets `start`, `fail` and `disable` fire from any state: here a
/// claim starts only what is due (pending, failed, or succeeded long ago), and only the running
/// attempt (or a disabled copy meeting the primary's checksum at last) can end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VerificationEvent {
    /// A worker claims it: from pending, failed (its retry is due) or succeeded (due for
    /// re-verification).
    Start,
    /// The checksum was stored and matched: from started, or from disabled when a secondary's
    /// copy gets the primary's checksum at last and the two agree.
    Succeed,
    /// Checksumming failed or did not match: from started, or from disabled when a secondary's
    /// copy gets the primary's checksum at last and the two differ.
    Fail,
    /// Verification is not possible yet (the primary has no checksum): from started.
    Disable,
    /// Verify again: from any state (a new or changed object, an operator's reverify, a check
    /// that never finished).
    Pending,
    /// A new copy arrived whose checksum was checked against the primary's on the way: from any
    /// state, to succeeded.
    CheckedOnArrival,
}

/// A verification transition the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {event:?} a verification that is {from}")]
pub struct InvalidVerificationTransition {
    /// The current state.
    pub from: VerificationState,
    /// The refused event.
    pub event: VerificationEvent,
}

impl VerificationEvent {
    /// Every event.
    pub const ALL: [VerificationEvent; 6] = [
        VerificationEvent::Start,
        VerificationEvent::Succeed,
        VerificationEvent::Fail,
        VerificationEvent::Disable,
        VerificationEvent::Pending,
        VerificationEvent::CheckedOnArrival,
    ];

    /// The state after this event, or why it is refused.
    pub const fn apply(
        self,
        from: VerificationState,
    ) -> Result<VerificationState, InvalidVerificationTransition> {
        use VerificationState::*;
        let to = match (self, from) {
            (VerificationEvent::Start, Pending | Failed | Succeeded) => Some(Started),
            (VerificationEvent::Succeed, Started | Disabled) => Some(Succeeded),
            (VerificationEvent::Fail, Started | Disabled) => Some(Failed),
            (VerificationEvent::Disable, Started) => Some(Disabled),
            (VerificationEvent::Pending, _) => Some(Pending),
            (VerificationEvent::CheckedOnArrival, _) => Some(Succeeded),
            _ => None,
        };
        match to {
            Some(s) => Ok(s),
            None => Err(InvalidVerificationTransition { from, event: self }),
        }
    }

    /// The states this event applies to, in numeric order.
    pub fn from_states(self) -> Vec<VerificationState> {
        VerificationState::ALL
            .into_iter()
            .filter(|&s| self.apply(s).is_ok())
            .collect()
    }

    /// The SQL condition that `state` (a column or an expression) is one this event applies to.
    pub fn guard(self, state: &str) -> String {
        self.guard_only(state, &VerificationState::ALL)
    }

    /// [`VerificationEvent::guard`] narrowed to `only` (a statement that performs the event on
    /// some of its states, e.g. the claim of failed records). States the event does not apply
    /// to are left out: they can never be rendered into a statement.
    pub fn guard_only(self, state: &str, only: &[VerificationState]) -> String {
        let states: Vec<i16> = self
            .from_states()
            .into_iter()
            .filter(|s| only.contains(s))
            .map(VerificationState::as_i16)
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
            VerificationState::ALL.map(VerificationState::as_i16),
            [0, 1, 2, 3, 4]
        );
        for s in VerificationState::ALL {
            assert_eq!(VerificationState::from_i16(s.as_i16()), Some(s));
        }
        assert_eq!(VerificationState::from_i16(5), None);
    }

    #[test]
    fn guards_render_the_machine() {
        let v = "\"verification_state\"";
        assert_eq!(
            VerificationEvent::Start.guard(v),
            format!("{v} IN (0, 2, 3)")
        );
        assert_eq!(VerificationEvent::Fail.guard(v), format!("{v} IN (1, 4)"));
        assert_eq!(VerificationEvent::Disable.guard(v), format!("{v} = 1"));
        assert_eq!(
            VerificationEvent::Start.guard_only(v, &[VerificationState::Failed]),
            format!("{v} = 3")
        );
        assert_eq!(
            VerificationEvent::Start.guard_only(v, &[VerificationState::Started]),
            "1 = 0"
        );
    }

    #[test]
    fn succeed_only_from_started_or_disabled() {
        for from in VerificationState::ALL {
            let r = VerificationEvent::Succeed.apply(from);
            if matches!(
                from,
                VerificationState::Started | VerificationState::Disabled
            ) {
                assert_eq!(r, Ok(VerificationState::Succeeded));
            } else {
                assert!(r.is_err(), "succeed from {from} must be refused");
            }
            assert_eq!(
                VerificationEvent::Pending.apply(from),
                Ok(VerificationState::Pending)
            );
        }
    }
}
