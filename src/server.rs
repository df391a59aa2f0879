//! Starting the proxy: load the command table, start the topology refresher, accept clients
//! (under the client limit) and spawn one session each; stop on SIGINT/SIGTERM.
use crate::backend::conn::ConnOptions;
use crate::backend::connector::Connector;
use crate::backend::pool::Pool;
use crate::backend::{control, ConnEvents, NoEvents};
use crate::cluster::refresher::{NoObserver, RefreshOptions, Refresher};
use crate::config::Config;
use crate::config::RuntimeShape;
use crate::metrics::{self, Metrics};
use crate::protocol::command::CommandTable;
use crate::protocol::reply::{self, Proto};
use crate::proxy::{Counters, Proxy};
use crate::tls::ServerTls;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// What every worker shares: the command table, metrics and process-wide counters.
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
    let refresher = Arc::new(Refresher::new(
        pool,
        config.seeds.clone(),
        refresh,
        observer,
    ));
    tokio::spawn(refresher.clone().run());
    Arc::new(
        Proxy::new(config, refresher, shared.commands.clone())
            .with_config(shared.config.clone())
            .with_metrics(shared.metrics.clone())
            .with_counters(shared.counters.clone()),
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

/// Accepts clients on `listener` until the process is asked to stop.
pub async fn serve(proxy: Arc<Proxy>, listener: TcpListener) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (mut stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(());
            }
        };
        if !proxy.admit_client() {
            tokio::spawn(async move {
                let _ = stream
                    .write_all(&reply::error("ERR max number of clients reached"))
                    .await;
            });
            continue;
        }
        let slot = ClientSlot(proxy.clone());
        tokio::spawn(async move {
            crate::session::run(slot.0.clone(), stream).await;
            drop(slot);
        });
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

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Binds the client listener. With `reuse_port`, several workers can bind the same address
/// and the kernel spreads connections over them; the first worker tries a plain bind first so
/// that an address another process holds is reported as in use instead of silently shared.
fn bind(addr: &str, reuse_port: bool, first: bool) -> anyhow::Result<TcpListener> {
    let in_use = |e: std::io::Error| {
        anyhow::anyhow!("cannot listen on {addr}: {e} (is another process using it? pick another with --listen)")
    };
    let sockaddr: std::net::SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(_) => std::net::ToSocketAddrs::to_socket_addrs(addr)
            .map_err(in_use)?
            .next()
            .ok_or_else(|| anyhow::anyhow!("cannot resolve listen address {addr}"))?,
    };
    let sockaddr = if first || !reuse_port {
        let std_listener = std::net::TcpListener::bind(sockaddr).map_err(in_use)?;
        if !reuse_port {
            std_listener.set_nonblocking(true)?;
            return Ok(TcpListener::from_std(std_listener)?);
        }
        std_listener.local_addr()?
    } else {
        sockaddr
    };
    let socket = if sockaddr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(sockaddr).map_err(in_use)?;
    Ok(socket.listen(1024)?)
}

/// A worker's client listeners: plain TCP (unless `listen = "off"`) and TLS (with
/// `tls_listen`).
struct Listeners {
    plain: Option<TcpListener>,
    tls: Option<TcpListener>,
}

impl Listeners {
    fn bind(config: &Config, reuse_port: bool, first: bool) -> anyhow::Result<Listeners> {
        let plain = match config.listen.as_str() {
            crate::config::LISTEN_OFF => None,
            addr => Some(bind(addr, reuse_port, first)?),
        };
        let tls = match &config.tls {
            Some(t) => Some(
                bind(&t.listen, reuse_port, first)
                    .map_err(|e| anyhow::anyhow!("{e:#} (tls_listen)"))?,
            ),
            None => None,
        };
        Ok(Listeners { plain, tls })
    }

    /// The bound addresses (plain, TLS), for the other workers to join.
    fn addrs(
        &self,
    ) -> std::io::Result<(Option<std::net::SocketAddr>, Option<std::net::SocketAddr>)> {
        Ok((
            self.plain.as_ref().map(|l| l.local_addr()).transpose()?,
            self.tls.as_ref().map(|l| l.local_addr()).transpose()?,
        ))
    }

    fn announce(&self, covered: usize) -> std::io::Result<()> {
        let (plain, tls) = self.addrs()?;
        if let Some(t) = tls {
            tracing::info!("TLS clients on {t}");
            println!("slotproxy tls: listening on {t}");
        }
        if let Some(a) = plain.or(tls) {
            announce_ready(a, covered);
        }
        Ok(())
    }

    /// Serves both listeners until shutdown.
    async fn serve(self, proxy: Arc<Proxy>, shared: &Shared) -> anyhow::Result<()> {
        if let (Some(l), Some(tls)) = (self.tls, shared.tls.clone()) {
            let tls_proxy = proxy.clone();
            let serving = crate::tls_listener::serve(tls_proxy, l, tls, shutdown_signal());
            match self.plain {
                Some(_) => {
                    tokio::spawn(serving);
                }
                None => {
                    serving.await;
                    return Ok(());
                }
            }
        }
        match self.plain {
            Some(l) => serve(proxy, l).await,
            None => Ok(()),
        }
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

/// Runs the proxy until stopped, in the configured runtime shape. Prints one `ready` line on
/// stdout once every listener is bound and (within a short wait) the topology is known.
pub fn run(config: Config) -> anyhow::Result<()> {
    let threads = match config.worker_threads {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    match config.runtime {
        RuntimeShape::WorkStealing => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
            .block_on(async {
                let listeners = Listeners::bind(&config, false, true)?;
                let shared = prepare(&config).await?;
                let proxy = worker(config.clone(), &shared);
                start_metrics(&config, &proxy).await?;
                listeners.announce(await_topology(&proxy).await)?;
                listeners.serve(proxy, &shared).await
            }),
        RuntimeShape::PerCore => run_per_core(config, threads),
    }
}

fn current_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// One single-threaded runtime per worker. Worker 0 binds first (so `--listen :0` resolves to
/// one port), the others join its address with SO_REUSEPORT; worker 0 also serves metrics.
fn run_per_core(config: Config, threads: usize) -> anyhow::Result<()> {
    let shared = current_thread_runtime()?.block_on(prepare(&config))?;
    type Bound = (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>);
    let (bound_tx, bound_rx) = std::sync::mpsc::channel::<anyhow::Result<Bound>>();
    let mut handles = Vec::new();
    let mut addr = config.listen.clone();
    let mut tls_addr = config.tls.as_ref().map(|t| t.listen.clone());
    // The worker that finds every worker's topology loaded announces readiness.
    let loaded = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for i in 0..threads {
        let mut config = config.clone();
        config.listen = addr.clone();
        if let (Some(t), Some(a)) = (config.tls.as_mut(), &tls_addr) {
            t.listen = a.clone();
        }
        let shared = shared.clone();
        let bound_tx = bound_tx.clone();
        let loaded = loaded.clone();
        let handle = std::thread::Builder::new()
            .name(format!("slotproxy-{i}"))
            .spawn(move || {
                let result = current_thread_runtime()
                    .map_err(anyhow::Error::from)
                    .and_then(|rt| {
                        rt.block_on(async {
                            let listeners = match Listeners::bind(&config, true, i == 0) {
                                Ok(l) => l,
                                Err(e) => {
                                    let _ = bound_tx.send(Err(anyhow::anyhow!("{e:#}")));
                                    return Ok(());
                                }
                            };
                            let proxy = worker(config.clone(), &shared);
                            if i == 0 {
                                start_metrics(&config, &proxy).await?;
                            }
                            let _ = bound_tx.send(Ok(listeners.addrs()?));
                            let covered = await_topology(&proxy).await;
                            if loaded.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1
                                == threads
                            {
                                listeners.announce(covered)?;
                            }
                            listeners.serve(proxy, &shared).await
                        })
                    });
                if let Err(e) = &result {
                    eprintln!("slotproxy: worker {i}: {e:#}");
                }
                result
            })?;
        handles.push(handle);
        // Wait for this worker's bind before starting the next, so they share one address.
        let (plain, tls) = bound_rx.recv()??;
        if let Some(a) = plain {
            addr = a.to_string();
        }
        if let Some(a) = tls {
            tls_addr = Some(a.to_string());
        }
    }
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("a worker thread panicked"))??;
    }
    Ok(())
}
