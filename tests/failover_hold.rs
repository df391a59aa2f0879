//! Failovers under load through the proxy, counted: a request that was never written to the
//! failed master is held until the new master serves its slot, so its client sees no error; a
//! request already written to the master that died gets the "may or may not have run" error
//! and is never sent again; no acknowledged write is lost (the replica is made to be in sync
//! at the failure with `WAIT`, as Redis replicates asynchronously). The command timeout is long
//! so that a node slowed down by a busy machine fails no request: only the failover counts.
mod support;

use redis::Commands;
use slotproxy::cluster::slot::key_slot;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{sleep, JoinHandle};
use std::time::{Duration, Instant};
use support::{cluster_nodes, Cluster, ClusterOptions, Proxy};

const RUN: u8 = 0;
const PAUSE: u8 = 1;
const STOP: u8 = 2;

/// What one load client did.
#[derive(Debug, Default)]
struct Tally {
    keys: Vec<String>,
    /// Acknowledged INCRs per key.
    acked: Vec<u64>,
    /// INCRs per key that failed (they may or may not have run).
    failed: Vec<u64>,
    errors: Vec<String>,
}

/// A client INCRing its own keys round-robin through the proxy, until told to stop; it can be
/// paused between requests.
struct Loader {
    mode: Arc<AtomicU8>,
    paused: Arc<AtomicUsize>,
    done: Arc<AtomicU64>,
    thread: Option<JoinHandle<Tally>>,
}

impl Loader {
    fn start(proxy: SocketAddr, keys: Vec<String>, mode: u8) -> Loader {
        let mode = Arc::new(AtomicU8::new(mode));
        let paused = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let (m, p, d) = (mode.clone(), paused.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let mut c = support::connect(proxy);
            c.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
            let mut t = Tally {
                acked: vec![0; keys.len()],
                failed: vec![0; keys.len()],
                keys,
                errors: Vec::new(),
            };
            let mut i = 0;
            loop {
                match m.load(Ordering::SeqCst) {
                    STOP => return t,
                    PAUSE => {
                        p.store(1, Ordering::SeqCst);
                        sleep(Duration::from_millis(2));
                        continue;
                    }
                    _ => p.store(0, Ordering::SeqCst),
                }
                let k = i % t.keys.len();
                match c.incr::<_, _, u64>(&t.keys[k], 1) {
                    Ok(_) => t.acked[k] += 1,
                    Err(e) => {
                        t.failed[k] += 1;
                        t.errors.push(format!("INCR {}: {e}", t.keys[k]))
                    }
                }
                d.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
        });
        Loader {
            mode,
            paused,
            done,
            thread: Some(thread),
        }
    }

    fn set(&self, mode: u8) {
        if mode == RUN {
            self.paused.store(0, Ordering::SeqCst); // so that a later pause waits afresh
        }
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn done(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }

    /// Pauses and waits until the client sits between requests.
    fn pause(&self) {
        self.set(PAUSE);
        wait_for("a load client to pause", Duration::from_secs(60), || {
            self.paused.load(Ordering::SeqCst) == 1
        });
    }

    fn stop(mut self) -> Tally {
        self.set(STOP);
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("load client panicked")
    }
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20));
    }
}

/// Waits until every loader has done `n` more requests than now.
fn wait_progress(loaders: &[&Loader], n: u64, what: &str) {
    let start: Vec<u64> = loaders.iter().map(|l| l.done()).collect();
    wait_for(what, Duration::from_secs(60), || {
        loaders.iter().zip(&start).all(|(l, s)| l.done() >= s + n)
    });
}

/// `count` keys named `prefix:<i>` whose slots `owner` serves (or does not, with `!on`).
fn keys_where(
    cluster: &Cluster,
    prefix: &str,
    owner: SocketAddr,
    on: bool,
    count: usize,
) -> Vec<String> {
    // One slot map for all the keys: the owner of every slot, as a live node sees it.
    let mut owned = vec![false; 16384];
    for l in cluster_nodes(cluster.masters()[0]) {
        if l.is_master() && l.addr == Some(owner) && !l.is_troubled() {
            for r in &l.slots {
                owned[r.start as usize..=r.end as usize].fill(true);
            }
        }
    }
    (0..)
        .map(|i| format!("{prefix}:{i}"))
        .filter(|k| owned[key_slot(k.as_bytes()).0 as usize] == on)
        .take(count)
        .collect()
}

/// Makes sure `master`'s replica has every write acknowledged so far: a write of our own on
/// the master, then `WAIT` for one replica (the replication stream is in order).
fn sync_replica(cluster: &Cluster, master: SocketAddr) {
    let key = keys_where(cluster, "sync", master, true, 1).remove(0);
    let mut c = cluster.client(master);
    let _: () = c.set(&key, 1).unwrap();
    let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut c).unwrap();
    assert_eq!(acked, 1, "the replica of {master} did not catch up");
}

/// The replica of `master`.
fn replica_of(master: SocketAddr) -> SocketAddr {
    let lines = cluster_nodes(master);
    let id = lines.iter().find(|l| l.is_myself()).unwrap().id.clone();
    lines
        .iter()
        .find(|l| l.is_replica() && l.master_id.as_deref() == Some(id.as_str()))
        .and_then(|l| l.addr)
        .expect("the master has a replica")
}

/// Checks every key against its acknowledged INCRs, read through the proxy: none lost, and
/// at most the failed ones (which may or may not have run) beyond them.
fn assert_no_write_lost(proxy: &Proxy, tallies: &[Tally]) {
    let mut c = proxy.client();
    for t in tallies {
        for ((k, &n), &failed) in t.keys.iter().zip(&t.acked).zip(&t.failed) {
            let v = c.get::<_, Option<u64>>(k).unwrap().unwrap_or(0);
            assert!(
                (n..=n + failed).contains(&v),
                "{k}: {v}, after {n} acknowledged INCRs and {failed} failed"
            );
        }
    }
}

/// The bytes `redis` sends for `INCR key`.
fn incr_request(key: &str) -> usize {
    format!("*2\r\n$4\r\nINCR\r\n${}\r\n{key}\r\n", key.len()).len()
}

/// The socket inodes process `pid` holds.
fn socket_inodes(pid: u32) -> std::collections::HashSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|t| {
                    let t = t.to_string_lossy().into_owned();
                    t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a request of `bytes` written by the proxy (process `proxy_pid`) sits unread in a
/// socket of the node on `port` (a stopped node reads nothing). Only the node's ends of the
/// proxy's own connections count (not the replica's link), and the proxy's health probe may
/// have queued `PING`s (14 bytes each) beside it.
fn unread_on_port(port: u16, proxy_pid: u32, bytes: usize) -> bool {
    const PING: usize = 14;
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let port_of = |a: &str| {
        a.rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    // The proxy's ends of its connections to the node: their local ports.
    let mine = socket_inodes(proxy_pid);
    let proxy_ports: std::collections::HashSet<u16> = rows
        .iter()
        .filter(|f| f.get(2).and_then(|a| port_of(a)) == Some(port))
        .filter(|f| {
            f.get(9)
                .and_then(|i| i.parse().ok())
                .is_some_and(|i| mine.contains(&i))
        })
        .filter_map(|f| f.get(1).and_then(|a| port_of(a)))
        .collect();
    rows.iter().any(|f| {
        let local = f.get(1).and_then(|a| port_of(a));
        let remote = f.get(2).and_then(|a| port_of(a));
        let rx = f
            .get(4)
            .and_then(|q| q.split(':').nth(1))
            .and_then(|q| usize::from_str_radix(q, 16).ok());
        local == Some(port)
            && remote.is_some_and(|r| proxy_ports.contains(&r))
            && rx.is_some_and(|rx| rx >= bytes && (rx - bytes).is_multiple_of(PING))
    })
}

/// Whether the proxy has stored a view in which some slots have no master.
fn proxy_saw_uncovered_slots(proxy: &Proxy) -> bool {
    support::strip_ansi(&proxy.log()).lines().any(|l| {
        l.contains("topology updated")
            && l.split_whitespace()
                .find_map(|w| w.strip_prefix("slots="))
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n < 16384)
    })
}

#[test]
fn master_killed_under_load_costs_only_the_request_in_flight_on_it() {
    let cluster = Cluster::start_with(ClusterOptions {
        node_timeout_ms: 2000,
        ..ClusterOptions::default()
    });
    let proxy = Proxy::start(
        &cluster.nodes(),
        &[
            "--failover-hold-ms",
            "60000",
            "--command-timeout-ms",
            "30000",
            // One worker: with several, each learns of the failure from its own refresher,
            // and a worker a poll behind still writes to the stopped master.
            "--worker-threads",
            "1",
        ],
    );
    let victim = cluster.masters()[0];
    let loaders: Vec<Loader> = (0..4)
        .map(|c| {
            let keys = (0..250).map(|i| format!("ctr:{c}:{i}")).collect();
            Loader::start(proxy.addr(), keys, RUN)
        })
        .collect();
    let all: Vec<&Loader> = loaders.iter().collect();
    wait_progress(&all, 300, "load before the kill");

    // Between requests, with the victim's replica in sync: nothing the clients were told
    // can be lost with the victim.
    loaders.iter().for_each(|l| l.set(PAUSE));
    loaders.iter().for_each(Loader::pause);
    sync_replica(&cluster, victim);

    // One request in flight on the victim at the kill: written, never run (the victim is
    // stopped), so it must not be run elsewhere either.
    let inflight = keys_where(&cluster, "inflight", victim, true, 1).remove(0);
    let pid = cluster.raw().pid(victim).unwrap();
    assert!(support::signal_pid(pid, "STOP"), "kill -STOP {pid}");
    let waiter = {
        let (addr, key) = (proxy.addr(), inflight.clone());
        std::thread::spawn(move || {
            let mut c = support::connect(addr);
            c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            redis::cmd("INCR").arg(&key).query::<u64>(&mut c)
        })
    };
    wait_for(
        "the in-flight INCR to reach the victim's socket",
        Duration::from_secs(20),
        || unread_on_port(victim.port(), proxy.pid(), incr_request(&inflight)),
    );
    cluster.kill(victim);
    loaders.iter().for_each(|l| l.set(RUN));

    let err = waiter.join().unwrap().expect_err("the victim never ran it");
    assert!(
        err.to_string().contains("may or may not have run"),
        "in flight at the kill: {err}"
    );
    cluster.wait_ok();
    wait_progress(&all, 300, "load after the failover");
    let tallies: Vec<Tally> = loaders.into_iter().map(Loader::stop).collect();

    // A client may have written one request to the victim's socket after the kill, before the
    // proxy read the connection's end: written, so it gets the honest error, never a resend.
    // Every request not written to the dead master succeeded.
    for t in &tallies {
        assert!(
            t.errors.len() <= 1
                && t.errors
                    .iter()
                    .all(|e| e.contains("may or may not have run")),
            "{} errors for one client, first: {:?}",
            t.errors.len(),
            &t.errors[..t.errors.len().min(5)]
        );
    }
    assert_no_write_lost(&proxy, &tallies);
    let mut c = proxy.client();
    let v: Option<u64> = c.get(&inflight).unwrap();
    assert_eq!(v, None, "the request in flight at the kill was sent again");
    // The victim's keys were served by the promoted replica.
    let new_master =
        cluster.settled_master_of_slot(key_slot(inflight.as_bytes()).0, Duration::from_secs(20));
    assert_ne!(new_master, victim);
}

#[test]
fn stopped_master_holds_its_requests_until_the_promotion_and_no_one_elses() {
    let cluster = Cluster::start_with(ClusterOptions {
        node_timeout_ms: 2000,
        ..ClusterOptions::default()
    });
    // Slots of a failed master must not stop the others (the operator's choice for this), and
    // the failover waits for the test to start it, so that requests are surely held before.
    for node in cluster.nodes() {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("cluster-require-full-coverage")
            .arg("no")
            .query(&mut cluster.client(node))
            .unwrap();
    }
    let victim = cluster.masters()[0];
    let replica = replica_of(victim);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("cluster-replica-no-failover")
        .arg("yes")
        .query(&mut cluster.client(replica))
        .unwrap();
    let proxy = Proxy::start(
        &cluster.nodes(),
        &[
            "--failover-hold-ms",
            "60000",
            "--command-timeout-ms",
            "30000",
            // One worker: with several, each learns of the failure from its own refresher,
            // and a worker a poll behind still writes to the stopped master.
            "--worker-threads",
            "1",
        ],
    );

    let others: Vec<Loader> = (0..2)
        .map(|c| {
            let keys = keys_where(&cluster, &format!("by:{c}"), victim, false, 100);
            Loader::start(proxy.addr(), keys, RUN)
        })
        .collect();
    let own: Vec<Loader> = (0..2)
        .map(|c| {
            let keys = keys_where(&cluster, &format!("own:{c}"), victim, true, 50);
            Loader::start(proxy.addr(), keys, RUN)
        })
        .collect();
    let everyone: Vec<&Loader> = others.iter().chain(&own).collect();
    wait_progress(&everyone, 100, "load before the stop");
    own.iter().for_each(|l| l.set(PAUSE));
    own.iter().for_each(Loader::pause);
    sync_replica(&cluster, victim);

    let pid = cluster.raw().pid(victim).unwrap();
    assert!(support::signal_pid(pid, "STOP"), "kill -STOP {pid}");
    let stopped_at = others.iter().map(Loader::done).sum::<u64>();
    // Longer than the node timeout: the cluster flags it failed, and the proxy sees its slots
    // without a master.
    let live = replica;
    wait_for(
        "the cluster to flag the victim failed",
        Duration::from_secs(30),
        || {
            cluster_nodes(live)
                .iter()
                .any(|l| l.addr == Some(victim) && l.flags.iter().any(|f| f == "fail"))
        },
    );
    wait_for(
        "the proxy to see the victim's slots without a master",
        Duration::from_secs(30),
        || proxy_saw_uncovered_slots(&proxy),
    );
    let others_while_stopped = others.iter().map(Loader::done).sum::<u64>() - stopped_at;
    assert!(
        others_while_stopped > 0,
        "the other masters' keys were not served"
    );

    // The victim's own requests are now held: nothing can serve them, and no error comes.
    let own_before: Vec<u64> = own.iter().map(Loader::done).collect();
    own.iter().for_each(|l| l.set(RUN));
    let others_before = others.iter().map(Loader::done).sum::<u64>();
    wait_for(
        "the others to go on meanwhile",
        Duration::from_secs(30),
        || others.iter().map(Loader::done).sum::<u64>() >= others_before + 200,
    );
    let own_now: Vec<u64> = own.iter().map(Loader::done).collect();
    assert_eq!(
        own_now, own_before,
        "a request with no master to go to was answered"
    );

    // Promote the replica: the held requests go to it.
    let _: () = redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .arg("FORCE")
        .query(&mut cluster.client(replica))
        .unwrap();
    let own_refs: Vec<&Loader> = own.iter().collect();
    wait_progress(
        &own_refs,
        100,
        "the held requests to be served by the promoted replica",
    );
    assert!(support::signal_pid(pid, "CONT"), "kill -CONT {pid}");
    cluster.wait_ok();
    wait_progress(&everyone, 50, "load after the old master rejoined");

    let tallies: Vec<Tally> = others.into_iter().chain(own).map(Loader::stop).collect();
    let errors: Vec<&String> = tallies.iter().flat_map(|t| &t.errors).collect();
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert_no_write_lost(&proxy, &tallies);
    assert_eq!(
        cluster.settled_master_of_slot(
            key_slot(tallies[2].keys[0].as_bytes()).0,
            Duration::from_secs(20)
        ),
        replica
    );
}
