//! `slotproxy bootstrap` / `down` and the library's `form_cluster` / `ensure_local_cluster`,
//! against real redis-server processes on ports picked at run time, in temp dirs (issue 3).
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use slotproxy::bootstrap::spawn::{is_redis_process, read_pid, signal};
use slotproxy::bootstrap::{
    ensure_local_cluster, form_cluster, stop_local, BootstrapError, FormOptions, Progress,
};
use support::{cluster_info, connect, info_field, Cluster, ClusterOptions, Nodes};

fn slotproxy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slotproxy"))
        .args(args)
        .output()
        .expect("running slotproxy")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Kills (SIGKILL) whatever `bootstrap --spawn` left running under a dir, even if a test fails.
struct SpawnedDir(PathBuf);

/// The pids in the pid files of the nodes under `dir`.
fn spawned_pids(dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| read_pid(&e.path().join("redis.pid")))
        .collect();
    pids.sort_unstable();
    pids
}

impl Drop for SpawnedDir {
    fn drop(&mut self) {
        for pid in spawned_pids(&self.0) {
            if is_redis_process(pid) {
                signal(pid, "KILL");
            }
        }
    }
}

/// Asserts the shape: 3 masters, 3 replicas, each master with exactly one replica (on a
/// different master each), all 16384 slots served, `cluster_state:ok` and agreement everywhere.
/// Judged from Redis's own INFO / CLUSTER INFO fields, not from slotproxy's parser.
fn assert_well_formed(nodes: &[SocketAddr]) {
    assert_eq!(nodes.len(), 6);
    let mut masters = Vec::new();
    let mut replicas_of = Vec::new();
    for &node in nodes {
        assert_eq!(cluster_info(node, "cluster_state"), "ok", "{node}");
        assert_eq!(
            cluster_info(node, "cluster_slots_assigned"),
            "16384",
            "{node}"
        );
        assert_eq!(cluster_info(node, "cluster_slots_ok"), "16384", "{node}");
        assert_eq!(cluster_info(node, "cluster_known_nodes"), "6", "{node}");
        assert_eq!(cluster_info(node, "cluster_size"), "3", "{node}");
        match info_field(node, "replication", "role").as_deref() {
            Some("master") => {
                let slaves = info_field(node, "replication", "connected_slaves");
                assert_eq!(slaves.as_deref(), Some("1"), "{node} replicas");
                masters.push(node);
            }
            Some("slave") => {
                let link = info_field(node, "replication", "master_link_status");
                assert_eq!(link.as_deref(), Some("up"), "{node} link");
                let port = info_field(node, "replication", "master_port").unwrap();
                replicas_of.push(port.parse::<u16>().unwrap());
            }
            other => panic!("{node} has role {other:?}"),
        }
    }
    assert_eq!(masters.len(), 3, "masters: {masters:?}");
    replicas_of.sort_unstable();
    let mut master_ports: Vec<u16> = masters.iter().map(|m| m.port()).collect();
    master_ports.sort_unstable();
    assert_eq!(replicas_of, master_ports, "one replica per master");
}

/// `redis-cli --cluster check` must exit 0 and report no error or warning.
fn assert_redis_cli_check_clean(node: SocketAddr) {
    let out = Command::new(support::redis_cli_path())
        .args(["--cluster", "check", &node.to_string()])
        .output()
        .expect("running redis-cli");
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "redis-cli --cluster check failed:\n{stdout}"
    );
    assert!(
        !stdout.contains("[ERR]") && !stdout.contains("[WARNING]"),
        "{stdout}"
    );
    assert!(stdout.contains("[OK] All 16384 slots covered."), "{stdout}");
}

#[test]
fn spawn_forms_a_clean_cluster_reruns_idempotently_and_down_stops_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let _guard = SpawnedDir(dir.clone());
    let base = support::free_base_port(6);
    let (dir_s, base_s) = (dir.to_str().unwrap(), base.to_string());
    let args = [
        "bootstrap",
        "--spawn",
        "--dir",
        dir_s,
        "--base-port",
        &base_s,
    ];

    let out = slotproxy(&args);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for step in [
        "ADDSLOTSRANGE",
        "SET-CONFIG-EPOCH",
        "CLUSTER MEET",
        "CLUSTER REPLICATE",
        "cluster ready",
    ] {
        assert!(stdout.contains(step), "no {step:?} step in:\n{stdout}");
    }
    let nodes: Vec<SocketAddr> = (base..base + 6).map(local).collect();
    assert_well_formed(&nodes);
    // The classic layout: the first three are masters, the last three replicate them in order.
    for (i, &replica) in nodes[3..].iter().enumerate() {
        let port = info_field(replica, "replication", "master_port").unwrap();
        assert_eq!(port, nodes[i].port().to_string());
    }
    assert_redis_cli_check_clean(nodes[0]);
    for node in &nodes {
        let node_dir = dir.join(format!("node-{}", node.port()));
        for file in ["redis.conf", "redis.pid", "redis.log", "nodes.conf"] {
            assert!(
                node_dir.join(file).exists(),
                "{}",
                node_dir.join(file).display()
            );
        }
    }

    let again = slotproxy(&args);
    let stdout = text(&again.stdout);
    assert!(again.status.success(), "{stdout}\n{}", text(&again.stderr));
    assert!(stdout.contains("already formed"), "{stdout}");
    assert!(
        !stdout.contains("MEET"),
        "a formed cluster was changed:\n{stdout}"
    );

    let pids = spawned_pids(&dir);
    assert_eq!(pids.len(), 6);
    let down = slotproxy(&["down", "--dir", dir_s]);
    assert!(down.status.success(), "{}", text(&down.stderr));
    for pid in &pids {
        assert!(!is_redis_process(*pid), "pid {pid} still runs after down");
    }
    assert!(
        dir.join(format!("node-{base}/nodes.conf")).exists(),
        "down without --purge kept data"
    );
    let purge = slotproxy(&["down", "--dir", dir_s, "--purge"]);
    assert!(purge.status.success(), "{}", text(&purge.stderr));
    assert!(!dir.exists(), "--purge removed the nodes' directories");
}

#[test]
fn nodes_forms_six_hand_started_nodes() {
    let nodes = Nodes::start(6, &ClusterOptions::default());
    let addrs = nodes.addrs();
    let list = addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");

    let out = slotproxy(&["bootstrap", "--nodes", &list]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_well_formed(&addrs);
    assert_redis_cli_check_clean(addrs[0]);

    let again = slotproxy(&["bootstrap", "--nodes", &list]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).contains("already formed"),
        "{}",
        text(&again.stdout)
    );
}

/// What must not change when bootstrap refuses: per node, its id, epochs, known nodes, slots.
fn state(nodes: &[SocketAddr]) -> Vec<Vec<String>> {
    nodes
        .iter()
        .map(|&n| {
            let id: String = redis::cmd("CLUSTER")
                .arg("MYID")
                .query(&mut connect(n))
                .unwrap();
            let mut s = vec![id];
            for f in [
                "cluster_known_nodes",
                "cluster_slots_assigned",
                "cluster_current_epoch",
                "cluster_my_epoch",
            ] {
                s.push(format!("{f}:{}", cluster_info(n, f)));
            }
            s
        })
        .collect()
}

#[test]
fn a_node_holding_a_key_is_refused_and_nothing_changes() {
    let nodes = Nodes::start(6, &ClusterOptions::default());
    let addrs = nodes.addrs();
    // A lone cluster node only takes a write for a slot it serves, with full coverage off:
    // serve the slot, write, then undo both.
    let mut con = connect(addrs[4]);
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg("k")
        .query(&mut con)
        .unwrap();
    let config = |value: &str| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("cluster-require-full-coverage")
            .arg(value)
            .clone()
    };
    let _: () = config("no").query(&mut con).unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg("ADDSLOTS")
        .arg(slot)
        .query(&mut con)
        .unwrap();
    // The node turns writable once it has updated its state (up to ~2 s after start).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query::<()>(&mut con)
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the node never took the write"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _: () = config("yes").query(&mut con).unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg("DELSLOTS")
        .arg(slot)
        .query(&mut con)
        .unwrap();
    let before = state(&addrs);

    let list = addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let out = slotproxy(&["bootstrap", "--nodes", &list]);
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "bootstrap accepted a node with a key"
    );
    assert!(
        stderr.contains(&format!("{} holds 1 key(s)", addrs[4])),
        "{stderr}"
    );
    assert!(
        stderr.contains("nothing was changed") && stderr.contains("FLUSHALL"),
        "{stderr}"
    );

    assert_eq!(state(&addrs), before);
    for &n in &addrs {
        assert_eq!(cluster_info(n, "cluster_known_nodes"), "1", "{n}");
        assert_eq!(cluster_info(n, "cluster_slots_assigned"), "0", "{n}");
    }
}

#[test]
fn a_node_of_another_cluster_is_refused_and_nothing_changes() {
    let nodes = Nodes::start(7, &ClusterOptions::default());
    let addrs = nodes.addrs();
    let (ours, stranger) = (&addrs[..6], addrs[6]);
    let _: () = redis::cmd("CLUSTER")
        .arg("MEET")
        .arg(stranger.ip().to_string())
        .arg(stranger.port())
        .query(&mut connect(ours[2]))
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // Settled: the handshake is over and Redis has resolved the two nodes' equal (0) epochs.
    let settled = || {
        let view = support::cluster_nodes(ours[2]);
        view.len() == 2
            && view.iter().all(|l| !l.in_handshake())
            && view[0].config_epoch != view[1].config_epoch
    };
    while !settled() {
        assert!(std::time::Instant::now() < deadline, "MEET did not settle");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let before = state(ours);

    let err = form_cluster(ours, &FormOptions::default(), &Progress::silent()).unwrap_err();
    assert!(
        matches!(err, BootstrapError::Refused { addr, .. } if addr == ours[2]),
        "{err}"
    );
    assert!(err.to_string().contains("another cluster"), "{err}");
    assert_eq!(state(ours), before);
}

#[test]
fn a_half_formed_cluster_is_completed() {
    let nodes = Nodes::start(6, &ClusterOptions::default());
    let addrs = nodes.addrs();
    // Interrupted by hand: the first master got its slots and epoch and met the second node.
    let mut first = connect(addrs[0]);
    let _: () = redis::cmd("CLUSTER")
        .arg("ADDSLOTSRANGE")
        .arg(0)
        .arg(5460)
        .query(&mut first)
        .unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg("SET-CONFIG-EPOCH")
        .arg(1)
        .query(&mut first)
        .unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg("MEET")
        .arg("127.0.0.1")
        .arg(addrs[1].port())
        .query(&mut first)
        .unwrap();

    let report = form_cluster(&addrs, &FormOptions::default(), &Progress::stdout()).unwrap();
    assert!(!report.already_formed);
    assert_well_formed(&addrs);
    assert_redis_cli_check_clean(addrs[0]);
    let report = form_cluster(&addrs, &FormOptions::default(), &Progress::stdout()).unwrap();
    assert!(report.already_formed);
}

#[test]
fn an_interrupted_bootstrap_times_out_clearly_and_a_rerun_completes_it() {
    let nodes = Nodes::start(6, &ClusterOptions::default());
    let addrs = nodes.addrs();
    let impatient = FormOptions {
        timeout: std::time::Duration::from_millis(1),
        ..FormOptions::default()
    };
    let err = form_cluster(&addrs, &impatient, &Progress::stdout()).unwrap_err();
    assert!(matches!(err, BootstrapError::Timeout { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("timed out") && msg.contains("still pending"),
        "{msg}"
    );
    assert!(msg.contains("port+10000"), "{msg}");
    // Slots, epochs and meetings happened; replicas did not. (Each master knows at least its own
    // range; how much of the others' it has heard of by now depends on gossip timing.)
    for a in &addrs[..3] {
        let assigned: u32 = cluster_info(*a, "cluster_slots_assigned").parse().unwrap();
        assert!(assigned >= 5461, "{a} has {assigned} slots assigned");
    }
    assert_eq!(
        info_field(addrs[5], "replication", "role").as_deref(),
        Some("master")
    );

    let report = form_cluster(&addrs, &FormOptions::default(), &Progress::stdout()).unwrap();
    assert!(!report.already_formed);
    assert_well_formed(&addrs);
}

#[test]
fn errors_say_how_to_fix_them() {
    // redis-server missing.
    let empty = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c");
    let out = Command::new(env!("CARGO_BIN_EXE_slotproxy"))
        .args([
            "bootstrap",
            "--spawn",
            "--dir",
            dir.to_str().unwrap(),
            "--base-port",
            "5001",
        ])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("apt-get install redis-server"),
        "{}",
        text(&out.stderr)
    );

    // A port in use: nothing may be started.
    let base = support::free_base_port(6);
    let _holder = std::net::TcpListener::bind(("127.0.0.1", base + 3)).unwrap();
    let _guard = SpawnedDir(dir.clone());
    let out = slotproxy(&[
        "bootstrap",
        "--spawn",
        "--dir",
        dir.to_str().unwrap(),
        "--base-port",
        &base.to_string(),
    ]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("port 127.0.0.1:{} is already in use", base + 3)),
        "{stderr}"
    );
    assert!(stderr.contains("--base-port"), "{stderr}");
    assert!(spawned_pids(&dir).is_empty(), "a node was started");

    // A node with cluster mode off.
    let plain_port = support::free_port();
    let plain_dir = tempfile::tempdir().unwrap();
    let mut plain = Command::new(support::redis_server_path())
        .args([
            "--port",
            &plain_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(plain_dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut plain_addrs = vec![local(plain_port)];
    plain_addrs.extend((1..6).map(|i| local(base + i)));
    let err = form_cluster(&plain_addrs, &FormOptions::default(), &Progress::silent());
    plain.kill().unwrap();
    plain.wait().unwrap();
    let msg = err.unwrap_err().to_string();
    assert!(
        msg.contains("cluster mode off") && msg.contains("cluster-enabled yes"),
        "{msg}"
    );

    // A node that never answers.
    let silent = support::free_base_port(6);
    let list: Vec<String> = (0..6)
        .map(|i| format!("127.0.0.1:{}", silent + i))
        .collect();
    let opts = FormOptions {
        answer_timeout: std::time::Duration::from_millis(500),
        ..FormOptions::default()
    };
    let addrs: Vec<SocketAddr> = list.iter().map(|a| a.parse().unwrap()).collect();
    let err = form_cluster(&addrs, &opts, &Progress::silent()).unwrap_err();
    assert!(matches!(err, BootstrapError::NoAnswer { .. }), "{err}");
    assert!(err.to_string().contains("never answered"), "{err}");
}

#[test]
fn ensure_local_cluster_spawns_once_then_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("local");
    let _guard = SpawnedDir(dir.clone());
    let base = support::free_base_port(6);

    let addrs = ensure_local_cluster(&dir, base, "127.0.0.1").unwrap();
    assert_eq!(addrs, (base..base + 6).map(local).collect::<Vec<_>>());
    assert_well_formed(&addrs);
    let pids = spawned_pids(&dir);

    let again = ensure_local_cluster(&dir, base, "127.0.0.1").unwrap();
    assert_eq!(again, addrs);
    assert_eq!(spawned_pids(&dir), pids, "running nodes were restarted");

    stop_local(&dir, true, &Progress::silent()).unwrap();
    assert!(pids.iter().all(|&p| !is_redis_process(p)));
    assert!(!Path::new(&dir).exists());
}

#[test]
fn harness_cluster_starts_serves_and_cleans_up() {
    let cluster = Cluster::start();
    let nodes = cluster.nodes();
    let dir = cluster.raw().dir().to_path_buf();
    let pids = cluster.raw().pids();
    assert_eq!(nodes.len(), 6);
    assert_eq!(pids.len(), 6);
    assert_eq!(cluster.masters(), nodes[..3].to_vec());
    // Spawn order is not address order (the port picker wraps around its range), so compare
    // the replicas as sets.
    let mut replicas = cluster.replicas();
    replicas.sort();
    let mut spawned = nodes[3..].to_vec();
    spawned.sort();
    assert_eq!(replicas, spawned);
    assert_eq!(cluster.master_of_slot(0), nodes[0]);
    assert_eq!(cluster.master_of_slot(16383), nodes[2]);

    let mut con = cluster.client(nodes[0]);
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg("harness")
        .query(&mut con)
        .unwrap();
    let mut owner = cluster.client(cluster.master_of_slot(slot));
    let _: () = redis::cmd("SET")
        .arg("harness")
        .arg("yes")
        .query(&mut owner)
        .unwrap();
    let got: String = redis::cmd("GET").arg("harness").query(&mut owner).unwrap();
    assert_eq!(got, "yes");

    let victim = nodes[5];
    let victim_pid = cluster.raw().pid(victim).unwrap();
    cluster.kill(victim);
    assert!(!is_redis_process(victim_pid));
    cluster.wait_ok();

    drop(cluster);
    for pid in pids {
        assert!(!is_redis_process(pid), "pid {pid} survived Drop");
    }
    assert!(!dir.exists(), "Drop left {}", dir.display());
}

#[test]
fn nodes_with_a_password_are_refused_without_it_and_formed_with_it() {
    let opts = ClusterOptions {
        auth: Some(support::secure::password("form me")),
        ..ClusterOptions::default()
    };
    let nodes = Nodes::start(6, &opts);
    let list = nodes
        .addrs()
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let bin = env!("CARGO_BIN_EXE_slotproxy");
    let without = std::process::Command::new(bin)
        .args(["bootstrap", "--nodes", &list])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&without.stderr);
    assert!(!without.status.success());
    assert!(
        err.contains("requires a password") && err.contains("--node-password-file"),
        "{err}"
    );
    let with = std::process::Command::new(bin)
        .args(["bootstrap", "--nodes", &list, "--node-password-file"])
        .arg(support::secure::password_file(nodes.dir()))
        .output()
        .unwrap();
    assert!(
        with.status.success(),
        "{}{}",
        String::from_utf8_lossy(&with.stdout),
        String::from_utf8_lossy(&with.stderr)
    );
    for a in nodes.addrs() {
        assert_eq!(cluster_info(a, "cluster_state"), "ok");
    }
}
