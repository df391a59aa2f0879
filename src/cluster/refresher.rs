//! Keeps the proxy's view of the cluster fresh: reads `CLUSTER NODES` from a reachable node on a
//! timer, soon after a `-MOVED` or a backend failure (debounced), and swaps the new view in with
//! one atomic store. A view whose config epoch is lower than the current one is stale (it came
//! from a node that missed a failover) and never replaces it; the next node is asked instead.
//!
//! Seeds and the refresh interval are read from the live configuration when one is attached
//! ([`Refresher::with_config`]), so a reload changes them. Logs: INFO only when the view
//! changes; one WARN when refreshes start failing, one line when they work again.
//!
//! While a failover is in progress it polls fast, from several nodes at once; those decisions
//! (which nodes, which view wins, when to poll next) are pure functions in [`super::poll`].
//! Every store is announced to [`TopologyWaiter`]s: requests held for a new master wait on it.
use super::poll::{self, Pick, Signals};
use super::topology::Topology;
use crate::backend::control;
use crate::backend::pool::{NodeBackend, Pool};
use crate::config::Config;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Notify};
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

pub use super::refresh_events::{NoObserver, Outcome, RefreshObserver, Trigger};

/// The current view's `ArcSwap`, reached through the refresher that owns it: the source of a
/// [`ViewCache`].
#[derive(Clone)]
pub struct ViewSource(Arc<Refresher>);

impl std::ops::Deref for ViewSource {
    type Target = ArcSwap<View>;
    fn deref(&self) -> &ArcSwap<View> {
        &self.0.view
    }
}

/// The current view, re-read only when a new one was stored: a load is one atomic read and a
/// pointer compare instead of an ArcSwap guard. It keeps its view alive, so a session holds one
/// only while it has requests to route, not while its client idles.
pub type ViewCache = arc_swap::Cache<ViewSource, Arc<View>>;

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
    /// Bumped on every store of a new view.
    changed: watch::Sender<u64>,
    /// Shared by every worker's refresher (per-core mode runs one per worker): bumped when one
    /// of them stores a changed view, so the others look at once instead of a poll later; a
    /// worker a poll behind would go on writing to a master the cluster has failed.
    peers: Option<Arc<watch::Sender<u64>>>,
    /// The last view that covered at least as many slots as the one before it: what a
    /// failover's promotion is compared with (the view in between has the slots uncovered).
    reference: std::sync::Mutex<Option<Arc<View>>>,
    /// Live [`TopologyWaiter`]s (requests held for a topology change).
    waiters: Arc<AtomicUsize>,
    /// Nodes the request path could not reach, and when it last said so.
    unreachable: std::sync::Mutex<Vec<(SocketAddr, Instant)>>,
    /// The cluster's `cluster-node-timeout` in ms, once a node told us (0 = not yet).
    node_timeout_ms: AtomicU64,
}

/// A subscription to topology changes, held by a request that waits for a new master. While
/// any exists, the refresher polls fast.
pub struct TopologyWaiter {
    rx: watch::Receiver<u64>,
    waiters: Arc<AtomicUsize>,
}

impl TopologyWaiter {
    /// Waits until a new view is stored after this waiter was made (or since the last call).
    pub async fn changed(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await; // the refresher is gone: no change will come
        }
    }
}

impl Drop for TopologyWaiter {
    fn drop(&mut self) {
        self.waiters.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for TopologyWaiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TopologyWaiter")
    }
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
            changed: watch::channel(0).0,
            peers: None,
            reference: std::sync::Mutex::new(None),
            waiters: Arc::new(AtomicUsize::new(0)),
            unreachable: std::sync::Mutex::new(Vec::new()),
            node_timeout_ms: AtomicU64::new(0),
        }
    }

    /// Subscribes to the topology changes from now on; the refresher polls fast until the
    /// waiter is dropped. Subscribe first, then look at the view: no change is missed.
    pub fn waiter(&self) -> TopologyWaiter {
        self.waiters.fetch_add(1, Ordering::Relaxed);
        TopologyWaiter {
            rx: self.changed.subscribe(),
            waiters: self.waiters.clone(),
        }
    }

    /// How many views have been stored so far (a version to compare).
    pub fn version(&self) -> u64 {
        *self.changed.borrow()
    }

    /// The request path could not reach `addr` (connect failed, or the connection broke or
    /// timed out): poll fast for a while, and ask that node last.
    pub fn report_unreachable(&self, addr: SocketAddr) {
        let now = Instant::now();
        let mut u = self.unreachable.lock().unwrap_or_else(|e| e.into_inner());
        match u.iter_mut().find(|(a, _)| *a == addr) {
            Some(e) => e.1 = now,
            None => u.push((addr, now)),
        }
        drop(u);
        self.trigger(Trigger::ConnError);
    }

    /// Nodes reported unreachable within [`poll::UNREACHABLE_WINDOW`].
    fn recently_unreachable(&self) -> Vec<SocketAddr> {
        let mut u = self.unreachable.lock().unwrap_or_else(|e| e.into_inner());
        u.retain(|(_, at)| at.elapsed() < poll::UNREACHABLE_WINDOW);
        u.iter().map(|(a, _)| *a).collect()
    }

    fn signals(&self) -> Signals {
        Signals {
            held: self.waiters.load(Ordering::Relaxed) > 0,
            unreachable: !self.recently_unreachable().is_empty(),
        }
    }

    /// The cluster's `cluster-node-timeout`, once a node has told us.
    pub fn node_timeout(&self) -> Option<Duration> {
        match self.node_timeout_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Shares topology news with the other workers' refreshers (see `peers`).
    pub fn with_peers(mut self, peers: Arc<watch::Sender<u64>>) -> Refresher {
        self.peers = Some(peers);
        self
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

    /// A cache of the current view (see [`ViewCache`]).
    pub fn view_cache(self: &Arc<Self>) -> ViewCache {
        arc_swap::Cache::new(ViewSource(self.clone()))
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
        let mut news = self.peers.as_ref().map(|p| p.subscribe());
        loop {
            let started = Instant::now();
            if self.refresh(trigger).await == Outcome::Updated {
                if let (Some(peers), Some(rx)) = (&self.peers, &mut news) {
                    peers.send_modify(|n| *n += 1);
                    rx.borrow_and_update(); // our own news
                }
            }
            // Until a full, healthy view is known, poll fast; then on the timer or when poked.
            let fast = poll::fast(&self.view().topology, self.signals());
            let wait = poll::next_wait(fast, self.interval());
            let peer_news = async {
                match &mut news {
                    Some(rx) => {
                        if rx.changed().await.is_err() {
                            std::future::pending::<()>().await
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            trigger = tokio::select! {
                _ = tokio::time::sleep(wait) => Trigger::Timer,
                _ = peer_news => Trigger::Peer,
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
    /// older than the current one; one node at a time, or several at once during a failover.
    pub async fn refresh(&self, trigger: Trigger) -> Outcome {
        let started = Instant::now();
        let current = self.view.load_full();
        let t = &current.topology;
        let unreachable = self.recently_unreachable();
        let fast = poll::fast(t, self.signals());
        // Why this round reached no node; a refusal (credentials, TLS) says more than a node
        // that is down, so it is kept over later errors.
        let mut failure: Option<(bool, String)> = None;
        // The seeds are resolved (DNS, under a deadline) only when no known node answers: a
        // refresh of a healthy cluster does no lookups.
        let known = !t.nodes().is_empty();
        let first = match known {
            true => poll::candidates(t, &[], &unreachable),
            false => poll::candidates(t, &self.resolve_seeds().await, &unreachable),
        };
        let mut found = self.ask(&first, t, fast, &mut failure).await;
        if known && matches!(found, Err(Outcome::Failed)) {
            let rest: Vec<SocketAddr> = self
                .resolve_seeds()
                .await
                .into_iter()
                .filter(|a| !first.contains(a))
                .collect();
            found = self.ask(&rest, t, fast, &mut failure).await;
        }
        let outcome = match found {
            Err(outcome) => outcome,
            Ok((addr, topology)) => {
                self.last_success_ms.store(unix_ms(), Ordering::Relaxed);
                if topology.same_layout(t) {
                    Outcome::Unchanged
                } else {
                    self.install(&current, topology, addr, trigger).await;
                    Outcome::Updated
                }
            }
        };
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

    /// Asks `candidates` in batches (several at once while degraded) until one batch yields a
    /// view no older than `current`; `Err` says why none did (no answer, or only stale views).
    async fn ask(
        &self,
        candidates: &[SocketAddr],
        current: &Topology,
        fast: bool,
        failure: &mut Option<(bool, String)>,
    ) -> Result<(SocketAddr, Topology), Outcome> {
        let mut outcome = Outcome::Failed;
        for batch in candidates.chunks(poll::fanout(fast)) {
            let mut views: Vec<(SocketAddr, Topology)> = Vec::with_capacity(batch.len());
            for (addr, fetched) in self.fetch_all(batch).await {
                match fetched {
                    Ok(t) => views.push((addr, t)),
                    Err(Some(e)) => {
                        self.observer.control_failed(addr, e.kind());
                        let refused = matches!(
                            e,
                            crate::backend::ConnectError::Auth(_)
                                | crate::backend::ConnectError::Tls(_)
                        );
                        if refused || failure.as_ref().is_none_or(|(r, _)| !r) {
                            *failure = Some((refused, format!("node {addr}: {e}")));
                        }
                    }
                    Err(None) => {}
                }
            }
            let fetched: Vec<&Topology> = views.iter().map(|(_, t)| t).collect();
            match poll::pick(current, &fetched) {
                Pick::Nothing => {}
                Pick::Stale => outcome = Outcome::Stale,
                Pick::View(i) => return Ok(views.swap_remove(i)),
            }
        }
        Err(outcome)
    }

    /// The configured seeds' addresses; each lookup gets the query timeout.
    async fn resolve_seeds(&self) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for seed in &self.seeds() {
            match tokio::time::timeout(
                self.opts.query_timeout,
                tokio::net::lookup_host(seed.as_str()),
            )
            .await
            {
                Ok(Ok(addrs)) => out.extend(addrs),
                Ok(Err(e)) => tracing::debug!("seed {seed}: {e}"),
                Err(_) => tracing::debug!("seed {seed}: lookup timed out"),
            }
        }
        out
    }

    /// Stores `topology` (fetched from `addr`) as the new view, with the log lines an operator
    /// acts on (a master failed, a failover, slots moved).
    async fn install(
        &self,
        current: &Arc<View>,
        topology: Topology,
        addr: SocketAddr,
        trigger: Trigger,
    ) {
        let backends = topology
            .nodes()
            .iter()
            .map(|n| self.pool.node(n.addr))
            .collect();
        let view = View { topology, backends };
        for (addr, id, slots) in poll::orphaned(&current.topology, &view.topology) {
            tracing::warn!(
                "master {addr} ({id}) failed: {slots} slots have no master until a replica is promoted"
            );
        }
        // Handovers are judged against the last view that covered at least as much, so a
        // promotion after an uncovered spell is still seen as the failover it is.
        let reference = {
            let mut r = self.reference.lock().unwrap_or_else(|e| e.into_inner());
            let before = r.clone().unwrap_or_else(|| current.clone());
            if view.topology.slots_covered() >= before.topology.slots_covered() {
                *r = None; // replaced below, once the view is stored
            }
            before
        };
        for h in poll::handovers(&reference.topology, &view.topology) {
            if h.failover {
                tracing::warn!(
                    "failover: master {} ({}) replaced by {} ({}) for {} slots",
                    h.from,
                    h.from_id,
                    h.to,
                    h.to_id,
                    h.slots
                );
            } else {
                tracing::info!("{} slots moved from {} to {}", h.slots, h.from, h.to);
            }
        }
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
        let view = Arc::new(view);
        {
            let mut r = self.reference.lock().unwrap_or_else(|e| e.into_inner());
            if r.is_none() {
                *r = Some(view.clone());
            }
        }
        self.view.store(view);
        self.changed.send_modify(|v| *v += 1);
        if self.node_timeout().is_none() {
            self.learn_node_timeout(addr).await;
        }
    }

    /// `CLUSTER NODES` from every node of `batch`, at once when there are several. Once one
    /// view is in, the others get [`poll::FAST_GRACE`] more: a hung node delays no poll.
    async fn fetch_all(&self, batch: &[SocketAddr]) -> Vec<(SocketAddr, Fetched)> {
        let connector = self.pool.connector();
        let timeout = self.opts.query_timeout;
        if let [addr] = batch {
            return vec![(*addr, fetch(connector, *addr, timeout).await)];
        }
        let mut set = tokio::task::JoinSet::new();
        for &addr in batch {
            let connector = connector.clone();
            set.spawn(async move { (addr, fetch(&connector, addr, timeout).await) });
        }
        let mut out = Vec::with_capacity(batch.len());
        let mut cutoff = Instant::now() + timeout;
        while let Ok(Some(joined)) = tokio::time::timeout_at(cutoff, set.join_next()).await {
            let Ok((addr, fetched)) = joined else {
                continue;
            };
            if fetched.is_ok() {
                cutoff = cutoff.min(Instant::now() + poll::FAST_GRACE);
            }
            out.push((addr, fetched));
        }
        // Keep the order the nodes were asked in (masters first): it breaks ties.
        out.sort_by_key(|(a, _)| batch.iter().position(|b| b == a));
        out
    }

    /// Asks `addr` for `cluster-node-timeout` (failover holds default to twice it).
    async fn learn_node_timeout(&self, addr: SocketAddr) {
        let args = ["CONFIG", "GET", "cluster-node-timeout"];
        match control::query(self.pool.connector(), addr, &args, self.opts.query_timeout).await {
            Ok(reply) => match poll::parse_node_timeout(&reply) {
                Some(ms) => {
                    tracing::debug!("cluster-node-timeout is {ms} ms (from {addr})");
                    self.node_timeout_ms.store(ms, Ordering::Relaxed);
                }
                None => tracing::debug!(
                    "CONFIG GET cluster-node-timeout on {addr}: {}",
                    String::from_utf8_lossy(&reply).trim_end()
                ),
            },
            Err(e) => tracing::debug!("CONFIG GET cluster-node-timeout on {addr}: {e}"),
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A parsed `CLUSTER NODES`, or `Err(Some(_))` when the node could not be asked.
type Fetched = Result<Topology, Option<crate::backend::ConnectError>>;

/// `CLUSTER NODES` from `addr`, parsed.
async fn fetch(
    connector: &crate::backend::connector::Connector,
    addr: SocketAddr,
    timeout: Duration,
) -> Fetched {
    let reply = match control::query(connector, addr, &["CLUSTER", "NODES"], timeout).await {
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
