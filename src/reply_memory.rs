//! How many bytes of node replies the proxy holds for its clients, and when a client must stop
//! sending: the per-client cap (`client_reply_buffer_limit`) and the process-wide budget
//! (`max_reply_memory`). The counting lives in each client's [`ReplyQueue`], which calls the
//! pure [`Account`] here under its lock; only [`ReplyMemory`] is shared between clients.
//!
//! # What is counted
//!
//! A client *owes* the bytes of every node reply delivered into its reply queue and not yet
//! written to its socket (or copied into its small write batch). The proxy cannot know a
//! reply's size before it arrives, so a client also owes, for each request sent and not yet
//! answered, its *estimated* reply size: a decaying maximum of the sizes of its recent replies
//! (before its first reply: a sixteenth of its cap, so at most 16 requests go out blind). A
//! request is sent only while `arrived + in_flight x estimate` is under the cap; past it the
//! reader stops reading the client (backpressure) until the writer has written enough.
//!
//! The budget for all clients together pauses, while the total owed by everyone is over it,
//! every client that owes more than its fair share (`max_reply_memory / clients owing`): the
//! ones that owe the most wait, small clients go on.
//!
//! # The bound, honestly
//!
//! Replies are never held back on the node connection: a shared connection delivers each reply
//! into its client's queue at once, so one slow client never stalls the others on that
//! connection. The memory held for one client is therefore at most
//! `client_reply_buffer_limit + (requests in flight) x (their largest reply)`, where the
//! requests in flight are those sent while the estimate said there was room: normally that is
//! the cap plus one reply, but a client whose replies suddenly grow (many small GETs in flight,
//! then the values become large) can have up to `max_pipeline` requests of the new size in
//! flight. The process holds at most `max_reply_memory` plus what was in flight when the
//! budget was reached, plus up to [`GRANULE`] per client of accounting slack. Not counted:
//! replies gathered by a multi-key split or a SCAN over all masters, and replies on a client's
//! dedicated connection (transactions, blocking commands): those are bounded by count
//! (`max_pipeline`), not by bytes.
//!
//! [`ReplyQueue`]: crate::reply_queue::ReplyQueue
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A client's share of the process-wide total is published in steps of this many bytes, so
/// that clients with small replies never touch the shared counter.
pub const GRANULE: usize = 64 * 1024;

/// Bytes owed to all clients of the process (every worker), in [`GRANULE`]s.
#[derive(Debug, Default)]
pub struct ReplyMemory {
    total: AtomicUsize,
    /// Clients that owe at least one granule.
    owing: AtomicUsize,
}

impl ReplyMemory {
    /// The bytes owed to all clients (to within a granule per client).
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// The limits one client's queue enforces.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Most bytes owed to this client before it stops being read.
    pub client_limit: usize,
    /// Most bytes owed to all clients before the biggest debtors stop being read.
    pub global_limit: usize,
    pub memory: Arc<ReplyMemory>,
}

impl Budget {
    /// No limits (unit tests of the queue).
    pub fn unlimited() -> Budget {
        Budget {
            client_limit: usize::MAX,
            global_limit: usize::MAX,
            memory: Arc::default(),
        }
    }
}

/// Whether a client may send one more request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    Yes,
    /// Over its own cap: it waits for its writer (or its replies).
    OverClientLimit,
    /// Over its fair share while the process is over budget: it also waits for the others.
    OverGlobalBudget,
}

/// One client's bytes owed; kept under its reply queue's lock.
#[derive(Debug, Default)]
pub struct Account {
    /// Bytes of replies delivered and not yet written.
    arrived: usize,
    /// Requests sent whose reply has not arrived.
    in_flight: usize,
    /// Estimated size of a reply; 0 until the first one arrives.
    estimate: usize,
    /// What this client counts for in [`ReplyMemory`].
    published: usize,
}

impl Account {
    /// The bytes this client owes or will likely owe for what it has sent.
    pub fn projected(&self, budget: &Budget) -> usize {
        let estimate = match self.estimate {
            0 => budget.client_limit / 16,
            e => e,
        };
        self.arrived
            .saturating_add(self.in_flight.saturating_mul(estimate))
    }

    /// Whether one more request may be sent. A client that owes nothing may always send one,
    /// however large its replies: it makes progress one reply at a time.
    pub fn room(&self, budget: &Budget) -> Room {
        if self.arrived == 0 && self.in_flight == 0 {
            return Room::Yes;
        }
        let projected = self.projected(budget);
        if projected >= budget.client_limit {
            return Room::OverClientLimit;
        }
        let total = budget.memory.total.load(Ordering::Relaxed);
        if total >= budget.global_limit {
            let owing = budget.memory.owing.load(Ordering::Relaxed).max(1);
            if projected >= budget.global_limit / owing {
                return Room::OverGlobalBudget;
            }
        }
        Room::Yes
    }

    /// A request was sent: its reply is owed.
    pub fn sent(&mut self) {
        self.in_flight += 1;
    }

    /// The reply to a sent request arrived, `len` bytes of it to be written (0 for an error
    /// the writer builds itself).
    pub fn arrived(&mut self, len: usize, budget: &Budget) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.arrived += len;
        self.estimate = if self.estimate == 0 {
            len.max(1)
        } else {
            // Decays by 1/16 per reply: after a burst of large replies, about 50 small ones
            // bring the estimate down by a factor of 20.
            len.max(self.estimate - self.estimate / 16).max(1)
        };
        self.publish(budget);
    }

    /// `len` bytes that had arrived were written to the client (or copied into its batch).
    pub fn released(&mut self, len: usize, budget: &Budget) {
        self.arrived = self.arrived.saturating_sub(len);
        self.publish(budget);
    }

    /// The client is gone: it owes nothing any more.
    pub fn clear(&mut self, budget: &Budget) {
        self.arrived = 0;
        self.in_flight = 0;
        self.publish(budget);
    }

    /// Brings this client's part of the shared total up to date, in whole granules.
    fn publish(&mut self, budget: &Budget) {
        let now = self.arrived - self.arrived % GRANULE;
        let before = self.published;
        if now == before {
            return;
        }
        let m = &budget.memory;
        if now > before {
            m.total.fetch_add(now - before, Ordering::Relaxed);
        } else {
            m.total.fetch_sub(before - now, Ordering::Relaxed);
        }
        match (before, now) {
            (0, _) => {
                m.owing.fetch_add(1, Ordering::Relaxed);
            }
            (_, 0) => {
                m.owing.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        self.published = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: usize = 1 << 20;

    fn budget(client: usize, global: usize) -> Budget {
        Budget {
            client_limit: client,
            global_limit: global,
            memory: Arc::default(),
        }
    }

    #[test]
    fn at_most_sixteen_requests_go_out_before_the_first_reply_size_is_known() {
        let b = budget(64 * MB, usize::MAX);
        let mut a = Account::default();
        let mut sent = 0;
        while a.room(&b) == Room::Yes && sent < 1000 {
            a.sent();
            sent += 1;
        }
        assert_eq!(sent, 16);
        // Small replies: the estimate drops and the pipeline opens up.
        a.arrived(5, &b);
        assert_eq!(a.room(&b), Room::Yes);
    }

    #[test]
    fn large_replies_stop_the_client_at_its_cap_and_writing_resumes_it() {
        let b = budget(8 * MB, usize::MAX);
        let mut a = Account::default();
        a.sent();
        a.arrived(MB, &b);
        let mut sent = 0;
        while a.room(&b) == Room::Yes {
            a.sent();
            sent += 1;
        }
        assert_eq!(sent, 7, "1 MB owed + 7 x 1 MB expected = the 8 MB cap");
        for _ in 0..7 {
            a.arrived(MB, &b);
        }
        assert_eq!(a.room(&b), Room::OverClientLimit);
        a.released(MB, &b);
        assert_eq!(a.room(&b), Room::Yes);
        assert_eq!(b.memory.total(), 7 * MB);
        a.clear(&b);
        assert_eq!(
            (b.memory.total(), b.memory.owing.load(Ordering::Relaxed)),
            (0, 0)
        );
        assert_eq!(
            a.room(&b),
            Room::Yes,
            "owing nothing, a client may always send"
        );
    }

    #[test]
    fn over_the_global_budget_the_biggest_debtors_wait_and_small_ones_go_on() {
        let memory = Arc::new(ReplyMemory::default());
        let b = Budget {
            memory: memory.clone(),
            ..budget(64 * MB, 10 * MB)
        };
        let (mut big, mut other, mut small) =
            (Account::default(), Account::default(), Account::default());
        big.sent();
        big.arrived(8 * MB, &b);
        other.sent();
        other.arrived(3 * MB, &b);
        assert_eq!(memory.total(), 11 * MB);
        big.sent();
        assert_eq!(big.room(&b), Room::OverGlobalBudget, "8 MB > 10 MB / 2");
        assert_eq!(other.room(&b), Room::Yes, "3 MB < its share");
        small.sent();
        small.arrived(100, &b);
        assert_eq!(small.room(&b), Room::Yes);
        assert_eq!(
            memory.total(),
            11 * MB,
            "small replies never reach the total"
        );
        big.released(8 * MB, &b);
        big.arrived(MB, &b);
        assert_eq!(big.room(&b), Room::Yes, "back under budget");
    }
}
