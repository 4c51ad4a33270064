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

/// Events of the verification state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerificationEvent {
    /// A worker starts checksumming: from any state.
    Start,
    /// The checksum was stored and matched: from started, or from disabled when a secondary's
    /// copy gets the primary's checksum at last and the two agree.
    Succeed,
    /// Checksumming failed: from any state.
    Fail,
    /// Verification is not possible: from any state.
    Disable,
    /// Verify again: from any state.
    Pending,
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
    /// The state after this event, or why it is refused.
    pub const fn apply(
        self,
        from: VerificationState,
    ) -> Result<VerificationState, InvalidVerificationTransition> {
        match (self, from) {
            (
                VerificationEvent::Succeed,
                VerificationState::Started | VerificationState::Disabled,
            ) => Ok(VerificationState::Succeeded),
            (VerificationEvent::Succeed, _) => {
                Err(InvalidVerificationTransition { from, event: self })
            }
            (VerificationEvent::Start, _) => Ok(VerificationState::Started),
            (VerificationEvent::Fail, _) => Ok(VerificationState::Failed),
            (VerificationEvent::Disable, _) => Ok(VerificationState::Disabled),
            (VerificationEvent::Pending, _) => Ok(VerificationState::Pending),
        }
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
                VerificationEvent::Fail.apply(from),
                Ok(VerificationState::Failed)
            );
            assert_eq!(
                VerificationEvent::Start.apply(from),
                Ok(VerificationState::Started)
            );
        }
    }
}
