//! A client's reader and writer, each in a task of its own, so a wake-up polls the half it is
//! for and nothing else, through tokio's own waker. (In one task they needed a waker per half
//! and shared state to tell which one fired: with 5,000 clients the first touch of that state
//! was a cache miss per wake-up, ~8% of the proxy's samples in `perf`.) The client's session
//! task only waits for both to end, or for CLIENT KILL or the drain deadline; dropping the
//! [`Halves`] aborts them, so either way they never outlive it.
use std::future::Future;
use tokio::task::JoinHandle;

pub(super) struct Halves {
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Halves {
    pub(super) fn spawn(
        reader: impl Future<Output = ()> + Send + 'static,
        writer: impl Future<Output = ()> + Send + 'static,
    ) -> Halves {
        Halves {
            reader: tokio::spawn(reader),
            writer: tokio::spawn(writer),
        }
    }

    /// Resolves once both halves have ended, or as soon as one of them panicked (the other
    /// would wait for it forever: dropping `self` then aborts it).
    pub(super) async fn ended(&mut self) {
        let (first, reader_done) = tokio::select! {
            r = &mut self.reader => (r, true),
            r = &mut self.writer => (r, false),
        };
        if first.is_err() {
            return;
        }
        let _ = match reader_done {
            true => (&mut self.writer).await,
            false => (&mut self.reader).await,
        };
    }
}

impl Drop for Halves {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn ends_when_both_end_and_aborts_what_is_left_when_dropped() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut halves = Halves::spawn(async {}, async {
            let _ = rx.await;
        });
        let mut ended = std::pin::pin!(halves.ended());
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut ended)
                .await
                .is_err(),
            "the writer has not ended"
        );
        let _ = tx.send(());
        ended.await;

        // Dropped while a half still runs: that half is aborted (its future dropped).
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = Flag(dropped.clone());
        let halves = Halves::spawn(async {}, async move {
            let _flag = flag;
            std::future::pending::<()>().await
        });
        tokio::task::yield_now().await;
        drop(halves);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(dropped.load(Ordering::Relaxed), "the writer was aborted");
    }

    #[tokio::test]
    async fn a_panicking_half_ends_the_wait() {
        let mut halves = Halves::spawn(async { panic!("reader fails") }, std::future::pending());
        tokio::time::timeout(std::time::Duration::from_secs(5), halves.ended())
            .await
            .expect("the wait ends when a half panics");
    }
}
