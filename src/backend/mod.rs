//! Connections to cluster nodes: one multiplexed socket ([`conn`]) and the per-node handles that
//! outlive topology swaps ([`pool`]).
pub mod conn;
pub mod control;
mod jobs;
pub mod pool;

/// Why a request sent to a node got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The node could not be reached; the request was never written, so retrying is safe.
    #[error("could not connect to node")]
    Connect,
    /// The connection broke after the request may have been written: it may have run.
    #[error("connection to node lost")]
    Lost,
    /// No reply within the command timeout; the connection was reset.
    #[error("node did not answer in time")]
    Timeout,
}

/// What a backend connection reports to the rest of the proxy (the refresher, metrics).
pub trait ConnEvents: Send + Sync + 'static {
    /// A connection was established (true) or closed (false).
    fn connected(&self, addr: std::net::SocketAddr, up: bool);
    /// Connecting failed, or an open connection broke or timed out.
    fn failed(&self, addr: std::net::SocketAddr, error: BackendError);
    /// The request counters of node `addr`, asked for once per connection task (metrics).
    fn node_stats(
        &self,
        _addr: std::net::SocketAddr,
    ) -> Option<std::sync::Arc<crate::metrics::NodeStats>> {
        None
    }
}

/// Events that go nowhere (tests, one-off connections).
pub struct NoEvents;

impl ConnEvents for NoEvents {
    fn connected(&self, _: std::net::SocketAddr, _: bool) {}
    fn failed(&self, _: std::net::SocketAddr, _: BackendError) {}
}
