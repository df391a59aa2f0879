//! The state every session shares: configuration, the topology refresher (which owns the view
//! and the connection pool) and the command table. The proxy keeps no data of its own.
use crate::cluster::refresher::Refresher;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::protocol::command::CommandTable;
use crate::redirect::RetryReason;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub struct Proxy {
    pub config: Config,
    pub refresher: Arc<Refresher>,
    pub commands: Arc<CommandTable>,
    pub started: Instant,
    /// `None` when metrics are off (no `metrics_listen`): the hot path then counts nothing.
    pub metrics: Option<Arc<Metrics>>,
    next_session: AtomicU64,
    spread: AtomicU64,
    clients: AtomicUsize,
}

impl Proxy {
    pub fn new(config: Config, refresher: Arc<Refresher>, commands: Arc<CommandTable>) -> Proxy {
        Proxy {
            config,
            refresher,
            commands,
            started: Instant::now(),
            metrics: None,
            next_session: AtomicU64::new(1),
            spread: AtomicU64::new(0),
            clients: AtomicUsize::new(0),
        }
    }

    pub fn with_metrics(mut self, metrics: Option<Arc<Metrics>>) -> Proxy {
        self.metrics = metrics;
        self
    }

    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// A value that spreads keyless commands over masters and reads over replicas.
    #[inline]
    pub fn spread(&self, session: u64) -> u64 {
        session.wrapping_add(self.spread.fetch_add(1, Ordering::Relaxed))
    }

    /// Counts a client in; `false` (and nothing counted) when the limit is reached.
    pub fn admit_client(&self) -> bool {
        let n = self.clients.fetch_add(1, Ordering::Relaxed);
        if n >= self.config.max_clients {
            self.clients.fetch_sub(1, Ordering::Relaxed);
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
        self.clients.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn connected_clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    pub fn observe_retry(&self, reason: RetryReason) {
        tracing::trace!(reason = reason.as_str(), "retry");
        if let Some(m) = &self.metrics {
            m.retry(reason);
        }
    }
}
