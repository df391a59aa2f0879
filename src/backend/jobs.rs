//! The queue of jobs into one backend connection task: many senders (every client of the worker
//! that talks to the node), one receiver that takes everything queued at once.
//!
//! A channel costs several atomic operations and a block-list walk per message; this is a
//! mutex-guarded `VecDeque` that the receiver swaps out whole, so a batch of requests costs one
//! lock per send plus one per batch, and the two deques trade their capacity back and forth
//! instead of allocating. The receiver learns that every sender is gone (the connection is no
//! longer wanted) when the last [`JobSender`] is dropped.
use super::conn::Job;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

struct Shared {
    inner: Mutex<Inner>,
}

struct Inner {
    queue: VecDeque<Job>,
    receiver: Option<Waker>,
    /// Every sender is gone.
    closed: bool,
    /// The receiver is gone: sends fail.
    receiver_gone: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending side; cheap to clone. Dropping the last clone closes the queue.
#[derive(Clone)]
pub struct JobSender {
    handle: Arc<SenderHandle>,
}

/// Shared by every clone of one sender; closes the queue when the last clone goes.
struct SenderHandle(Arc<Shared>);

impl Drop for SenderHandle {
    fn drop(&mut self) {
        let mut g = self.0.lock();
        g.closed = true;
        let w = g.receiver.take();
        drop(g);
        if let Some(w) = w {
            w.wake();
        }
    }
}

impl std::fmt::Debug for JobSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobSender")
    }
}

pub struct JobReceiver {
    shared: Arc<Shared>,
}

impl Drop for JobReceiver {
    fn drop(&mut self) {
        let mut g = self.shared.lock();
        g.receiver_gone = true;
        // Jobs still queued are dropped here; each fails its caller (see `ReplyTo`).
        let queued = std::mem::take(&mut g.queue);
        drop(g);
        drop(queued);
    }
}

pub fn queue() -> (JobSender, JobReceiver) {
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            queue: VecDeque::new(),
            receiver: None,
            closed: false,
            receiver_gone: false,
        }),
    });
    (
        JobSender {
            handle: Arc::new(SenderHandle(shared.clone())),
        },
        JobReceiver { shared },
    )
}

impl JobSender {
    /// Queues `job`; gives it back if the receiving task is gone.
    pub fn send(&self, job: Job) -> Result<(), Job> {
        let mut g = self.handle.0.lock();
        if g.receiver_gone {
            return Err(job);
        }
        g.queue.push_back(job);
        let w = if g.queue.len() == 1 {
            g.receiver.take()
        } else {
            None
        };
        drop(g);
        if let Some(w) = w {
            w.wake();
        }
        Ok(())
    }
}

impl JobReceiver {
    /// Moves every queued job to the back of `out` (expected empty: then the two deques just
    /// swap); `false` if there was none.
    pub fn try_recv_all(&mut self, out: &mut VecDeque<Job>) -> bool {
        let mut g = self.shared.lock();
        if g.queue.is_empty() {
            return false;
        }
        if out.is_empty() {
            std::mem::swap(&mut g.queue, out);
        } else {
            out.append(&mut g.queue);
        }
        true
    }

    /// Waits for at least one job and moves every queued job to `out`; `false` once every
    /// sender is gone and nothing is left.
    pub async fn recv_all(&mut self, out: &mut VecDeque<Job>) -> bool {
        poll_fn(|cx| {
            if self.try_recv_all(out) {
                return Poll::Ready(true);
            }
            let mut g = self.shared.lock();
            if !g.queue.is_empty() {
                cx.waker().wake_by_ref(); // sent between the two locks
                return Poll::Pending;
            }
            if g.closed {
                return Poll::Ready(false);
            }
            g.receiver = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::conn::ReplyTo;
    use bytes::Bytes;

    fn job(
        n: u8,
    ) -> (
        Job,
        tokio::sync::oneshot::Receiver<super::super::conn::ReplyResult>,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = Job {
            prefix: None,
            bytes: Bytes::from(vec![n]),
            reply: ReplyTo::oneshot(tx),
        };
        (job, rx)
    }

    #[tokio::test]
    async fn batches_in_order_and_closes_with_the_last_sender() {
        let (tx, mut rx) = queue();
        let tx2 = tx.clone();
        let mut out = VecDeque::new();
        assert!(!rx.try_recv_all(&mut out));
        tx.send(job(1).0).unwrap();
        tx2.send(job(2).0).unwrap();
        assert!(rx.recv_all(&mut out).await);
        let got: Vec<u8> = out.drain(..).map(|j| j.bytes[0]).collect();
        assert_eq!(got, [1, 2]);
        // A waiting receiver is woken by a send.
        let waiter = tokio::spawn(async move {
            let mut out = VecDeque::new();
            let more = rx.recv_all(&mut out).await;
            (more, out.len(), rx)
        });
        tokio::task::yield_now().await;
        tx.send(job(3).0).unwrap();
        let (more, n, mut rx) = waiter.await.unwrap();
        assert!(more && n == 1);
        drop(tx);
        tx2.send(job(4).0).unwrap();
        drop(tx2);
        assert!(
            rx.recv_all(&mut out).await,
            "what was queued is still delivered"
        );
        assert!(!rx.recv_all(&mut out).await, "then the end");
    }

    #[tokio::test]
    async fn a_gone_receiver_fails_queued_and_new_jobs() {
        let (tx, rx) = queue();
        let (j, queued) = job(1);
        tx.send(j).unwrap();
        drop(rx);
        assert!(
            queued.await.unwrap().is_err(),
            "dropped jobs answer with an error"
        );
        assert!(tx.send(job(2).0).is_err());
    }
}
