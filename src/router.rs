//! Pure routing: given a request's keys, the topology and the read policy, which node serves it.
//! No I/O and no allocation, so every rule here is a unit test away.
use crate::cluster::slot::{key_slot, Slot};
use crate::cluster::topology::Topology;
use crate::protocol::framer::Request;

/// Where reads go (`--read-from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ReadFrom {
    /// Every command goes to the master that owns the slot.
    #[default]
    Master,
    /// Read-only commands go to a healthy replica of the owning master, or fail when none is.
    Replica,
    /// Read-only commands go to a healthy replica, or to the master when none is.
    PreferReplica,
}

/// Why a request cannot be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// Its keys hash to different slots.
    CrossSlot,
    /// No master serves the slot (or no topology is known yet).
    Uncovered(Option<Slot>),
    /// `--read-from replica` and the owning master has no healthy replica.
    NoReplica(Slot),
}

/// The slot shared by the keys at `key_indices`, `None` when there are no keys.
pub fn common_slot(req: &Request, key_indices: &[usize]) -> Result<Option<Slot>, RouteError> {
    let mut slot = None;
    for &i in key_indices {
        let s = key_slot(req.arg(i));
        match slot {
            None => slot = Some(s),
            Some(prev) if prev != s => return Err(RouteError::CrossSlot),
            Some(_) => {}
        }
    }
    Ok(slot)
}

/// The node index (into `topology.nodes()`) that serves `slot`. Keyless commands (`slot` is
/// `None`) go to a serving master chosen by `spread`, so they spread across masters. `spread`
/// also picks among replicas.
pub fn pick_node(
    topology: &Topology,
    slot: Option<Slot>,
    readonly: bool,
    policy: ReadFrom,
    spread: u64,
) -> Result<usize, RouteError> {
    pick_node_with(topology, slot, readonly, policy, spread, |_| true)
}

/// [`pick_node`], reading only from replicas that `replica_ok` accepts (by node index): a
/// replica whose link to its master is down, or that lags too far, is skipped like one the
/// cluster flags as failed.
pub fn pick_node_with(
    topology: &Topology,
    slot: Option<Slot>,
    readonly: bool,
    policy: ReadFrom,
    spread: u64,
    replica_ok: impl Fn(usize) -> bool,
) -> Result<usize, RouteError> {
    let master = match slot {
        Some(s) => topology.master_of(s).ok_or(RouteError::Uncovered(slot))?,
        None => {
            // Any serving master: probe from a spread-chosen slot (cheap, no allocation).
            let start = (spread.wrapping_mul(5462) % 16384) as u16;
            return topology
                .master_of(Slot(start))
                .or_else(|| first_serving(topology))
                .ok_or(RouteError::Uncovered(None));
        }
    };
    if !readonly || policy == ReadFrom::Master {
        return Ok(master);
    }
    let replicas = topology.replicas_of(master);
    let usable = |r: usize| !topology.nodes()[r].failed && replica_ok(r);
    let healthy = replicas.iter().filter(|&&r| usable(r as usize)).count();
    if healthy == 0 {
        return match policy {
            ReadFrom::Replica => Err(RouteError::NoReplica(slot.expect("slot is set here"))),
            _ => Ok(master),
        };
    }
    let nth = (spread % healthy as u64) as usize;
    let r = replicas
        .iter()
        .filter(|&&r| usable(r as usize))
        .nth(nth)
        .expect("nth < healthy");
    Ok(*r as usize)
}

fn first_serving(topology: &Topology) -> Option<usize> {
    (0..16384u16).find_map(|s| topology.master_of(Slot(s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::topology::Role;

    const NODES: &str = "\
a 127.0.0.1:1@2 master - 0 0 1 connected 0-5460
b 127.0.0.1:2@2 master - 0 0 2 connected 5461-10922
c 127.0.0.1:3@2 master - 0 0 3 connected 10923-16383
d 127.0.0.1:4@2 slave a 0 0 1 connected
e 127.0.0.1:5@2 slave b 0 0 2 connected
f 127.0.0.1:6@2 slave,fail c 0 0 3 connected
g 127.0.0.1:7@2 slave a 0 0 1 connected
";

    fn topo() -> Topology {
        Topology::from_cluster_nodes(NODES, "127.0.0.1:1".parse().unwrap()).unwrap()
    }

    fn port(t: &Topology, i: usize) -> u16 {
        t.nodes()[i].addr.port()
    }

    #[test]
    fn writes_go_to_the_master() {
        let t = topo();
        for policy in [ReadFrom::Master, ReadFrom::Replica, ReadFrom::PreferReplica] {
            let n = pick_node(&t, Some(key_slot(b"foo")), false, policy, 7).unwrap();
            assert_eq!(port(&t, n), 3, "foo is slot 12182");
            assert_eq!(t.nodes()[n].role, Role::Master);
        }
    }

    #[test]
    fn reads_spread_over_healthy_replicas() {
        let t = topo();
        let slot = Some(Slot(0));
        let mut ports: Vec<u16> = (0..4)
            .map(|s| port(&t, pick_node(&t, slot, true, ReadFrom::Replica, s).unwrap()))
            .collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports, vec![4, 7]);
        // Slot 16000's only replica has failed.
        assert_eq!(
            pick_node(&t, Some(Slot(16000)), true, ReadFrom::Replica, 0),
            Err(RouteError::NoReplica(Slot(16000)))
        );
        assert_eq!(
            port(
                &t,
                pick_node(&t, Some(Slot(16000)), true, ReadFrom::PreferReplica, 0).unwrap()
            ),
            3
        );
        assert_eq!(
            port(&t, pick_node(&t, slot, true, ReadFrom::Master, 0).unwrap()),
            1
        );
    }

    #[test]
    fn keyless_spreads_over_masters() {
        let t = topo();
        let mut ports: Vec<u16> = (0..3)
            .map(|s| port(&t, pick_node(&t, None, false, ReadFrom::Master, s).unwrap()))
            .collect();
        ports.sort();
        assert_eq!(ports, vec![1, 2, 3]);
        assert_eq!(
            pick_node(&Topology::empty(), None, false, ReadFrom::Master, 0),
            Err(RouteError::Uncovered(None))
        );
    }

    #[test]
    fn cross_slot() {
        let req = Request::from_args(&["MGET", "a", "b", "{a}x"]);
        assert_eq!(common_slot(&req, &[1, 2]), Err(RouteError::CrossSlot));
        assert_eq!(common_slot(&req, &[1, 3]), Ok(Some(key_slot(b"a"))));
        assert_eq!(common_slot(&req, &[]), Ok(None));
    }
}
