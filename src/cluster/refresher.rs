//! Keeps the proxy's view of the cluster fresh: reads `CLUSTER NODES` from a reachable node on a
//! timer, soon after a `-MOVED` or a backend failure (debounced), and swaps the new view in with
//! one atomic store. A view whose config epoch is lower than the current one is stale (it came
//! from a node that missed a failover) and never replaces it; the next node is asked instead.
//!
//! Seeds and the refresh interval are read from the live configuration when one is attached
//! ([`Refresher::with_config`]), so a reload changes them. Logs: INFO only when the view
//! changes; one WARN when refreshes start failing, one line when they work again.
use super::topology::Topology;
use crate::backend::control;
use crate::backend::pool::{NodeBackend, Pool};
use crate::config::Config;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The topology plus a backend handle per node (same indices), swapped in as one unit.
#[derive(Debug)]
pub struct View {
    pub topology: Topology,
    pub backends: Vec<Arc<NodeBackend>>,
}

impl View {
    pub fn empty() -> View {
        View {
            topology: Topology::empty(),
            backends: Vec::new(),
        }
    }
}

/// Why a refresh ran (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Startup,
    Timer,
    Moved,
    ConnError,
    ClusterDown,
}

impl Trigger {
    pub const ALL: [Trigger; 5] = [
        Trigger::Startup,
        Trigger::Timer,
        Trigger::Moved,
        Trigger::ConnError,
        Trigger::ClusterDown,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Timer => "timer",
            Trigger::Moved => "moved",
            Trigger::ConnError => "conn_error",
            Trigger::ClusterDown => "clusterdown",
        }
    }
}

/// What happened to one refresh (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new view was stored.
    Updated,
    /// The cluster looked the same; nothing stored.
    Unchanged,
    /// Only views older than the current one were found.
    Stale,
    /// No node answered.
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Updated,
        Outcome::Unchanged,
        Outcome::Stale,
        Outcome::Failed,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Stale => "stale",
            Outcome::Failed => "failed",
        }
    }
}

/// Observes refreshes (metrics); the default does nothing.
pub trait RefreshObserver: Send + Sync + 'static {
    fn refreshed(&self, _trigger: Trigger, _outcome: Outcome, _took: Duration, _view: &View) {}
    /// A control query (`CLUSTER NODES`) to `addr` could not be made: counted like a failed
    /// backend connection, so a node that refuses the proxy shows before any topology exists.
    fn control_failed(&self, _addr: SocketAddr, _error: crate::backend::BackendError) {}
}

pub struct NoObserver;
impl RefreshObserver for NoObserver {}

/// Timing knobs.
#[derive(Debug, Clone, Copy)]
pub struct RefreshOptions {
    pub interval: Duration,
    /// Minimum time between two refreshes caused by triggers.
    pub debounce: Duration,
    pub query_timeout: Duration,
}

pub struct Refresher {
    view: ArcSwap<View>,
    pool: Arc<Pool>,
    seeds: Vec<String>,
    opts: RefreshOptions,
    wake: Notify,
    pending: AtomicU64,
    observer: Box<dyn RefreshObserver>,
    /// Unix time in milliseconds of the last refresh that reached a node (0 = never).
    last_success_ms: AtomicU64,
    /// The live configuration (seeds, interval), when attached.
    config: Option<Arc<ArcSwap<Config>>>,
    /// (a node refused the proxy, why): see [`Self::last_failure`].
    last_failure: std::sync::Mutex<Option<(bool, String)>>,
}

impl Refresher {
    pub fn new(
        pool: Arc<Pool>,
        seeds: Vec<String>,
        opts: RefreshOptions,
        observer: Box<dyn RefreshObserver>,
    ) -> Refresher {
        Refresher {
            view: ArcSwap::from_pointee(View::empty()),
            pool,
            seeds,
            opts,
            wake: Notify::new(),
            pending: AtomicU64::new(0),
            observer,
            last_success_ms: AtomicU64::new(0),
            config: None,
            last_failure: std::sync::Mutex::new(None),
        }
    }

    /// Reads seeds and the refresh interval from `config` at each use, so a reload changes them.
    pub fn with_config(mut self, config: Arc<ArcSwap<Config>>) -> Refresher {
        self.config = Some(config);
        self
    }

    fn seeds(&self) -> Vec<String> {
        match &self.config {
            Some(c) => c.load().seeds.clone(),
            None => self.seeds.clone(),
        }
    }

    fn interval(&self) -> Duration {
        match &self.config {
            Some(c) => c.load().refresh_interval,
            None => self.opts.interval,
        }
    }

    /// The current view; lock-free.
    #[inline]
    pub fn view(&self) -> arc_swap::Guard<Arc<View>> {
        self.view.load()
    }

    /// The current view, to keep across awaits.
    pub fn view_full(&self) -> Arc<View> {
        self.view.load_full()
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Asks for a refresh soon (debounced); never blocks.
    pub fn trigger(&self, why: Trigger) {
        self.pending.fetch_or(1 << (why as u64), Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Why the last refresh that reached no node failed, naming a node ("127.0.0.1:5001:
    /// refused the proxy's credentials: WRONGPASS ..."); `None` once a refresh succeeds.
    pub fn last_failure(&self) -> Option<String> {
        self.last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, why)| why.clone())
    }

    /// Like [`Self::last_failure`], but only when a node refused the proxy (credentials, TLS),
    /// a cause the operator must fix, unlike a node that is merely down.
    pub fn last_refusal(&self) -> Option<String> {
        self.last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(refused, _)| *refused)
            .map(|(_, why)| why.clone())
    }

    /// Unix time of the last refresh that reached a node (0 = never).
    pub fn last_success_unix(&self) -> u64 {
        self.last_success_ms.load(Ordering::Relaxed) / 1000
    }

    /// How long ago the last refresh reached a node (`None`: never).
    pub fn last_success_age(&self) -> Option<Duration> {
        match self.last_success_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(unix_ms().saturating_sub(ms))),
        }
    }

    /// The refresh loop; runs for the life of the proxy.
    pub async fn run(self: Arc<Self>) {
        let mut trigger = Trigger::Startup;
        loop {
            let started = Instant::now();
            self.refresh(trigger).await;
            // Until a full view is known, keep trying often; then on the timer or when poked.
            let covered = self.view().topology.slots_covered() == super::slot::SLOT_COUNT;
            let wait = if covered {
                self.interval()
            } else {
                self.opts.debounce.max(Duration::from_millis(200))
            };
            trigger = tokio::select! {
                _ = tokio::time::sleep(wait) => Trigger::Timer,
                _ = self.wake.notified() => {
                    let bits = self.pending.swap(0, Ordering::Relaxed);
                    Trigger::ALL.into_iter().find(|t| bits & (1 << (*t as u64)) != 0).unwrap_or(Trigger::Timer)
                }
            };
            let since = started.elapsed();
            if since < self.opts.debounce {
                tokio::time::sleep(self.opts.debounce - since).await;
            }
            // Triggers that came in while we slept are served by this refresh.
            self.pending.store(0, Ordering::Relaxed);
        }
    }

    /// One refresh: asks known nodes (masters first), then the seeds, until one gives a view no
    /// older than the current one.
    pub async fn refresh(&self, trigger: Trigger) -> Outcome {
        let started = Instant::now();
        let current = self.view.load_full();
        let mut candidates: Vec<SocketAddr> = Vec::new();
        let t = &current.topology;
        for role in [
            super::topology::Role::Master,
            super::topology::Role::Replica,
        ] {
            candidates.extend(
                t.nodes()
                    .iter()
                    .filter(|n| n.role == role && !n.failed)
                    .map(|n| n.addr),
            );
        }
        for seed in &self.seeds() {
            if let Ok(addrs) = tokio::net::lookup_host(seed.as_str()).await {
                candidates.extend(addrs);
            }
        }
        candidates.extend(t.nodes().iter().filter(|n| n.failed).map(|n| n.addr));
        let mut seen = std::collections::HashSet::new();
        candidates.retain(|a| seen.insert(*a));

        let mut outcome = Outcome::Failed;
        // Why this round reached no node; a refusal (credentials, TLS) says more than a node
        // that is down, so it is kept over later errors.
        let mut failure: Option<(bool, String)> = None;
        for addr in candidates {
            let topology = match self.fetch(addr).await {
                Ok(t) => t,
                Err(Some(e)) => {
                    self.observer.control_failed(addr, e.kind());
                    let refused = matches!(
                        e,
                        crate::backend::ConnectError::Auth(_)
                            | crate::backend::ConnectError::Tls(_)
                    );
                    if refused || failure.as_ref().is_none_or(|(r, _)| !r) {
                        failure = Some((refused, format!("node {addr}: {e}")));
                    }
                    continue;
                }
                Err(None) => continue,
            };
            if !current.topology.is_superseded_by(&topology) {
                outcome = Outcome::Stale;
                continue;
            }
            self.last_success_ms.store(unix_ms(), Ordering::Relaxed);
            if topology.same_layout(&current.topology) {
                outcome = Outcome::Unchanged;
                break;
            }
            let backends = topology
                .nodes()
                .iter()
                .map(|n| self.pool.node(n.addr))
                .collect();
            let view = View { topology, backends };
            tracing::info!(
                trigger = trigger.as_str(),
                epoch = view.topology.epoch(),
                nodes = view.topology.nodes().len(),
                slots = view.topology.slots_covered(),
                "topology updated from {addr}"
            );
            // Nodes the cluster no longer lists lose their pooled connections (once no request
            // in flight holds them); failed nodes are still listed, so they are kept.
            self.pool.retain(|a| view.topology.node_at(*a).is_some());
            self.view.store(Arc::new(view));
            outcome = Outcome::Updated;
            break;
        }
        let failure = if outcome == Outcome::Failed {
            Some(failure.unwrap_or_else(|| (false, "no node to ask".to_string())))
        } else {
            None
        };
        // Logged once per change of state (a new reason, or the first success after failures),
        // not on every retry: an unreachable or refusing cluster is retried several times a
        // second.
        {
            let mut last = self.last_failure.lock().unwrap_or_else(|e| e.into_inner());
            match (last.as_ref().map(|(_, w)| w.as_str()), &failure) {
                (Some(was), Some((_, why))) if was == why => {}
                (_, Some((_, why))) => tracing::warn!(
                    trigger = trigger.as_str(),
                    "topology refresh failed: no node answered CLUSTER NODES (last: {why}); retrying"
                ),
                (Some(was), None) => tracing::info!("topology refresh works again (after: {was})"),
                (None, None) => {}
            }
            *last = failure;
        }
        self.observer
            .refreshed(trigger, outcome, started.elapsed(), &self.view.load());
        outcome
    }

    /// `CLUSTER NODES` from `addr`, parsed; `Err(Some(_))` when the node could not be asked.
    async fn fetch(
        &self,
        addr: SocketAddr,
    ) -> Result<Topology, Option<crate::backend::ConnectError>> {
        let reply = match control::query(
            self.pool.connector(),
            addr,
            &["CLUSTER", "NODES"],
            self.opts.query_timeout,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("CLUSTER NODES from {addr}: {e}");
                return Err(Some(e));
            }
        };
        let text = match control::bulk_payload(&reply) {
            Ok(t) => String::from_utf8_lossy(t).into_owned(),
            Err(e) => {
                tracing::debug!("CLUSTER NODES from {addr}: {e}");
                return Err(Some(crate::backend::ConnectError::Refused(e)));
            }
        };
        Topology::from_cluster_nodes(&text, addr).map_err(|e| {
            tracing::debug!("CLUSTER NODES from {addr}: {e}");
            None
        })
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
