//! A master is SIGKILLed under traffic: requests for the other masters' slots never notice, and
//! the dead master's slots are served again through the proxy once its replica takes over, with
//! the data it had replicated.
mod support;

use redis::Commands;
use slotproxy::bootstrap::{form_cluster, FormOptions, Progress};
use slotproxy::cluster::slot::key_slot;
use std::time::{Duration, Instant};
use support::{Cluster, ClusterOptions, Nodes, Proxy};

#[test]
fn killing_a_master_costs_only_its_own_slots_and_only_until_failover() {
    let cluster = Cluster::start_with(ClusterOptions {
        node_timeout_ms: 2000,
        ..ClusterOptions::default()
    });
    let proxy = Proxy::start(&cluster.nodes(), &["--command-timeout-ms", "1000"]);
    let mut c = proxy.client();
    let victim = cluster.masters()[0];
    let keys: Vec<String> = (0..300).map(|i| format!("fo:{i}")).collect();
    for k in &keys {
        let _: () = c.set(k, k).unwrap();
    }
    let (on_victim, elsewhere): (Vec<&String>, Vec<&String>) = keys
        .iter()
        .partition(|k| cluster.master_of_slot(key_slot(k.as_bytes()).0) == victim);
    assert!(!on_victim.is_empty() && !elsewhere.is_empty());
    // Wait until the victim's replica has everything.
    let replica_has_all = || {
        cluster.replicas().iter().any(|r| {
            let mut rc = cluster.client(*r);
            let _: () = redis::cmd("READONLY").query(&mut rc).unwrap();
            on_victim
                .iter()
                .all(|k| rc.exists::<_, bool>(k.as_str()).unwrap_or(false))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !replica_has_all() {
        assert!(Instant::now() < deadline, "replica never caught up");
        std::thread::sleep(Duration::from_millis(50));
    }

    cluster.kill(victim);
    let killed_at = Instant::now();

    // Other masters' keys: served throughout, no error at all.
    for round in 0..3 {
        for k in &elsewhere {
            let v: String = c
                .get(k.as_str())
                .unwrap_or_else(|e| panic!("{k} (round {round}): {e}"));
            assert_eq!(&v, *k);
        }
    }

    // The victim's keys come back once the replica is promoted.
    let probe = on_victim[0].as_str();
    let recovered = loop {
        match c.get::<_, String>(probe) {
            Ok(v) => {
                assert_eq!(v, probe);
                break killed_at.elapsed();
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    e.code() == Some("CLUSTERDOWN") || msg.contains("slotproxy"),
                    "unexpected error while failing over: {msg}"
                );
            }
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "slots never came back"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("victim's slots served again {recovered:?} after SIGKILL");
    for k in &on_victim {
        let v: String = c.get(k.as_str()).unwrap();
        assert_eq!(&v, *k, "data replicated before the kill survives");
        let _: () = c.set(k.as_str(), "new").unwrap();
    }
    let new_master =
        cluster.settled_master_of_slot(key_slot(probe.as_bytes()).0, Duration::from_secs(20));
    assert_ne!(new_master, victim);
    // The operator is told, once per worker at most, which master replaced which.
    let log = proxy.log();
    assert!(
        log.contains(&format!("failover: master {victim} ("))
            && log.contains(&format!(") replaced by {new_master} (")),
        "a WARN names the failover:\n{}",
        proxy.log_tail(30)
    );
}

#[test]
fn proxy_starts_without_a_cluster_and_routes_once_one_is_formed() {
    // Six cluster-mode nodes, not yet formed: no node serves any slot.
    let opts = ClusterOptions::default();
    let nodes = Nodes::start(6, &opts);
    let proxy = Proxy::start_unready(&nodes.addrs(), &[]);
    let mut c = proxy.client();
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    let err = c.set::<_, _, ()>("k", "v").unwrap_err();
    assert_eq!(err.code(), Some("CLUSTERDOWN"), "{err}");

    form_cluster(&nodes.addrs(), &FormOptions::default(), &Progress::stdout()).unwrap();
    let formed = Instant::now();
    loop {
        match c.set::<_, _, ()>("k", "v") {
            Ok(()) => break,
            Err(e) => assert_eq!(e.code(), Some("CLUSTERDOWN"), "{e}"),
        }
        assert!(
            formed.elapsed() < Duration::from_secs(15),
            "proxy never picked up the cluster"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let v: String = c.get("k").unwrap();
    assert_eq!(v, "v");
}

#[test]
fn proxy_with_an_unreachable_seed_answers_clusterdown() {
    let seed: std::net::SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let proxy = Proxy::start_unready(&[seed], &[]);
    let mut c = proxy.client();
    let err = c.get::<_, String>("k").unwrap_err();
    assert_eq!(err.code(), Some("CLUSTERDOWN"), "{err}");
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn a_hung_node_costs_its_callers_a_timeout_error_and_nobody_else_anything() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &["--command-timeout-ms", "500"]);
    let mut c = proxy.client();
    let hung = cluster.masters()[0];
    let keys: Vec<String> = (0..200).map(|i| format!("hang:{i}")).collect();
    let on_hung = keys
        .iter()
        .find(|k| cluster.master_of_slot(key_slot(k.as_bytes()).0) == hung)
        .unwrap()
        .clone();
    let elsewhere = keys
        .iter()
        .find(|k| cluster.master_of_slot(key_slot(k.as_bytes()).0) != hung)
        .unwrap()
        .clone();
    let _: () = c.set(&on_hung, "x").unwrap();
    let _: () = c.set(&elsewhere, "y").unwrap();

    let pid = cluster.raw().pid(hung).expect("pid of the master");
    assert!(support::signal_pid(pid, "STOP"), "kill -STOP {pid}");
    let started = Instant::now();
    let waiter = {
        let key = on_hung.clone();
        std::thread::spawn(move || {
            let r = c.get::<_, String>(&key);
            (r, started.elapsed(), c)
        })
    };
    // While that client waits on the hung node, another is served at once.
    std::thread::sleep(Duration::from_millis(100));
    let mut other = proxy.client();
    let asked = Instant::now();
    let v: String = other.get(&elsewhere).unwrap();
    let other_took = asked.elapsed();
    let (r, waited, mut c) = waiter.join().unwrap();
    assert!(support::signal_pid(pid, "CONT"), "kill -CONT {pid}");
    let err = r.unwrap_err();
    assert!(
        err.to_string().contains("did not reply within 500 ms"),
        "{err}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "the timeout took {waited:?}"
    );
    assert_eq!(v, "y");
    assert!(
        other_took < Duration::from_millis(400),
        "a bystander waited {other_took:?}"
    );
    // After the node wakes up, its keys are served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.get::<_, String>(&on_hung) {
            Ok(v) => {
                assert_eq!(v, "x");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "node never served again: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
