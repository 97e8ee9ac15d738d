//! A bulkhead: at most `max_concurrency` calls in flight to one upstream
//! and at most `max_queue` waiting; the next caller is refused at once, so
//! a hanging upstream holds a bounded number of callers and never the
//! gateway's memory or other upstreams' capacity.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// Why a call got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Every slot is busy and the queue is full.
    Queue,
    /// The call's deadline passed while it waited.
    Deadline,
}

/// One upstream's bulkhead.
#[derive(Debug)]
pub struct Bulkhead {
    slots: Semaphore,
    max: usize,
    waiting: AtomicUsize,
    max_queue: usize,
}

/// Decrements the waiting count however the wait ends (cancelled too).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Bulkhead {
    /// `max` slots, `max_queue` waiters.
    pub fn new(max: usize, max_queue: usize) -> Self {
        Bulkhead { slots: Semaphore::new(max), max, waiting: AtomicUsize::new(0), max_queue }
    }

    /// A slot, waiting in the queue until `deadline` if none is free.
    pub async fn acquire(&self, deadline: Instant) -> Result<SemaphorePermit<'_>, Full> {
        if let Ok(p) = self.slots.try_acquire() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Full::Queue);
        }
        let _waiting = Waiting(&self.waiting);
        match tokio::time::timeout_at(deadline, self.slots.acquire()).await {
            Ok(Ok(p)) => Ok(p),
            // The semaphore is never closed; treat it as the deadline.
            Ok(Err(_)) | Err(_) => Err(Full::Deadline),
        }
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// Calls waiting now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn overflow_is_refused_at_once_and_waiters_get_freed_slots() {
        let b = Bulkhead::new(2, 1);
        let far = Instant::now() + Duration::from_secs(60);
        let p1 = b.acquire(far).await.unwrap();
        let _p2 = b.acquire(far).await.unwrap();
        assert_eq!(b.in_flight(), 2);
        // The third waits in the queue ...
        let waiter = b.acquire(far);
        tokio::pin!(waiter);
        assert!(futures_util::FutureExt::now_or_never(waiter.as_mut()).is_none());
        assert_eq!(b.queued(), 1);
        // ... so the fourth is refused without waiting.
        assert_eq!(b.acquire(far).await.unwrap_err(), Full::Queue);
        drop(p1);
        let _p3 = waiter.await.unwrap();
        assert_eq!((b.in_flight(), b.queued()), (2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_at_its_deadline_and_leaves_the_queue() {
        let b = Bulkhead::new(1, 4);
        let _p = b.acquire(Instant::now()).await.unwrap();
        let started = Instant::now();
        let err = b.acquire(started + Duration::from_secs(2)).await.unwrap_err();
        assert_eq!(err, Full::Deadline);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(b.queued(), 0);
    }
}
