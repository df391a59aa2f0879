//! Replica reads that respect lag: with `--read-from prefer-replica`, a replica whose link to its
//! master is cut stops getting reads (they go to the master) until the link is back; and with
//! `read_your_writes_ms`, a client's read right after its write goes to the master. Which node
//! served a GET is read from the nodes' own `INFO commandstats`.
mod support;

use redis::Commands;
use slotproxy::cluster::slot::key_slot;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{cluster_nodes, info_field, Cluster, Proxy};

/// GETs a node has served (`cmdstat_get:calls=N,...`).
fn gets_served(addr: SocketAddr) -> u64 {
    info_field(addr, "commandstats", "cmdstat_get")
        .and_then(|v| {
            v.split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// The replica of `master` (the harness cluster has one per master).
fn replica_of(cluster: &Cluster, master: SocketAddr) -> SocketAddr {
    let lines = cluster_nodes(master);
    let id = lines
        .iter()
        .find(|l| l.addr == Some(master))
        .map(|l| l.id.clone())
        .expect("master in its own CLUSTER NODES");
    lines
        .iter()
        .find(|l| l.master_id.as_deref() == Some(id.as_str()))
        .and_then(|l| l.addr)
        .unwrap_or_else(|| panic!("no replica of {master} in {:?}", cluster.replicas()))
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Gives `replica` the master password `masterauth` (wrong: its link cannot come back; empty:
/// it can), drops its link, and waits until `master_link_status` is `status`.
fn relink(replica: SocketAddr, masterauth: &str, status: &str) {
    let mut rc = support::connect(replica);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("masterauth")
        .arg(masterauth)
        .query(&mut rc)
        .unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("master")
        .query(&mut rc)
        .unwrap_or(0);
    wait_for(
        &format!("the replica's link to be {status}"),
        Duration::from_secs(15),
        || info_field(replica, "replication", "master_link_status").as_deref() == Some(status),
    );
}

/// Waits until `replica` has `key` = "v".
fn wait_until_replicated(cluster: &Cluster, replica: SocketAddr, key: &str) {
    wait_for(
        "the replica to have the key",
        Duration::from_secs(10),
        || {
            let mut rc = cluster.client(replica);
            let _: () = redis::cmd("READONLY").query(&mut rc).unwrap();
            rc.get::<_, Option<String>>(key).ok().flatten().as_deref() == Some("v")
        },
    );
}

fn config_file(dir: &tempfile::TempDir, extra: &str) -> String {
    let path = dir.path().join("slotproxy.toml");
    std::fs::write(
        &path,
        format!("refresh_interval_ms = 300\nreplica_max_lag_bytes = 1048576\n{extra}"),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

/// (GETs served by the master, by the replica) while `n` GETs of `key` go through `c`.
fn served_by(
    c: &mut redis::Connection,
    key: &str,
    master: SocketAddr,
    replica: SocketAddr,
    n: usize,
) -> (u64, u64) {
    let (m0, r0) = (gets_served(master), gets_served(replica));
    for _ in 0..n {
        let v: String = c.get(key).expect("GET through the proxy");
        assert_eq!(v, "v");
    }
    (gets_served(master) - m0, gets_served(replica) - r0)
}

#[test]
fn a_replica_whose_link_is_down_gets_no_reads_until_it_is_back() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let conf = config_file(&dir, "");
    let proxy = Proxy::start(
        &cluster.nodes(),
        &[
            "--read-from",
            "prefer-replica",
            "--config",
            &conf,
            "--worker-threads",
            "1",
        ],
    );
    let key = "lag:key";
    let master = cluster.master_of_slot(key_slot(key.as_bytes()).0);
    let replica = replica_of(&cluster, master);
    let mut c = proxy.client();
    let _: () = c.set(key, "v").unwrap();
    // The replica has it, then serves the reads.
    wait_until_replicated(&cluster, replica, key);
    let (m, r) = served_by(&mut c, key, master, replica, 20);
    assert_eq!((m, r), (0, 20), "a healthy replica serves the reads");

    // Cut the replica's link: it cannot authenticate to its master any more.
    relink(replica, "not-the-password", "down");
    // Within a few polls (300 ms each) the proxy stops reading from it.
    wait_for(
        "the proxy to send reads to the master",
        Duration::from_secs(10),
        || served_by(&mut c, key, master, replica, 1) == (1, 0),
    );
    let (m, r) = served_by(&mut c, key, master, replica, 20);
    assert_eq!(
        (m, r),
        (20, 0),
        "no read may go to a replica whose link is down"
    );
    assert!(
        proxy
            .log()
            .contains(&format!("replica {replica} not used for reads")),
        "a WARN names the replica:\n{}",
        proxy.log_tail(20)
    );

    // Link back: reads return to the replica.
    relink(replica, "", "up");
    wait_for(
        "the proxy to read from the replica again",
        Duration::from_secs(10),
        || served_by(&mut c, key, master, replica, 1) == (0, 1),
    );
}

#[test]
fn read_your_writes_sends_a_read_after_a_write_to_the_master() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let conf = config_file(&dir, "read_your_writes_ms = 60000\n");
    let proxy = Proxy::start(
        &cluster.nodes(),
        &["--read-from", "replica", "--config", &conf],
    );
    let key = "ryw:key";
    let master = cluster.master_of_slot(key_slot(key.as_bytes()).0);
    let replica = replica_of(&cluster, master);
    // Another client wrote it: this client's reads go to the replica.
    let mut writer = proxy.client();
    let _: () = writer.set(key, "v").unwrap();
    wait_until_replicated(&cluster, replica, key);
    let mut reader = proxy.client();
    assert_eq!(served_by(&mut reader, key, master, replica, 5), (0, 5));
    // The writer reads its own write from the master, for the window.
    let _: () = writer.set(key, "v").unwrap();
    assert_eq!(served_by(&mut writer, key, master, replica, 5), (5, 0));
}
