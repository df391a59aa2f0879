//! Shared integration-test harness: real `redis-server` nodes and clusters, and real `slotproxy`
//! processes, on ports picked at run time, in unique temp dirs, stopped (by pid) on `Drop`.
//!
//! Use it with `mod support;` from a test file. Clusters are formed with slotproxy's own
//! `bootstrap` library code. A missing redis-server fails the test with the install command; no
//! test silently skips. Nodes may require a password, an ACL user or TLS ([`secure`]); every
//! helper here reaches them with what they require.
#![allow(dead_code)]

pub mod pipelines;
pub mod proxy;
pub mod secure;
pub mod tls_client;

#[allow(unused_imports)]
pub use proxy::Proxy;

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

use slotproxy::bootstrap::cluster_view::{parse_cluster_nodes, NodeLine};
use slotproxy::bootstrap::spawn::{is_redis_process, signal, start_node};
use slotproxy::bootstrap::{
    form_cluster, FormOptions, NodeCredentials, NodeSecurity, NodeSpec, Progress,
};
use tempfile::TempDir;

pub mod raw;
pub mod standalone;

const INSTALL: &str = "apt-get install redis-server redis-tools";

/// The `redis-server` binary. Panics, saying how to install it, when there is none.
pub fn redis_server_path() -> PathBuf {
    find_on_path("redis-server")
        .unwrap_or_else(|| panic!("redis-server not found on PATH: {INSTALL}"))
}

/// The `redis-cli` binary. Panics, saying how to install it, when there is none.
pub fn redis_cli_path() -> PathBuf {
    find_on_path("redis-cli").unwrap_or_else(|| panic!("redis-cli not found on PATH: {INSTALL}"))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Ports are handed out from 10000..22000, so that node ports and their cluster bus ports
/// (+10000, up to 32000) stay below Linux's ephemeral range (32768+), where outgoing connections
/// could take them. Each test process starts at a random offset and never hands a port out twice.
const PORT_LOW: u32 = 10_000;
const PORT_HIGH: u32 = 22_000;
const BUS_OFFSET: u16 = 10_000;
// No node port handed out (below PORT_HIGH) can have a bus port past 65535.
const _: () = assert!(PORT_HIGH + BUS_OFFSET as u32 <= 65_535);

fn next_candidate() -> u16 {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        AtomicU32::new((random % u64::from(PORT_HIGH - PORT_LOW)) as u32)
    });
    (PORT_LOW + next.fetch_add(1, Ordering::Relaxed) % (PORT_HIGH - PORT_LOW)) as u16
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Hands out `count` consecutive ports that, with their `+10000` bus ports when `with_bus`, are
/// free now and were not handed out before in this process.
fn reserve(count: u16, with_bus: bool) -> u16 {
    static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..100_000 {
        let base = next_candidate();
        if u32::from(base) + u32::from(count) > PORT_HIGH {
            continue;
        }
        let ports: Vec<u16> = (base..base + count).collect();
        let mut taken = TAKEN.lock().unwrap();
        let taken = taken.get_or_insert_with(HashSet::new);
        let free = ports.iter().all(|&p| {
            !taken.contains(&p) && bindable(p) && (!with_bus || bindable(p + BUS_OFFSET))
        });
        if free {
            taken.extend(&ports);
            return base;
        }
    }
    panic!("no free ports found in {PORT_LOW}..{PORT_HIGH}");
}

/// A free TCP port on 127.0.0.1 (for a proxy or any plain listener).
pub fn free_port() -> u16 {
    reserve(1, false)
}

/// A free port for a cluster node: the port and its cluster bus port (+10000) are both free.
pub fn free_node_port() -> u16 {
    reserve(1, true)
}

/// The first of `count` consecutive node ports, each free with its bus port (for
/// `bootstrap --spawn --base-port`).
pub fn free_base_port(count: u16) -> u16 {
    reserve(count, true)
}

/// How to start test nodes.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `cluster-node-timeout` in ms; tests that kill masters want 2000 for quick failovers.
    pub node_timeout_ms: u64,
    /// A password (`secure::password`) or an ACL user (`secure::acl_user`) the nodes require.
    pub auth: Option<NodeCredentials>,
    /// The nodes speak only TLS, with certificates generated into the nodes' temp dir.
    pub tls: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            node_timeout_ms: 3000,
            auth: None,
            tls: false,
        }
    }
}

/// Running cluster-mode nodes, not formed into a cluster (what an operator starts by hand before
/// `bootstrap --nodes`). Stopped by pid, and their temp dir removed, on drop.
pub struct Nodes {
    redis_server: PathBuf,
    security: NodeSecurity,
    specs: Vec<NodeSpec>,
    pids: Mutex<Vec<Option<u32>>>,
    // Dropped after `Drop::drop` has stopped the nodes.
    dir: TempDir,
}

impl Nodes {
    /// Starts `count` empty cluster-mode nodes on free ports, rendered from the node template.
    pub fn start(count: usize, opts: &ClusterOptions) -> Nodes {
        let redis_server = redis_server_path();
        let dir = tempfile::Builder::new()
            .prefix("slotproxy-nodes-")
            .tempdir()
            .expect("creating a temp dir");
        let security = secure::node_security(dir.path(), opts);
        // Built before starting anything, so a failure part-way still stops what started.
        let mut nodes = Nodes {
            redis_server,
            security,
            specs: Vec::new(),
            pids: Mutex::new(Vec::new()),
            dir,
        };
        for _ in 0..count {
            nodes.start_one(opts);
        }
        nodes
    }

    /// Starts one more node; retries on other ports if one was taken meanwhile.
    fn start_one(&mut self, opts: &ClusterOptions) {
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_node_port();
            let spec = NodeSpec {
                port,
                bind: "127.0.0.1".parse().unwrap(),
                dir: self.dir.path().join(format!("node-{port}")),
                node_timeout_ms: opts.node_timeout_ms,
                security: self.security.clone(),
            };
            let access = self
                .security
                .access()
                .unwrap_or_else(|e| panic!("reaching test nodes: {e}"));
            secure::register(spec.addr(), access);
            match start_node(&self.redis_server, &spec) {
                Ok(pid) => {
                    self.specs.push(spec);
                    self.pids.lock().unwrap().push(Some(pid));
                    return;
                }
                Err(e) => {
                    secure::unregister(spec.addr());
                    last_error = e.to_string();
                    if let Some(pid) = slotproxy::bootstrap::spawn::read_pid(&spec.pid_path()) {
                        kill_and_wait(pid);
                    }
                    let _ = std::fs::remove_dir_all(&spec.dir);
                }
            }
        }
        panic!("could not start a redis-server node: {last_error}");
    }

    /// Every node's address, in start order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.specs.iter().map(NodeSpec::addr).collect()
    }

    /// The temp dir holding every node's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the nodes require (password, ACL user, TLS).
    pub fn security(&self) -> &NodeSecurity {
        &self.security
    }

    /// How forming (and any NodeClient) reaches these nodes.
    pub fn form_options(&self) -> FormOptions {
        FormOptions {
            access: self
                .security
                .access()
                .unwrap_or_else(|e| panic!("reaching test nodes: {e}")),
            ..FormOptions::default()
        }
    }

    fn index(&self, addr: SocketAddr) -> usize {
        self.specs
            .iter()
            .position(|s| s.addr() == addr)
            .unwrap_or_else(|| panic!("{addr} is not a node of this test"))
    }

    /// The node's pid, unless it was killed.
    pub fn pid(&self, addr: SocketAddr) -> Option<u32> {
        self.pids.lock().unwrap()[self.index(addr)]
    }

    /// Every pid the harness started that it has not killed.
    pub fn pids(&self) -> Vec<u32> {
        self.pids
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .copied()
            .collect()
    }

    /// The node's log file.
    pub fn log_path(&self, addr: SocketAddr) -> PathBuf {
        self.specs[self.index(addr)].log_path()
    }

    /// SIGKILLs the node and waits until its process is gone.
    pub fn kill(&self, addr: SocketAddr) {
        let i = self.index(addr);
        let pid = self.pids.lock().unwrap()[i].take();
        if let Some(pid) = pid {
            kill_and_wait(pid);
        }
    }

    /// Starts a killed node again, on the same port, with its data and `nodes.conf`.
    pub fn restart(&self, addr: SocketAddr) {
        let i = self.index(addr);
        assert!(self.pid(addr).is_none(), "{addr} is still running");
        let pid = start_node(&self.redis_server, &self.specs[i])
            .unwrap_or_else(|e| panic!("restarting {addr}: {e}"));
        self.pids.lock().unwrap()[i] = Some(pid);
    }

    /// The nodes that have not been killed.
    pub fn live(&self) -> Vec<SocketAddr> {
        let pids = self.pids.lock().unwrap();
        self.specs
            .iter()
            .zip(pids.iter())
            .filter(|(_, pid)| pid.is_some())
            .map(|(s, _)| s.addr())
            .collect()
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        // A test that panicked while holding the lock (in kill or restart) poisons it; the
        // nodes must still go, or they outlive the test.
        let pids: Vec<u32> = self
            .pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flatten()
            .copied()
            .collect();
        for &pid in &pids {
            signal(pid, "KILL");
        }
        for pid in pids {
            wait_gone(pid, Duration::from_secs(5));
        }
        for spec in &self.specs {
            secure::unregister(spec.addr());
        }
    }
}

/// Sends `SIG<name>` to a process the test started; true if it was delivered.
pub fn signal_pid(pid: u32, name: &str) -> bool {
    signal(pid, name)
}

/// `log` without ANSI colour sequences (a log written before colours were terminal-only).
pub fn strip_ansi(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// SIGKILLs `pid` and waits (bounded) until it is gone.
pub fn kill_and_wait(pid: u32) {
    signal(pid, "KILL");
    wait_gone(pid, Duration::from_secs(5));
}

fn wait_gone(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while is_redis_process(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(20));
    }
    true
}

/// A redis connection to `addr` (the `redis` crate's sync client), authenticated as a harness
/// node at `addr` requires.
pub fn connect(addr: SocketAddr) -> redis::Connection {
    redis::Client::open(secure::connection_info(addr))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
}

/// `CLUSTER NODES` of `addr`, parsed.
pub fn cluster_nodes(addr: SocketAddr) -> Vec<NodeLine> {
    let text = secure::node_string(addr, &["CLUSTER", "NODES"]);
    parse_cluster_nodes(&text).unwrap()
}

/// One `INFO <section>` field of `addr`.
pub fn info_field(addr: SocketAddr, section: &str, field: &str) -> Option<String> {
    let cmd = if section == "cluster-info" {
        "CLUSTER"
    } else {
        "INFO"
    };
    let arg = if section == "cluster-info" {
        "INFO"
    } else {
        section
    };
    let text = secure::node_string(addr, &[cmd, arg]);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

/// `CLUSTER INFO` field of `addr` (`cluster_state`, `cluster_known_nodes`, ...).
pub fn cluster_info(addr: SocketAddr, field: &str) -> String {
    info_field(addr, "cluster-info", field)
        .unwrap_or_else(|| panic!("no {field} in CLUSTER INFO of {addr}"))
}

/// A formed six-node cluster (3 masters + 3 replicas), formed with slotproxy's bootstrap code.
/// Every node is stopped, and the temp dir removed, on drop.
pub struct Cluster {
    nodes: Nodes,
}

impl Cluster {
    /// Starts and forms a cluster with the default options.
    pub fn start() -> Cluster {
        Cluster::start_with(ClusterOptions::default())
    }

    /// Starts and forms a cluster; waits until it is healthy.
    pub fn start_with(opts: ClusterOptions) -> Cluster {
        let nodes = Nodes::start(6, &opts);
        form_cluster(&nodes.addrs(), &nodes.form_options(), &Progress::stdout())
            .unwrap_or_else(|e| panic!("forming the test cluster: {e}"));
        Cluster { nodes }
    }

    /// The unformed-nodes view: pids, logs, restart, dir.
    pub fn raw(&self) -> &Nodes {
        &self.nodes
    }

    /// All six nodes, in start order (the first three were the initial masters).
    pub fn nodes(&self) -> Vec<SocketAddr> {
        self.nodes.addrs()
    }

    /// A node that was not killed, to ask about the cluster.
    fn any_live(&self) -> SocketAddr {
        *self.nodes.live().first().expect("every node was killed")
    }

    /// Non-failed lines of a live node's `CLUSTER NODES`.
    fn healthy_lines(&self) -> Vec<NodeLine> {
        cluster_nodes(self.any_live())
            .into_iter()
            .filter(|l| !l.is_troubled())
            .collect()
    }

    /// The current masters that serve slots (in slot order), as a live node sees them now.
    pub fn masters(&self) -> Vec<SocketAddr> {
        let mut masters: Vec<NodeLine> = self
            .healthy_lines()
            .into_iter()
            .filter(|l| l.is_master() && !l.slots.is_empty())
            .collect();
        masters.sort_by_key(|l| l.slots[0].start);
        masters.iter().filter_map(|l| l.addr).collect()
    }

    /// The current replicas, as a live node sees them now.
    pub fn replicas(&self) -> Vec<SocketAddr> {
        self.healthy_lines()
            .iter()
            .filter(|l| l.is_replica())
            .filter_map(|l| l.addr)
            .collect()
    }

    /// The master serving `slot` now, as a live node sees it.
    pub fn master_of_slot(&self, slot: u16) -> SocketAddr {
        self.try_master_of_slot(slot)
            .unwrap_or_else(|| panic!("no live master serves slot {slot}"))
    }

    fn try_master_of_slot(&self, slot: u16) -> Option<SocketAddr> {
        self.healthy_lines()
            .iter()
            .find(|l| l.is_master() && l.slots.iter().any(|r| r.start <= slot && slot <= r.end))
            .and_then(|l| l.addr)
    }

    /// The master serving `slot` once the node asked knows one (after a failover, nodes learn
    /// of the promotion at slightly different times; the proxy may use it before some do).
    pub fn settled_master_of_slot(&self, slot: u16, limit: Duration) -> SocketAddr {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(a) = self.try_master_of_slot(slot) {
                return a;
            }
            assert!(
                Instant::now() < deadline,
                "no live master serves slot {slot} after {limit:?}"
            );
            sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILLs a node and waits until its process is gone.
    pub fn kill(&self, addr: SocketAddr) {
        self.nodes.kill(addr);
    }

    /// Starts a killed node again with its data.
    pub fn restart(&self, addr: SocketAddr) {
        self.nodes.restart(addr);
    }

    /// A connection straight to one node.
    pub fn client(&self, addr: SocketAddr) -> redis::Connection {
        connect(addr)
    }

    /// Waits (up to 60 s) until every live node says `cluster_state:ok` and all live nodes agree
    /// on which live master serves each slot: after a kill, this is "failover done".
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let pending = self.not_ok();
            if pending.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!("cluster not ok after 60 s: {}", pending.join("; "));
            }
            sleep(Duration::from_millis(100));
        }
    }

    fn not_ok(&self) -> Vec<String> {
        let live = self.nodes.live();
        let mut pending = Vec::new();
        let mut maps = Vec::new();
        for &addr in &live {
            if cluster_info(addr, "cluster_state") != "ok" {
                pending.push(format!("{addr} cluster_state is not ok"));
            }
            let mut map: Vec<(u16, u16, Option<SocketAddr>)> = cluster_nodes(addr)
                .iter()
                .filter(|l| l.is_master())
                .flat_map(|l| l.slots.iter().map(move |r| (r.start, r.end, l.addr)))
                .collect();
            map.sort();
            if map
                .iter()
                .any(|(_, _, a)| !a.is_some_and(|a| live.contains(&a)))
            {
                pending.push(format!("{addr} still maps slots to a dead node"));
            }
            maps.push(map);
        }
        if maps.windows(2).any(|w| w[0] != w[1]) {
            pending.push("live nodes disagree about the slot map".into());
        }
        pending
    }
}
