//! The TLS client listener: accepts TCP connections (through the same accept loop as the plain
//! listener, [`crate::server::accept_loop`]), runs the TLS handshake in the client's own task
//! under a deadline (so a slow or silent peer never holds up the accept loop), then serves the
//! client like any other ([`session::run_tls`]). A plaintext client, random bytes, a refused or
//! expired client certificate: that connection is closed and counted
//! (`slotproxy_client_connections_rejected_total{reason="tls_handshake"}`), and nobody else
//! notices. Each handshake takes the context current at accept time, so a certificate reload
//! (SIGHUP) applies to new connections while open ones keep theirs.
use crate::proxy::Proxy;
use crate::server::{ClientSlot, Listener};
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
    let slot = ClientSlot(proxy.clone());
    tokio::spawn(async move {
        let proxy = slot.0.clone();
        let _ = stream.set_nodelay(true);
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
        let failed = |why: String| {
            tracing::debug!("TLS handshake with {peer} failed: {why}");
            if let Some(m) = &proxy.metrics {
                m.tls_handshake_failed();
            }
        };
        tokio::select! {
            r = handshake => match r {
                Ok(Ok(tls_stream)) => {
                    tokio::select! {
                        _ = session::run_tls(proxy.clone(), tls_stream) => {}
                        _ = proxy.closing() => {}
                    }
                }
                Ok(Err(e)) => failed(e.to_string()),
                Err(_) => failed("timed out".into()),
            },
            _ = proxy.closing() => {}
        }
        drop(slot);
    });
}
