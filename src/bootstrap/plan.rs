//! Deciding what forming needs, from what the nodes say, before anything is changed: whether the
//! cluster is already formed, what is refused (keys, a foreign cluster, a slot layout bootstrap
//! did not make), and otherwise the [`Plan`] that forms or completes it.
//!
//! Pure functions over [`Snapshot`]s, so every decision is unit-tested without a Redis.
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use super::cluster_view::{parse_cluster_nodes, split_slots, to_ranges, NodeLine, SlotRange};
use super::BootstrapError;
use crate::cluster::slot::SLOT_COUNT;

/// What one node said when inspected.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub addr: SocketAddr,
    pub id: String,
    /// Its `CLUSTER NODES`, which always holds a `myself` line.
    pub view: Vec<NodeLine>,
    pub keys: u64,
}

impl Snapshot {
    pub fn new(
        addr: SocketAddr,
        id: String,
        cluster_nodes: &str,
        keys: u64,
    ) -> Result<Snapshot, String> {
        let view = parse_cluster_nodes(cluster_nodes)?;
        match view.iter().find(|l| l.is_myself()) {
            Some(me) if me.id == id => Ok(Snapshot {
                addr,
                id,
                view,
                keys,
            }),
            _ => Err(format!(
                "CLUSTER NODES of {addr} has no myself line for {id}"
            )),
        }
    }

    /// This node's own line.
    pub fn me(&self) -> &NodeLine {
        self.view
            .iter()
            .find(|l| l.is_myself())
            .expect("checked in Snapshot::new")
    }
}

/// Whether forming has anything to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Assessment {
    /// Every node knows every other, all slots are assigned, every master has a replica.
    Formed,
    /// Changes to make, in this order.
    Plan(Plan),
}

/// The changes that form (or complete) the cluster. Positions index the node list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// `CLUSTER ADDSLOTSRANGE` on a master.
    pub add_slots: Vec<(usize, Vec<SlotRange>)>,
    /// `CLUSTER SET-CONFIG-EPOCH` on a node that knows no other node yet.
    pub epochs: Vec<(usize, u64)>,
    /// Nodes the first node must `CLUSTER MEET`.
    pub meet: Vec<usize>,
    /// `(replica, master)`: `CLUSTER REPLICATE <master id>` on the replica.
    pub replicate: Vec<(usize, usize)>,
}

fn refuse(node: &Snapshot, reason: String, fix: &str) -> BootstrapError {
    BootstrapError::Refused {
        addr: node.addr,
        reason,
        fix: fix.to_string(),
    }
}

const FIX_RESET: &str = "give the full list of that cluster's nodes, or, if this node is meant \
     to start afresh, reset it with `redis-cli -h HOST -p PORT CLUSTER RESET HARD` (this drops its \
     cluster state)";
const FIX_LAYOUT: &str = "this layout was not made by bootstrap: repair it with \
     `redis-cli --cluster fix HOST:PORT`, or reset the nodes (`CLUSTER RESET HARD`) and bootstrap \
     again";

/// Decides, from the nodes' snapshots (masters first, then replicas), what forming must do.
/// Every refusal happens here, before any change.
pub fn assess(nodes: &[Snapshot]) -> Result<Assessment, BootstrapError> {
    let n = nodes.len();
    let masters = n / 2;
    let pos_of: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    if pos_of.len() != n {
        return Err(BootstrapError::Invalid(
            "the same node appears twice in the list (two addresses, one node ID)".into(),
        ));
    }
    let our_addrs: HashSet<SocketAddr> = nodes.iter().map(|s| s.addr).collect();

    // Membership: nobody may know (or be meeting) a node outside the list.
    for node in nodes {
        for line in &node.view {
            if line.in_handshake() {
                if !line.addr.is_some_and(|a| our_addrs.contains(&a)) {
                    let reason = format!(
                        "is meeting {}, which is not in the list",
                        line.addr
                            .map_or("an unknown address".into(), |a| a.to_string())
                    );
                    return Err(refuse(node, reason, FIX_RESET));
                }
            } else if !pos_of.contains_key(line.id.as_str()) {
                let reason = format!(
                    "belongs to another cluster: it knows node {} ({}), which is not in the list",
                    line.id,
                    line.addr.map_or("no address".into(), |a| a.to_string())
                );
                return Err(refuse(node, reason, FIX_RESET));
            }
        }
    }

    // Slots, from each node's own line: the authoritative claim.
    let mut owner: Vec<Option<usize>> = vec![None; SLOT_COUNT];
    for (pos, node) in nodes.iter().enumerate() {
        let me = node.me();
        if me.open_slots {
            let reason = "has slots being migrated or imported".to_string();
            return Err(refuse(node, reason, FIX_LAYOUT));
        }
        for range in &me.slots {
            for slot in range.start..=range.end {
                if let Some(other) = owner[usize::from(slot)].replace(pos) {
                    let reason =
                        format!("claims slot {slot}, which {} claims too", nodes[other].addr);
                    return Err(refuse(node, reason, FIX_LAYOUT));
                }
            }
        }
    }

    let replica_of = |node: &Snapshot| -> Option<usize> {
        let me = node.me();
        me.is_replica()
            .then(|| me.master_id.as_deref().and_then(|m| pos_of.get(m).copied()))
            .flatten()
    };
    let knows_all = nodes
        .iter()
        .all(|s| s.view.len() == n && s.view.iter().all(|l| !l.in_handshake()));
    let covered = owner.iter().all(Option::is_some);
    let slot_masters: HashSet<usize> = owner.iter().flatten().copied().collect();
    let replicated: HashSet<usize> = nodes.iter().filter_map(replica_of).collect();
    let every_node_placed =
        (0..n).all(|p| slot_masters.contains(&p) || replica_of(&nodes[p]).is_some());
    if knows_all
        && covered
        && every_node_placed
        && slot_masters.iter().all(|m| replicated.contains(m))
    {
        return Ok(Assessment::Formed);
    }

    // Something to change, so every node must be empty.
    if let Some(node) = nodes.iter().find(|s| s.keys > 0) {
        let reason = format!("holds {} key(s)", node.keys);
        let fix = "bootstrap only forms empty nodes: list an empty node instead, or empty this \
                   one (`redis-cli -h HOST -p PORT FLUSHALL`) if its data is disposable";
        return Err(refuse(node, reason, fix));
    }

    let mut plan = Plan::default();

    // Slots: the first half of the list gets the even split; whatever is already assigned must
    // match it (an interrupted bootstrap leaves exactly that).
    let mut slot_masters = slot_masters;
    if !covered {
        for (pos, range) in split_slots(masters).into_iter().enumerate() {
            let mut missing = Vec::new();
            for slot in range.start..=range.end {
                match owner[usize::from(slot)] {
                    None => missing.push(slot),
                    Some(o) if o == pos => {}
                    Some(o) => {
                        let reason = format!(
                            "owns slot {slot}, which bootstrap assigns to {}",
                            nodes[pos].addr
                        );
                        return Err(refuse(&nodes[o], reason, FIX_LAYOUT));
                    }
                }
            }
            if !missing.is_empty() {
                if !nodes[pos].me().is_master() {
                    let reason = "is a replica, but bootstrap would give it slots".to_string();
                    return Err(refuse(&nodes[pos], reason, FIX_LAYOUT));
                }
                plan.add_slots.push((pos, to_ranges(missing)));
                slot_masters.insert(pos);
            }
        }
    }

    // Replicas: existing ones must follow a slot master; empty masters become replicas.
    let mut lacking: Vec<usize> = slot_masters.iter().copied().collect();
    lacking.sort_unstable();
    let all_masters = lacking.clone();
    let mut empty = Vec::new();
    for (pos, node) in nodes.iter().enumerate() {
        if let Some(master) = replica_of(node) {
            if !slot_masters.contains(&master) {
                let reason = format!("replicates {}, which serves no slots", nodes[master].addr);
                return Err(refuse(node, reason, FIX_LAYOUT));
            }
            lacking.retain(|&m| m != master);
        } else if node.me().is_replica() {
            let reason = "replicates a master that no node in the list knows".to_string();
            return Err(refuse(node, reason, FIX_RESET));
        } else if !slot_masters.contains(&pos) {
            empty.push(pos);
        }
    }
    if empty.len() < lacking.len() {
        return Err(BootstrapError::Invalid(format!(
            "{} master(s) lack a replica but only {} node(s) are free to become one; \
             give {} nodes: {} masters then {} replicas",
            lacking.len(),
            empty.len(),
            n,
            masters,
            n - masters
        )));
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|s| s.addr).collect();
    plan.replicate = pair_replicas(&empty, &lacking, &all_masters, &addrs);

    // Distinct config epochs, for nodes that can still take one (they know no other node).
    let mut next = nodes
        .iter()
        .flat_map(|s| s.view.iter().map(|l| l.config_epoch))
        .max()
        .unwrap_or(0)
        + 1;
    for (pos, node) in nodes.iter().enumerate() {
        if node.view.len() == 1 && node.me().config_epoch == 0 {
            plan.epochs.push((pos, next));
            next += 1;
        }
    }

    // Meetings: the first node meets everyone it does not know (gossip does the rest).
    let first = &nodes[0];
    for (pos, node) in nodes.iter().enumerate().skip(1) {
        let known = first
            .view
            .iter()
            .any(|l| l.id == node.id || (l.in_handshake() && l.addr == Some(node.addr)));
        if !known {
            plan.meet.push(pos);
        }
    }
    Ok(Assessment::Plan(plan))
}

/// Pairs free nodes with the masters that lack a replica. Of the rotations of `lacking`, the one
/// putting the fewest replicas on their master's host wins; ties keep list order (the first free
/// node to the first master). Free nodes left over replicate masters round-robin.
pub fn pair_replicas(
    empty: &[usize],
    lacking: &[usize],
    all_masters: &[usize],
    addrs: &[SocketAddr],
) -> Vec<(usize, usize)> {
    let k = lacking.len().min(empty.len());
    let same_host = |r: usize, m: usize| addrs[r].ip() == addrs[m].ip();
    let best = (0..lacking.len().max(1))
        .min_by_key(|&rot| {
            (0..k)
                .filter(|&i| same_host(empty[i], lacking[(i + rot) % lacking.len()]))
                .count()
        })
        .unwrap_or(0);
    let mut pairs: Vec<(usize, usize)> = (0..k)
        .map(|i| (empty[i], lacking[(i + best) % lacking.len()]))
        .collect();
    if !all_masters.is_empty() {
        for (j, &extra) in empty[k..].iter().enumerate() {
            pairs.push((extra, all_masters[j % all_masters.len()]));
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// A node `nN` on port 500N whose CLUSTER NODES is `lines` (its own line first).
    fn node(n: u16, lines: &[String], keys: u64) -> Snapshot {
        Snapshot::new(addr(5000 + n), format!("n{n}"), &lines.join("\n"), keys).unwrap()
    }

    fn line(n: u16, flags: &str, master: &str, epoch: u64, slots: &str) -> String {
        format!(
            "n{n} 127.0.0.1:{}@{} {flags} {master} 0 0 {epoch} connected {slots}",
            5000 + n,
            15000 + n
        )
    }

    fn fresh(n: u16) -> Snapshot {
        node(n, &[line(n, "myself,master", "-", 0, "")], 0)
    }

    /// One node of a cluster table: (n, role, master, epoch, slots).
    type Row = (u16, &'static str, &'static str, u64, &'static str);

    /// The nodes of a cluster in which every node sees every row of `rows`.
    fn cluster(rows: &[Row]) -> Vec<Snapshot> {
        rows.iter()
            .map(|&(me, ..)| {
                let lines: Vec<String> = rows
                    .iter()
                    .map(|&(n, role, master, epoch, slots)| {
                        let myself = if n == me { "myself," } else { "" };
                        line(n, &format!("{myself}{role}"), master, epoch, slots)
                    })
                    .collect();
                node(me, &lines, 0)
            })
            .collect()
    }

    /// The six nodes of a formed cluster.
    fn formed() -> Vec<Snapshot> {
        cluster(&[
            (1, "master", "-", 1, "0-5460"),
            (2, "master", "-", 2, "5461-10922"),
            (3, "master", "-", 3, "10923-16383"),
            (4, "slave", "n1", 4, ""),
            (5, "slave", "n2", 5, ""),
            (6, "slave", "n3", 6, ""),
        ])
    }

    fn refusal(nodes: &[Snapshot]) -> String {
        match assess(nodes) {
            Err(e @ BootstrapError::Refused { .. }) => e.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn plans_a_fresh_cluster_the_classic_way() {
        let nodes: Vec<_> = (1..=6).map(fresh).collect();
        let Assessment::Plan(plan) = assess(&nodes).unwrap() else {
            panic!("not a plan")
        };
        let r = |start, end| vec![SlotRange { start, end }];
        assert_eq!(
            plan.add_slots,
            vec![(0, r(0, 5460)), (1, r(5461, 10922)), (2, r(10923, 16383))]
        );
        assert_eq!(
            plan.epochs,
            (0..6).map(|p| (p, p as u64 + 1)).collect::<Vec<_>>()
        );
        assert_eq!(plan.meet, vec![1, 2, 3, 4, 5]);
        assert_eq!(plan.replicate, vec![(3, 0), (4, 1), (5, 2)]);
    }

    #[test]
    fn recognises_a_formed_cluster_even_with_keys_and_after_failover() {
        let mut nodes = formed();
        nodes[0].keys = 10;
        assert_eq!(assess(&nodes).unwrap(), Assessment::Formed);
        // Failover: n4 took over n1's slots and n1 came back as its replica.
        let nodes = cluster(&[
            (1, "slave", "n4", 1, ""),
            (2, "master", "-", 2, "5461-10922"),
            (3, "master", "-", 3, "10923-16383"),
            (4, "master", "-", 7, "0-5460"),
            (5, "slave", "n2", 5, ""),
            (6, "slave", "n3", 6, ""),
        ]);
        assert_eq!(assess(&nodes).unwrap(), Assessment::Formed);
    }

    #[test]
    fn refuses_a_node_with_keys_on_a_fresh_cluster() {
        let mut nodes: Vec<_> = (1..=6).map(fresh).collect();
        nodes[4].keys = 1;
        let msg = refusal(&nodes);
        assert!(msg.contains("127.0.0.1:5005 holds 1 key(s)"), "{msg}");
        assert!(msg.contains("nothing was changed"), "{msg}");
    }

    #[test]
    fn refuses_a_node_of_another_cluster() {
        let mut nodes: Vec<_> = (1..=6).map(fresh).collect();
        nodes[2] = node(
            3,
            &[
                line(3, "myself,master", "-", 0, ""),
                "x9 10.0.0.9:7000@17000 master - 0 0 0 connected".into(),
            ],
            0,
        );
        let msg = refusal(&nodes);
        assert!(
            msg.contains("another cluster") && msg.contains("x9"),
            "{msg}"
        );
        assert!(msg.contains("CLUSTER RESET HARD"), "{msg}");
    }

    #[test]
    fn refuses_a_slot_layout_it_did_not_make() {
        let mut nodes: Vec<_> = (1..=6).map(fresh).collect();
        nodes[1] = node(2, &[line(2, "myself,master", "-", 0, "0-10")], 0);
        let msg = refusal(&nodes);
        assert!(msg.contains("127.0.0.1:5002 owns slot 0"), "{msg}");
        assert!(msg.contains("--cluster fix"), "{msg}");
    }

    #[test]
    fn completes_a_half_formed_cluster() {
        // Interrupted after n1 got its slots and epoch and met n2; n2 took epoch 2 before that.
        let mut nodes: Vec<_> = (1..=6).map(fresh).collect();
        nodes[0] = node(
            1,
            &[
                line(1, "myself,master", "-", 1, "0-5460"),
                line(2, "master", "-", 2, ""),
            ],
            0,
        );
        nodes[1] = node(
            2,
            &[
                line(2, "myself,master", "-", 2, ""),
                line(1, "master", "-", 1, "0-5460"),
            ],
            0,
        );
        let Assessment::Plan(plan) = assess(&nodes).unwrap() else {
            panic!("not a plan")
        };
        let r = |start, end| vec![SlotRange { start, end }];
        assert_eq!(
            plan.add_slots,
            vec![(1, r(5461, 10922)), (2, r(10923, 16383))]
        );
        assert_eq!(plan.epochs, vec![(2, 3), (3, 4), (4, 5), (5, 6)]);
        assert_eq!(plan.meet, vec![2, 3, 4, 5]);
        assert_eq!(plan.replicate, vec![(3, 0), (4, 1), (5, 2)]);
    }

    #[test]
    fn completes_missing_replicas_only() {
        // Interrupted before n6 was told to replicate: an empty master everyone knows.
        let nodes = cluster(&[
            (1, "master", "-", 1, "0-5460"),
            (2, "master", "-", 2, "5461-10922"),
            (3, "master", "-", 3, "10923-16383"),
            (4, "slave", "n1", 4, ""),
            (5, "slave", "n2", 5, ""),
            (6, "master", "-", 6, ""),
        ]);
        let Assessment::Plan(plan) = assess(&nodes).unwrap() else {
            panic!("not a plan")
        };
        assert_eq!(
            plan,
            Plan {
                replicate: vec![(5, 2)],
                ..Plan::default()
            }
        );
    }

    #[test]
    fn puts_replicas_on_other_hosts_when_it_can() {
        let ip = |h: u8| SocketAddr::from(([10, 0, 0, h], 6379));
        let addrs = [ip(1), ip(2), ip(3), ip(1), ip(2), ip(3)];
        assert_eq!(
            pair_replicas(&[3, 4, 5], &[0, 1, 2], &[0, 1, 2], &addrs),
            vec![(3, 1), (4, 2), (5, 0)]
        );
        let local = [addr(1); 6];
        assert_eq!(
            pair_replicas(&[3, 4, 5], &[0, 1, 2], &[0, 1, 2], &local),
            vec![(3, 0), (4, 1), (5, 2)]
        );
        assert_eq!(
            pair_replicas(&[3, 4], &[2], &[0, 1, 2], &local),
            vec![(3, 2), (4, 0)]
        );
    }
}
