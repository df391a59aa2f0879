//! Health: whether the proxy can serve every slot now, for `/readyz` and the cluster gauges.
//! This module owns the process-wide health state, aggregated over all workers (in per-core
//! mode each worker has its own refresher and connection pool):
//!
//! - per node, the last connect error its backend connections reported ([`ConnEvents`]), cleared
//!   when a connection to it opens again; one WARN when a node becomes unreachable, one when it
//!   recovers, none per failed attempt;
//! - each worker's loaded topology (nodes the cluster flags `fail`, slots without a master) and
//!   the age of its last successful refresh;
//! - named conditions other code sets and clears ([`Health::set_condition`]);
//! - whether the proxy is shutting down.
//!
//! Backend connections open lazily, so an idle proxy would learn nothing about a node that died;
//! [`probe`] sends a `PING` to every known node once per refresh interval, on the same shared
//! connections (and through the same connector) requests use, so what health says is what a
//! request would meet.
use crate::backend::{BackendError, ConnEvents, ConnectError};
use crate::cluster::refresher::Refresher;
use crate::cluster::slot::SLOT_COUNT;
use crate::cluster::topology::Role;
use crate::config::Config;
use crate::protocol::reply::Proto;
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A topology older than this many refresh intervals (without a successful refresh) makes the
/// proxy not ready.
pub const STALE_INTERVALS: u32 = 3;

#[derive(Default)]
pub struct Health {
    /// Nodes whose last connection attempt failed (or whose connection broke), with why.
    unreachable: Mutex<HashMap<SocketAddr, Down>>,
    workers: Mutex<Vec<Arc<Refresher>>>,
    conditions: Mutex<BTreeMap<String, String>>,
    draining: AtomicBool,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").finish_non_exhaustive()
    }
}

/// Why a node is unreachable, and how many failures were reported since the one logged (the
/// repeats are counted, not logged; the count is in the line that says it is back).
#[derive(Debug, Clone)]
struct Down {
    why: String,
    repeats: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What health sees now.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Why the proxy is not ready, most important first (empty: ready).
    pub problems: Vec<String>,
    /// Slots whose master is known, not flagged `fail` and reachable, on every worker.
    pub slots_reachable: usize,
    /// Nodes by role (master, replica) and state (ok, failed: flagged or unreachable).
    pub nodes: [[i64; 2]; 2],
    /// Highest config epoch among the workers' views.
    pub epoch: u64,
}

impl Report {
    /// `Err` with a one-line reason when not ready.
    pub fn ready(&self) -> Result<(), String> {
        match self.problems.as_slice() {
            [] => Ok(()),
            [one] => Err(one.clone()),
            [first, rest @ ..] => Err(format!("{first} (and {} more)", rest.len())),
        }
    }
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }

    /// Adds a worker's refresher (its view and refresh age count for readiness).
    pub fn add_worker(&self, refresher: Arc<Refresher>) {
        lock(&self.workers).push(refresher);
    }

    /// The proxy is shutting down: not ready from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Sets (`Some(reason)`) or clears (`None`) a named condition that makes the proxy not
    /// ready, e.g. `set_condition("tls", Some("certificate expired".into()))`.
    pub fn set_condition(&self, name: &str, reason: Option<String>) {
        let mut c = lock(&self.conditions);
        match reason {
            Some(r) => {
                c.insert(name.to_string(), r);
            }
            None => {
                c.remove(name);
            }
        }
    }

    /// Why `addr` is unreachable, if it is.
    pub fn node_error(&self, addr: SocketAddr) -> Option<String> {
        lock(&self.unreachable).get(&addr).map(|d| d.why.clone())
    }

    /// Records that `addr` cannot be reached (first report logs, repeats do not).
    fn mark_down(&self, addr: SocketAddr, why: String, replace: bool) {
        let mut down = lock(&self.unreachable);
        match down.get_mut(&addr) {
            Some(d) => {
                d.repeats += 1;
                if replace {
                    d.why = why;
                }
            }
            None => {
                tracing::warn!("node {addr}{} unreachable: {why}", self.describe(addr));
                down.insert(addr, Down { why, repeats: 0 });
            }
        }
    }

    fn mark_up(&self, addr: SocketAddr) {
        let Some(d) = lock(&self.unreachable).remove(&addr) else {
            return;
        };
        tracing::warn!(
            "node {addr}{} reachable again ({} more failures after the first were not logged)",
            self.describe(addr),
            d.repeats
        );
    }

    /// " (id, role)" of `addr` as the newest worker view lists it, or nothing.
    fn describe(&self, addr: SocketAddr) -> String {
        let workers = lock(&self.workers).clone();
        workers
            .iter()
            .filter_map(|w| {
                let view = w.view();
                let t = &view.topology;
                t.node_at(addr)
                    .map(|i| (t.epoch(), t.nodes()[i].id.clone(), t.nodes()[i].role))
            })
            .max_by_key(|(epoch, _, _)| *epoch)
            .map(|(_, id, role)| format!(" ({id}, {})", role.as_str()))
            .unwrap_or_default()
    }

    /// Wraps `next` so that connection events also feed health.
    pub fn observe(self: &Arc<Self>, next: Arc<dyn ConnEvents>) -> Arc<dyn ConnEvents> {
        Arc::new(Events {
            health: self.clone(),
            next,
        })
    }

    /// What health sees now, under `config` (the refresh interval).
    pub fn report(&self, config: &Config) -> Report {
        let mut report = Report::default();
        let mut problems: Vec<String> = Vec::new();
        if self.is_draining() {
            problems.push("shutting down".into());
        }
        problems.extend(lock(&self.conditions).values().cloned());
        let down = lock(&self.unreachable).clone();
        let mut workers = lock(&self.workers).clone();
        workers.sort_by_key(|w| w.view().topology.epoch());
        let stale = config.refresh_interval * STALE_INTERVALS;
        // Node address -> (role in the newest view, failed in any view).
        let mut nodes: BTreeMap<SocketAddr, (Role, bool)> = BTreeMap::new();
        if workers.is_empty() {
            problems.push("no topology loaded yet".into());
        }
        let mut slots = if workers.is_empty() { 0 } else { SLOT_COUNT };
        for w in &workers {
            let view = w.view();
            let t = &view.topology;
            report.epoch = report.epoch.max(t.epoch());
            // Why no node answered, naming one ("127.0.0.1:5001 refused the proxy's
            // credentials: WRONGPASS ..."), when the refresher knows.
            let why = w.last_failure();
            match w.last_success_age() {
                None => problems.push(match why {
                    Some(why) => format!("no topology loaded yet: {why}"),
                    None => "no topology loaded yet".into(),
                }),
                Some(age) if age > stale => problems.push(format!(
                    "topology not refreshed for {} s ({})",
                    age.as_secs(),
                    why.as_deref().unwrap_or("no node answered CLUSTER NODES")
                )),
                Some(_) => {}
            }
            if t.slots_covered() < SLOT_COUNT && !t.nodes().is_empty() {
                problems.push(format!(
                    "{} of {SLOT_COUNT} slots have no master",
                    SLOT_COUNT - t.slots_covered()
                ));
            }
            // Slots per master index, to count the reachable ones without a scan per node.
            let mut per_master = vec![0usize; t.nodes().len()];
            for s in 0..SLOT_COUNT as u16 {
                if let Some(m) = t.master_of(crate::cluster::slot::Slot(s)) {
                    per_master[m] += 1;
                }
            }
            let mut reachable = 0;
            for (i, n) in t.nodes().iter().enumerate() {
                let error = down.get(&n.addr);
                let entry = nodes.entry(n.addr).or_insert((n.role, false));
                entry.0 = n.role;
                entry.1 |= n.failed || error.is_some();
                if n.role != Role::Master || per_master[i] == 0 {
                    continue;
                }
                match error {
                    Some(e) => problems.push(format!(
                        "master {} (serving {} slots) is unreachable: {}",
                        n.addr, per_master[i], e.why
                    )),
                    None if n.failed => problems.push(format!(
                        "master {} (serving {} slots) is flagged fail by the cluster",
                        n.addr, per_master[i]
                    )),
                    None => reachable += per_master[i],
                }
            }
            slots = slots.min(reachable);
        }
        for (role, failed) in nodes.values() {
            report.nodes[(*role == Role::Replica) as usize][*failed as usize] += 1;
        }
        report.slots_reachable = slots;
        // Workers usually see the same problems: say each once.
        let mut seen = std::collections::HashSet::new();
        problems.retain(|p| seen.insert(p.clone()));
        report.problems = problems;
        report
    }
}

/// Connection events, fed to health, then passed on.
struct Events {
    health: Arc<Health>,
    next: Arc<dyn ConnEvents>,
}

impl ConnEvents for Events {
    fn connected(&self, addr: SocketAddr, up: bool) {
        if up {
            self.health.mark_up(addr);
        }
        self.next.connected(addr, up);
    }

    fn failed(&self, addr: SocketAddr, error: BackendError) {
        // `connect_failed` came first with the detail when there is one; keep that.
        self.health.mark_down(addr, error.to_string(), false);
        self.next.failed(addr, error);
    }

    fn connect_failed(&self, addr: SocketAddr, error: &ConnectError) {
        let why = match error {
            ConnectError::Auth(e) => format!("node refused the proxy's credentials: {e}"),
            e => e.to_string(),
        };
        self.health.mark_down(addr, why, true);
        self.next.connect_failed(addr, error);
    }

    fn node_stats(&self, addr: SocketAddr) -> Option<Arc<dyn crate::backend::NodeObserver>> {
        self.next.node_stats(addr)
    }
}

/// Pings every node in `refresher`'s view once per refresh interval (read from `config` each
/// time), for the life of the worker: a node nobody sends requests to is still checked.
pub async fn probe(refresher: Arc<Refresher>, config: Arc<ArcSwap<Config>>) {
    const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
    loop {
        let interval = config.load().refresh_interval;
        tokio::time::sleep(interval).await;
        let view = refresher.view();
        let replies: Vec<_> = view
            .backends
            .iter()
            .map(|b| b.conn(Proto::Resp2, 0).send(None, Bytes::from_static(PING)))
            .collect();
        drop(view);
        // The replies do not matter: connection events report what happened.
        let wait = interval.max(Duration::from_secs(1));
        let _ = tokio::time::timeout(wait, async {
            for r in replies {
                let _ = r.await;
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::NoEvents;

    #[test]
    fn a_node_error_is_kept_until_a_connection_opens() {
        let health = Health::new();
        let events = health.observe(Arc::new(NoEvents));
        let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        let auth = ConnectError::Auth("WRONGPASS invalid username-password pair".into());
        events.connect_failed(addr, &auth);
        events.failed(addr, BackendError::Auth);
        let why = health.node_error(addr).unwrap();
        assert_eq!(
            why,
            "node refused the proxy's credentials: WRONGPASS invalid username-password pair"
        );
        events.connected(addr, false);
        assert!(health.node_error(addr).is_some(), "a close is no recovery");
        events.connected(addr, true);
        assert_eq!(health.node_error(addr), None);
        events.failed(addr, BackendError::Connect);
        assert_eq!(
            health.node_error(addr).unwrap(),
            "could not connect to node"
        );
    }

    #[test]
    fn not_ready_while_draining_or_a_condition_holds_and_says_why_in_one_line() {
        let health = Health::new();
        let config = Config::default();
        assert_eq!(
            health.report(&config).ready(),
            Err("no topology loaded yet".into())
        );
        health.set_condition("tls", Some("certificate expired".into()));
        health.set_draining();
        assert_eq!(
            health.report(&config).ready(),
            Err("shutting down (and 2 more)".into())
        );
        health.set_condition("tls", None);
        let r = health.report(&config);
        assert_eq!(r.problems, vec!["shutting down", "no topology loaded yet"]);
    }
}
