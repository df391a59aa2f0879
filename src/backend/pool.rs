//! Per-node connection handles, keyed by address and shared by every topology that names the
//! node, so a topology swap keeps every open connection. Each node has a few connections per
//! protocol version; a client always uses the same one for a node (chosen by its session id),
//! which keeps that client's requests to that node in order.
use super::conn::{BackendConn, ConnOptions};
use super::ConnEvents;
use crate::protocol::reply::Proto;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

/// The shared connections to one node.
pub struct NodeBackend {
    addr: SocketAddr,
    /// Whether reads may go to this node as a replica: its link to the master is up and its lag
    /// is within `replica_max_lag_bytes` (kept by `cluster::replica_lag`; true until polled).
    replica_ok: std::sync::atomic::AtomicBool,
    resp2: Vec<BackendConn>,
    resp3: OnceLock<Vec<BackendConn>>,
    opts: ConnOptions,
    count: usize,
    events: Arc<dyn ConnEvents>,
}

impl std::fmt::Debug for NodeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBackend")
            .field("addr", &self.addr)
            .finish()
    }
}

impl NodeBackend {
    fn new(
        addr: SocketAddr,
        opts: ConnOptions,
        count: usize,
        events: Arc<dyn ConnEvents>,
    ) -> NodeBackend {
        let resp2 = Self::spawn_set(addr, opts.clone(), Proto::Resp2, count, &events);
        NodeBackend {
            addr,
            replica_ok: std::sync::atomic::AtomicBool::new(true),
            resp2,
            resp3: OnceLock::new(),
            opts,
            count,
            events,
        }
    }

    fn spawn_set(
        addr: SocketAddr,
        opts: ConnOptions,
        proto: Proto,
        count: usize,
        events: &Arc<dyn ConnEvents>,
    ) -> Vec<BackendConn> {
        (0..count)
            .map(|_| {
                BackendConn::spawn(
                    addr,
                    ConnOptions {
                        proto,
                        ..opts.clone()
                    },
                    events.clone(),
                )
            })
            .collect()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether reads may go to this node as a replica (link up, lag within the limit).
    #[inline]
    pub fn replica_ok(&self) -> bool {
        self.replica_ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets what [`Self::replica_ok`] answers; returns the previous value.
    pub fn set_replica_ok(&self, ok: bool) -> bool {
        self.replica_ok
            .swap(ok, std::sync::atomic::Ordering::Relaxed)
    }

    /// The shared connection that client `session_id` uses for this node.
    #[inline]
    pub fn conn(&self, proto: Proto, session_id: u64) -> &BackendConn {
        let set = match proto {
            Proto::Resp2 => &self.resp2,
            Proto::Resp3 => self.resp3.get_or_init(|| {
                Self::spawn_set(
                    self.addr,
                    self.opts.clone(),
                    Proto::Resp3,
                    self.count,
                    &self.events,
                )
            }),
        };
        &set[(session_id % set.len() as u64) as usize]
    }

    /// A new connection for one client alone, closed when the handle is dropped. Transactions
    /// keep the command timeout (`may_block: false`); blocking commands wait as long as the
    /// client asked (`may_block: true`).
    pub fn dedicated(&self, proto: Proto, may_block: bool) -> BackendConn {
        BackendConn::spawn(
            self.addr,
            ConnOptions {
                proto,
                timeout: if may_block { None } else { self.opts.timeout },
                ..self.opts.clone()
            },
            self.events.clone(),
        )
    }
}

/// Every node the proxy has talked to.
pub struct Pool {
    nodes: Mutex<HashMap<SocketAddr, Arc<NodeBackend>>>,
    opts: ConnOptions,
    conns_per_node: usize,
    events: Arc<dyn ConnEvents>,
}

impl Pool {
    pub fn new(opts: ConnOptions, conns_per_node: usize, events: Arc<dyn ConnEvents>) -> Pool {
        Pool {
            nodes: Mutex::new(HashMap::new()),
            opts,
            conns_per_node: conns_per_node.max(1),
            events,
        }
    }

    /// The node at `addr`, creating its handle (not yet its sockets) on first use.
    pub fn node(&self, addr: SocketAddr) -> Arc<NodeBackend> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes
            .entry(addr)
            .or_insert_with(|| {
                Arc::new(NodeBackend::new(
                    addr,
                    self.opts.clone(),
                    self.conns_per_node,
                    self.events.clone(),
                ))
            })
            .clone()
    }

    /// Where connection events go (metrics, health).
    pub fn events(&self) -> &Arc<dyn ConnEvents> {
        &self.events
    }

    /// How connections to nodes are opened (the control path uses it too).
    pub fn connector(&self) -> &Arc<super::connector::Connector> {
        &self.opts.connector
    }

    /// Forgets nodes no longer in the cluster; their connections close once no one holds them.
    pub fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.retain(|a, _| keep(a));
    }
}
