//! The log level upstreams are told: the most verbose any session asked
//! for, sent only when it changes.

use std::sync::Mutex;

use crate::sync::Locked;

/// The level last sent to upstreams (index in [`super::peer::LEVELS`]).
#[derive(Debug, Default)]
pub(crate) struct Levels {
    applied: Mutex<Option<usize>>,
}

// === impl Levels ===

impl Levels {
    /// The level to send upstream now that sessions want `wanted`: `None`
    /// when nobody asked or it is the level already sent. A level once
    /// sent stays (upstreams have no "unset").
    pub(crate) fn next(&self, wanted: Option<usize>) -> Option<usize> {
        let level = wanted?;
        let mut applied = self.applied.locked();
        if *applied == Some(level) {
            return None;
        }
        *applied = Some(level);
        Some(level)
    }

    /// The level last sent, which a new upstream connection is told too.
    pub(crate) fn applied(&self) -> Option<usize> {
        *self.applied.locked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_is_sent_only_when_it_changes() {
        let l = Levels::default();
        assert_eq!(l.next(None), None);
        assert_eq!(l.applied(), None);
        assert_eq!(l.next(Some(3)), Some(3));
        assert_eq!(l.next(Some(3)), None, "already sent");
        assert_eq!(l.next(Some(0)), Some(0));
        assert_eq!(l.next(None), None, "nobody asks any more: the last level stays");
        assert_eq!(l.applied(), Some(0));
    }
}
