//! The TLS client listener: accepts TCP connections, runs the TLS handshake in the client's own
//! task under a deadline (so a slow or silent peer never holds up the accept loop), then serves
//! the client like any other ([`session::run_tls`]). A plaintext client, random bytes, a refused
//! or expired client certificate: that connection is closed and counted
//! (`slotproxy_client_connections_rejected_total{reason="tls_handshake"}`), and nobody else
//! notices. Each handshake takes the context current at that moment, so a certificate reload
//! applies to new connections while open ones keep theirs.
use crate::proxy::Proxy;
use crate::session;
use crate::tls::ServerTls;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How long a client has to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TLS clients on `listener` until `shutdown` completes.
pub async fn serve(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    tls: Arc<ServerTls>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("TLS accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        if !proxy.admit_client() {
            // Past the client limit: close without a handshake (there is no TLS channel to
            // carry Redis's error on yet).
            drop(stream);
            continue;
        }
        let acceptor = tls.acceptor();
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let _slot = crate::server::ClientSlot(proxy.clone());
            let _ = stream.set_nodelay(true);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => session::run_tls(proxy, tls_stream).await,
                Ok(Err(e)) => {
                    tracing::debug!("TLS handshake with {peer} failed: {e}");
                    if let Some(m) = &proxy.metrics {
                        m.tls_handshake_failed();
                    }
                }
                Err(_) => {
                    tracing::debug!("TLS handshake with {peer} timed out");
                    if let Some(m) = &proxy.metrics {
                        m.tls_handshake_failed();
                    }
                }
            }
        });
    }
}
