//! What the refresher reports: why a refresh ran ([`Trigger`]), what came of it ([`Outcome`]),
//! both metrics labels, and the [`RefreshObserver`] that metrics implements to count them.
use super::refresher::View;
use std::net::SocketAddr;
use std::time::Duration;

/// Why a refresh ran (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Startup,
    Timer,
    Moved,
    ConnError,
    ClusterDown,
    /// Another worker's refresher stored a changed view.
    Peer,
}

impl Trigger {
    pub const ALL: [Trigger; 6] = [
        Trigger::Startup,
        Trigger::Timer,
        Trigger::Moved,
        Trigger::ConnError,
        Trigger::ClusterDown,
        Trigger::Peer,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Timer => "timer",
            Trigger::Moved => "moved",
            Trigger::ConnError => "conn_error",
            Trigger::ClusterDown => "clusterdown",
            Trigger::Peer => "peer",
        }
    }
}

/// What happened to one refresh (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new view was stored.
    Updated,
    /// The cluster looked the same; nothing stored.
    Unchanged,
    /// Only views older than the current one were found.
    Stale,
    /// No node answered.
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Updated,
        Outcome::Unchanged,
        Outcome::Stale,
        Outcome::Failed,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Stale => "stale",
            Outcome::Failed => "failed",
        }
    }
}

/// Observes refreshes (metrics); the default does nothing.
pub trait RefreshObserver: Send + Sync + 'static {
    fn refreshed(&self, _trigger: Trigger, _outcome: Outcome, _took: Duration, _view: &View) {}
    /// A control query (`CLUSTER NODES`) to `addr` could not be made: counted like a failed
    /// backend connection, so a node that refuses the proxy shows before any topology exists.
    fn control_failed(&self, _addr: SocketAddr, _error: crate::backend::BackendError) {}
}

pub struct NoObserver;
impl RefreshObserver for NoObserver {}
