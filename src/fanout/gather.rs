//! The first replies of a fan-out's parts: one slot per part, filled by the backend connections
//! (as a [`ReplySink`]) and awaited in part order by the fan-out. One allocation for the whole
//! fan-out, where a oneshot channel per part cost an allocation and a free each (a 10-key MSET
//! over 10 slots spent a third of its instructions in the allocator). Redirects and retries of a
//! part (rare) still go through [`Forward::finish`](crate::forward::Forward::finish) and its own
//! channel.
use crate::backend::conn::{ReplyResult, ReplySink};
use crate::backend::BackendError;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

pub struct Gather {
    inner: Mutex<Inner>,
}

struct Inner {
    replies: Vec<Slot>,
    /// The fan-out waiting for the slot it asked for.
    waiter: Option<Waker>,
    /// The fan-out is gone (its client left): nobody reads replies any more.
    abandoned: bool,
}

enum Slot {
    Waiting,
    Arrived(ReplyResult),
    Taken,
}

impl Gather {
    /// Slots for `parts` replies, every one waiting.
    pub fn new(parts: usize) -> Arc<Gather> {
        let mut replies = Vec::with_capacity(parts);
        replies.resize_with(parts, || Slot::Waiting);
        Arc::new(Gather {
            inner: Mutex::new(Inner {
                replies,
                waiter: None,
                abandoned: false,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for part `i`'s reply and takes it; a slot taken before, or one that does not exist,
    /// answers [`BackendError::Lost`] rather than waiting forever.
    pub async fn take(&self, i: usize) -> ReplyResult {
        poll_fn(|cx| {
            let mut g = self.lock();
            let Some(slot) = g.replies.get_mut(i) else {
                return Poll::Ready(Err(BackendError::Lost));
            };
            match std::mem::replace(slot, Slot::Taken) {
                Slot::Arrived(r) => Poll::Ready(r),
                Slot::Taken => Poll::Ready(Err(BackendError::Lost)),
                Slot::Waiting => {
                    *slot = Slot::Waiting;
                    g.waiter = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// The fan-out will not read any more replies.
    pub fn abandon(&self) {
        let mut g = self.lock();
        g.abandoned = true;
        g.replies.clear();
    }
}

impl ReplySink for Gather {
    fn complete(&self, seq: u64, reply: ReplyResult) {
        let mut g = self.lock();
        let Some(slot) = g.replies.get_mut(seq as usize) else {
            return;
        };
        if matches!(slot, Slot::Waiting) {
            *slot = Slot::Arrived(reply);
            if let Some(w) = g.waiter.take() {
                drop(g);
                w.wake();
            }
        }
    }

    fn is_closed(&self) -> bool {
        self.lock().abandoned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn replies_are_taken_per_slot_whatever_order_they_arrive_in() {
        let g = Gather::new(2);
        g.complete(1, Ok(Bytes::from_static(b"+second\r\n")));
        let g2 = g.clone();
        let first = tokio::spawn(async move { g2.take(0).await });
        tokio::task::yield_now().await;
        assert!(!first.is_finished(), "slot 0 has no reply yet");
        g.complete(0, Ok(Bytes::from_static(b"+first\r\n")));
        g.complete(0, Err(BackendError::Lost)); // a second reply for a slot is ignored
        assert_eq!(first.await.unwrap().unwrap(), &b"+first\r\n"[..]);
        assert_eq!(g.take(1).await.unwrap(), &b"+second\r\n"[..]);
        assert_eq!(g.take(1).await, Err(BackendError::Lost), "taken already");
        assert_eq!(g.take(7).await, Err(BackendError::Lost), "no such slot");
        g.complete(9, Ok(Bytes::new())); // unknown slots are ignored
        assert!(!g.is_closed());
        g.abandon();
        assert!(g.is_closed());
    }
}
