//! Replica reads that respect lag. While reads may go to replicas (`read_from` is `replica` or
//! `prefer-replica`), each worker polls `INFO replication` from every master that has replicas
//! and from those replicas, once per refresh interval, and marks a replica usable for reads only
//! while its link to its master is up and its replication offset is within
//! `replica_max_lag_bytes` of the master's. The router skips unusable replicas as it skips
//! failed ones (`router::pick_node_with`), so reads go to another replica, or, with
//! `prefer-replica`, to the master. A gauge per replica shows the lag
//! (`slotproxy_replica_lag_bytes`, -1 when the link is down or the replica did not answer).
//!
//! The decision is a pure function ([`judge`]) over the parsed INFO fields; the loop does the I/O.
//! Queries go through the connector (credentials, TLS) on fresh control connections, never on a
//! shared one, so a slow replica delays no client.
use super::refresher::Refresher;
use crate::backend::control;
use crate::cluster::topology::Role;
use crate::config::Config;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// What `INFO replication` says that matters here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplicationInfo {
    /// `master_link_status:up` (replicas only).
    pub link_up: bool,
    /// `slave_repl_offset` on a replica, `master_repl_offset` on a master.
    pub offset: Option<i64>,
}

/// Parses the fields of an `INFO replication` payload.
pub fn parse_info(text: &str, role: Role) -> ReplicationInfo {
    let mut info = ReplicationInfo::default();
    let offset_key = match role {
        Role::Master => "master_repl_offset",
        Role::Replica => "slave_repl_offset",
    };
    for (k, v) in crate::protocol::reply::info_fields(text) {
        if k == "master_link_status" {
            info.link_up = v == "up";
        } else if k == offset_key {
            info.offset = v.parse().ok();
        }
    }
    info
}

/// A replica's verdict: usable for reads, and its lag in bytes (-1: unknown or link down).
pub fn judge(
    master_offset: Option<i64>,
    replica: Option<ReplicationInfo>,
    max_lag: u64,
) -> (bool, i64) {
    let Some(r) = replica else {
        return (false, -1); // did not answer
    };
    if !r.link_up {
        return (false, -1);
    }
    match (master_offset, r.offset) {
        (Some(m), Some(o)) => {
            let lag = (m - o).max(0);
            (lag as u64 <= max_lag, lag)
        }
        // The master did not answer (it may be failing over): the link is up, so keep reading.
        (None, Some(_)) => (true, -1),
        _ => (false, -1),
    }
}

/// Polls for the life of the worker.
pub async fn run(refresher: Arc<Refresher>, config: Arc<ArcSwap<Config>>) {
    loop {
        let c = config.load_full();
        if c.replica_reads() {
            poll_once(&refresher, c.replica_max_lag_bytes, c.connect_timeout).await;
        }
        tokio::time::sleep(c.refresh_interval).await;
    }
}

async fn info(
    refresher: &Refresher,
    addr: SocketAddr,
    role: Role,
    timeout: Duration,
) -> Option<ReplicationInfo> {
    let reply = control::query(
        refresher.pool().connector(),
        addr,
        &["INFO", "replication"],
        timeout,
    )
    .await
    .ok()?;
    let text = control::bulk_payload(&reply).ok()?;
    Some(parse_info(&String::from_utf8_lossy(text), role))
}

/// One round over the current view.
async fn poll_once(refresher: &Refresher, max_lag: u64, timeout: Duration) {
    let view = refresher.view_full();
    let t = &view.topology;
    let events = refresher.pool().events().clone();
    for (m, node) in t.nodes().iter().enumerate() {
        let replicas = t.replicas_of(m);
        if node.role != Role::Master || replicas.is_empty() {
            continue;
        }
        let master_offset = info(refresher, node.addr, Role::Master, timeout)
            .await
            .and_then(|i| i.offset);
        for &r in replicas {
            let r = r as usize;
            let addr = t.nodes()[r].addr;
            let replica = info(refresher, addr, Role::Replica, timeout).await;
            let (ok, lag) = judge(master_offset, replica, max_lag);
            if let Some(stats) = events.node_stats(addr) {
                stats.set_replica_lag(lag);
            }
            let was = view.backends[r].set_replica_ok(ok);
            match (was, ok) {
                (true, false) => tracing::warn!(
                    "replica {addr} not used for reads: {}",
                    match replica {
                        None => "it did not answer INFO replication".to_string(),
                        Some(i) if !i.link_up => "its link to the master is down".to_string(),
                        _ => format!(
                            "{lag} bytes behind its master (replica_max_lag_bytes = {max_lag})"
                        ),
                    }
                ),
                (false, true) => {
                    tracing::info!("replica {addr} used for reads again (lag {lag} bytes)")
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLICA: &str = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_link_status:up\r\nslave_repl_offset:1000\r\nmaster_repl_offset:1000\r\n";
    const MASTER: &str =
        "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nmaster_repl_offset:1500\r\n";

    #[test]
    fn parses_the_offset_that_belongs_to_the_role() {
        let r = parse_info(REPLICA, Role::Replica);
        assert_eq!(
            r,
            ReplicationInfo {
                link_up: true,
                offset: Some(1000)
            }
        );
        let m = parse_info(MASTER, Role::Master);
        assert_eq!(m.offset, Some(1500));
        let down = parse_info(
            &REPLICA.replace("link_status:up", "link_status:down"),
            Role::Replica,
        );
        assert!(!down.link_up);
    }

    #[test]
    fn a_replica_is_used_while_its_link_is_up_and_its_lag_is_small() {
        let r = parse_info(REPLICA, Role::Replica);
        assert_eq!(judge(Some(1500), Some(r), 1024), (true, 500));
        assert_eq!(judge(Some(1500), Some(r), 100), (false, 500));
        let down = ReplicationInfo {
            link_up: false,
            ..r
        };
        assert_eq!(judge(Some(1000), Some(down), 1024), (false, -1));
        assert_eq!(judge(Some(1000), None, 1024), (false, -1), "no answer");
        assert_eq!(
            judge(None, Some(r), 1024),
            (true, -1),
            "master unknown, link up"
        );
        assert_eq!(
            judge(Some(900), Some(r), 0),
            (true, 0),
            "ahead of a stale master read"
        );
    }
}
