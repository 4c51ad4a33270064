//! Workers: the loops that drive the state machines: the consistency pass (backfill and
//! orphans), the blob sync, the removal of objects whose models are gone, and the primary's
//! verification.

pub mod consistency;
pub mod removal;
pub mod sync;
pub mod verify;

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `round` until `cancel`: again at once while it finds work (`Ok(true)`), after
/// `idle_wait` when it finds none or fails (failures are logged as `what`).
pub(crate) async fn run_rounds<F, Fut, E>(
    cancel: &CancellationToken,
    idle_wait: Duration,
    what: &str,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, E>>,
    E: std::fmt::Display,
{
    while !cancel.is_cancelled() {
        let wait = match round().await {
            Ok(true) => Duration::ZERO,
            Ok(false) => idle_wait,
            Err(e) => {
                tracing::warn!(error = %e, "{what} failed; retrying");
                idle_wait
            }
        };
        if !wait.is_zero() {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
