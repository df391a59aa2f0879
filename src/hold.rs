//! Holding requests through a failover: a request not yet written to a node, whose slot's
//! master is unreachable, flagged failing, or missing (or whose node answered `-CLUSTERDOWN`),
//! waits in its place in the client's reply order until the topology names a new owner of the
//! slot, then goes there. A request already written is never resent (see
//! [`redirect::after_failure`](crate::redirect::after_failure)).
//!
//! Bounded in time (`failover_hold_ms`, default twice the cluster's node timeout), after which
//! the request gets what it would have got without holding, and in count (`max_held_requests`,
//! process-wide), beyond which it gets that at once. Waiting is on the refresher's
//! topology-change notification, with the deadline: no polling loop here. What to do at each
//! turn is decided by the pure [`redirect::hold_step`](crate::redirect::hold_step).
use crate::cluster::refresher::TopologyWaiter;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// When the cluster's node timeout is not known (the nodes refuse `CONFIG GET`): Redis's
/// default `cluster-node-timeout`.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(15);

/// The hold bound: configured, else twice the node timeout (learned, else Redis's default).
pub fn hold_duration(configured: Option<Duration>, node_timeout: Option<Duration>) -> Duration {
    configured.unwrap_or_else(|| 2 * node_timeout.unwrap_or(DEFAULT_NODE_TIMEOUT))
}

/// Whether a new hold may start: holding is on, the process holds fewer than `max`, and no hold
/// has expired since the topology last changed. The last rule bounds a client's pipeline: once
/// one request waited the whole bound for nothing, the requests behind it do not each wait it
/// again; the next topology change lets holds start again.
pub fn admissible(
    hold: Duration,
    held: usize,
    max: usize,
    expired_at: Option<u64>,
    version: u64,
) -> bool {
    !hold.is_zero() && held < max && expired_at != Some(version)
}

/// One worker's hold bookkeeping over the process-wide count.
#[derive(Debug)]
pub struct Holds {
    held: Arc<AtomicUsize>,
    /// The topology version at which a hold last expired (`u64::MAX`: none yet).
    expired_at: AtomicU64,
}

impl Holds {
    pub fn new(held: Arc<AtomicUsize>) -> Holds {
        Holds {
            held,
            expired_at: AtomicU64::new(u64::MAX),
        }
    }

    /// Requests held now, process-wide.
    pub fn count(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// A ticket for one more held request, if [`admissible`]. The count is taken before the
    /// check so that concurrent admissions cannot overshoot `max`.
    pub fn admit(&self, hold: Duration, max: usize, version: u64) -> Option<Ticket> {
        let before = self.held.fetch_add(1, Ordering::Relaxed);
        let ticket = Ticket(self.held.clone());
        let expired = match self.expired_at.load(Ordering::Relaxed) {
            u64::MAX => None,
            v => Some(v),
        };
        admissible(hold, before, max, expired, version).then_some(ticket)
    }

    /// A hold ran out at topology `version`.
    pub fn expired(&self, version: u64) {
        self.expired_at.store(version, Ordering::Relaxed);
    }
}

/// Counts one held request until dropped.
#[derive(Debug)]
pub struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One request's hold: counted, bounded by a deadline, subscribed to topology changes (made
/// before the route that led to the hold was checked, so no change in between is missed).
#[derive(Debug)]
pub struct Held {
    _ticket: Ticket,
    deadline: Instant,
    waiter: TopologyWaiter,
}

impl Held {
    pub fn new(ticket: Ticket, hold: Duration, waiter: TopologyWaiter) -> Held {
        Held {
            _ticket: ticket,
            deadline: Instant::now() + hold,
            waiter,
        }
    }

    /// Time left before the hold runs out.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Waits until the topology changes, `recheck` passes (for causes a topology change may
    /// not show: a node that comes back as it was), or the deadline.
    pub async fn wait(&mut self, recheck: Option<Duration>) {
        let until = match recheck {
            Some(r) => self.deadline.min(Instant::now() + r),
            None => self.deadline,
        };
        let _ = tokio::time::timeout_at(until, self.waiter.changed()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_defaults_to_twice_the_node_timeout() {
        let s = Duration::from_secs;
        assert_eq!(hold_duration(None, Some(s(3))), s(6));
        assert_eq!(hold_duration(None, None), s(30));
        assert_eq!(hold_duration(Some(s(1)), Some(s(3))), s(1));
    }

    #[test]
    fn admission_is_bounded_in_count_and_stops_after_an_expiry_until_a_change() {
        let h = Duration::from_secs(6);
        assert!(admissible(h, 0, 10, None, 4));
        assert!(
            !admissible(h, 10, 10, None, 4),
            "at the limit: the error at once"
        );
        assert!(!admissible(Duration::ZERO, 0, 10, None, 4), "holding off");
        assert!(!admissible(h, 0, 10, Some(4), 4), "expired at this view");
        assert!(admissible(h, 0, 10, Some(4), 5), "the view changed since");
    }

    #[test]
    fn tickets_count_held_requests_process_wide() {
        let count = Arc::new(AtomicUsize::new(0));
        let a = Holds::new(count.clone());
        let b = Holds::new(count.clone()); // another worker
        let h = Duration::from_secs(1);
        let t1 = a.admit(h, 2, 0).expect("first");
        let t2 = b.admit(h, 2, 0).expect("second");
        assert!(a.admit(h, 2, 0).is_none(), "third is over the limit");
        assert_eq!(
            count.load(Ordering::Relaxed),
            2,
            "a refused admission counts nothing"
        );
        drop(t1);
        assert!(b.admit(h, 2, 0).is_some());
        drop(t2);
        a.expired(3);
        assert!(a.admit(h, 2, 3).is_none());
        assert!(
            b.admit(h, 2, 3).is_some(),
            "expiry is per worker (per topology)"
        );
        assert_eq!(count.load(Ordering::Relaxed), 0);
    }
}
