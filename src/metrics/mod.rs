//! Prometheus metrics. This module owns the registry and every metric the proxy exports
//! (listed with their meaning in `docs/metrics.md`), the handles the hot path uses, and the
//! adapters that feed it from backend connection events ([`ConnEvents`]) and topology refreshes
//! ([`RefreshObserver`]). [`http`] serves them; `process` reads the process's own numbers
//! from `/proc` at scrape time.
//!
//! Cost on the hot path is a few relaxed, uncontended atomic adds per request: labelled
//! children are resolved once and kept in plain arrays indexed by [`CommandId`], by enum
//! discriminant, or in a per-node [`NodeStats`] that each backend connection task resolves once
//! when it starts. Children whose label values depend on traffic (a command, a node's role) are
//! created on first use behind a `OnceLock`, so `/metrics` does not list hundreds of never-used
//! commands. What every request touches (latency histograms, whose counts are the request
//! counts; bytes; commands in flight) is sharded by thread (`sharded`) so two cores never
//! fight over a cache line; the rarer events (errors, retries, connections, refreshes) use the
//! prometheus crate's own types. Nothing on the request path looks a label up by string or
//! takes a lock.
pub mod http;
mod process;
mod sharded;
mod stats;

pub use stats::{ErrorKind, NodeStats, Timed};

use crate::backend::{BackendError, ConnEvents};
use crate::cluster::refresher::{Outcome, RefreshObserver, Trigger, View};
use crate::cluster::topology::Role;
use crate::protocol::command::{CommandId, CommandTable};
use crate::redirect::RetryReason;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use sharded::{counter_family, gauge_family, histogram_family, ShardedCounter};
use stats::{BackendVecs, CommandEntry};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a scrape reads from the running proxy beside the counters: the gauges that are read
/// rather than counted, and readiness. The proxy implements it, so metrics does not depend on
/// the proxy's type (nor the proxy's modules on metrics' internals).
pub trait ScrapeSource: Send + Sync {
    fn connected_clients(&self) -> usize;
    /// Unix time of the last topology refresh that reached a node (0 = never).
    fn last_refresh_unix(&self) -> u64;
    /// What health sees now, over every worker.
    fn health(&self) -> crate::health::Report;
}

/// Buckets, in seconds, for topology refreshes (one or more `CLUSTER NODES` round trips).
const REFRESH_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric, with its handles resolved: rare events in a prometheus [`Registry`], what each
/// request touches in thread-sharded counters that [`Metrics::encode`] adds to the exposition.
pub struct Metrics {
    registry: Registry,
    client_connections: IntGauge,
    client_connections_total: IntCounter,
    clients_rejected_max_clients: IntCounter,
    /// TLS clients whose handshake failed (plaintext on the TLS port, bad certificates).
    clients_rejected_tls: IntCounter,
    /// Table position of each command id's entry (subcommands share their container's).
    command_index: Vec<u16>,
    commands: Vec<CommandEntry>,
    /// Where [`CommandId::UNKNOWN`] (and any id the table does not have) is counted.
    other_command: CommandEntry,
    command_errors: IntCounterVec,
    received_bytes: ShardedCounter,
    sent_bytes: ShardedCounter,
    protocol_errors: IntCounter,
    auth_failures: IntCounter,
    backend_vecs: BackendVecs,
    nodes: Mutex<HashMap<SocketAddr, Arc<NodeStats>>>,
    redirections: [IntCounter; 2],
    retries: [IntCounter; RetryReason::ALL.len()],
    refreshes: [[IntCounter; Outcome::ALL.len()]; Trigger::ALL.len()],
    refresh_duration: Histogram,
    last_refresh: IntGauge,
    cluster_nodes: [[IntGauge; 2]; 2],
    slots_covered: IntGauge,
    config_epoch: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Metrics {
    /// Builds and registers every metric; `commands` gives the `command` label values.
    pub fn new(commands: &CommandTable) -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let r = &registry;
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::with_opts(opts(name, help))?;
            r.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::with_opts(opts(name, help))?;
            r.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let v = IntCounterVec::new(opts(name, help), labels)?;
            r.register(Box::new(v.clone()))?;
            Ok::<_, prometheus::Error>(v)
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let v = IntGaugeVec::new(opts(name, help), labels)?;
            r.register(Box::new(v.clone()))?;
            Ok::<_, prometheus::Error>(v)
        };

        let build = gauge_vec(
            "slotproxy_build_info",
            "Always 1; the labels say which slotproxy this is.",
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

        let command_errors = counter_vec(
            "slotproxy_command_errors_total",
            "Commands answered with an error, by command and error code (the reply's first \
             word).",
            &["command", "kind"],
        )?;
        let (command_index, commands) = stats::command_entries(commands);

        let backend_vecs = BackendVecs {
            connections: gauge_vec(
                "slotproxy_backend_connections",
                "Open connections to a node (shared and client-pinned).",
                &["node"],
            )?,
            errors: counter_vec(
                "slotproxy_backend_connection_errors_total",
                "Connections to a node that could not be opened (error=connect), were refused the proxy's credentials (error=auth) or TLS (error=tls), broke \
                 (error=lost) or were reset after a reply timeout (error=timeout).",
                &["node", "error"],
            )?,
            replica_lag: gauge_vec(
                "slotproxy_replica_lag_bytes",
                "How far a replica's replication offset is behind its master's, in bytes, as \
                 last polled (-1: its link to the master is down or it did not answer); polled \
                 only while reads may go to replicas.",
                &["node"],
            )?,
        };

        let redirections = counter_vec(
            "slotproxy_redirections_total",
            "MOVED and ASK redirections followed.",
            &["type"],
        )?;
        let retries = counter_vec(
            "slotproxy_retries_total",
            "Requests sent again, by reason (moved, ask, tryagain, clusterdown, loading, \
             connect).",
            &["reason"],
        )?;
        let refreshes = counter_vec(
            "slotproxy_topology_refreshes_total",
            "Topology refreshes, by what triggered them and their result.",
            &["trigger", "result"],
        )?;
        let cluster_nodes = gauge_vec(
            "slotproxy_cluster_nodes",
            "Nodes in the loaded topology, by role and state (ok or failed).",
            &["role", "state"],
        )?;
        let refresh_duration = Histogram::with_opts(
            HistogramOpts::new(
                "slotproxy_topology_refresh_duration_seconds",
                "Time one topology refresh took.",
            )
            .buckets(REFRESH_BUCKETS.to_vec()),
        )?;
        r.register(Box::new(refresh_duration.clone()))?;
        r.register(Box::new(process::ProcessCollector::new()?))?;

        let roles = [Role::Master, Role::Replica];
        let rejected = counter_vec(
            "slotproxy_client_connections_rejected_total",
            "Client connections refused, by reason.",
            &["reason"],
        )?;
        Ok(Metrics {
            client_connections: gauge(
                "slotproxy_client_connections",
                "Client connections open now.",
            )?,
            client_connections_total: counter(
                "slotproxy_client_connections_total",
                "Client connections accepted (under the client limit).",
            )?,
            clients_rejected_max_clients: rejected.with_label_values(&["max_clients"]),
            clients_rejected_tls: rejected.with_label_values(&["tls_handshake"]),
            command_index,
            commands,
            other_command: CommandEntry::new("other".into()),
            command_errors,
            received_bytes: ShardedCounter::default(),
            sent_bytes: ShardedCounter::default(),
            protocol_errors: counter(
                "slotproxy_protocol_errors_total",
                "Client connections closed because they sent malformed RESP or exceeded a \
                 request limit.",
            )?,
            auth_failures: counter(
                "slotproxy_auth_failures_total",
                "Client logins refused (AUTH or HELLO AUTH answered WRONGPASS).",
            )?,
            backend_vecs,
            nodes: Mutex::new(HashMap::new()),
            redirections: ["moved", "ask"].map(|t| redirections.with_label_values(&[t])),
            retries: RetryReason::ALL.map(|r| retries.with_label_values(&[r.as_str()])),
            refreshes: Trigger::ALL.map(|t| {
                Outcome::ALL.map(|o| refreshes.with_label_values(&[t.as_str(), o.as_str()]))
            }),
            refresh_duration,
            last_refresh: gauge(
                "slotproxy_topology_last_success_timestamp_seconds",
                "Unix time of the last refresh that read a current topology from a node \
                 (0 = never).",
            )?,
            cluster_nodes: roles.map(|role| {
                ["ok", "failed"].map(|s| cluster_nodes.with_label_values(&[role.as_str(), s]))
            }),
            slots_covered: gauge(
                "slotproxy_cluster_slots_covered",
                "Hash slots (of 16384) whose master every worker knows and can reach now.",
            )?,
            config_epoch: gauge(
                "slotproxy_cluster_config_epoch",
                "Highest master config epoch in the loaded topology.",
            )?,
            registry,
        })
    }

    // ---- clients ----

    /// A client was accepted.
    #[inline]
    pub fn client_accepted(&self) {
        self.client_connections_total.inc();
    }

    /// A client was refused because `max_clients` are connected.
    pub fn client_rejected(&self) {
        self.clients_rejected_max_clients.inc();
    }

    /// A TLS client was closed because its handshake failed.
    pub fn tls_handshake_failed(&self) {
        self.clients_rejected_tls.inc();
    }

    /// `n` bytes were read from a client; returns the time they arrived, for timing the
    /// commands in them ([`Timed::start`]).
    #[inline]
    pub fn received(&self, n: usize) -> Instant {
        self.received_bytes.add(n as u64);
        Instant::now()
    }

    /// A client broke the protocol (its connection is closed).
    pub fn protocol_error(&self) {
        self.protocol_errors.inc();
    }

    /// A client's AUTH (or HELLO AUTH) was refused.
    pub fn auth_failed(&self) {
        self.auth_failures.inc();
    }

    // ---- commands ----

    /// The reply to the command `timed` is ready: counts it, its latency, its error if the
    /// reply is one, and the reply's bytes.
    #[inline]
    pub fn command_done(&self, timed: Timed, reply: &[u8]) {
        let entry = self.command_entry(timed.command());
        entry.duration().observe(timed.elapsed());
        if let Some(kind) = ErrorKind::of_reply(reply) {
            entry.error(&self.command_errors, kind).inc();
        }
        self.sent(reply.len());
    }

    /// `n` reply bytes are written to a client.
    #[inline]
    pub fn sent(&self, n: usize) {
        self.sent_bytes.add(n as u64);
    }

    #[inline]
    fn command_entry(&self, id: CommandId) -> &CommandEntry {
        match self.command_index.get(id.0 as usize) {
            Some(&i) => &self.commands[i as usize],
            None => &self.other_command,
        }
    }

    // ---- nodes ----

    /// The counters of node `addr`, created on first sight. Called when a connection task starts
    /// and on connection events, never per request.
    pub fn node(&self, addr: SocketAddr) -> Arc<NodeStats> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes
            .entry(addr)
            .or_insert_with(|| Arc::new(NodeStats::new(addr, &self.backend_vecs)))
            .clone()
    }

    // ---- retries and refreshes ----

    /// A request is sent again for `reason`.
    pub fn retry(&self, reason: RetryReason) {
        self.retries[reason as usize].inc();
        match reason {
            RetryReason::Moved => self.redirections[0].inc(),
            RetryReason::Ask => self.redirections[1].inc(),
            _ => {}
        }
    }

    fn refreshed(&self, trigger: Trigger, outcome: Outcome, took: Duration, view: &View) {
        self.refreshes[trigger as usize][outcome as usize].inc();
        self.refresh_duration.observe(took.as_secs_f64());
        for n in view.topology.nodes() {
            self.node(n.addr).set_role(n.role);
        }
    }

    // ---- scraping ----

    /// The metrics in the Prometheus text format, with the gauges that are read rather than
    /// counted (clients, topology) brought up to date from `source` first.
    pub fn render(&self, source: &dyn ScrapeSource) -> Vec<u8> {
        self.client_connections
            .set(source.connected_clients() as i64);
        self.last_refresh.set(source.last_refresh_unix() as i64);
        // Coverage and node states as health sees them: what every worker can reach now.
        let report = source.health();
        self.slots_covered.set(report.slots_reachable as i64);
        self.config_epoch.set(report.epoch as i64);
        for (gauges, counts) in self.cluster_nodes.iter().zip(report.nodes) {
            for (g, c) in gauges.iter().zip(counts) {
                g.set(c);
            }
        }
        self.encode()
    }

    /// Every metric in the Prometheus text format, as it is.
    pub fn encode(&self) -> Vec<u8> {
        let mut families = self.registry.gather();
        families.extend(self.sharded_families());
        families.retain(|f| !f.get_metric().is_empty());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail on I/O; a failure would be a malformed metric.
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!("encoding metrics: {e}");
        }
        out
    }

    /// The families kept in sharded counters, summed now.
    fn sharded_families(&self) -> Vec<prometheus::proto::MetricFamily> {
        let commands: Vec<_> = self
            .commands
            .iter()
            .chain([&self.other_command])
            .filter_map(|c| Some((vec![("command", c.name())], c.snapshot()?)))
            .collect();
        let nodes: Vec<Arc<NodeStats>> = {
            let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            nodes.values().cloned().collect()
        };
        let backend: Vec<_> = nodes
            .iter()
            .flat_map(|n| n.snapshots())
            .map(|(node, role, snap)| (vec![("node", node), ("role", role.as_str())], snap))
            .collect();
        vec![
            counter_family(
                "slotproxy_commands_total",
                "Commands answered, by command (subcommands count as their container; commands \
                 the table does not know count as other).",
                &sharded::counts(&commands),
            ),
            histogram_family(
                "slotproxy_command_duration_seconds",
                "Time from reading a command to having its reply ready to write, by command.",
                &commands,
            ),
            counter_family(
                "slotproxy_backend_requests_total",
                "Requests answered by a node on the shared connections, by node and role.",
                &sharded::counts(&backend),
            ),
            histogram_family(
                "slotproxy_backend_request_duration_seconds",
                "Time from writing a request to a node to reading its reply (shared \
                 connections), by node and role.",
                &backend,
            ),
            gauge_family(
                "slotproxy_commands_in_flight",
                "Commands read from clients whose reply is not ready yet.",
                &[(vec![], stats::in_flight())],
            ),
            counter_family(
                "slotproxy_client_received_bytes_total",
                "Bytes read from clients.",
                &[(vec![], self.received_bytes.get())],
            ),
            counter_family(
                "slotproxy_client_sent_bytes_total",
                "Bytes of replies written to clients.",
                &[(vec![], self.sent_bytes.get())],
            ),
        ]
    }

    /// Wraps the connection-event sink and refresh observer the proxy was started with so that
    /// they also feed these metrics.
    pub fn observe(
        self: &Arc<Self>,
        events: Arc<dyn ConnEvents>,
        observer: Box<dyn RefreshObserver>,
    ) -> (Arc<dyn ConnEvents>, Box<dyn RefreshObserver>) {
        (
            Arc::new(Events {
                metrics: self.clone(),
                next: events,
            }),
            Box::new(Observer {
                metrics: self.clone(),
                next: observer,
            }),
        )
    }
}

/// Backend connection events, counted per node, then passed on.
struct Events {
    metrics: Arc<Metrics>,
    next: Arc<dyn ConnEvents>,
}

impl ConnEvents for Events {
    fn connected(&self, addr: SocketAddr, up: bool) {
        self.metrics.node(addr).connected(up);
        self.next.connected(addr, up);
    }

    fn failed(&self, addr: SocketAddr, error: BackendError) {
        self.metrics.node(addr).failed(error);
        self.next.failed(addr, error);
    }

    fn connect_failed(&self, addr: SocketAddr, error: &crate::backend::ConnectError) {
        self.next.connect_failed(addr, error);
    }

    fn node_stats(&self, addr: SocketAddr) -> Option<Arc<dyn crate::backend::NodeObserver>> {
        Some(self.metrics.node(addr))
    }
}

/// Topology refreshes, counted, then passed on.
struct Observer {
    metrics: Arc<Metrics>,
    next: Box<dyn RefreshObserver>,
}

impl RefreshObserver for Observer {
    fn refreshed(&self, trigger: Trigger, outcome: Outcome, took: Duration, view: &View) {
        self.metrics.refreshed(trigger, outcome, took, view);
        self.next.refreshed(trigger, outcome, took, view);
    }

    fn control_failed(&self, addr: SocketAddr, error: BackendError) {
        self.metrics.node(addr).failed(error);
        self.next.control_failed(addr, error);
    }
}

#[cfg(test)]
mod tests;
