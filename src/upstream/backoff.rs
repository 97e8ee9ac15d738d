//! Restart delays for a supervised upstream.

use std::time::Duration;

/// Exponential restart delay: `min`, doubling up to `max`. No jitter: one
/// gateway restarts one process, there is no herd to spread.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

/// `min` is zero or larger than `max`.
#[derive(Debug, thiserror::Error)]
#[error("invalid backoff: min must be > 0 and <= max")]
pub(crate) struct InvalidBackoff;

impl Backoff {
    pub(crate) fn try_new(min: Duration, max: Duration) -> Result<Self, InvalidBackoff> {
        if min.is_zero() || min > max {
            return Err(InvalidBackoff);
        }
        Ok(Backoff { min, max, next: min })
    }

    /// The delay before the next attempt; each call doubles the one after.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Back to `min` (after the upstream stayed healthy for a while).
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_max_and_resets() {
        let mut b = Backoff::try_new(Duration::from_millis(500), Duration::from_secs(4)).unwrap();
        let got: Vec<_> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [500, 1000, 2000, 4000, 4000, 4000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(500));
        assert!(Backoff::try_new(Duration::ZERO, Duration::from_secs(1)).is_err());
        assert!(Backoff::try_new(Duration::from_secs(2), Duration::from_secs(1)).is_err());
    }
}
