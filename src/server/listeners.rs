//! A worker's client listeners: binding them (SO_REUSEPORT so workers share one address, the
//! first bind plain so an address another process holds is reported), the plain-TCP and TLS
//! accept loops over one drain, and the `ready` lines scripts wait for.
use super::*;

/// Binds the client listener. With `reuse_port`, several workers can bind the same address
/// and the kernel spreads connections over them; the first worker tries a plain bind first so
/// that an address another process holds is reported as in use instead of silently shared.
pub(super) fn bind(addr: &str, reuse_port: bool, first: bool) -> anyhow::Result<TcpListener> {
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
pub(super) struct Listeners {
    plain: Option<TcpListener>,
    tls: Option<TcpListener>,
}

/// The bound addresses (plain, TLS), for the other workers to join.
pub(super) type Bound = (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>);

impl Listeners {
    pub(super) fn bind(
        listen: &str,
        tls_listen: Option<&str>,
        reuse_port: bool,
        first: bool,
    ) -> anyhow::Result<Listeners> {
        let plain = match listen {
            crate::config::LISTEN_OFF => None,
            addr => Some(bind(addr, reuse_port, first)?),
        };
        let tls = match tls_listen {
            Some(addr) => Some(
                bind(addr, reuse_port, first).map_err(|e| anyhow::anyhow!("{e:#} (tls_listen)"))?,
            ),
            None => None,
        };
        Ok(Listeners { plain, tls })
    }

    pub(super) fn addrs(&self) -> std::io::Result<Bound> {
        Ok((
            self.plain.as_ref().map(|l| l.local_addr()).transpose()?,
            self.tls.as_ref().map(|l| l.local_addr()).transpose()?,
        ))
    }

    /// The `ready` line (on the plain address, else the TLS one) and a `tls` line.
    pub(super) fn announce(&self, covered: usize) -> std::io::Result<()> {
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

    /// Accepts on both listeners until `stop` says so, then drains.
    pub(super) async fn serve(
        self,
        proxy: Arc<Proxy>,
        tls: Option<Arc<ServerTls>>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let tls_loop = async {
            if let (Some(listener), Some(tls)) = (self.tls, tls) {
                let listener = crate::tls_listener::TlsListener { listener, tls };
                accept_loop(
                    &proxy,
                    listener,
                    crate::tls_listener::spawn_client,
                    stopped(stop.clone()),
                )
                .await;
            }
        };
        let plain_loop = async {
            if let Some(listener) = self.plain {
                accept_loop(&proxy, listener, spawn_client, stopped(stop.clone())).await;
            }
        };
        tokio::join!(tls_loop, plain_loop);
        drain(&proxy).await;
        Ok(())
    }
}
