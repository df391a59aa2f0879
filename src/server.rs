//! Starting the proxy: load the command table, start the topology refresher, accept clients
//! (under the client limit) and spawn one session each; stop on SIGINT/SIGTERM.
use crate::backend::conn::ConnOptions;
use crate::backend::pool::Pool;
use crate::backend::{control, ConnEvents, NoEvents};
use crate::cluster::refresher::{NoObserver, RefreshOptions, Refresher};
use crate::config::Config;
use crate::metrics::{self, Metrics};
use crate::protocol::command::CommandTable;
use crate::protocol::reply::{self, Proto};
use crate::proxy::Proxy;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Builds the shared state for `config`: pool, refresher (started), command table.
pub async fn start(config: Config) -> anyhow::Result<Arc<Proxy>> {
    let events: Arc<dyn ConnEvents> = Arc::new(NoEvents);
    start_with(config, events, Box::new(NoObserver)).await
}

pub async fn start_with(
    config: Config,
    events: Arc<dyn ConnEvents>,
    observer: Box<dyn crate::cluster::refresher::RefreshObserver>,
) -> anyhow::Result<Arc<Proxy>> {
    let commands = Arc::new(load_commands(&config).await);
    let metrics = match config.metrics_listen {
        Some(_) => Some(Arc::new(Metrics::new(&commands)?)),
        None => None,
    };
    let (events, observer) = match &metrics {
        Some(m) => m.observe(events, observer),
        None => (events, observer),
    };
    let opts = ConnOptions {
        proto: Proto::Resp2,
        timeout: Some(config.command_timeout),
        connect_timeout: config.connect_timeout,
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
    Ok(Arc::new(
        Proxy::new(config, refresher, commands).with_metrics(metrics),
    ))
}

/// The command table from the first seed that answers `COMMAND`, else the shipped one.
async fn load_commands(config: &Config) -> CommandTable {
    for seed in &config.seeds {
        let Ok(addrs) = tokio::net::lookup_host(seed.as_str()).await else {
            continue;
        };
        for addr in addrs {
            match control::query(addr, &["COMMAND"], Duration::from_secs(2)).await {
                Ok(reply) => match CommandTable::from_command_reply(&reply) {
                    Ok(t) => {
                        tracing::info!("command table: {} commands from {addr}", t.len());
                        return t;
                    }
                    Err(e) => tracing::warn!("COMMAND from {addr}: {e}"),
                },
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
        let p = proxy.clone();
        tokio::spawn(async move {
            crate::session::run(p.clone(), stream).await;
            p.release_client();
        });
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

/// Runs the proxy until stopped: binds, starts, serves. Prints one `ready` line on stdout once
/// the listener is bound and (within a short wait) the topology is known, so scripts and
/// newcomers can tell when to connect.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&config.listen).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {}: {e} (is another process using it? pick another with --listen)",
            config.listen
        )
    })?;
    let metrics_listener = match &config.metrics_listen {
        Some(addr) => Some(metrics::http::bind(addr).await?),
        None => None,
    };
    let proxy = start(config).await?;
    if let (Some(l), Some(m)) = (metrics_listener, &proxy.metrics) {
        let at = l.local_addr()?;
        tracing::info!("metrics on http://{at}/metrics");
        println!("slotproxy metrics: http://{at}/metrics (also /healthz, /readyz)");
        tokio::spawn(metrics::http::serve(l, proxy.clone(), m.clone()));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while proxy.refresher.view().topology.slots_covered() < crate::cluster::slot::SLOT_COUNT
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let covered = proxy.refresher.view().topology.slots_covered();
    let addr = listener.local_addr()?;
    tracing::info!(
        "slotproxy {} listening on {addr}",
        env!("CARGO_PKG_VERSION")
    );
    println!("slotproxy ready: listening on {addr} ({covered}/16384 slots covered)");
    serve(proxy, listener).await
}
