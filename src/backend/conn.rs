//! One multiplexed, pipelined connection to a node, shared by many clients.
//!
//! Requests arrive on a `jobs` queue as [`Job`]s. The writer half drains every
//! job that is ready into one buffer and writes it with one syscall (large payloads are written
//! straight from the client's bytes, uncopied). Before writing, it hands each job's reply slot to the reader half,
//! in order; the reader frames replies and completes the slots first-in first-out. A reply that
//! does not come within the command timeout resets the connection and fails every pending job,
//! so a dead node costs its own callers a bounded wait and nobody else anything.
//!
//! Replies are never held back here for a slow client: each is delivered into its client's
//! reply queue as soon as it is framed, so the other clients on the connection keep flowing.
//! A client whose writer is idle has its replies from one read written by this task, in one
//! `writev` per client after the read's replies are all delivered ([`ReplySink::flush`]),
//! instead of waking its writer task for them.
//! The memory that costs is bounded where requests are sent, not here: a client's reader sends
//! only while the bytes it owes (arrived, plus an estimate per request in flight) are under its
//! cap, so what one connection can deliver to a client is its cap plus its requests in flight
//! times their reply size (see [`crate::reply_memory`]).
//!
//! The task connects lazily, on the first job, and again after any failure.
//!
//! Measured per forwarded GET (callgrind, userspace instructions, 1 worker, 2026-12-02): the
//! reply deadline as one lazily moved timer instead of a `timeout_at` per read (plus a drain
//! `sleep` built on every pass) took `-c 1` from 14,394 to 13,585 and `-c 50` from 7,516 to
//! 7,477; `more` as a flag instead of a `Notify` (with the sessions' drain signal read as a
//! flag, `proxy::Draining`) took them on to 11,934 and 7,047.
use super::connector::{Connector, NodeStream, Setup};
use super::jobs::{self, JobReceiver, JobSender};
use super::{BackendError, ConnEvents, NodeObserver, Role};
use crate::protocol::reply::Proto;
use crate::protocol::reply_framer::ReplyFramer;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The reply to one job: the node's exact reply bytes, or why there is none.
pub type ReplyResult = Result<Bytes, BackendError>;
pub type ReplyTx = oneshot::Sender<ReplyResult>;
pub type ReplyRx = oneshot::Receiver<ReplyResult>;

/// Where replies can be delivered by sequence number: a client's reply queue, which holds a
/// slot for each reply it is owed. Delivering into it costs no allocation per request.
pub trait ReplySink: Send + Sync {
    /// Delivers the reply for the slot `seq` (ignored if that slot is gone).
    fn complete(&self, seq: u64, reply: ReplyResult);
    /// [`complete`](ReplySink::complete), for a reply framed with others from one read: the
    /// sink may keep it to write along with the others; `true` asks for a
    /// [`flush`](ReplySink::flush) once the read's replies are all delivered.
    fn complete_batched(&self, seq: u64, reply: ReplyResult) -> bool {
        self.complete(seq, reply);
        false
    }
    /// Writes what [`complete_batched`](ReplySink::complete_batched) kept.
    fn flush(&self) {}
    /// Nobody will read replies any more (the client left).
    fn is_closed(&self) -> bool;
}

/// Where one job's reply goes. Exactly one reply is delivered: a job dropped unanswered (its
/// connection task gone) answers [`BackendError::Lost`] as it goes, so no caller waits forever.
pub struct ReplyTo(Option<Target>);

enum Target {
    Oneshot(ReplyTx),
    /// Slot `seq` of a client's reply queue (the hot path: one plain request).
    Sink(Arc<dyn ReplySink>, u64),
}

impl ReplyTo {
    pub fn oneshot(tx: ReplyTx) -> ReplyTo {
        ReplyTo(Some(Target::Oneshot(tx)))
    }

    pub fn sink(sink: Arc<dyn ReplySink>, seq: u64) -> ReplyTo {
        ReplyTo(Some(Target::Sink(sink, seq)))
    }

    pub fn send(mut self, reply: ReplyResult) {
        self.deliver(reply);
    }

    /// [`send`](ReplyTo::send) for one of the replies framed from a read: a sink that asks to
    /// be flushed once they are all delivered is added to `dirty` (once, if it is the last).
    pub fn send_batched(mut self, reply: ReplyResult, dirty: &mut Vec<Arc<dyn ReplySink>>) {
        match self.0.take() {
            Some(Target::Sink(sink, seq)) => {
                if sink.complete_batched(seq, reply)
                    && !dirty.last().is_some_and(|d| Arc::ptr_eq(d, &sink))
                {
                    dirty.push(sink);
                }
            }
            target => {
                self.0 = target;
                self.deliver(reply);
            }
        }
    }

    fn deliver(&mut self, reply: ReplyResult) {
        match self.0.take() {
            Some(Target::Oneshot(tx)) => {
                let _ = tx.send(reply);
            }
            Some(Target::Sink(sink, seq)) => sink.complete(seq, reply),
            None => {}
        }
    }

    fn is_closed(&self) -> bool {
        match &self.0 {
            Some(Target::Oneshot(tx)) => tx.is_closed(),
            Some(Target::Sink(sink, _)) => sink.is_closed(),
            None => true,
        }
    }
}

impl Drop for ReplyTo {
    fn drop(&mut self) {
        self.deliver(Err(BackendError::Lost));
    }
}

impl std::fmt::Debug for ReplyTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(Target::Oneshot(_)) => f.write_str("ReplyTo::Oneshot"),
            Some(Target::Sink(_, seq)) => write!(f, "ReplyTo::Sink({seq})"),
            None => f.write_str("ReplyTo::Sent"),
        }
    }
}

/// Writes smaller than this are copied into the batch buffer; larger ones are written directly.
const COPY_LIMIT: usize = 16 * 1024;
/// Stop gathering jobs into one write past this many bytes.
const BATCH_LIMIT: usize = 256 * 1024;
/// How often a connection whose handles are all gone looks for replies nobody waits for.
const DRAIN_CHECK: Duration = Duration::from_millis(100);
/// After a failed connect, fail new jobs at once for this long instead of reconnecting per job.
const CONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// One request for a node.
#[derive(Debug)]
pub struct Job {
    /// Sent first on the same connection, its reply discarded (`ASKING` for an `-ASK` retry).
    pub prefix: Option<&'static [u8]>,
    pub bytes: Bytes,
    pub reply: ReplyTo,
}

/// How a connection is set up.
#[derive(Debug, Clone)]
pub struct ConnOptions {
    pub proto: Proto,
    /// Per-request reply deadline; `None` for connections that may block (BLPOP 0).
    pub timeout: Option<Duration>,
    pub connect_timeout: Duration,
    /// Opens, TLS-wraps and authenticates the socket.
    pub connector: Arc<Connector>,
}

/// Handle to a connection task; cheap to clone. The task ends when every handle is dropped.
#[derive(Debug, Clone)]
pub struct BackendConn {
    tx: JobSender,
}

impl BackendConn {
    pub fn spawn(addr: SocketAddr, opts: ConnOptions, events: Arc<dyn ConnEvents>) -> BackendConn {
        let (tx, rx) = jobs::queue();
        tokio::spawn(run(addr, opts, rx, events));
        BackendConn { tx }
    }

    /// Queues `bytes` (a complete request) and returns where its reply will arrive.
    pub fn send(&self, prefix: Option<&'static [u8]>, bytes: Bytes) -> ReplyRx {
        let (reply, rx) = oneshot::channel();
        self.send_to(prefix, bytes, ReplyTo::oneshot(reply));
        rx
    }

    /// Queues `bytes` (a complete request); its reply goes to `reply`.
    pub fn send_to(&self, prefix: Option<&'static [u8]>, bytes: Bytes, reply: ReplyTo) {
        if let Err(job) = self.tx.send(Job {
            prefix,
            bytes,
            reply,
        }) {
            job.reply.send(Err(BackendError::Connect));
        }
    }
}

struct Pending {
    reply: ReplyTo,
    /// Replies to discard before this job's own (the `ASKING` reply).
    skip: u8,
    deadline: Option<Instant>,
    /// When the request was queued for writing, and the node's role then (metrics).
    sent: Instant,
    role: Role,
}

async fn run(
    addr: SocketAddr,
    opts: ConnOptions,
    mut rx: JobReceiver,
    events: Arc<dyn ConnEvents>,
) {
    let mut failed_at: Option<Instant> = None;
    // Dedicated connections (no timeout) carry blocking commands: their wait is not latency.
    let stats = opts.timeout.and_then(|_| events.node_stats(addr));
    // Jobs taken off the queue and not yet written.
    let mut jobs: VecDeque<Job> = VecDeque::new();
    loop {
        if jobs.is_empty() && !rx.recv_all(&mut jobs).await {
            return;
        }
        if failed_at.is_some_and(|t| t.elapsed() < CONNECT_BACKOFF) {
            fail_queued(&mut jobs, &mut rx, BackendError::Connect);
            continue;
        }
        // `READONLY` so that a replica serves reads (harmless on a master, and it stays right
        // when roles change).
        let setup = Setup {
            proto: opts.proto,
            readonly: true,
        };
        let stream = match opts
            .connector
            .connect(addr, setup, opts.connect_timeout)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                failed_at = Some(Instant::now());
                events.connect_failed(addr, &e);
                events.failed(addr, e.kind());
                fail_queued(&mut jobs, &mut rx, e.kind());
                continue;
            }
        };
        failed_at = None;
        events.connected(addr, true);
        let error = serve(stream, &mut jobs, &mut rx, &opts, stats.as_deref()).await;
        events.connected(addr, false);
        if let Some(e) = error {
            events.failed(addr, e);
        }
    }
}

/// Fails `jobs` and every job already queued behind them.
fn fail_queued(jobs: &mut VecDeque<Job>, rx: &mut JobReceiver, error: BackendError) {
    rx.try_recv_all(jobs);
    for job in jobs.drain(..) {
        job.reply.send(Err(error));
    }
}

/// The replies a connection owes, in request order: filled by the writer before it writes,
/// emptied by the reader as replies arrive. Both halves run in the connection's one task, so
/// the lock is never contended; `more` tells a reader that waits with nothing in flight (to
/// start the reply deadline of what was just sent). It is a flag, not a `Notify`: the writer
/// sets it only while the task is being polled, and the reader is polled right after the
/// writer (`biased`), so it needs no wake-up; a `Notify` cost a waiter-list lock per wait and
/// a second poll of the task per batch (callgrind numbers in the module doc).
struct Inflight {
    queue: Mutex<VecDeque<Pending>>,
    writer_done: AtomicBool,
    more: AtomicBool,
}

impl Inflight {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs one established connection until it breaks (returns the error) or every handle is gone
/// and every reply someone still waits for has arrived (returns `None`): a dedicated connection
/// dropped right after sending EXEC still delivers EXEC's reply.
async fn serve(
    stream: NodeStream,
    jobs: &mut VecDeque<Job>,
    rx: &mut JobReceiver,
    opts: &ConnOptions,
    stats: Option<&dyn NodeObserver>,
) -> Option<BackendError> {
    match stream {
        // Plain TCP splits into owned halves without a lock between them.
        NodeStream::Plain(s) => {
            let (read, write) = s.into_split();
            serve_halves(read, write, jobs, rx, opts, stats).await
        }
        NodeStream::Tls(s) => {
            let (read, write) = tokio::io::split(*s);
            serve_halves(read, write, jobs, rx, opts, stats).await
        }
    }
}

async fn serve_halves(
    read: impl AsyncRead + Unpin,
    write: impl AsyncWrite + Unpin,
    jobs: &mut VecDeque<Job>,
    rx: &mut JobReceiver,
    opts: &ConnOptions,
    stats: Option<&dyn NodeObserver>,
) -> Option<BackendError> {
    let inflight = Inflight {
        queue: Mutex::new(VecDeque::new()),
        writer_done: AtomicBool::new(false),
        more: AtomicBool::new(false),
    };
    let result = {
        let writer = write_loop(write, jobs, rx, &inflight, opts, stats);
        let reader = read_loop(read, &inflight, stats);
        tokio::pin!(writer, reader);
        // The writer first: what it hands over is seen by the reader in the same poll.
        tokio::select! {
            biased;
            r = &mut writer => match r {
                Some(e) => Some(e),
                None => {
                    inflight.writer_done.store(true, Ordering::Release);
                    inflight.more.store(true, Ordering::Release);
                    (&mut reader).await
                }
            },
            r = &mut reader => Some(r.unwrap_or(BackendError::Lost)),
        }
    };
    let error = result.unwrap_or(BackendError::Lost);
    let failed: Vec<Pending> = inflight.lock().drain(..).collect();
    for p in failed {
        p.reply.send(Err(error));
    }
    result
}

/// Writes jobs in batches. Returns `None` when every handle is dropped, or the write error.
async fn write_loop(
    mut write: impl AsyncWrite + Unpin,
    jobs: &mut VecDeque<Job>,
    rx: &mut JobReceiver,
    inflight: &Inflight,
    opts: &ConnOptions,
    stats: Option<&dyn NodeObserver>,
) -> Option<BackendError> {
    let mut batch = BytesMut::with_capacity(16 * 1024);
    let mut owed: Vec<Pending> = Vec::new();
    loop {
        if jobs.is_empty() && !rx.recv_all(jobs).await {
            return None;
        }
        // The jobs gathered here go out in one write: one clock read for the batch.
        let sent = Instant::now();
        let deadline = opts.timeout.map(|t| sent + t);
        let role = stats.map_or(Role::Master, |s| s.role());
        while let Some(j) = jobs.pop_front() {
            let skip = j.prefix.is_some() as u8;
            if let Some(p) = j.prefix {
                batch.extend_from_slice(p);
            }
            owed.push(Pending {
                reply: j.reply,
                skip,
                deadline,
                sent,
                role,
            });
            if j.bytes.len() < COPY_LIMIT {
                batch.extend_from_slice(&j.bytes);
            } else {
                // Owed before written: the reply may come back before write_all returns.
                hand_over(inflight, &mut owed);
                if !batch.is_empty() && write.write_all(&batch).await.is_err() {
                    return Some(BackendError::Lost);
                }
                batch.clear();
                if write.write_all(&j.bytes).await.is_err() || write.flush().await.is_err() {
                    return Some(BackendError::Lost);
                }
            }
            if batch.len() >= BATCH_LIMIT {
                break; // the rest goes in the next write
            }
            if jobs.is_empty() {
                rx.try_recv_all(jobs);
            }
        }
        hand_over(inflight, &mut owed);
        if !batch.is_empty() {
            // The flush is a no-op on TCP; TLS may otherwise hold the last records back.
            if write.write_all(&batch).await.is_err() || write.flush().await.is_err() {
                return Some(BackendError::Lost);
            }
            batch.clear();
            if batch.capacity() > 4 * BATCH_LIMIT {
                batch = BytesMut::with_capacity(16 * 1024); // shrink after a burst
            }
        }
    }
}

/// Moves the batch's reply slots to the reader, under one lock.
fn hand_over(inflight: &Inflight, owed: &mut Vec<Pending>) {
    if owed.is_empty() {
        return;
    }
    let mut q = inflight.lock();
    let was_empty = q.is_empty();
    q.extend(owed.drain(..));
    drop(q);
    if was_empty {
        inflight.more.store(true, Ordering::Release);
    }
}

/// Frames replies and completes pending jobs in order. Returns why the connection must close,
/// or `None` once the writer is gone and no one waits for a reply any more.
async fn read_loop(
    mut read: impl AsyncRead + Unpin,
    inflight: &Inflight,
    stats: Option<&dyn NodeObserver>,
) -> Option<BackendError> {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut framer = ReplyFramer::new();
    // The clients given replies to write themselves from this read (see `ReplySink::flush`).
    let mut dirty: Vec<Arc<dyn ReplySink>> = Vec::new();
    // One reply-deadline timer for the connection, moved lazily: it is set to the front
    // reply's deadline when nothing is armed, and when it fires it looks at the front again
    // (deadlines only grow down the FIFO, so it never fires late; if the front has moved on,
    // it is set to the new front's). A timeout per read registered and removed a timer-wheel
    // entry per batch of replies (callgrind numbers in the module doc).
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    let mut armed = false;
    // The waker the timer holds since it was last polled (`None` after a reset): while it is
    // this task's and the timer has not fired, polling it again only re-checks what
    // `is_elapsed` says (~350 instructions per request at `-c 1`).
    let mut timer_waker: Option<std::task::Waker> = None;
    loop {
        let writer_done = inflight.writer_done.load(Ordering::Acquire);
        let (empty, deadline) = {
            let q = inflight.lock();
            // Draining after the writer is gone: once nobody waits for any reply still due (a
            // BLPOP whose client left), stop waiting for them.
            if writer_done && q.iter().all(|p| p.reply.is_closed()) {
                return None;
            }
            (q.is_empty(), q.front().and_then(|p| p.deadline))
        };
        if !armed {
            if let Some(d) = deadline {
                timer.as_mut().reset(d);
                timer_waker = None;
                armed = true;
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        // While draining, look again now and then for replies no one wants any more (the
        // sleep is made only then: `select!` builds every branch's future, enabled or not).
        let drain_check = async {
            if writer_done {
                tokio::time::sleep(DRAIN_CHECK).await
            }
        };
        let more = std::future::poll_fn(|_| {
            if inflight.more.swap(false, Ordering::AcqRel) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        });
        // Replies first: the timer is polled only when there is nothing to read.
        let fired = std::future::poll_fn(|cx| {
            use std::future::Future;
            if !timer.is_elapsed()
                && timer_waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
            {
                return std::task::Poll::Pending;
            }
            timer_waker = Some(cx.waker().clone());
            timer.as_mut().poll(cx)
        });
        let n = tokio::select! {
            biased;
            r = read.read_buf(&mut buf) => r,
            _ = fired, if armed => {
                let front = inflight.lock().front().and_then(|p| p.deadline);
                match front {
                    Some(d) if d <= Instant::now() => return Some(BackendError::Timeout),
                    Some(d) => {
                        timer.as_mut().reset(d);
                        timer_waker = None;
                    }
                    None => armed = false,
                }
                continue;
            }
            _ = drain_check, if writer_done => continue,
            // New replies owed with none armed (start their deadline), or the writer ended.
            _ = more, if !writer_done && (empty || !armed) => continue,
        };
        match n {
            Ok(0) | Err(_) => return Some(BackendError::Lost),
            Ok(_) => {}
        }
        // Every reply in this read arrived now: one clock read per batch (metrics).
        let arrived = stats.map(|_| Instant::now());
        let mut q = inflight.lock();
        let broken = loop {
            let reply = match framer.next_reply(&mut buf) {
                Ok(Some(r)) => r,
                Ok(None) => break false,
                Err(_) => break true,
            };
            if reply.first() == Some(&b'>') {
                continue; // RESP3 push data is not an answer to anything on a shared connection
            }
            let Some(front) = q.front_mut() else {
                break true; // a reply nobody asked for: out of step
            };
            if front.skip > 0 {
                front.skip -= 1;
                continue;
            }
            let p = q.pop_front().expect("front exists");
            if let (Some(s), Some(at)) = (stats, arrived) {
                s.observe(p.role, at.saturating_duration_since(p.sent));
            }
            p.reply.send_batched(Ok(reply), &mut dirty);
        };
        drop(q);
        // Each client's replies from this read in one write, by this task (before anything
        // else: they are off their queues already).
        for sink in dirty.drain(..) {
            sink.flush();
        }
        if broken {
            return Some(BackendError::Lost);
        }
        if buf.is_empty() && buf.capacity() > 256 * 1024 {
            // After a large reply the buffer would keep its allocation for the life of the
            // connection: give it back (memory returns after a burst).
            buf = BytesMut::with_capacity(16 * 1024);
        }
    }
}
