//! Runs a session's reader and writer halves, and its kill signal, in the client's one task,
//! polling on each wake-up only the branch whose waker fired.
//!
//! `tokio::join!` inside `tokio::select!` polled all three on every wake-up: when a reply came
//! in, the reader's socket readiness and the kill `Notified` were polled again for nothing, and
//! when a request came in, the writer's queue was (two wake-ups per request, each polling three
//! futures). Here each branch gets a waker of its own that marks it and wakes the task; a
//! poll looks only at the marked ones. Measured with `benches/instructions.py` (callgrind,
//! userspace instructions per request, 2026-12-02): GET `-c 50 -P 1` 7,603 -> 6,881, `-c 1`
//! 12,248 -> 11,503, `-P 16` 3,504 -> 3,429 (table in `benches/README.md`, "Issue 13").
//!
//! The cost of the wakers is an `Arc` each and one shared: with 5,000 clients the first touch
//! of the shared one is ~6% of the proxy's CPU samples (`perf`), a cache miss per wake-up; a
//! waker that is a tagged pointer into one allocation would need `unsafe`, which the crate
//! forbids.
use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

const READER: u8 = 1;
const WRITER: u8 = 2;
const KILL: u8 = 4;

/// What the branch wakers share: which branches were woken, and the task to wake.
struct Shared {
    woken: AtomicU8,
    task: Mutex<Option<Waker>>,
}

/// One branch's waker: marks the branch, then wakes the task.
struct Branch {
    shared: Arc<Shared>,
    bit: u8,
}

impl Wake for Branch {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.woken.fetch_or(self.bit, Ordering::AcqRel);
        let task = self.shared.task.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = task.as_ref() {
            w.wake_by_ref();
        }
    }
}

pin_project_lite::pin_project! {
    /// The three branches and their wakers. A struct rather than an `async fn`: an `async fn`
    /// keeps its arguments and the pinned copies it polls side by side in its state, which
    /// made every client's task twice the size of its two halves (10.9 KB instead of 5.4 KB,
    /// `-Zprint-type-sizes`).
    pub(super) struct Halves<R, W, K> {
        #[pin]
        reader: R,
        #[pin]
        writer: W,
        #[pin]
        killed: K,
        shared: Arc<Shared>,
        wakers: Option<[Waker; 3]>,
        // The task's waker as last stored in `shared`: the lock is taken only when it changes
        // (never, on a current-thread runtime).
        stored: Option<Waker>,
        done: u8,
    }
}

/// Runs `reader` and `writer` until both are done, or until `killed` resolves (then neither
/// is polled again: dropping them closes the connection).
pub(super) fn halves_until_killed<R, W, K>(reader: R, writer: W, killed: K) -> Halves<R, W, K>
where
    R: Future<Output = ()>,
    W: Future<Output = ()>,
    K: Future<Output = ()>,
{
    Halves {
        reader,
        writer,
        killed,
        shared: Arc::new(Shared {
            woken: AtomicU8::new(READER | WRITER | KILL),
            task: Mutex::new(None),
        }),
        wakers: None,
        stored: None,
        done: 0,
    }
}

impl<R, W, K> Future for Halves<R, W, K>
where
    R: Future<Output = ()>,
    W: Future<Output = ()>,
    K: Future<Output = ()>,
{
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let shared = &*this.shared;
        // The branch wakers are made on the first poll, not per connection accepted and
        // never polled.
        let [reader_waker, writer_waker, kill_waker] = this.wakers.get_or_insert_with(|| {
            [READER, WRITER, KILL].map(|bit| {
                Waker::from(Arc::new(Branch {
                    shared: shared.clone(),
                    bit,
                }))
            })
        });
        if !this
            .stored
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            let w = cx.waker().clone();
            *shared.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(w.clone());
            *this.stored = Some(w);
        }
        let woken = shared.woken.swap(0, Ordering::AcqRel) & !*this.done;
        if woken & KILL != 0
            && this
                .killed
                .poll(&mut Context::from_waker(kill_waker))
                .is_ready()
        {
            return Poll::Ready(());
        }
        if woken & READER != 0
            && this
                .reader
                .poll(&mut Context::from_waker(reader_waker))
                .is_ready()
        {
            *this.done |= READER;
        }
        if woken & WRITER != 0
            && this
                .writer
                .poll(&mut Context::from_waker(writer_waker))
                .is_ready()
        {
            *this.done |= WRITER;
        }
        if *this.done & (READER | WRITER) == READER | WRITER {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready after `ready_after` of them, waking itself each time before.
    struct Counted<'a> {
        polls: &'a AtomicUsize,
        ready_after: usize,
    }

    impl Future for Counted<'_> {
        type Output = ();
        fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let n = self.polls.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= self.ready_after {
                Poll::Ready(())
            } else {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    /// Counts the polls of the future it wraps.
    struct Polls<'a, F> {
        polls: &'a AtomicUsize,
        inner: std::pin::Pin<Box<F>>,
    }

    impl<F: Future> Future for Polls<'_, F> {
        type Output = F::Output;
        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            self.inner.as_mut().poll(cx)
        }
    }

    #[tokio::test]
    async fn only_the_woken_branch_is_polled() {
        let (r, w, k) = (
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        );
        // The reader wakes itself four times; the writer is never woken; the kill comes once
        // the reader is done.
        let reader = Counted {
            polls: &r,
            ready_after: 5,
        };
        let writer = Polls {
            polls: &w,
            inner: Box::pin(std::future::pending::<()>()),
        };
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let killed = Polls {
            polls: &k,
            inner: Box::pin(async {
                let _ = kill_rx.await;
            }),
        };
        let kill_after_reader = async {
            while r.load(Ordering::Relaxed) < 5 {
                tokio::task::yield_now().await;
            }
            let _ = kill_tx.send(());
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = halves_until_killed(reader, writer, killed) => {}
            _ = kill_after_reader => unreachable!(),
        }
        assert_eq!(r.load(Ordering::Relaxed), 5);
        assert_eq!(
            w.load(Ordering::Relaxed),
            1,
            "the writer is polled only when woken"
        );
        assert_eq!(
            k.load(Ordering::Relaxed),
            2,
            "the kill: once to register, once when sent"
        );
    }

    #[tokio::test]
    async fn ends_when_both_halves_end() {
        let (r, w) = (AtomicUsize::new(0), AtomicUsize::new(0));
        halves_until_killed(
            Counted {
                polls: &r,
                ready_after: 3,
            },
            Counted {
                polls: &w,
                ready_after: 7,
            },
            std::future::pending(),
        )
        .await;
        assert_eq!(
            (r.load(Ordering::Relaxed), w.load(Ordering::Relaxed)),
            (3, 7)
        );
    }
}
