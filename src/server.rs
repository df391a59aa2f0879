//! The proxy's lifecycle: start-up (command table, one refresher, pool and health probe per
//! worker, listeners; any worker's setup error stops the process with exit code 1), the
//! accept loop ([`serve`], [`spawn_client`]: one session per client, under the client limit),
//! signals (SIGHUP reloads through [`crate::reload`]; SIGTERM/SIGINT drain; a second one exits
//! at once) and the drain: `/readyz` turns 503, the listener closes, sessions answer what they
//! have read and close, and those still open at `shutdown_grace` are closed.
use crate::backend::conn::ConnOptions;
use crate::backend::connector::Connector;
use crate::backend::pool::Pool;
use crate::backend::{control, ConnEvents, NoEvents};
use crate::cluster::refresher::{NoObserver, RefreshOptions, Refresher};
use crate::config::Config;
use crate::config::RuntimeShape;
use crate::health::{self, Health};
use crate::metrics::{self, Metrics};
use crate::protocol::command::CommandTable;
use crate::protocol::reply::{self, Proto};
use crate::proxy::{Counters, Proxy};
use crate::reload::Reloader;
use crate::tls::ServerTls;
use listeners::{Bound, Listeners};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

mod listeners;

/// What every worker shares: the configuration, the command table, metrics, process-wide
/// counters, health, and the reloader (whose hooks are the reloadable parts).
#[derive(Clone)]
pub struct Shared {
    pub config: Arc<arc_swap::ArcSwap<Config>>,
    /// Opens every connection to a node (credentials, TLS); reloadable.
    pub connector: Arc<Connector>,
    /// The TLS client listener's context (certificate reloadable), when `tls_listen` is set.
    pub tls: Option<Arc<ServerTls>>,
    pub commands: Arc<CommandTable>,
    pub metrics: Option<Arc<Metrics>>,
    pub counters: Arc<Counters>,
    pub health: Arc<Health>,
    pub reloader: Arc<Reloader>,
    /// Bumped by a worker's refresher when it stores a changed view; the others refresh at once.
    pub topology_news: Arc<tokio::sync::watch::Sender<u64>>,
}

/// Loads the command table (from the cluster, else the shipped one) and builds the metrics.
pub async fn prepare(config: &Config) -> anyhow::Result<Shared> {
    let connector = Arc::new(Connector::new(config)?);
    let tls = match &config.tls {
        Some(t) => Some(Arc::new(ServerTls::new(t)?)),
        None => None,
    };
    if config
        .node_tls
        .as_ref()
        .is_some_and(|t| t.insecure_skip_verify)
    {
        tracing::warn!(
            "node_tls_insecure_skip_verify is on: node certificates are not verified (labs only)"
        );
    }
    let commands = Arc::new(load_commands(config, &connector).await);
    let metrics = match config.metrics_listen {
        Some(_) => Some(Arc::new(Metrics::new(&commands)?)),
        None => None,
    };
    Ok(Shared {
        config: Arc::new(arc_swap::ArcSwap::from_pointee(config.clone())),
        connector,
        tls,
        commands,
        metrics,
        counters: Arc::new(Counters::default()),
        health: Health::new(),
        reloader: Arc::new(Reloader::default()),
        topology_news: Arc::new(tokio::sync::watch::channel(0).0),
    })
}

/// One worker's proxy: its own connection pool and topology refresher (spawned on the current
/// runtime), over the shared parts.
pub fn worker(config: Config, shared: &Shared) -> Arc<Proxy> {
    let events: Arc<dyn ConnEvents> = Arc::new(NoEvents);
    let observer: Box<dyn crate::cluster::refresher::RefreshObserver> = Box::new(NoObserver);
    let (events, observer) = match &shared.metrics {
        Some(m) => m.observe(events, observer),
        None => (events, observer),
    };
    let events = shared.health.observe(events);
    let opts = ConnOptions {
        proto: Proto::Resp2,
        timeout: Some(config.command_timeout),
        connect_timeout: config.connect_timeout,
        connector: shared.connector.clone(),
    };
    let pool = Arc::new(Pool::new(opts, config.backend_connections, events));
    let refresh = RefreshOptions {
        interval: config.refresh_interval,
        debounce: Duration::from_millis(100),
        query_timeout: config.connect_timeout.max(Duration::from_secs(1)),
    };
    let refresher = Arc::new(
        Refresher::new(pool, config.seeds.clone(), refresh, observer)
            .with_config(shared.config.clone())
            .with_peers(shared.topology_news.clone()),
    );
    tokio::spawn(refresher.clone().run());
    tokio::spawn(health::probe(refresher.clone(), shared.config.clone()));
    tokio::spawn(crate::cluster::replica_lag::run(
        refresher.clone(),
        shared.config.clone(),
    ));
    shared.health.add_worker(refresher.clone());
    Arc::new(
        Proxy::new(config, refresher, shared.commands.clone())
            .with_config(shared.config.clone())
            .with_metrics(shared.metrics.clone())
            .with_counters(shared.counters.clone())
            .with_health(shared.health.clone()),
    )
}

/// A single proxy on the current runtime (tests and tools).
pub async fn start(config: Config) -> anyhow::Result<Arc<Proxy>> {
    let shared = prepare(&config).await?;
    Ok(worker(config, &shared))
}

/// The command table from the first seed that answers `COMMAND`, else the shipped one.
async fn load_commands(config: &Config, connector: &Connector) -> CommandTable {
    for seed in &config.seeds {
        let Ok(addrs) = tokio::net::lookup_host(seed.as_str()).await else {
            continue;
        };
        for addr in addrs {
            match control::query(connector, addr, &["COMMAND"], Duration::from_secs(2)).await {
                Ok(reply) => match CommandTable::from_command_reply(&reply) {
                    Ok(t) => {
                        tracing::info!("command table: {} commands from {addr}", t.len());
                        return t;
                    }
                    Err(e) => tracing::warn!("COMMAND from {addr}: {e}"),
                },
                // A refusal of the proxy's credentials is worth a warning; a node that is
                // down is not (the next seed is tried).
                Err(e @ crate::backend::ConnectError::Auth(_)) => {
                    tracing::warn!("COMMAND from {addr}: {e}")
                }
                Err(e) => tracing::debug!("COMMAND from {addr}: {e}"),
            }
        }
    }
    tracing::warn!(
        "no seed answered COMMAND; using the command table shipped with slotproxy (Redis 7.0.15)"
    );
    CommandTable::fallback()
}

/// What an accept loop takes clients from: the plain TCP listener here; a TLS listener can
/// yield its TCP streams too and do its handshake in the spawned task.
pub trait Listener: Send {
    type Stream: Send + 'static;
    fn accept(&self) -> impl std::future::Future<Output = std::io::Result<Self::Stream>> + Send;
}

impl Listener for TcpListener {
    /// The stream and its peer (`accept` returns it: no `getpeername` per client).
    type Stream = (TcpStream, SocketAddr);
    async fn accept(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        TcpListener::accept(self).await
    }
}

/// Accepts clients on `listener` until `shutdown` resolves, then drains: the listener closes,
/// `/readyz` turns 503, sessions answer what they have read and close, and whatever is still
/// open at the `shutdown_grace` deadline (blocked clients, subscribers) is closed.
pub async fn serve(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    accept_loop(&proxy, listener, spawn_client, shutdown).await;
    drain(&proxy).await;
    Ok(())
}

/// Takes clients from `listener` and hands each to `spawn` until `shutdown` resolves; the
/// listener is closed when this returns.
pub async fn accept_loop<L: Listener>(
    proxy: &Arc<Proxy>,
    listener: L,
    spawn: impl Fn(&Arc<Proxy>, L::Stream),
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        spawn(proxy, stream);
    }
}

/// Serves one accepted client in its own task, under the client limit; the session ends when
/// the client leaves, or when the drain deadline closes it.
pub fn spawn_client(proxy: &Arc<Proxy>, (mut stream, peer): (TcpStream, SocketAddr)) {
    if !proxy.admit_client() {
        tokio::spawn(async move {
            let _ = stream
                .write_all(&reply::error("ERR max number of clients reached"))
                .await;
        });
        return;
    }
    spawn_session(proxy, |proxy| crate::session::run(proxy, stream, peer));
}

/// Runs an admitted client's `session` in a task of its own, holding the client's place under
/// the limit until the session ends or the drain deadline closes it (plain and TLS clients).
pub(crate) fn spawn_session<F>(proxy: &Arc<Proxy>, session: impl FnOnce(Arc<Proxy>) -> F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let slot = ClientSlot(proxy.clone());
    // Boxed: the task's async block would otherwise hold the session twice (the moved-in value
    // and the copy `select!` pins): 11 KB more per client when the reader and writer lived in
    // the session's future, 1.2 KB now that they are tasks of their own (`-Zprint-type-sizes`).
    let session = Box::pin(session(proxy.clone()));
    tokio::spawn(async move {
        // The session first: the close signal is looked at only when it waits.
        tokio::select! {
            biased;
            _ = session => {}
            _ = slot.0.closing() => {}
        }
        drop(slot);
    });
}

/// Stops this worker's sessions: they stop reading new requests at once, and those still open
/// at the `shutdown_grace` deadline are closed.
async fn drain(proxy: &Proxy) {
    proxy.health.set_draining();
    proxy.begin_drain();
    let grace = proxy.config().shutdown_grace;
    let deadline = tokio::time::Instant::now() + grace;
    while proxy.connected_clients() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = proxy.connected_clients();
    if left > 0 {
        tracing::info!(
            "drain deadline ({} ms) reached: closing {left} client connections",
            grace.as_millis()
        );
    }
    proxy.close_sessions();
    // The closed sessions' tasks end at their next poll; give them that.
    let settle = tokio::time::Instant::now() + Duration::from_secs(1);
    while proxy.connected_clients() > 0 && tokio::time::Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A client's place under the client limit, given back when its session ends, however it ends:
/// a session that panicked must not keep its place for the life of the process.
pub(crate) struct ClientSlot(pub(crate) Arc<Proxy>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.release_client();
    }
}

/// Waits (at most 3 s) for a full topology; returns how many slots are covered.
async fn await_topology(proxy: &Proxy) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while proxy.refresher.view().topology.slots_covered() < crate::cluster::slot::SLOT_COUNT
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.refresher.view().topology.slots_covered()
}

/// The one `ready` line scripts and newcomers wait for.
fn announce_ready(addr: std::net::SocketAddr, covered: usize) {
    tracing::info!(
        "slotproxy {} listening on {addr}",
        env!("CARGO_PKG_VERSION")
    );
    println!("slotproxy ready: listening on {addr} ({covered}/16384 slots covered)");
}

/// Starts the metrics listener (when configured) on the current runtime.
async fn start_metrics(config: &Config, proxy: &Arc<Proxy>) -> anyhow::Result<()> {
    let (Some(addr), Some(m)) = (&config.metrics_listen, &proxy.metrics) else {
        return Ok(());
    };
    let l = metrics::http::bind(addr).await?;
    let at = l.local_addr()?;
    tracing::info!("metrics on http://{at}/metrics");
    println!("slotproxy metrics: http://{at}/metrics (also /healthz, /readyz)");
    tokio::spawn(metrics::http::serve(l, proxy.clone(), m.clone()));
    Ok(())
}

/// Runs the proxy until stopped, in the configured runtime shape: SIGHUP reloads the
/// configuration, SIGTERM or SIGINT drains (a second one exits at once). Prints one `ready`
/// line on stdout once every listener is bound and (within a short wait) the topology is known.
/// A worker that cannot start (a listener that cannot bind, ...) stops the others and makes this
/// return its error.
pub fn run(config: Config, reloader: Reloader) -> anyhow::Result<()> {
    let threads = match config.worker_threads {
        0 => default_workers(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        ),
        n => n,
    };
    // The control runtime (this thread) owns the signals: registered first, so that a signal
    // during start-up is handled (after it) rather than killing the process.
    let control = current_thread_runtime()?;
    let mut signals = {
        let _enter = control.enter();
        Signals::new()?
    };
    let mut shared = control.block_on(prepare(&config))?;
    shared.reloader = Arc::new(reloader);
    add_tls_reload(&shared);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let shapes: Vec<(usize, bool)> = match config.runtime {
        RuntimeShape::WorkStealing => vec![(threads, false)],
        RuntimeShape::PerCore => (0..threads).map(|_| (1, true)).collect(),
    };
    let workers = shapes.len();
    let loaded = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut handles = Vec::new();
    let mut addr = config.listen.clone();
    let mut tls_addr = config.tls.as_ref().map(|t| t.listen.clone());
    let mut failed: Option<anyhow::Error> = None;
    for (i, (runtime_threads, reuse_port)) in shapes.into_iter().enumerate() {
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let start = WorkerStart {
            index: i,
            workers,
            runtime_threads,
            reuse_port,
            listen: addr.clone(),
            tls_listen: tls_addr.clone(),
            config: config.clone(),
            shared: shared.clone(),
            stop: stop_rx.clone(),
            loaded: loaded.clone(),
        };
        let done_tx = done_tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("slotproxy-{i}"))
            .spawn(move || {
                let result = start.run(bound_tx);
                let _ = done_tx.send(result);
            })?;
        handles.push(handle);
        // Wait for this worker's bind before starting the next, so they share one address. A
        // worker that ends without saying (a panic) counts as a failed start.
        match bound_rx.recv() {
            Ok(Ok((plain, tls))) => {
                if let Some(a) = plain {
                    addr = a.to_string();
                }
                if let Some(a) = tls {
                    tls_addr = Some(a.to_string());
                }
            }
            Ok(Err(e)) => failed = Some(e),
            Err(_) => failed = Some(anyhow::anyhow!("worker {i} ended during start-up")),
        }
        if failed.is_some() {
            break;
        }
    }
    drop(done_tx);
    let started = handles.len();
    if failed.is_some() {
        let _ = stop_tx.send(true);
    }
    control.block_on(async {
        let mut running = started;
        let mut stopping = failed.is_some();
        while running > 0 {
            tokio::select! {
                _ = signals.hup.recv() => {
                    let _ = shared.reloader.reload(&shared.config);
                }
                _ = signals.stop.recv() => {
                    if stopping {
                        eprintln!("slotproxy: second stop signal: exiting now");
                        std::process::exit(1);
                    }
                    stopping = true;
                    tracing::info!(
                        "stop signal: draining (at most {} ms; a second signal exits at once)",
                        shared.config.load().shutdown_grace.as_millis()
                    );
                    shared.health.set_draining();
                    let _ = stop_tx.send(true);
                }
                done = done_rx.recv() => {
                    let Some(result) = done else { break };
                    running -= 1;
                    if let Err(e) = result {
                        if !stopping {
                            tracing::error!("a worker stopped: {e:#}; stopping the others");
                        }
                        failed.get_or_insert(e);
                        stopping = true;
                        shared.health.set_draining();
                        let _ = stop_tx.send(true);
                    }
                }
            }
        }
    });
    for h in handles {
        let _ = h.join();
    }
    match failed {
        Some(e) => Err(e),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// On reload, the client listener's certificate and the node connector (credentials, TLS files)
/// are rebuilt from the new configuration; both are built before either is swapped, so a bad
/// file refuses the reload and changes nothing. Open connections keep what they were opened with.
fn add_tls_reload(shared: &Shared) {
    let connector = shared.connector.clone();
    let listener = shared.tls.clone();
    shared.reloader.add_hook(
        "tls and node credentials",
        Box::new(move |config: &Config| {
            let server = match (&listener, &config.tls) {
                (Some(_), Some(t)) => {
                    Some(crate::tls::server_config(t).map_err(|e| e.to_string())?)
                }
                _ => None,
            };
            connector.reload(config).map_err(|e| e.to_string())?;
            if let (Some(listener), Some(server)) = (&listener, server) {
                listener.store(server);
                tracing::info!("TLS certificate reloaded for new client connections");
            }
            Ok(())
        }),
    );
}

/// Workers when `worker_threads = 0`: one per core, except on a machine of two cores or fewer,
/// where one. There the proxy shares its cores with its clients and often the nodes, and a
/// second worker halves what each event-loop pass gathers into one backend write while
/// adding sleeps and wake-ups: on the 2-core benchmark machine one worker served 66.2k GETs
/// per proxy CPU-second at `-c 50 -P 1` against 49.0k with two, and 588k against 500k at
/// `-P 16`, with ops/s within noise (benches/README.md, "Worker threads").
pub fn default_workers(cores: usize) -> usize {
    if cores <= 2 {
        1
    } else {
        cores
    }
}

fn current_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// SIGHUP (`hup`), and SIGTERM/SIGINT (`stop`), registered when made.
struct Signals {
    hup: Hangup,
    stop: Stop,
}

#[cfg(unix)]
struct Hangup(tokio::signal::unix::Signal);
#[cfg(unix)]
struct Stop(tokio::signal::unix::Signal, tokio::signal::unix::Signal);
#[cfg(not(unix))]
struct Hangup;
#[cfg(not(unix))]
struct Stop;

impl Signals {
    #[cfg(unix)]
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            hup: Hangup(signal(SignalKind::hangup())?),
            stop: Stop(
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ),
        })
    }

    #[cfg(not(unix))]
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            hup: Hangup,
            stop: Stop,
        })
    }
}

impl Hangup {
    async fn recv(&mut self) {
        #[cfg(unix)]
        self.0.recv().await;
        #[cfg(not(unix))]
        std::future::pending::<()>().await;
    }
}

impl Stop {
    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.0.recv() => {}
            _ = self.1.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// What one worker thread needs to start: its runtime shape, its listener and the shared parts.
struct WorkerStart {
    index: usize,
    workers: usize,
    runtime_threads: usize,
    reuse_port: bool,
    listen: String,
    tls_listen: Option<String>,
    config: Config,
    shared: Shared,
    stop: tokio::sync::watch::Receiver<bool>,
    loaded: Arc<std::sync::atomic::AtomicUsize>,
}

impl WorkerStart {
    /// Runs the worker to its end. Its bound address, or why it could not start, goes on
    /// `bound` first: the first worker binds alone (so `--listen :0` resolves to one port), the
    /// others join its address with SO_REUSEPORT; the first also serves metrics.
    fn run(self, bound: std::sync::mpsc::Sender<anyhow::Result<Bound>>) -> anyhow::Result<()> {
        let runtime = if self.runtime_threads > 1 || !self.reuse_port {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(self.runtime_threads.max(1))
                .enable_all()
                .build()
        } else {
            current_thread_runtime()
        };
        let runtime = match runtime {
            Ok(r) => r,
            Err(e) => {
                let _ = bound.send(Err(e.into()));
                return Ok(());
            }
        };
        let i = self.index;
        runtime.block_on(async move {
            let setup = async {
                let listeners = Listeners::bind(
                    &self.listen,
                    self.tls_listen.as_deref(),
                    self.reuse_port,
                    i == 0,
                )?;
                let proxy = worker(self.config.clone(), &self.shared);
                if i == 0 {
                    start_metrics(&self.config, &proxy).await?;
                }
                anyhow::Ok((listeners, proxy))
            };
            let (listeners, proxy) = match setup.await {
                Ok(ok) => ok,
                Err(e) => {
                    let _ = bound.send(Err(e));
                    return Ok(());
                }
            };
            let _ = bound.send(Ok(listeners.addrs()?));
            let covered = await_topology(&proxy).await;
            if self
                .loaded
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
                + 1
                == self.workers
            {
                listeners.announce(covered)?;
            }
            listeners
                .serve(proxy, self.shared.tls.clone(), self.stop)
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_worker_on_a_small_machine_else_one_per_core() {
        assert_eq!(super::default_workers(1), 1);
        assert_eq!(super::default_workers(2), 1);
        assert_eq!(super::default_workers(8), 8);
    }
}
