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
//! Replies that arrive while the writer is idle (parked in [`ReplyQueue::pop`], nothing of
//! its own to write) and go out as they are, are written by the task that has them, the
//! backend connection's, without waking the writer: [`ReplySink::complete_batched`] does not
//! wake it, and [`ReplySink::flush`], once the backend read's replies are all delivered,
//! takes every item the client is owed, if all are in and plain, and writes them in one
//! `writev` (see [`DirectOut`]); otherwise it wakes the writer. What that write leaves (a full
//! socket buffer) the writer takes first, before any later item, so the order holds.
//!
//! It also counts the bytes of those replies until the writer has written them
//! ([`ReplyQueue::finished`]): an item that awaits a reply is queued only while the client's
//! [`Account`] has room under its [`Budget`], so a client that reads slowly stops being read
//! instead of making the proxy buffer its replies (see [`crate::reply_memory`] for the bound).
use crate::backend::conn::{ReplyResult, ReplySink};
use crate::reply_memory::{Account, Budget, Room};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

/// The client's socket and bookkeeping, for replies written where they arrive.
pub trait DirectOut<T>: Send + Sync {
    /// Whether `item`'s node reply goes to the client exactly as it is (nothing for the
    /// writer to do but write it).
    fn is_plain(&self, item: &T, reply: &[u8]) -> bool;
    /// `item` was answered with `reply`: what the writer notes per reply (metrics, slow log).
    fn answered(&self, item: T, reply: &[u8]);
    /// One write attempt that never waits.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

/// What [`ReplyQueue::pop`] found.
#[derive(Debug, PartialEq)]
pub enum Popped<T> {
    /// The front item, with its node reply if it awaited one.
    Item(T, Option<ReplyResult>),
    /// Replies written where they arrived left bytes behind: they are in the writer's buffer
    /// now, to be written before anything else.
    Unwritten,
    /// The producer side closed and everything is drained.
    Closed,
}

/// Replies larger than this always go through the writer (which writes them uncopied).
const DIRECT_LIMIT: usize = 64 * 1024;

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
    /// Where replies may be written without the writer (plain TCP clients).
    direct: Option<Arc<dyn DirectOut<T>>>,
    /// Replies taken off the queue for the direct path and not written yet, in order.
    unwritten: Vec<Bytes>,
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
                direct: None,
                unwritten: Vec::new(),
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

    /// Lets replies be written where they arrive, through `out`, while the writer is idle.
    pub fn set_direct(&self, out: Arc<dyn DirectOut<T>>) {
        let mut g = self.lock();
        if !g.closed_by_consumer {
            g.direct = Some(out);
        }
    }

    /// The front item and its node reply (`None` if it awaited none), if it is ready; never
    /// waits. Bytes the direct path left unwritten are appended to `out` first: they come
    /// before any item still queued.
    pub fn try_pop(&self, out: &mut BytesMut) -> Option<(T, Option<ReplyResult>)> {
        let mut g = self.lock();
        if !g.unwritten.is_empty() {
            for b in g.unwritten.drain(..) {
                out.extend_from_slice(&b);
            }
        }
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

    /// The front item once it is ready, waiting for it (see [`Popped`]). Call it only with
    /// `out` written: while it waits, replies may be written where they arrive.
    pub async fn pop(&self, out: &mut BytesMut) -> Popped<T> {
        poll_fn(|cx| {
            if let Some((item, reply)) = self.try_pop(out) {
                return Poll::Ready(Popped::Item(item, reply));
            }
            if !out.is_empty() {
                return Poll::Ready(Popped::Unwritten);
            }
            let mut g = self.lock();
            if g.front_ready() || !g.unwritten.is_empty() {
                // Changed between the two locks: take it on the next poll.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if g.items.is_empty() && g.closed_by_producer {
                return Poll::Ready(Popped::Closed);
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

    /// The consumer is gone: waiting and future pushes answer `false`, and nothing more is
    /// written where it arrives (the socket is let go).
    pub fn close_consumer(&self) {
        let mut g = self.lock();
        g.closed_by_consumer = true;
        g.direct = None;
        g.unwritten = Vec::new();
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

impl<T: Send + 'static> ReplyQueue<T> {
    /// Delivers a node reply into slot `seq`. With `batched`, a reply for the front item
    /// while the writer is idle does not wake it: `true` then, and the caller must
    /// [`flush`](ReplySink::flush) once the other replies of its read are delivered too.
    fn deliver(&self, seq: u64, reply: ReplyResult, batched: bool) -> bool {
        let mut g = self.lock();
        let Some(i) = seq.checked_sub(g.head) else {
            return false;
        };
        let Some(entry) = g.items.get_mut(i as usize) else {
            return false;
        };
        if !matches!(entry.reply, Slot::Waiting) {
            return false;
        }
        let len = reply.as_ref().map_or(0, |b| b.len());
        entry.reply = Slot::Arrived(reply);
        g.account.arrived(len, &self.budget);
        let mut deferred = false;
        if i == 0 {
            if batched && g.consumer.is_some() && g.direct.is_some() {
                deferred = true; // the flush decides: written here, or the writer woken
            } else {
                g.wake_consumer();
            }
        }
        g.wake_producers();
        deferred
    }
}

impl<T> Inner<T> {
    /// After a backend read's replies are delivered: if every item the client is owed is in
    /// and goes out as it is, takes them all (doing what the writer would for each) and
    /// writes them in one `writev`; otherwise wakes the writer for what is ready. (All or
    /// none: a pipeline spread over several nodes, its replies in several backend reads,
    /// goes out in one write by the writer, which waits a turn for the rest, rather than in
    /// one write per node: that was 1.4 writes per 16-GET pipeline, and 36% more system time
    /// per request at `-P 16` over 3 masters, `perf stat`.)
    fn flush(&mut self, budget: &Budget) {
        if self.consumer.is_none() {
            return; // the writer is up: it takes what is ready (and unwritten) itself
        }
        if self.all_plain() {
            self.take_plain(budget);
            self.write_unwritten();
        } else if self.front_ready() {
            self.wake_consumer();
        }
    }

    /// Whether every item is in, and each a node reply that goes out as it is.
    fn all_plain(&self) -> bool {
        let Some(d) = &self.direct else {
            return false;
        };
        !self.items.is_empty()
            && self.items.iter().all(|e| match &e.reply {
                Slot::Arrived(Ok(b)) => b.len() < DIRECT_LIMIT && d.is_plain(&e.item, b),
                _ => false,
            })
    }

    /// Takes every item (all plain, see [`Inner::all_plain`]) into `unwritten`, doing what
    /// the writer would for each.
    fn take_plain(&mut self, budget: &Budget) {
        let Some(d) = &self.direct else {
            return;
        };
        for entry in self.items.drain(..) {
            let Slot::Arrived(Ok(b)) = entry.reply else {
                unreachable!("all_plain checked it")
            };
            d.answered(entry.item, &b);
            self.account.released(b.len(), budget);
            self.head += 1;
            self.settled += 1;
            self.unwritten.push(b);
        }
        if let Some(w) = self.settling.take() {
            w.wake();
        }
        if self.items.capacity() > KEEP {
            self.items = VecDeque::new();
        }
        self.wake_producers();
    }

    /// Writes what the direct path took (the writer is parked); what does not fit in the
    /// socket goes to the writer.
    fn write_unwritten(&mut self) {
        let Some(d) = &self.direct else {
            return;
        };
        const AT_ONCE: usize = 32;
        while !self.unwritten.is_empty() {
            let result = match &self.unwritten[..] {
                // The usual case at `-P 1`: no `AT_ONCE`-entry slice array to fill.
                [one] => d.try_write_vectored(&[IoSlice::new(one)]),
                many => {
                    let mut slices = [IoSlice::new(&[]); AT_ONCE];
                    for (s, b) in slices.iter_mut().zip(many) {
                        *s = IoSlice::new(b);
                    }
                    d.try_write_vectored(&slices[..many.len().min(AT_ONCE)])
                }
            };
            let written = match result {
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    // The client is gone: its writer notices on its next write or when the
                    // reader ends; nothing more goes this way.
                    self.unwritten.clear();
                    self.direct = None;
                    break;
                }
            };
            let mut left = written;
            let done = self.unwritten.iter().take_while(|b| {
                let whole = b.len() <= left;
                if whole {
                    left -= b.len();
                }
                whole
            });
            let done = done.count();
            self.unwritten.drain(..done);
            if let Some(b) = self.unwritten.first_mut() {
                b.advance(left);
            }
            if written == 0 {
                break;
            }
        }
        if self.unwritten.is_empty() {
            if self.unwritten.capacity() > 16 {
                self.unwritten = Vec::new();
            }
        } else {
            self.wake_consumer(); // the socket is full: the writer waits for room
        }
    }
}

impl<T: Send + 'static> ReplySink for ReplyQueue<T> {
    fn complete(&self, seq: u64, reply: ReplyResult) {
        self.deliver(seq, reply, false);
    }

    fn complete_batched(&self, seq: u64, reply: ReplyResult) -> bool {
        self.deliver(seq, reply, true)
    }

    fn flush(&self) {
        self.lock().flush(&self.budget);
    }

    fn is_closed(&self) -> bool {
        self.lock().closed_by_consumer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendError;

    /// `pop` for a queue with no direct path: an item, or `None` once closed.
    async fn pop<T>(q: &ReplyQueue<T>) -> Option<(T, Option<ReplyResult>)> {
        match q.pop(&mut BytesMut::new()).await {
            Popped::Item(item, reply) => Some((item, reply)),
            Popped::Closed => None,
            Popped::Unwritten => panic!("no direct path here"),
        }
    }

    /// A client socket that takes at most `room` bytes, one `writev` at a time; items whose
    /// name starts with `x` are not plain.
    #[derive(Default)]
    struct Socket {
        written: Mutex<Vec<Vec<u8>>>,
        room: Mutex<usize>,
        answered: Mutex<Vec<&'static str>>,
    }

    impl DirectOut<&'static str> for Socket {
        fn is_plain(&self, item: &&'static str, _: &[u8]) -> bool {
            !item.starts_with('x')
        }
        fn answered(&self, item: &'static str, _: &[u8]) {
            self.answered.lock().unwrap().push(item);
        }
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut room = self.room.lock().unwrap();
            if *room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = all.len().min(*room);
            *room -= n;
            self.written.lock().unwrap().push(all[..n].to_vec());
            Ok(n)
        }
    }

    fn ok(s: &'static str) -> ReplyResult {
        Ok(Bytes::from_static(s.as_bytes()))
    }

    /// A queue with a direct path and a consumer parked in `pop` (as the writer is when it
    /// has nothing to write).
    async fn parked(
        room: usize,
    ) -> (
        Arc<ReplyQueue<&'static str>>,
        Arc<Socket>,
        tokio::task::JoinHandle<(Popped<&'static str>, BytesMut)>,
    ) {
        let q = Arc::new(ReplyQueue::new(16));
        let socket = Arc::new(Socket::default());
        *socket.room.lock().unwrap() = room;
        q.set_direct(socket.clone());
        let q2 = q.clone();
        let consumer = tokio::spawn(async move {
            let mut out = BytesMut::new();
            let p = q2.pop(&mut out).await;
            (p, out)
        });
        tokio::task::yield_now().await;
        assert!(!consumer.is_finished());
        (q, socket, consumer)
    }

    #[tokio::test]
    async fn replies_for_an_idle_writer_are_written_where_they_arrive_in_one_write() {
        let (q, socket, consumer) = parked(1 << 20).await;
        let a = q.push_awaiting("a").await.unwrap();
        let b = q.push_awaiting("b").await.unwrap();
        // b arrives first: it waits for a, and nothing is written yet.
        assert!(!q.complete_batched(b, ok("+b\r\n")));
        assert!(q.complete_batched(a, ok("+a\r\n")), "a asks for a flush");
        assert!(
            socket.written.lock().unwrap().is_empty(),
            "written on flush, not before"
        );
        q.flush();
        assert_eq!(
            *socket.written.lock().unwrap(),
            vec![b"+a\r\n+b\r\n".to_vec()]
        );
        assert_eq!(*socket.answered.lock().unwrap(), vec!["a", "b"]);
        assert!(q.wait_settled().await, "both count as answered");
        tokio::task::yield_now().await;
        assert!(!consumer.is_finished(), "the writer was not woken");
        // An error (not a node's reply) goes through the writer.
        let c = q.push_awaiting("c").await.unwrap();
        assert!(q.complete_batched(c, Err(BackendError::Lost)));
        q.flush();
        let (popped, out) = consumer.await.unwrap();
        assert_eq!(popped, Popped::Item("c", Some(Err(BackendError::Lost))));
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn what_the_socket_does_not_take_goes_to_the_writer_before_later_items() {
        let (q, socket, consumer) = parked(3).await;
        let a = q.push_awaiting("a").await.unwrap();
        assert!(q.complete_batched(a, ok("+aaaa\r\n")));
        q.flush();
        assert_eq!(*socket.written.lock().unwrap(), vec![b"+aa".to_vec()]);
        let (popped, mut out) = consumer.await.unwrap();
        assert_eq!(popped, Popped::Unwritten);
        assert_eq!(&out[..], b"aa\r\n", "the rest of a, for the writer");
        // b is not written directly while the writer is up.
        let b = q.push_awaiting("b").await.unwrap();
        assert!(!q.complete_batched(b, ok("+b\r\n")));
        assert_eq!(q.try_pop(&mut out), Some(("b", Some(ok("+b\r\n")))));
    }

    #[tokio::test]
    async fn a_pipeline_not_all_in_goes_to_the_writer_whole() {
        // Spread over nodes, a pipeline's replies come in several backend reads: the first
        // read's are not written alone (one write per node), the writer gets them.
        let (q, socket, consumer) = parked(1 << 20).await;
        let a = q.push_awaiting("a").await.unwrap();
        let b = q.push_awaiting("b").await.unwrap();
        assert!(q.complete_batched(a, ok("+a\r\n")));
        q.flush();
        let (popped, out) = consumer.await.unwrap();
        assert_eq!(popped, Popped::Item("a", Some(ok("+a\r\n"))));
        assert!(out.is_empty());
        assert!(!q.complete_batched(b, ok("+b\r\n")));
        q.flush();
        assert!(socket.written.lock().unwrap().is_empty());
        assert!(socket.answered.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_reply_that_is_not_plain_goes_to_the_writer_with_those_around_it() {
        let (q, socket, consumer) = parked(1 << 20).await;
        let a = q.push_awaiting("a").await.unwrap();
        let x = q.push_awaiting("x").await.unwrap();
        let b = q.push_awaiting("b").await.unwrap();
        assert!(!q.complete_batched(x, ok("-MOVED 1 h:1\r\n")));
        assert!(!q.complete_batched(b, ok("+b\r\n")));
        assert!(q.complete_batched(a, ok("+a\r\n")));
        q.flush();
        assert!(socket.written.lock().unwrap().is_empty());
        let (popped, out) = consumer.await.unwrap();
        assert!(out.is_empty());
        assert_eq!(popped, Popped::Item("a", Some(ok("+a\r\n"))));
        let mut out = BytesMut::new();
        assert_eq!(
            q.try_pop(&mut out),
            Some(("x", Some(ok("-MOVED 1 h:1\r\n"))))
        );
        assert_eq!(q.try_pop(&mut out), Some(("b", Some(ok("+b\r\n")))));
    }

    #[tokio::test]
    async fn no_direct_path_once_the_consumer_is_gone_or_unbatched() {
        let (q, socket, consumer) = parked(1 << 20).await;
        let a = q.push_awaiting("a").await.unwrap();
        q.complete(a, ok("+a\r\n"));
        let (popped, _) = consumer.await.unwrap();
        assert_eq!(popped, Popped::Item("a", Some(ok("+a\r\n"))));
        let b = q.push_awaiting("b").await.unwrap();
        q.close_consumer();
        assert!(!q.complete_batched(b, ok("+b\r\n")));
        q.flush();
        assert!(socket.written.lock().unwrap().is_empty());
        assert_eq!(
            Arc::strong_count(&socket),
            1,
            "the queue let go of the socket"
        );
    }

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
        assert_eq!(pop(&q).await, Some((1, None)));
        assert!(producer.await.unwrap());
        assert_eq!(q.try_pop(&mut BytesMut::new()), Some((2, None)));
        assert_eq!(pop(&q).await, Some((3, None)));
        q.close_producer();
        assert_eq!(pop(&q).await, None);
        q.close_consumer();
        assert!(!q.push(4).await);
    }

    #[tokio::test]
    async fn a_waiting_consumer_is_woken() {
        let q = Arc::new(ReplyQueue::new(4));
        let q2 = q.clone();
        let consumer = tokio::spawn(async move { pop(&q2).await });
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
        assert!(
            q.try_pop(&mut BytesMut::new()).is_none(),
            "a still waits for its reply"
        );
        // A later reply arriving first does not let anything jump the queue.
        q.complete(c, Err(BackendError::Lost));
        assert!(q.try_pop(&mut BytesMut::new()).is_none());
        let q2 = q.clone();
        let consumer = tokio::spawn(async move { pop(&q2).await });
        tokio::task::yield_now().await;
        assert!(!consumer.is_finished());
        q.complete(a, Ok(Bytes::from_static(b"+OK\r\n")));
        let (item, reply) = consumer.await.unwrap().unwrap();
        assert_eq!(
            (item, reply.unwrap().unwrap()),
            ("a", Bytes::from_static(b"+OK\r\n"))
        );
        assert_eq!(
            q.try_pop(&mut BytesMut::new())
                .map(|(i, r)| (i, r.is_none())),
            Some(("b", true))
        );
        let (item, reply) = q.try_pop(&mut BytesMut::new()).unwrap();
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
