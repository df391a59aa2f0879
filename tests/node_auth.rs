//! Clusters whose nodes require credentials, served through the proxy: one with `requirepass` /
//! `masterauth`, one with an ACL user that may not run `CONFIG` (the default user turned off).
//! Routing to all three masters, MULTI/EXEC, BLPOP, pub/sub, a slot migration (ASK, then MOVED)
//! and a master failover all work; a wrong node password is named to the client (never
//! `CLUSTERDOWN`), in `/readyz` (503, naming the node) and in the auth error metric.
mod support;

use slotproxy::cluster::slot::key_slot;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::proxy::{http_get, metric_sum};
use support::secure::{acl_user, password, strs, write_private};
use support::{Cluster, ClusterOptions, Proxy};

fn protected_cluster(auth: slotproxy::bootstrap::NodeCredentials) -> Cluster {
    Cluster::start_with(ClusterOptions {
        node_timeout_ms: 2000,
        auth: Some(auth),
        ..ClusterOptions::default()
    })
}

#[test]
fn a_cluster_with_requirepass_is_served_end_to_end() {
    let cluster = protected_cluster(password("node secret"));
    // The nodes really require it.
    let err = redis::cmd("PING")
        .query::<String>(
            &mut redis::Client::open(format!("redis://{}/", cluster.nodes()[0]))
                .unwrap()
                .get_connection()
                .unwrap(),
        )
        .unwrap_err();
    assert_eq!(err.code(), Some("NOAUTH"), "{err}");
    let proxy = Proxy::start(&cluster.nodes(), &strs(&cluster.proxy_args()));
    serves_everything(&cluster, &proxy, &["AUTH", "node secret"]);
}

#[test]
fn a_cluster_with_an_acl_user_that_may_not_run_config_is_served_end_to_end() {
    let cluster = protected_cluster(acl_user("proxy", "acl-secret", "+@all -config ~* &*"));
    let mut direct = cluster.client(cluster.nodes()[0]);
    let err = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query::<Vec<String>>(&mut direct)
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some("NOPERM"),
        "the user may not run CONFIG: {err}"
    );
    let proxy = Proxy::start(&cluster.nodes(), &strs(&cluster.proxy_args()));
    serves_everything(&cluster, &proxy, &["AUTH2", "proxy", "acl-secret"]);
}

#[test]
fn a_wrong_node_password_is_named_to_the_client_in_readyz_and_in_metrics() {
    let cluster = protected_cluster(password("the right one"));
    let wrong = cluster.raw().dir().join("wrong-password");
    write_private(&wrong, "not the right one");
    let metrics = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let proxy = Proxy::start_unready(
        &cluster.nodes(),
        &[
            "--node-password-file",
            wrong.to_str().unwrap(),
            "--metrics-listen",
            &metrics.to_string(),
        ],
    );
    let mut c = proxy.client();
    let deadline = Instant::now() + Duration::from_secs(20);
    let err = loop {
        let err = redis::cmd("GET")
            .arg("some-key")
            .query::<Option<String>>(&mut c)
            .expect_err("a GET cannot succeed with a wrong node password");
        if err.to_string().contains("refused the proxy's credentials") || Instant::now() > deadline
        {
            break err;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let msg = err.to_string();
    assert!(
        msg.contains("refused the proxy's credentials"),
        "the client is told why: {msg}\n--- proxy log ---\n{}",
        proxy.log_tail(30)
    );
    assert_ne!(err.code(), Some("CLUSTERDOWN"), "{msg}");
    assert!(!msg.contains("CLUSTERDOWN"), "{msg}");

    let node_names: Vec<String> = cluster.nodes().iter().map(|a| a.to_string()).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, body) = loop {
        let (status, body) = http_get(metrics, "/readyz");
        let names_a_node = node_names.iter().any(|n| body.contains(n.as_str()));
        if (status == 503 && names_a_node) || Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status, 503, "/readyz: {body}");
    assert!(
        node_names.iter().any(|n| body.contains(n.as_str())),
        "/readyz names the node: {body}"
    );
    assert!(
        body.contains("credential") || body.contains("auth") || body.contains("WRONGPASS"),
        "/readyz says why: {body}"
    );

    let (_, exposition) = http_get(metrics, "/metrics");
    let auth_errors = metric_sum(
        &exposition,
        "slotproxy_backend_connection_errors_total",
        &["error=\"auth\""],
    );
    assert!(
        auth_errors > 0.0,
        "auth errors are counted: {}",
        exposition
            .lines()
            .filter(|l| l.contains("connection_errors"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Another request tries again and is counted again.
    let _ = redis::cmd("SET").arg("k").arg("v").query::<()>(&mut c);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, exposition) = http_get(metrics, "/metrics");
        let now = metric_sum(
            &exposition,
            "slotproxy_backend_connection_errors_total",
            &["error=\"auth\""],
        );
        if now > auth_errors {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the auth error count stayed at {now}"
        );
        let _ = redis::cmd("GET").arg("k").query::<Option<String>>(&mut c);
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Everything a client does, through a proxy in front of a protected cluster. `migrate_auth` is
/// the `AUTH ...` part MIGRATE needs to reach the target node.
fn serves_everything(cluster: &Cluster, proxy: &Proxy, migrate_auth: &[&str]) {
    routes_to_every_master(cluster, proxy);
    transactions_blocking_and_pubsub_work(proxy);
    migration_is_invisible(cluster, proxy, migrate_auth);
    failover_is_survived(cluster, proxy);
}

fn routes_to_every_master(cluster: &Cluster, proxy: &Proxy) {
    let mut c = proxy.client();
    let masters = cluster.masters();
    let mut seen = std::collections::HashSet::new();
    for i in 0..300 {
        let key = format!("route:{i}");
        let _: () = redis::cmd("SET").arg(&key).arg(i).query(&mut c).unwrap();
        let owner = cluster.master_of_slot(key_slot(key.as_bytes()).0);
        if seen.insert(owner) {
            let v: i64 = redis::cmd("GET")
                .arg(&key)
                .query(&mut cluster.client(owner))
                .unwrap();
            assert_eq!(v, i, "{key} lives on {owner}");
        }
    }
    assert_eq!(seen.len(), masters.len(), "keys landed on every master");
    let got: Vec<i64> = redis::cmd("MGET")
        .arg(&["route:1", "route:2", "route:3"])
        .query(&mut c)
        .unwrap();
    assert_eq!(got, vec![1, 2, 3]);
}

fn transactions_blocking_and_pubsub_work(proxy: &Proxy) {
    let mut c = proxy.client();
    let (set, n): (String, i64) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("{tx}a")
        .arg(41)
        .cmd("INCR")
        .arg("{tx}a")
        .query(&mut c)
        .unwrap();
    assert_eq!((set.as_str(), n), ("OK", 42));

    let blocked = {
        let mut b = proxy.client();
        std::thread::spawn(move || {
            redis::cmd("BLPOP")
                .arg("{bl}list")
                .arg(20)
                .query::<Option<(String, String)>>(&mut b)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let _: i64 = redis::cmd("LPUSH")
        .arg("{bl}list")
        .arg("woken")
        .query(&mut c)
        .unwrap();
    let popped = blocked.join().unwrap().unwrap();
    assert_eq!(popped, Some(("{bl}list".into(), "woken".into())));

    let mut sub_con = proxy.client();
    let mut sub = sub_con.as_pubsub();
    sub.subscribe("auth-news").unwrap();
    sub.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let msg = loop {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("auth-news")
            .arg("hello")
            .query(&mut c)
            .unwrap();
        match sub.get_message() {
            Ok(m) => break m,
            Err(e) if e.is_timeout() && Instant::now() < deadline => continue,
            Err(e) => panic!("no message through the proxy's subscription: {e}"),
        }
    };
    assert_eq!(msg.get_channel_name(), "auth-news");
    assert_eq!(msg.get_payload::<String>().unwrap(), "hello");
}

fn migration_is_invisible(cluster: &Cluster, proxy: &Proxy, migrate_auth: &[&str]) {
    let key = "{mig}counter";
    let slot = key_slot(key.as_bytes()).0;
    let source = cluster.master_of_slot(slot);
    let target = *cluster.masters().iter().find(|m| **m != source).unwrap();
    let mut c = proxy.client();
    for i in 0..500 {
        let _: () = redis::cmd("SET")
            .arg(format!("{{mig}}filler:{i}"))
            .arg("x".repeat(100))
            .query(&mut c)
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = stop.clone();
        let mut c = proxy.client();
        std::thread::spawn(move || {
            let (mut ok, mut errors) = (0i64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match redis::cmd("INCR").arg(key).query::<i64>(&mut c) {
                    Ok(_) => ok += 1,
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (ok, errors)
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let mut src = cluster.client(source);
    let mut tgt = cluster.client(target);
    let id = |c: &mut redis::Connection| -> String {
        redis::cmd("CLUSTER").arg("MYID").query(c).unwrap()
    };
    let (src_id, tgt_id) = (id(&mut src), id(&mut tgt));
    let _: () = redis::cmd("CLUSTER")
        .arg(&["SETSLOT", &slot.to_string(), "IMPORTING", &src_id])
        .query(&mut tgt)
        .unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg(&["SETSLOT", &slot.to_string(), "MIGRATING", &tgt_id])
        .query(&mut src)
        .unwrap();
    let started = Instant::now();
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(50)
            .query(&mut src)
            .unwrap();
        if keys.is_empty() {
            break;
        }
        let _: () = redis::cmd("MIGRATE")
            .arg(target.ip().to_string())
            .arg(target.port())
            .arg("")
            .arg(0)
            .arg(5000)
            .arg(migrate_auth)
            .arg("KEYS")
            .arg(&keys)
            .query(&mut src)
            .unwrap();
        std::thread::sleep(Duration::from_millis(10));
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "migration stuck"
        );
    }
    let mut order = vec![target, source];
    order.extend(
        cluster
            .masters()
            .into_iter()
            .filter(|m| *m != target && *m != source),
    );
    for node in &order {
        let _: () = redis::cmd("CLUSTER")
            .arg(&["SETSLOT", &slot.to_string(), "NODE", &tgt_id])
            .query(&mut cluster.client(*node))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (ok, errors) = worker.join().unwrap();
    assert!(
        errors.is_empty(),
        "{} errors during the migration, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(ok > 20, "only {ok} INCRs ran");
    assert_eq!(cluster.master_of_slot(slot), target, "the slot moved");
    let through: i64 = redis::cmd("GET").arg(key).query(&mut c).unwrap();
    assert_eq!(through, ok, "every INCR counted once");
}

fn failover_is_survived(cluster: &Cluster, proxy: &Proxy) {
    let mut c = proxy.client();
    let victim = cluster.masters()[0];
    let keys: Vec<String> = (0..100).map(|i| format!("fo:{i}")).collect();
    for k in &keys {
        let _: () = redis::cmd("SET").arg(k).arg(k).query(&mut c).unwrap();
    }
    let on_victim: Vec<&String> = keys
        .iter()
        .filter(|k| cluster.master_of_slot(key_slot(k.as_bytes()).0) == victim)
        .collect();
    assert!(!on_victim.is_empty());
    // The victim's replica has every key before the kill.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let synced = cluster.replicas().iter().any(|r| {
            let mut rc = cluster.client(*r);
            let _: () = redis::cmd("READONLY").query(&mut rc).unwrap();
            on_victim.iter().all(|k| {
                redis::cmd("EXISTS")
                    .arg(k.as_str())
                    .query::<i64>(&mut rc)
                    .is_ok_and(|n| n == 1)
            })
        });
        if synced {
            break;
        }
        assert!(Instant::now() < deadline, "replica never caught up");
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.kill(victim);
    let probe = on_victim[0].as_str();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        match redis::cmd("GET").arg(probe).query::<String>(&mut c) {
            Ok(v) => {
                assert_eq!(v, probe);
                break;
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    !msg.contains("credentials"),
                    "the promoted replica accepts the proxy's credentials: {msg}"
                );
                assert!(Instant::now() < deadline, "slots never came back: {msg}");
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for k in &on_victim {
        let v: String = redis::cmd("GET").arg(k.as_str()).query(&mut c).unwrap();
        assert_eq!(&v, *k);
        let _: () = redis::cmd("SET")
            .arg(k.as_str())
            .arg("new")
            .query(&mut c)
            .unwrap();
    }
    let slot = key_slot(probe.as_bytes()).0;
    assert_ne!(
        cluster.settled_master_of_slot(slot, Duration::from_secs(20)),
        victim
    );
}
