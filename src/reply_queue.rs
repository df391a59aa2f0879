//! The bounded FIFO of replies a client is owed, between its reader (and its subscription
//! connection, if any) and its writer. Unlike a channel it allocates nothing until something is
//! queued and gives its memory back when drained, so an idle client costs no queue memory; when
//! it holds `cap` items, producers wait (backpressure on a client that does not read).
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Mutex;
use std::task::{Poll, Waker};

pub struct ReplyQueue<T> {
    inner: Mutex<Inner<T>>,
    cap: usize,
}

struct Inner<T> {
    items: VecDeque<T>,
    /// The consumer waiting for an item.
    consumer: Option<Waker>,
    /// Producers waiting for room (the reader and a subscription task: at most a few).
    producers: Vec<Waker>,
    /// No more items will be produced that matter: the consumer ends once drained.
    closed_by_producer: bool,
    /// The consumer is gone: producers stop.
    closed_by_consumer: bool,
}

/// Keep this much capacity after draining; more is given back.
const KEEP: usize = 16;

impl<T> ReplyQueue<T> {
    pub fn new(cap: usize) -> ReplyQueue<T> {
        ReplyQueue {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                consumer: None,
                producers: Vec::new(),
                closed_by_producer: false,
                closed_by_consumer: false,
            }),
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item`, waiting while the queue is full. `false` once the consumer is gone.
    pub async fn push(&self, item: T) -> bool {
        let mut item = Some(item);
        poll_fn(|cx| {
            let mut g = self.lock();
            if g.closed_by_consumer {
                return Poll::Ready(false);
            }
            if g.items.len() < self.cap {
                g.items.push_back(item.take().expect("pushed once"));
                if let Some(w) = g.consumer.take() {
                    w.wake();
                }
                return Poll::Ready(true);
            }
            if !g.producers.iter().any(|w| w.will_wake(cx.waker())) {
                g.producers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// The next item if one is queued; never waits.
    pub fn try_pop(&self) -> Option<T> {
        let mut g = self.lock();
        let item = g.items.pop_front();
        if item.is_some() {
            for w in g.producers.drain(..) {
                w.wake();
            }
            if g.items.is_empty() && g.items.capacity() > KEEP {
                g.items = VecDeque::new();
            }
        }
        item
    }

    /// The next item, waiting for one; `None` once the producer side closed and all is drained.
    pub async fn pop(&self) -> Option<T> {
        poll_fn(|cx| {
            if let Some(item) = self.try_pop() {
                return Poll::Ready(Some(item));
            }
            let mut g = self.lock();
            if !g.items.is_empty() {
                // Pushed between the two locks: take it on the next poll.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if g.closed_by_producer {
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
        if let Some(w) = g.consumer.take() {
            w.wake();
        }
    }

    /// The consumer is gone: waiting and future pushes answer `false`.
    pub fn close_consumer(&self) {
        let mut g = self.lock();
        g.closed_by_consumer = true;
        g.items = VecDeque::new();
        for w in g.producers.drain(..) {
            w.wake();
        }
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
        assert_eq!(q.pop().await, Some(1));
        assert!(producer.await.unwrap());
        assert_eq!(q.try_pop(), Some(2));
        assert_eq!(q.pop().await, Some(3));
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
        assert_eq!(consumer.await.unwrap(), Some(7));
    }
}
