//! Connections to cluster nodes: one multiplexed socket ([`conn`]) and the per-node handles that
//! outlive topology swaps ([`pool`]); every socket to a node is opened, TLS-wrapped and
//! authenticated by [`connector`].
pub mod conn;
pub mod connector;
pub mod control;
mod jobs;
pub mod pool;

/// A node's role in the cluster, as the topology last said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Replica => "replica",
        }
    }
}

/// What a connection reports about its node per request (metrics implement it), so the backend
/// layer counts through this small trait instead of importing the metrics types.
pub trait NodeObserver: Send + Sync {
    /// The node's role now (read when a batch of requests is written).
    fn role(&self) -> Role;
    /// A reply took `took` from write to arrival, on a node of `role`.
    fn observe(&self, role: Role, took: std::time::Duration);
    /// A replica's replication lag in bytes (-1: link down or unknown).
    fn set_replica_lag(&self, _bytes: i64) {}
}

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
    /// The node refused the proxy's credentials (`WRONGPASS`, `NOAUTH`, `NOPERM` while setting
    /// up the connection); nothing was written, but retrying will not help until it changes.
    #[error("node refused the proxy's credentials")]
    Auth,
    /// The TLS handshake with the node failed (certificate, protocol); nothing was written.
    #[error("TLS handshake with node failed")]
    Tls,
}

/// Why a connection to a node could not be set up, with the detail an operator needs (the
/// I/O error, or the node's own error text). Cold path: built once per failed attempt.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("connect timed out after {} ms", .0.as_millis())]
    Timeout(std::time::Duration),
    #[error("TLS: {0}")]
    Tls(String),
    /// The node answered the connection's set-up (`AUTH`, `HELLO`) with this error.
    #[error("refused the proxy's credentials: {0}")]
    Auth(String),
    /// The node answered another set-up command (`READONLY`) with an error.
    #[error("node answered {0}")]
    Refused(String),
}

impl ConnectError {
    /// The kind a request that needed this connection fails with.
    pub fn kind(&self) -> BackendError {
        match self {
            ConnectError::Auth(_) => BackendError::Auth,
            ConnectError::Tls(_) => BackendError::Tls,
            _ => BackendError::Connect,
        }
    }
}

/// What a backend connection reports to the rest of the proxy (the refresher, metrics).
pub trait ConnEvents: Send + Sync + 'static {
    /// A connection was established (true) or closed (false).
    fn connected(&self, addr: std::net::SocketAddr, up: bool);
    /// Connecting failed, or an open connection broke or timed out.
    fn failed(&self, addr: std::net::SocketAddr, error: BackendError);
    /// Connecting failed, with the detail (called before `failed` for the same attempt). For
    /// logs and health: report on a change of state, not per attempt.
    fn connect_failed(&self, _addr: std::net::SocketAddr, _error: &ConnectError) {}
    /// The request counters of node `addr`, asked for once per connection task (metrics).
    fn node_stats(&self, _addr: std::net::SocketAddr) -> Option<std::sync::Arc<dyn NodeObserver>> {
        None
    }
}

/// Events that go nowhere (tests, one-off connections).
pub struct NoEvents;

impl ConnEvents for NoEvents {
    fn connected(&self, _: std::net::SocketAddr, _: bool) {}
    fn failed(&self, _: std::net::SocketAddr, _: BackendError) {}
}
