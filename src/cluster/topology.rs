//! The immutable cluster topology: which node serves which slot, who replicates whom, and the
//! `CLUSTER NODES` parser that builds it. A new `Topology` is built off the hot path and swapped
//! in whole; readers see one consistent view.
use super::slot::{Slot, SLOT_COUNT};
use std::net::SocketAddr;

/// Marks a slot no master serves in the dense slot table.
const NO_NODE: u16 = u16::MAX;

/// A node's role; defined beside the connections (which time requests by it) so that the
/// backend layer does not depend on the cluster layer.
pub use crate::backend::Role;

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub addr: SocketAddr,
    pub role: Role,
    /// For a replica: its master's id.
    pub master_id: Option<String>,
    /// Flagged `fail` or `fail?` (or not connected): do not send reads to it.
    pub failed: bool,
    pub config_epoch: u64,
}

/// A whole-cluster view: nodes, and a dense slot -> master table.
#[derive(Debug, Clone)]
pub struct Topology {
    nodes: Vec<NodeInfo>,
    /// Index into `nodes` of the master serving each slot, or `NO_NODE`.
    slot_owner: Box<[u16]>,
    /// For each node index, the indices of its replicas (empty for replicas).
    replicas: Vec<Vec<u16>>,
    /// The highest config epoch among masters: a view with a lower one is stale.
    epoch: u64,
    covered: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopologyError {
    #[error("CLUSTER NODES line {line}: {reason}")]
    BadLine { line: usize, reason: &'static str },
    #[error("CLUSTER NODES lists no master serving any slot")]
    NoSlots,
}

impl Topology {
    /// An empty view (nothing known yet): every slot unserved, epoch 0.
    pub fn empty() -> Topology {
        Topology {
            nodes: Vec::new(),
            slot_owner: vec![NO_NODE; SLOT_COUNT].into_boxed_slice(),
            replicas: Vec::new(),
            epoch: 0,
            covered: 0,
        }
    }

    /// Parses the text of a `CLUSTER NODES` reply. `queried` is the address the reply came from;
    /// it fills in the `myself` line when that line has no address (a node that has not met
    /// anyone yet shows `:0@0`). Failed masters and nodes in handshake serve no slots.
    pub fn from_cluster_nodes(text: &str, queried: SocketAddr) -> Result<Topology, TopologyError> {
        let mut nodes = Vec::new();
        let mut slot_lines: Vec<(usize, Vec<&str>)> = Vec::new();
        for (lineno, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let bad = |reason| TopologyError::BadLine {
                line: lineno + 1,
                reason,
            };
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 8 {
                return Err(bad("fewer than 8 fields"));
            }
            let flags: Vec<&str> = fields[2].split(',').collect();
            if flags.iter().any(|f| *f == "handshake" || *f == "noaddr") {
                continue;
            }
            // `ip:port@cport[,hostname]`
            let addr_field = fields[1].split(',').next().unwrap_or("");
            let addr_field = addr_field.split('@').next().unwrap_or("");
            let myself = flags.contains(&"myself");
            let addr = match addr_field.rsplit_once(':') {
                Some(("", _)) if myself => queried,
                Some((ip, port)) => {
                    let ip = ip.trim_start_matches('[').trim_end_matches(']');
                    let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
                    match ip.parse::<std::net::IpAddr>() {
                        Ok(ip) => SocketAddr::new(ip, port),
                        Err(_) => return Err(bad("address is not an IP")),
                    }
                }
                None => return Err(bad("bad address")),
            };
            let role = if flags.contains(&"master") {
                Role::Master
            } else if flags.contains(&"slave") {
                Role::Replica
            } else {
                continue; // neither yet (a fresh handshake): serves nothing
            };
            // `fail?` is one node's suspicion: keep routing writes there, but send no reads.
            let failed =
                flags.iter().any(|f| *f == "fail" || *f == "fail?") || fields[7] != "connected";
            let confirmed_failed = flags.contains(&"fail");
            let master_id = match fields[3] {
                "-" => None,
                id => Some(id.to_string()),
            };
            let config_epoch = fields[6].parse().map_err(|_| bad("bad config epoch"))?;
            if role == Role::Master && !confirmed_failed {
                slot_lines.push((nodes.len(), fields[8..].to_vec()));
            }
            nodes.push(NodeInfo {
                id: fields[0].to_string(),
                addr,
                role,
                master_id,
                failed,
                config_epoch,
            });
        }

        let mut slot_owner = vec![NO_NODE; SLOT_COUNT].into_boxed_slice();
        let mut covered = 0;
        for (idx, ranges) in slot_lines {
            for range in ranges {
                if range.starts_with('[') {
                    continue; // a migration marker; the slot still belongs to its listed owner
                }
                let (lo, hi) = match range.split_once('-') {
                    Some((lo, hi)) => (lo.parse::<usize>(), hi.parse::<usize>()),
                    None => (range.parse::<usize>(), range.parse::<usize>()),
                };
                let (Ok(lo), Ok(hi)) = (lo, hi) else {
                    return Err(TopologyError::BadLine {
                        line: idx + 1,
                        reason: "bad slot range",
                    });
                };
                if lo > hi || hi >= SLOT_COUNT {
                    return Err(TopologyError::BadLine {
                        line: idx + 1,
                        reason: "slot out of range",
                    });
                }
                for owner in &mut slot_owner[lo..=hi] {
                    if *owner == NO_NODE {
                        covered += 1;
                    }
                    *owner = idx as u16;
                }
            }
        }
        if covered == 0 {
            return Err(TopologyError::NoSlots);
        }

        // Link replicas to masters through an id index: linear in the number of nodes.
        let masters: std::collections::HashMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.role == Role::Master)
            .map(|(i, n)| (n.id.as_str(), i))
            .collect();
        let mut replicas = vec![Vec::new(); nodes.len()];
        for (i, n) in nodes.iter().enumerate() {
            if let Some(&m) = n.master_id.as_deref().and_then(|mid| masters.get(mid)) {
                replicas[m].push(i as u16);
            }
        }
        // Only masters that serve slots count: a node that was briefly an empty master (every
        // node of a cluster being formed, before CLUSTER REPLICATE) keeps its high epoch as a
        // replica, and counting it would make every later, correct view look stale.
        let epoch = slot_owner
            .iter()
            .filter(|&&o| o != NO_NODE)
            .map(|&o| nodes[o as usize].config_epoch)
            .max()
            .unwrap_or(0);
        Ok(Topology {
            nodes,
            slot_owner,
            replicas,
            epoch,
            covered,
        })
    }

    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// Index of the master serving `slot`.
    #[inline]
    pub fn master_of(&self, slot: Slot) -> Option<usize> {
        match self.slot_owner[slot.index()] {
            NO_NODE => None,
            i => Some(i as usize),
        }
    }

    /// The lowest slot node `master` serves (to route a request meant for that master).
    pub fn first_slot_of(&self, master: usize) -> Option<Slot> {
        self.slot_owner
            .iter()
            .position(|&o| o as usize == master)
            .map(|s| Slot(s as u16))
    }

    /// Indices of the replicas of node `master`.
    pub fn replicas_of(&self, master: usize) -> &[u16] {
        &self.replicas[master]
    }

    /// Indices of the masters serving at least one slot, in node order.
    pub fn serving_masters(&self) -> Vec<usize> {
        let mut seen = vec![false; self.nodes.len()];
        for &o in self.slot_owner.iter() {
            if o != NO_NODE {
                seen[o as usize] = true;
            }
        }
        (0..self.nodes.len()).filter(|&i| seen[i]).collect()
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// How many of the 16384 slots have a serving master.
    pub fn slots_covered(&self) -> usize {
        self.covered
    }

    /// Whether `newer` may replace `self`: its epoch is not lower.
    pub fn is_superseded_by(&self, newer: &Topology) -> bool {
        newer.epoch >= self.epoch
    }

    /// Index of the node at `addr`.
    pub fn node_at(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr)
    }

    /// Same slot ownership, roles and health as `other` (used to skip needless swaps). Each
    /// node lists the cluster in its own order, so nodes are matched by id, not by position:
    /// comparing positions made every refresh that asked another node look like a change.
    pub fn same_layout(&self, other: &Topology) -> bool {
        if self.nodes.len() != other.nodes.len() {
            return false;
        }
        // For each of our node indices, the same node's index in `other`.
        let mut to_other = Vec::with_capacity(self.nodes.len());
        for n in &self.nodes {
            match other.nodes.iter().position(|o| o.id == n.id) {
                Some(i) if other.nodes[i] == *n => to_other.push(i as u16),
                _ => return false,
            }
        }
        self.slot_owner
            .iter()
            .zip(other.slot_owner.iter())
            .all(|(&mine, &theirs)| match mine {
                NO_NODE => theirs == NO_NODE,
                i => to_other[i as usize] == theirs,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383 [10924->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 slave 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238316232 5 connected
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006 slave 292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 0 1426238317741 6 connected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca :30001@31001 myself,master - 0 0 1 connected 0-5460
";

    fn q() -> SocketAddr {
        "127.0.0.1:30001".parse().unwrap()
    }

    #[test]
    fn the_same_cluster_listed_in_another_order_is_the_same_layout() {
        let t = Topology::from_cluster_nodes(NODES, q()).unwrap();
        let reversed: String = NODES.lines().rev().map(|l| format!("{l}\n")).collect();
        let r = Topology::from_cluster_nodes(&reversed, q()).unwrap();
        assert!(t.same_layout(&r) && r.same_layout(&t));
        let moved = NODES
            .replace("0-5460", "0-5459")
            .replace(" 5461-10922", " 5460-10922");
        let m = Topology::from_cluster_nodes(&moved, q()).unwrap();
        assert!(!t.same_layout(&m), "a slot changed hands");
    }

    #[test]
    fn parses_a_formed_cluster() {
        let t = Topology::from_cluster_nodes(NODES, q()).unwrap();
        assert_eq!(t.nodes().len(), 6);
        assert_eq!(t.slots_covered(), 16384);
        let m0 = t.master_of(Slot(0)).unwrap();
        assert_eq!(
            t.nodes()[m0].addr,
            q(),
            "empty myself address is the queried one"
        );
        let m = t.master_of(Slot(10924)).unwrap();
        assert_eq!(
            t.nodes()[m].addr.port(),
            30003,
            "migration marker keeps the owner"
        );
        assert_eq!(
            t.nodes()[t.master_of(Slot(5461)).unwrap()].addr.port(),
            30002
        );
        let reps = t.replicas_of(m0);
        assert_eq!(reps.len(), 1);
        assert_eq!(t.nodes()[reps[0] as usize].addr.port(), 30004);
        assert_eq!(t.epoch(), 3);
        assert_eq!(t.serving_masters().len(), 3);
        assert_eq!(t.first_slot_of(m0), Some(Slot(0)));
        assert_eq!(
            t.first_slot_of(reps[0] as usize),
            None,
            "a replica serves no slot"
        );
    }

    #[test]
    fn failed_master_serves_nothing() {
        let text = NODES.replace(
            "127.0.0.1:30002@31002 master",
            "127.0.0.1:30002@31002 master,fail",
        );
        let t = Topology::from_cluster_nodes(&text, q()).unwrap();
        assert_eq!(t.master_of(Slot(6000)), None);
        assert_eq!(t.slots_covered(), 16384 - 5462);
    }

    #[test]
    fn stale_views_do_not_win() {
        let old = Topology::from_cluster_nodes(NODES, q()).unwrap();
        let newer = NODES.replace(
            "0 1426238316232 2 connected 5461-10922",
            "0 1426238316232 7 connected 5461-10922",
        );
        let newer = Topology::from_cluster_nodes(&newer, q()).unwrap();
        assert!(old.is_superseded_by(&newer));
        assert!(!newer.is_superseded_by(&old));
    }

    #[test]
    fn a_cluster_being_formed_is_not_stale_once_replicas_attach() {
        // Right after slots are assigned every node is a master, each with its own epoch (1-6);
        // the three that then replicate keep epochs 4-6. The formed cluster's view must win.
        let forming = NODES
            .replace("slave 07c37dfeb235213a872192d90877d0cd55635b91", "master -")
            .replace("slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca", "master -")
            .replace("slave 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1", "master -")
            .replace("slave 292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f", "master -");
        let forming = Topology::from_cluster_nodes(&forming, q()).unwrap();
        let formed = Topology::from_cluster_nodes(NODES, q()).unwrap();
        assert_eq!(forming.epoch(), 3, "empty masters do not count");
        assert!(forming.is_superseded_by(&formed));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Topology::from_cluster_nodes("hello world\n", q()).is_err());
        assert_eq!(
            Topology::from_cluster_nodes("", q()).unwrap_err(),
            TopologyError::NoSlots
        );
        let bad = NODES.replace("0-5460", "0-99999");
        assert!(Topology::from_cluster_nodes(&bad, q()).is_err());
    }
}
