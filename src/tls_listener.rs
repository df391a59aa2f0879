//! The TLS client listener: accepts TCP connections (through the same accept loop as the plain
//! listener, [`crate::server::accept_loop`]), runs the TLS handshake in the client's own task
//! under a deadline (so a slow or silent peer never holds up the accept loop), then serves the
//! client like any other ([`session::run_tls`]). A plaintext client, random bytes, a refused or
//! expired client certificate: that connection is closed and counted
//! (`slotproxy_client_connections_rejected_total{reason="tls_handshake"}`), and nobody else
//! notices. Each handshake takes the context current at accept time, so a certificate reload
//! (SIGHUP) applies to new connections while open ones keep theirs.
use crate::proxy::Proxy;
use crate::server::{spawn_session, Listener};
use crate::session;
use crate::tls::ServerTls;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS port: TCP connections, each with the certificate current when it was accepted.
pub struct TlsListener {
    pub listener: TcpListener,
    pub tls: Arc<ServerTls>,
}

impl Listener for TlsListener {
    type Stream = (TcpStream, SocketAddr, TlsAcceptor);
    async fn accept(&self) -> std::io::Result<Self::Stream> {
        let (stream, peer) = self.listener.accept().await?;
        Ok((stream, peer, self.tls.acceptor()))
    }
}

/// Handshakes and serves one TLS client in its own task, under the client limit.
pub fn spawn_client(
    proxy: &Arc<Proxy>,
    (stream, peer, acceptor): (TcpStream, SocketAddr, TlsAcceptor),
) {
    if !proxy.admit_client() {
        // Past the client limit: close without a handshake (there is no TLS channel yet to
        // carry Redis's error on).
        return;
    }
    spawn_session(proxy, move |proxy| async move {
        let _ = stream.set_nodelay(true);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(tls_stream)) => session::run_tls(proxy, tls_stream, peer).await,
            Ok(Err(e)) => handshake_failed(&proxy, peer, &e.to_string()),
            Err(_) => handshake_failed(&proxy, peer, "timed out"),
        }
    });
}

fn handshake_failed(proxy: &Proxy, peer: SocketAddr, why: &str) {
    tracing::debug!("TLS handshake with {peer} failed: {why}");
    if let Some(m) = &proxy.metrics {
        m.tls_handshake_failed();
    }
}
