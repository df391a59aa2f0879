//! The state every session shares: configuration, the topology refresher (which owns the view
//! and the connection pool) and the command table. The proxy keeps no data of its own.
//!
//! The configuration is immutable and swapped whole (`ArcSwap`), shared by every worker: a
//! reload stores a new one, and each request reads the current one lock-free.
//!
//! Each worker's `Proxy` also carries its drain signal: when the worker stops accepting,
//! sessions stop reading new requests ([`Proxy::draining`]) and, at the deadline, are closed
//! ([`Proxy::closing`]).
use crate::clients::Clients;
use crate::cluster::refresher::Refresher;
use crate::config::Config;
use crate::health::Health;
use crate::hold::{Held, Holds};
use crate::metrics::Metrics;
use crate::protocol::command::CommandTable;
use crate::redirect::RetryReason;
use crate::reply_memory::{Budget, ReplyMemory};
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// See [`Proxy::config_cache`].
pub type ConfigCache = arc_swap::Cache<Arc<ArcSwap<Config>>, Arc<Config>>;

pub struct Proxy {
    config: Arc<ArcSwap<Config>>,
    pub refresher: Arc<Refresher>,
    pub commands: Arc<CommandTable>,
    pub started: Instant,
    /// `None` when metrics are off (no `metrics_listen`): the hot path then counts nothing.
    pub metrics: Option<Arc<Metrics>>,
    counters: Arc<Counters>,
    spread: AtomicU64,
    /// Process-wide health (shared by every worker).
    pub health: Arc<Health>,
    drain: Signal,
    close: Signal,
    /// Requests held through a failover (counted process-wide, through `counters`).
    holds: Holds,
}

/// A one-way, per-worker flag that tasks can wait for.
#[derive(Default)]
struct Signal {
    set: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Signal {
    fn raise(&self) {
        self.set.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Resolves once raised (see [`Draining`]).
    fn raised(&self) -> Draining<'_> {
        Draining {
            set: &self.set,
            notified: Box::pin(self.notify.notified()),
            waker: None,
        }
    }
}

/// The future of [`Proxy::draining`] and [`Proxy::closing`]. Polling a registered `tokio::sync::Notified` again
/// locks the `Notify`'s waiter list each time: a session polled it on every wake-up, ~500
/// instructions per request at `-c 1` (callgrind, 2026-12-02), and `closing` as much. This one reads the flag, and
/// polls the `Notified` only when the task's waker is not the one it registered (once per
/// session in practice); `raise` sets the flag before it wakes the registered waker.
pub struct Draining<'a> {
    set: &'a AtomicBool,
    notified: std::pin::Pin<Box<tokio::sync::futures::Notified<'a>>>,
    waker: Option<std::task::Waker>,
}

impl std::future::Future for Draining<'_> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        use std::task::Poll;
        let this = self.get_mut();
        if this.set.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        if this.notified.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        this.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Process-wide counters, shared by every worker's `Proxy`: client ids stay unique and the
/// client limit holds for the whole process.
#[derive(Debug)]
pub struct Counters {
    next_session: AtomicU64,
    clients: AtomicUsize,
    /// Requests held through failovers, by every worker.
    held: Arc<AtomicUsize>,
    /// Bytes of replies owed to all clients (`max_reply_memory`).
    reply_memory: Arc<ReplyMemory>,
    /// Who the clients are (CLIENT LIST/KILL/PAUSE, INFO clients).
    registry: Arc<Clients>,
    /// The proxy's own slow requests (SLOWLOG), process-wide.
    slowlog: Arc<crate::slowlog::SlowLog>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            next_session: AtomicU64::new(1),
            clients: AtomicUsize::new(0),
            held: Arc::new(AtomicUsize::new(0)),
            reply_memory: Arc::default(),
            registry: Arc::new(Clients::default()),
            slowlog: Arc::default(),
        }
    }
}

impl Proxy {
    pub fn new(config: Config, refresher: Arc<Refresher>, commands: Arc<CommandTable>) -> Proxy {
        let health = Health::new();
        health.add_worker(refresher.clone());
        Proxy {
            config: Arc::new(ArcSwap::from_pointee(config)),
            refresher,
            commands,
            started: Instant::now(),
            metrics: None,
            counters: Arc::new(Counters::default()),
            spread: AtomicU64::new(0),
            health,
            drain: Signal::default(),
            close: Signal::default(),
            holds: Holds::new(Arc::new(AtomicUsize::new(0))),
        }
    }

    /// Shares `health` with the other workers' proxies.
    pub fn with_health(mut self, health: Arc<Health>) -> Proxy {
        self.health = health;
        self
    }

    /// This worker stops taking requests: sessions finish what they read, then close.
    pub fn begin_drain(&self) {
        self.drain.raise();
    }

    /// Resolves once this worker drains: a session waiting for its client's next request
    /// stops reading (what it read is still answered). Every session polls this on every
    /// wake-up, so it reads the flag and polls its `Notified` only to register the task's
    /// waker (see [`Draining`]).
    pub fn draining(&self) -> Draining<'_> {
        self.drain.raised()
    }

    /// The drain deadline passed: every session still open is closed.
    pub fn close_sessions(&self) {
        self.drain.raise();
        self.close.raise();
    }

    /// Resolves once the drain deadline passes. Polled on every wake-up of every session too
    /// (a flag read, see [`Draining`]).
    pub fn closing(&self) -> Draining<'_> {
        self.close.raised()
    }

    /// Shares `config` with the other workers' proxies: a reload reaches them all.
    pub fn with_config(mut self, config: Arc<ArcSwap<Config>>) -> Proxy {
        self.config = config;
        self
    }

    /// The current configuration (lock-free; do not hold it across long waits).
    #[inline]
    pub fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// The current configuration, to keep.
    pub fn config_arc(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The configuration, re-read only when a reload stored a new one (a load is one atomic
    /// read and a pointer compare): for a session's per-request reads.
    pub fn config_cache(&self) -> ConfigCache {
        arc_swap::Cache::new(self.config.clone())
    }

    /// Where the configuration lives, for whoever reloads it.
    pub fn config_source(&self) -> &Arc<ArcSwap<Config>> {
        &self.config
    }

    /// Shares `counters` with the other workers' proxies.
    pub fn with_counters(mut self, counters: Arc<Counters>) -> Proxy {
        self.holds = Holds::new(counters.held.clone());
        self.counters = counters;
        self
    }

    pub fn with_metrics(mut self, metrics: Option<Arc<Metrics>>) -> Proxy {
        self.metrics = metrics;
        self
    }

    pub fn next_session_id(&self) -> u64 {
        self.counters.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// A value that spreads keyless commands over masters and reads over replicas.
    #[inline]
    pub fn spread(&self, session: u64) -> u64 {
        session.wrapping_add(self.spread.fetch_add(1, Ordering::Relaxed))
    }

    /// Counts a client in; `false` (and nothing counted) when the limit is reached.
    pub fn admit_client(&self) -> bool {
        let n = self.counters.clients.fetch_add(1, Ordering::Relaxed);
        if n >= self.config().max_clients {
            self.counters.clients.fetch_sub(1, Ordering::Relaxed);
            self.counters
                .registry
                .rejected
                .fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &self.metrics {
                m.client_rejected();
            }
            return false;
        }
        if let Some(m) = &self.metrics {
            m.client_accepted();
        }
        true
    }

    pub fn release_client(&self) {
        self.counters.clients.fetch_sub(1, Ordering::Relaxed);
    }

    /// The reply-memory limits a new client's queue enforces, over the process-wide count.
    pub fn reply_budget(&self) -> Budget {
        let c = self.config();
        Budget {
            client_limit: c.client_reply_buffer_limit,
            global_limit: c.max_reply_memory,
            memory: self.counters.reply_memory.clone(),
        }
    }

    /// Bytes of replies owed to all clients of the process now.
    pub fn reply_memory(&self) -> usize {
        self.counters.reply_memory.total()
    }

    /// Every client of this process (shared by all workers).
    #[inline]
    pub fn clients(&self) -> &Arc<Clients> {
        &self.counters.registry
    }

    /// The proxy's own slow log (every worker's).
    pub fn slowlog(&self) -> &crate::slowlog::SlowLog {
        &self.counters.slowlog
    }

    pub fn connected_clients(&self) -> usize {
        self.counters.clients.load(Ordering::Relaxed)
    }

    /// How long a request may be held through a failover now.
    pub fn failover_hold(&self) -> std::time::Duration {
        crate::hold::hold_duration(self.config().failover_hold, self.refresher.node_timeout())
    }

    /// Starts holding one request, if the bounds allow (see [`crate::hold::admissible`]).
    /// The hold is subscribed to topology changes from now on: the caller looks at the
    /// topology again after this, so a change in between is not missed.
    pub fn start_hold(&self) -> Option<Held> {
        let waiter = self.refresher.waiter();
        let hold = self.failover_hold();
        let max = self.config().max_held_requests;
        let ticket = self.holds.admit(hold, max, self.refresher.version())?;
        Some(Held::new(ticket, hold, waiter))
    }

    /// A hold ran out without a new master: the requests behind it are not held again until
    /// the topology changes.
    pub fn hold_expired(&self) {
        self.holds.expired(self.refresher.version());
    }

    /// Requests held now, process-wide.
    pub fn held_requests(&self) -> usize {
        self.holds.count()
    }

    pub fn observe_retry(&self, reason: RetryReason) {
        tracing::trace!(reason = reason.as_str(), "retry");
        if let Some(m) = &self.metrics {
            m.retry(reason);
        }
    }
}

impl crate::metrics::ScrapeSource for Proxy {
    fn connected_clients(&self) -> usize {
        Proxy::connected_clients(self)
    }

    fn last_refresh_unix(&self) -> u64 {
        self.refresher.last_success_unix()
    }

    fn health(&self) -> crate::health::Report {
        self.health.report(&self.config())
    }
}

#[cfg(test)]
impl Proxy {
    /// A proxy whose refresher never runs (an empty topology), for unit tests of what depends
    /// only on its configuration and counters.
    pub(crate) fn idle(config: Config, commands: CommandTable) -> Proxy {
        use crate::backend::conn::ConnOptions;
        use crate::backend::connector::Connector;
        use crate::backend::pool::Pool;
        use crate::backend::NoEvents;
        use crate::cluster::refresher::{NoObserver, RefreshOptions};
        use std::time::Duration;
        let opts = ConnOptions {
            proto: crate::protocol::reply::Proto::Resp2,
            timeout: Some(Duration::from_secs(1)),
            connect_timeout: Duration::from_secs(1),
            connector: Arc::new(Connector::plain()),
        };
        let pool = Arc::new(Pool::new(opts, 1, Arc::new(NoEvents)));
        let refresh = RefreshOptions {
            interval: Duration::from_secs(60),
            debounce: Duration::from_millis(100),
            query_timeout: Duration::from_secs(1),
        };
        let refresher = Arc::new(Refresher::new(
            pool,
            vec!["127.0.0.1:1".into()],
            refresh,
            Box::new(NoObserver),
        ));
        Proxy::new(config, refresher, Arc::new(commands))
    }
}
