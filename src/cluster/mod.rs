//! What the proxy knows about the cluster: slots, the topology and how it is kept fresh.
pub mod poll;
pub mod refresh_events;
pub mod refresher;
pub mod replica_lag;
pub mod slot;
pub mod topology;
