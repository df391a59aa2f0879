//! The state every session shares: configuration, the topology refresher (which owns the view
//! and the connection pool) and the command table. The proxy keeps no data of its own.
//!
//! The configuration is immutable and swapped whole (`ArcSwap`), shared by every worker: a
//! reload stores a new one, and each request reads the current one lock-free.
use crate::clients::Clients;
use crate::cluster::refresher::Refresher;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::protocol::command::CommandTable;
use crate::redirect::RetryReason;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub struct Proxy {
    config: Arc<ArcSwap<Config>>,
    pub refresher: Arc<Refresher>,
    pub commands: Arc<CommandTable>,
    pub started: Instant,
    /// `None` when metrics are off (no `metrics_listen`): the hot path then counts nothing.
    pub metrics: Option<Arc<Metrics>>,
    counters: Arc<Counters>,
    spread: AtomicU64,
}

/// Process-wide counters, shared by every worker's `Proxy`: client ids stay unique and the
/// client limit holds for the whole process.
#[derive(Debug)]
pub struct Counters {
    next_session: AtomicU64,
    clients: AtomicUsize,
    /// Who the clients are (CLIENT LIST/KILL/PAUSE, INFO clients).
    registry: Arc<Clients>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            next_session: AtomicU64::new(1),
            clients: AtomicUsize::new(0),
            registry: Arc::new(Clients::default()),
        }
    }
}

impl Proxy {
    pub fn new(config: Config, refresher: Arc<Refresher>, commands: Arc<CommandTable>) -> Proxy {
        Proxy {
            config: Arc::new(ArcSwap::from_pointee(config)),
            refresher,
            commands,
            started: Instant::now(),
            metrics: None,
            counters: Arc::new(Counters::default()),
            spread: AtomicU64::new(0),
        }
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

    /// Where the configuration lives, for whoever reloads it.
    pub fn config_source(&self) -> &Arc<ArcSwap<Config>> {
        &self.config
    }

    /// Shares `counters` with the other workers' proxies.
    pub fn with_counters(mut self, counters: Arc<Counters>) -> Proxy {
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

    /// Every client of this process (shared by all workers).
    #[inline]
    pub fn clients(&self) -> &Arc<Clients> {
        &self.counters.registry
    }

    pub fn connected_clients(&self) -> usize {
        self.counters.clients.load(Ordering::Relaxed)
    }

    pub fn observe_retry(&self, reason: RetryReason) {
        tracing::trace!(reason = reason.as_str(), "retry");
        if let Some(m) = &self.metrics {
            m.retry(reason);
        }
    }
}
