//! Which upstream an entry, a task or a subscription belongs to: its place
//! in the configured list.

/// The index of an upstream in the gateway's configured list (id order).
///
/// A type of its own so an upstream is never confused with a count, a log
/// level or a position in some other list; only the component that owns the
/// list ([`super::upstreams::Upstreams`]) turns it back into a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamIx(usize);

// === impl UpstreamIx ===

impl UpstreamIx {
    /// The upstream at position `i` of the configured list.
    pub const fn new(i: usize) -> Self {
        Self(i)
    }

    /// Its position in the configured list.
    pub const fn index(self) -> usize {
        self.0
    }

    /// Every upstream of a list of `n`, in order.
    pub fn all(n: usize) -> impl Iterator<Item = Self> {
        (0..n).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_counts_every_position_once_in_order() {
        let all: Vec<usize> = UpstreamIx::all(3).map(UpstreamIx::index).collect();
        assert_eq!(all, [0, 1, 2]);
        assert_eq!(UpstreamIx::all(0).count(), 0);
    }
}
