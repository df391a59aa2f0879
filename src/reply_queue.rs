//! The bounded FIFO of replies a client is owed, between its reader (and its subscription
//! connection, if any) and its writer. Unlike a channel it allocates nothing until something is
//! queued and gives its memory back when drained, so an idle client costs no queue memory; when
//! it holds `cap` items, producers wait (backpressure on a client that does not read).
//!
//! An item may wait for a node's reply: it is pushed with [`ReplyQueue::push_awaiting`], which
//! gives it a sequence number, and the backend connection delivers the reply into that slot
//! ([`ReplySink::complete`]). The consumer only gets items whose reply is in, in order. This is
//! the per-request path with no channel and no allocation of its own.
//!
//! It also counts the bytes of those replies until the writer has written them
//! ([`ReplyQueue::finished`]): an item that awaits a reply is queued only while the client's
//! [`Account`] has room under its [`Budget`], so a client that reads slowly stops being read
//! instead of making the proxy buffer its replies (see [`crate::reply_memory`] for the bound).
use crate::backend::conn::{ReplyResult, ReplySink};
use crate::reply_memory::{Account, Budget, Room};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Mutex;
use std::task::{Poll, Waker};

pub struct ReplyQueue<T> {
    inner: Mutex<Inner<T>>,
    cap: usize,
    budget: Budget,
}

/// One queued item and the state of the node reply it waits for.
struct Entry<T> {
    item: T,
    reply: Slot,
}

enum Slot {
    /// The item is complete as it is.
    NotAwaited,
    Waiting,
    Arrived(ReplyResult),
}

struct Inner<T> {
    items: VecDeque<Entry<T>>,
    /// The sequence number of `items[0]`: every push takes the next one.
    head: u64,
    /// The consumer waiting for the front item to be ready.
    consumer: Option<Waker>,
    /// Items the consumer has taken and finished with (see [`ReplyQueue::finished`]).
    settled: u64,
    /// The producer waiting for every item to be finished with.
    settling: Option<Waker>,
    /// Producers waiting for room (the reader and a subscription task: at most a few).
    producers: Vec<Waker>,
    /// No more items will be produced that matter: the consumer ends once drained.
    closed_by_producer: bool,
    /// The consumer is gone: producers stop.
    closed_by_consumer: bool,
    /// Bytes of node replies owed to the client.
    account: Account,
}

impl<T> Inner<T> {
    fn front_ready(&self) -> bool {
        self.items
            .front()
            .is_some_and(|e| !matches!(e.reply, Slot::Waiting))
    }

    fn wake_consumer(&mut self) {
        if let Some(w) = self.consumer.take() {
            w.wake();
        }
    }

    fn wake_producers(&mut self) {
        if self.producers.is_empty() {
            return; // the usual case: no drain (and its drop) per reply
        }
        for w in self.producers.drain(..) {
            w.wake();
        }
    }
}

/// A producer paused by the process-wide budget looks again this often: the bytes that free it
/// may be other clients'.
const GLOBAL_RECHECK: std::time::Duration = std::time::Duration::from_millis(20);

/// Keep this much capacity after draining; more is given back.
const KEEP: usize = 16;

impl<T> ReplyQueue<T> {
    /// A queue bounded by count only.
    pub fn new(cap: usize) -> ReplyQueue<T> {
        Self::with_budget(cap, Budget::unlimited())
    }

    /// A queue bounded by count (`cap` items) and by the bytes of replies owed (`budget`).
    pub fn with_budget(cap: usize, budget: Budget) -> ReplyQueue<T> {
        ReplyQueue {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                head: 0,
                consumer: None,
                settled: 0,
                settling: None,
                producers: Vec::new(),
                closed_by_producer: false,
                closed_by_consumer: false,
                account: Account::default(),
            }),
            cap: cap.max(1),
            budget,
        }
    }

    /// Whether an entry may be queued now (`awaited`: it awaits a node's reply, which counts
    /// against the budget).
    fn room(&self, g: &Inner<T>, awaited: bool) -> Room {
        if g.items.len() >= self.cap {
            return Room::OverClientLimit;
        }
        if awaited {
            return g.account.room(&self.budget);
        }
        Room::Yes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item`, waiting while the queue is full. `false` once the consumer is gone.
    pub async fn push(&self, item: T) -> bool {
        self.push_entry(item, Slot::NotAwaited).await.is_some()
    }

    /// Queues `item`, which the consumer gets only once the reply for the returned sequence
    /// number has been delivered with [`ReplySink::complete`]. `None` once the consumer is gone.
    pub async fn push_awaiting(&self, item: T) -> Option<u64> {
        self.push_entry(item, Slot::Waiting).await
    }

    /// [`push_awaiting`](ReplyQueue::push_awaiting) without waiting: `Err` gives `item` back
    /// when the queue is full. Saves the future's moves of `item` on the per-request path.
    pub fn try_push_awaiting(&self, item: T) -> Result<Option<u64>, T> {
        self.try_push(Entry {
            item,
            reply: Slot::Waiting,
        })
        .map_err(|e| e.item)
    }

    async fn push_entry(&self, item: T, reply: Slot) -> Option<u64> {
        // The usual case, a queue with room, without the future's state: no moves of `item`
        // beyond the one into the queue.
        let mut entry = match self.try_push(Entry { item, reply }) {
            Ok(seq) => return seq,
            Err(entry) => entry,
        };
        let awaited = matches!(entry.reply, Slot::Waiting);
        loop {
            let wait = poll_fn(|cx| {
                let mut g = self.lock();
                let room = self.room(&g, awaited);
                if room == Room::Yes || g.closed_by_consumer {
                    return Poll::Ready(room);
                }
                if !g.producers.iter().any(|w| w.will_wake(cx.waker())) {
                    g.producers.push(cx.waker().clone());
                }
                Poll::Pending
            });
            // Paused by the shared budget, the producer is not woken by others' writes: it
            // looks again now and then. Otherwise its own consumer or replies wake it.
            let paused_globally = self.room(&self.lock(), awaited) == Room::OverGlobalBudget;
            if paused_globally {
                let _ = tokio::time::timeout(GLOBAL_RECHECK, wait).await;
            } else {
                wait.await;
            }
            match self.try_push(entry) {
                Ok(seq) => return seq,
                Err(e) => entry = e,
            }
        }
    }

    /// Pushes `entry` if there is room: `Ok(None)` once the consumer is gone, `Err` (the entry
    /// back) when full.
    fn try_push(&self, entry: Entry<T>) -> Result<Option<u64>, Entry<T>> {
        let mut g = self.lock();
        if g.closed_by_consumer {
            return Ok(None);
        }
        let awaited = matches!(entry.reply, Slot::Waiting);
        if self.room(&g, awaited) != Room::Yes {
            return Err(entry);
        }
        if awaited {
            g.account.sent();
        }
        let seq = g.head + g.items.len() as u64;
        g.items.push_back(entry);
        if g.items.len() == 1 && g.front_ready() {
            g.wake_consumer();
        }
        Ok(Some(seq))
    }

    /// The front item and its node reply (`None` if it awaited none), if it is ready; never
    /// waits.
    pub fn try_pop(&self) -> Option<(T, Option<ReplyResult>)> {
        let mut g = self.lock();
        if !g.front_ready() {
            return None;
        }
        let entry = g.items.pop_front().expect("front is ready");
        g.head += 1;
        g.wake_producers();
        if g.items.is_empty() && g.items.capacity() > KEEP {
            g.items = VecDeque::new();
        }
        let reply = match entry.reply {
            Slot::Arrived(r) => Some(r),
            _ => None,
        };
        Some((entry.item, reply))
    }

    /// The consumer is done with one more item it took (its reply is in), and the `charged`
    /// bytes of its reply are written (or copied into its batch), so they no longer count
    /// against the budget. One lock for both.
    pub fn finished(&self, charged: usize) {
        let mut g = self.lock();
        if charged > 0 {
            g.account.released(charged, &self.budget);
            g.wake_producers();
        }
        g.settled += 1;
        if let Some(w) = g.settling.take() {
            drop(g);
            w.wake();
        }
    }

    /// Waits until the consumer is done with every item queued so far: for a producer about
    /// to send a request that must not overtake the earlier ones. `false` once the consumer is
    /// gone.
    pub async fn wait_settled(&self) -> bool {
        poll_fn(|cx| {
            let mut g = self.lock();
            if g.closed_by_consumer {
                return Poll::Ready(false);
            }
            if g.items.is_empty() && g.settled == g.head {
                return Poll::Ready(true);
            }
            g.settling = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Nothing is queued, ready or not: no reply is owed right now.
    pub fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }

    /// The front item once it is ready, waiting for it; `None` once the producer side closed
    /// and all is drained.
    pub async fn pop(&self) -> Option<(T, Option<ReplyResult>)> {
        poll_fn(|cx| {
            if let Some(item) = self.try_pop() {
                return Poll::Ready(Some(item));
            }
            let mut g = self.lock();
            if g.front_ready() {
                // Became ready between the two locks: take it on the next poll.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if g.items.is_empty() && g.closed_by_producer {
                return Poll::Ready(None);
            }
            g.consumer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The reader is done: the consumer drains what is queued, then ends.
    pub fn close_producer(&self) {
        let mut g = self.lock();
        g.closed_by_producer = true;
        g.wake_consumer();
    }

    /// The consumer is gone: waiting and future pushes answer `false`.
    pub fn close_consumer(&self) {
        let mut g = self.lock();
        g.closed_by_consumer = true;
        if let Some(w) = g.settling.take() {
            w.wake();
        }
        let n = g.items.len() as u64;
        g.head += n;
        g.items = VecDeque::new();
        g.account.clear(&self.budget);
        g.wake_producers();
    }
}

impl<T: Send> ReplySink for ReplyQueue<T> {
    fn complete(&self, seq: u64, reply: ReplyResult) {
        let mut g = self.lock();
        let Some(i) = seq.checked_sub(g.head) else {
            return;
        };
        let Some(entry) = g.items.get_mut(i as usize) else {
            return;
        };
        if matches!(entry.reply, Slot::Waiting) {
            let len = reply.as_ref().map_or(0, |b| b.len());
            entry.reply = Slot::Arrived(reply);
            if i == 0 {
                g.wake_consumer();
            }
            g.account.arrived(len, &self.budget);
            g.wake_producers();
        }
    }

    fn is_closed(&self) -> bool {
        self.lock().closed_by_consumer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn fifo_backpressure_and_close() {
        let q = Arc::new(ReplyQueue::new(2));
        assert!(q.push(1).await);
        assert!(q.push(2).await);
        // Full: the third push waits until the consumer takes one.
        let q2 = q.clone();
        let producer = tokio::spawn(async move { q2.push(3).await });
        tokio::task::yield_now().await;
        assert!(!producer.is_finished());
        assert_eq!(q.pop().await, Some((1, None)));
        assert!(producer.await.unwrap());
        assert_eq!(q.try_pop(), Some((2, None)));
        assert_eq!(q.pop().await, Some((3, None)));
        q.close_producer();
        assert_eq!(q.pop().await, None);
        q.close_consumer();
        assert!(!q.push(4).await);
    }

    #[tokio::test]
    async fn a_waiting_consumer_is_woken() {
        let q = Arc::new(ReplyQueue::new(4));
        let q2 = q.clone();
        let consumer = tokio::spawn(async move { q2.pop().await });
        tokio::task::yield_now().await;
        assert!(q.push(7).await);
        assert_eq!(consumer.await.unwrap(), Some((7, None)));
    }

    #[tokio::test]
    async fn awaited_items_come_out_in_order_once_their_reply_is_in() {
        use crate::backend::BackendError;
        use bytes::Bytes;
        let q = Arc::new(ReplyQueue::new(8));
        assert!(q.is_empty());
        let a = q.push_awaiting("a").await.unwrap();
        assert!(!q.is_empty(), "an item awaiting its reply is owed too");
        assert!(q.push("b").await);
        let c = q.push_awaiting("c").await.unwrap();
        assert_eq!((a, c), (0, 2));
        assert!(q.try_pop().is_none(), "a still waits for its reply");
        // A later reply arriving first does not let anything jump the queue.
        q.complete(c, Err(BackendError::Lost));
        assert!(q.try_pop().is_none());
        let q2 = q.clone();
        let consumer = tokio::spawn(async move { q2.pop().await });
        tokio::task::yield_now().await;
        assert!(!consumer.is_finished());
        q.complete(a, Ok(Bytes::from_static(b"+OK\r\n")));
        let (item, reply) = consumer.await.unwrap().unwrap();
        assert_eq!(
            (item, reply.unwrap().unwrap()),
            ("a", Bytes::from_static(b"+OK\r\n"))
        );
        assert_eq!(
            q.try_pop().map(|(i, r)| (i, r.is_none())),
            Some(("b", true))
        );
        let (item, reply) = q.try_pop().unwrap();
        assert_eq!((item, reply.unwrap()), ("c", Err(BackendError::Lost)));
        // Stale and unknown sequence numbers are ignored; so is anything after the client left.
        q.complete(a, Ok(Bytes::new()));
        q.complete(99, Ok(Bytes::new()));
        let d = q.push_awaiting("d").await.unwrap();
        assert_eq!(d, 3);
        q.close_consumer();
        assert!(q.is_closed());
        q.complete(d, Ok(Bytes::new()));
        assert!(q.push_awaiting("e").await.is_none());
    }
}
