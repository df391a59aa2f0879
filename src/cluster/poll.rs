//! The refresher's decisions, as pure functions beside its I/O loop (`refresher.rs`): which
//! nodes to ask for `CLUSTER NODES`, which fetched view wins, and how long to wait before the
//! next poll.
//!
//! While the cluster is degraded (a slot-serving master flagged `fail`/`fail?`, slots without
//! a master, a node the request path could not reach, or requests held for a new master), the
//! refresher polls every [`FAST_POLL`] and asks [`FAST_FANOUT`] nodes at once instead of one: a
//! promoted replica is then used within a fraction of a second of its promotion, and a node
//! that hangs does not slow the poll down. Whatever the mode, a view with a lower config epoch
//! never replaces a newer one.
use super::slot::SLOT_COUNT;
use super::topology::{Role, Topology};
use std::net::SocketAddr;
use std::time::Duration;

/// The poll period while degraded.
pub const FAST_POLL: Duration = Duration::from_millis(150);
/// How many nodes one degraded poll asks at once.
pub const FAST_FANOUT: usize = 3;
/// After the first view arrives, how long a degraded poll still waits for the other nodes
/// asked (a newer epoch may be among them); a node that hangs costs no more than this.
pub const FAST_GRACE: Duration = Duration::from_millis(40);
/// How long after the request path last reported a node unreachable the refresher keeps
/// polling fast (the report is renewed by every request that fails to reach it).
pub const UNREACHABLE_WINDOW: Duration = Duration::from_secs(2);

/// What the refresher knows about the cluster's health beside the topology itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Signals {
    /// Requests are waiting for a topology change (held during a failover).
    pub held: bool,
    /// The request path could not reach some node within [`UNREACHABLE_WINDOW`].
    pub unreachable: bool,
}

/// Whether `t` shows a failover in progress: slots without a master, or a slot-serving master
/// flagged failing (`fail?` from the asked node's view; a confirmed `fail` leaves its slots
/// uncovered).
pub fn degraded(t: &Topology) -> bool {
    t.slots_covered() < SLOT_COUNT || t.serving_masters().iter().any(|&m| t.nodes()[m].failed)
}

/// Whether the next poll comes fast, from several nodes.
pub fn fast(t: &Topology, signals: Signals) -> bool {
    signals.held || signals.unreachable || degraded(t)
}

/// How long to wait before the next poll.
pub fn next_wait(fast: bool, interval: Duration) -> Duration {
    if fast {
        FAST_POLL.min(interval)
    } else {
        interval
    }
}

/// How many nodes to ask at once.
pub fn fanout(fast: bool) -> usize {
    if fast {
        FAST_FANOUT
    } else {
        1
    }
}

/// The nodes to ask, best first, each once: healthy masters, healthy replicas, the seeds,
/// then nodes flagged failing or reported unreachable (they may hang, so they come last).
pub fn candidates(
    t: &Topology,
    seeds: &[SocketAddr],
    unreachable: &[SocketAddr],
) -> Vec<SocketAddr> {
    let suspect = |n: &super::topology::NodeInfo| n.failed || unreachable.contains(&n.addr);
    let mut out: Vec<SocketAddr> = Vec::with_capacity(t.nodes().len() + seeds.len());
    for role in [Role::Master, Role::Replica] {
        out.extend(
            t.nodes()
                .iter()
                .filter(|n| n.role == role && !suspect(n))
                .map(|n| n.addr),
        );
    }
    out.extend(seeds.iter().filter(|a| !unreachable.contains(a)));
    out.extend(t.nodes().iter().filter(|n| suspect(n)).map(|n| n.addr));
    out.extend(seeds.iter().filter(|a| unreachable.contains(a)));
    let mut seen = std::collections::HashSet::new();
    out.retain(|a| seen.insert(*a));
    out
}

/// What to do with the views one poll fetched (in the order the nodes were asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// `fetched[i]` is the newest and not older than the current view.
    View(usize),
    /// Every fetched view is older than the current one (from nodes that missed a failover).
    Stale,
    /// Nothing was fetched.
    Nothing,
}

/// The view to keep: the highest config epoch wins, never one lower than `current`'s. Among
/// equals (views that differ only in failure flags) the one that knows of more failure wins:
/// fewer slots served by unflagged masters. Nodes learn of a failure at slightly different
/// times, and a request held a poll longer costs less than one written to a dead master. Then
/// the first asked (masters before replicas).
pub fn pick(current: &Topology, fetched: &[&Topology]) -> Pick {
    if fetched.is_empty() {
        return Pick::Nothing;
    }
    let mut best: Option<(usize, u64, usize)> = None;
    for (i, t) in fetched.iter().enumerate() {
        if !current.is_superseded_by(t) {
            continue;
        }
        let healthy = healthy_slots(t);
        let better = match best {
            None => true,
            Some((_, epoch, slots)) => t.epoch() > epoch || (t.epoch() == epoch && healthy < slots),
        };
        if better {
            best = Some((i, t.epoch(), healthy));
        }
    }
    best.map_or(Pick::Stale, |(i, _, _)| Pick::View(i))
}

/// How many slots a master not flagged failing serves.
fn healthy_slots(t: &Topology) -> usize {
    let nodes = t.nodes();
    (0..SLOT_COUNT as u16)
        .filter(|&s| {
            t.master_of(super::slot::Slot(s))
                .is_some_and(|m| !nodes[m].failed)
        })
        .count()
}

/// The `cluster-node-timeout` in a `CONFIG GET cluster-node-timeout` reply (RESP2 array or
/// Slots that changed master between two views: from `from` to `to`, how many, and whether
/// the old master is failed (or gone) in the new view, which makes it a failover rather than a
/// resharding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    pub from: SocketAddr,
    pub from_id: String,
    pub to: SocketAddr,
    pub to_id: String,
    pub slots: usize,
    pub failover: bool,
}

/// Masters of `old` whose slots have no master in `new` (a failed master before its replica
/// is promoted): (address, id, slots), for the log.
pub fn orphaned(old: &Topology, new: &Topology) -> Vec<(SocketAddr, String, usize)> {
    let mut lost: std::collections::BTreeMap<usize, usize> = Default::default();
    for s in 0..SLOT_COUNT as u16 {
        let slot = super::slot::Slot(s);
        if let (Some(a), None) = (old.master_of(slot), new.master_of(slot)) {
            *lost.entry(a).or_default() += 1;
        }
    }
    lost.into_iter()
        .map(|(a, n)| (old.nodes()[a].addr, old.nodes()[a].id.clone(), n))
        .collect()
}

/// What [`Handover`]s `new` shows against `old` (one per pair of masters), for the log.
pub fn handovers(old: &Topology, new: &Topology) -> Vec<Handover> {
    let mut moved: std::collections::BTreeMap<(usize, usize), usize> = Default::default();
    for s in 0..SLOT_COUNT as u16 {
        let slot = super::slot::Slot(s);
        if let (Some(a), Some(b)) = (old.master_of(slot), new.master_of(slot)) {
            if old.nodes()[a].addr != new.nodes()[b].addr {
                *moved.entry((a, b)).or_default() += 1;
            }
        }
    }
    moved
        .into_iter()
        .map(|((a, b), slots)| {
            let (from, to) = (&old.nodes()[a], &new.nodes()[b]);
            let failover = match new.node_at(from.addr) {
                Some(i) => new.nodes()[i].failed,
                None => true,
            };
            Handover {
                from: from.addr,
                from_id: from.id.clone(),
                to: to.addr,
                to_id: to.id.clone(),
                slots,
                failover,
            }
        })
        .collect()
}

/// RESP3 map: the value is the last line), in milliseconds.
pub fn parse_node_timeout(reply: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(reply).ok()?;
    if !text.contains("cluster-node-timeout") {
        return None;
    }
    text.split("\r\n")
        .filter(|l| !l.is_empty())
        .last()?
        .parse()
        .ok()
        .filter(|&ms| ms > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
a 127.0.0.1:1@2 master - 0 0 1 connected 0-5460
b 127.0.0.1:2@2 master - 0 0 2 connected 5461-10922
c 127.0.0.1:3@2 master - 0 0 3 connected 10923-16383
d 127.0.0.1:4@2 slave a 0 0 1 connected
e 127.0.0.1:5@2 slave b 0 0 2 connected
f 127.0.0.1:6@2 slave c 0 0 3 connected
";

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn topo(text: &str) -> Topology {
        Topology::from_cluster_nodes(text, addr(1)).unwrap()
    }

    fn pfail_b() -> Topology {
        topo(&NODES.replace("2@2 master -", "2@2 master,fail? -"))
    }

    fn fail_b() -> Topology {
        topo(&NODES.replace("2@2 master -", "2@2 master,fail -"))
    }

    /// `e` promoted in place of `b`: epoch 7.
    fn promoted_e() -> Topology {
        topo(
            &NODES
                .replace(
                    "b 127.0.0.1:2@2 master - 0 0 2 connected 5461-10922",
                    "b 127.0.0.1:2@2 master,fail - 0 0 2 connected",
                )
                .replace(
                    "e 127.0.0.1:5@2 slave b 0 0 2 connected",
                    "e 127.0.0.1:5@2 master - 0 0 7 connected 5461-10922",
                ),
        )
    }

    #[test]
    fn a_healthy_cluster_is_polled_on_the_interval_from_one_node() {
        let t = topo(NODES);
        let f = fast(&t, Signals::default());
        assert!(!f);
        assert_eq!(next_wait(f, Duration::from_secs(5)), Duration::from_secs(5));
        assert_eq!(fanout(f), 1);
    }

    #[test]
    fn a_failover_in_progress_is_polled_fast_from_several_nodes() {
        for t in [pfail_b(), fail_b()] {
            assert!(degraded(&t));
            let f = fast(&t, Signals::default());
            assert!(f);
            let wait = next_wait(f, Duration::from_secs(5));
            assert!(wait >= Duration::from_millis(100) && wait <= Duration::from_millis(250));
            assert!(fanout(f) > 1);
        }
        let t = topo(NODES);
        for s in [
            Signals {
                held: true,
                unreachable: false,
            },
            Signals {
                held: false,
                unreachable: true,
            },
        ] {
            assert!(fast(&t, s), "{s:?}");
        }
        assert!(
            !degraded(&promoted_e()),
            "after the promotion all is served again"
        );
        // A failed replica does not make the cluster degraded.
        assert!(!degraded(&topo(&NODES.replace("slave a", "slave,fail a"))));
    }

    #[test]
    fn suspect_nodes_are_asked_last() {
        let t = pfail_b();
        let seeds = [addr(9), addr(1)];
        let c = candidates(&t, &seeds, &[addr(3)]);
        assert_eq!(
            c,
            vec![
                addr(1),
                addr(4),
                addr(5),
                addr(6),
                addr(9),
                addr(2),
                addr(3)
            ],
            "masters, replicas, seeds, then flagged or unreachable nodes, each once"
        );
    }

    #[test]
    fn the_newest_epoch_wins_and_a_stale_view_never_does() {
        let current = pfail_b();
        let old = topo(NODES);
        let new = promoted_e();
        assert_eq!(pick(&current, &[&old, &new, &fail_b()]), Pick::View(1));
        assert_eq!(pick(&new, &[&old, &fail_b()]), Pick::Stale);
        assert_eq!(pick(&new, &[]), Pick::Nothing);
        // Equal epochs: the view that knows of a failure wins, then the first asked.
        assert_eq!(pick(&old, &[&old, &pfail_b()]), Pick::View(1));
        assert_eq!(
            pick(&old, &[&pfail_b(), &fail_b()]),
            Pick::View(0),
            "both know"
        );
        assert_eq!(pick(&old, &[&old, &fail_b()]), Pick::View(1));
        assert_eq!(pick(&old, &[&old, &old]), Pick::View(0));
    }

    #[test]
    fn node_timeout_from_config_get() {
        let resp2 = b"*2\r\n$20\r\ncluster-node-timeout\r\n$4\r\n3000\r\n";
        assert_eq!(parse_node_timeout(resp2), Some(3000));
        let resp3 = b"%1\r\n$20\r\ncluster-node-timeout\r\n$5\r\n15000\r\n";
        assert_eq!(parse_node_timeout(resp3), Some(15000));
        assert_eq!(parse_node_timeout(b"*0\r\n"), None);
        assert_eq!(parse_node_timeout(b"-NOPERM no\r\n"), None);
        assert_eq!(
            parse_node_timeout(b"*2\r\n$20\r\ncluster-node-timeout\r\n$1\r\nx\r\n"),
            None
        );
    }

    #[test]
    fn a_promotion_is_a_failover_and_a_move_is_not() {
        let before = "\
a 127.0.0.1:1@2 master - 0 0 1 connected 0-8191
b 127.0.0.1:2@2 master - 0 0 2 connected 8192-16383
c 127.0.0.1:3@2 slave a 0 0 1 connected
";
        let promoted = "\
a 127.0.0.1:1@2 master,fail - 0 0 1 disconnected
b 127.0.0.1:2@2 master - 0 0 2 connected 8192-16383
c 127.0.0.1:3@2 master - 0 0 3 connected 0-8191
";
        let moved = "\
a 127.0.0.1:1@2 master - 0 0 1 connected 0-8190
b 127.0.0.1:2@2 master - 0 0 4 connected 8191-16383
c 127.0.0.1:3@2 slave a 0 0 1 connected
";
        let q = "127.0.0.1:2".parse().unwrap();
        let old = Topology::from_cluster_nodes(before, q).unwrap();
        let h = handovers(&old, &Topology::from_cluster_nodes(promoted, q).unwrap());
        assert_eq!(h.len(), 1);
        assert_eq!((h[0].from_id.as_str(), h[0].to_id.as_str()), ("a", "c"));
        assert_eq!((h[0].slots, h[0].failover), (8192, true));
        let h = handovers(&old, &Topology::from_cluster_nodes(moved, q).unwrap());
        assert_eq!((h[0].slots, h[0].failover), (1, false));
        assert!(handovers(&old, &old).is_empty());
        let uncovered = "\
a 127.0.0.1:1@2 master,fail - 0 0 1 disconnected
b 127.0.0.1:2@2 master - 0 0 2 connected 8192-16383
c 127.0.0.1:3@2 slave a 0 0 1 connected
";
        let mid = Topology::from_cluster_nodes(uncovered, q).unwrap();
        assert_eq!(
            orphaned(&old, &mid),
            vec![(old.nodes()[0].addr, "a".to_string(), 8192)]
        );
        // The promotion after the uncovered view is still a failover against the old owner.
        let h = handovers(&old, &Topology::from_cluster_nodes(promoted, q).unwrap());
        assert_eq!((h[0].from_id.as_str(), h[0].failover), ("a", true));
    }
}
