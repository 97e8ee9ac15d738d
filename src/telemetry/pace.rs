//! Pacing of log lines that a flood could repeat.

use std::time::Duration;

use crate::sync::Locked;
use tokio::time::Instant;

/// Allows one log line a second (a flood of identical warnings under
/// overload would bury everything else).
#[derive(Debug, Default)]
pub struct LogPace(std::sync::Mutex<Option<Instant>>);

impl LogPace {
    /// Whether a line may be written now; if so, the next one waits 1 s.
    pub fn ready(&self) -> bool {
        let mut last = self.0.locked();
        let now = Instant::now();
        if last.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1)) {
            return false;
        }
        *last = Some(now);
        true
    }
}
