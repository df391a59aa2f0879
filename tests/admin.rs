//! Admin and introspection commands through the proxy, against a real 3+3 cluster: what a
//! tool or an operator sends to a standalone Redis (CONFIG SET, CLIENT PAUSE/KILL/LIST, INFO,
//! SCAN, SLOWLOG, ...) does what it would do there, on every node it concerns.
mod support;

use redis::Commands;
use std::time::Duration;
use support::{connect, Cluster, Proxy};

fn info_fields(text: &str) -> Vec<(String, String)> {
    // As redis-py parses INFO: `key:value` lines, `#` headers skipped.
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn config_set_reaches_every_node_masters_and_replicas() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let mut c = proxy.client();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .arg("slowlog-max-len")
        .arg("77")
        .query(&mut c)
        .unwrap();
    assert_eq!(cluster.nodes().len(), 6);
    for node in cluster.nodes() {
        let got: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query(&mut connect(node))
            .unwrap();
        assert_eq!(got, vec!["maxmemory-policy", "allkeys-lru"], "{node}");
        let got: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("slowlog-max-len")
            .query(&mut connect(node))
            .unwrap();
        assert_eq!(got[1], "77", "{node}");
    }
    // A value every node refuses: the node's own error text.
    let err = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("sometimes")
        .query::<()>(&mut c)
        .unwrap_err();
    let direct = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("sometimes")
        .query::<()>(&mut connect(cluster.nodes()[0]))
        .unwrap_err();
    assert_eq!(err.to_string(), direct.to_string());
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    // The proxy's own statistics restart too: one client connected since.
    let _other = proxy.client();
    let stats: String = redis::cmd("INFO").arg("stats").query(&mut c).unwrap();
    assert!(
        stats.contains("total_connections_received:1\r\n"),
        "{stats}"
    );
    let policy: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query(&mut c)
        .unwrap();
    assert_eq!(policy[1], "allkeys-lru");
}

#[test]
fn client_pause_write_holds_a_set_but_not_a_get() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let mut admin = proxy.client();
    let _: () = admin.set("paused-key", "before").unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(60_000)
        .arg("WRITE")
        .query(&mut admin)
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = proxy.addr();
    let writer = std::thread::spawn(move || {
        let mut w = connect(addr);
        let r: redis::RedisResult<()> = w.set("paused-key", "after");
        tx.send(r.is_ok()).unwrap();
    });
    // The SET is held, while reads (on another client, and this one) go on.
    let mut reader = proxy.client();
    for _ in 0..5 {
        let v: String = reader.get("paused-key").unwrap();
        assert_eq!(v, "before", "the paused SET must not have run");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(rx.try_recv().is_err(), "the SET answered during the pause");
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query(&mut admin)
        .unwrap();
    assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap());
    writer.join().unwrap();
    let v: String = reader.get("paused-key").unwrap();
    assert_eq!(v, "after");
}

#[test]
fn client_kill_id_list_and_info_are_about_the_proxys_clients() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let mut victim = proxy.client();
    let mut admin = proxy.client();
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("victim")
        .query(&mut victim)
        .unwrap();
    let _: Option<String> = victim.get("k").unwrap();
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut victim).unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("normal")
        .query(&mut admin)
        .unwrap();
    let line = list
        .lines()
        .find(|l| l.starts_with(&format!("id={id} ")))
        .unwrap_or_else(|| panic!("{list}"));
    for field in [
        "addr=127.0.0.1:",
        "laddr=",
        " fd=",
        "name=victim",
        "age=",
        "idle=",
        "flags=N",
        "db=0",
        "sub=0",
        "multi=-1",
        "cmd=client|id",
        "user=default",
        "resp=2",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    let one: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("ID")
        .arg(id)
        .query(&mut admin)
        .unwrap();
    assert_eq!(one.lines().count(), 1, "{one}");
    let me: String = redis::cmd("CLIENT").arg("INFO").query(&mut admin).unwrap();
    assert!(me.contains("cmd=client|info"), "{me}");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query(&mut admin)
        .unwrap();
    assert_eq!(killed, 1);
    let r: redis::RedisResult<Option<String>> = victim.get("k");
    assert!(
        r.is_err(),
        "the killed client's connection is closed: {r:?}"
    );
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut admin).unwrap();
    assert!(!list.contains(&format!("id={id} ")), "{list}");
    let err = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("127.0.0.1:1")
        .query::<()>(&mut admin)
        .unwrap_err();
    assert!(err.to_string().contains("No such client"), "{err}");
}

#[test]
fn info_sums_the_masters_and_answers_every_section() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let mut c = proxy.client();
    for i in 0..30 {
        let _: () = c.set(format!("key:{i}"), i).unwrap();
    }
    for i in 0..10 {
        let _: () = c.expire(format!("key:{i}"), 1000).unwrap();
    }
    // Every master holds some of the keys.
    for m in cluster.masters() {
        let n: i64 = redis::cmd("DBSIZE").query(&mut connect(m)).unwrap();
        assert!(n > 0 && n < 30, "{m}: {n}");
    }
    let keyspace: String = redis::cmd("INFO").arg("keyspace").query(&mut c).unwrap();
    let db0 = keyspace
        .lines()
        .find_map(|l| l.strip_prefix("db0:"))
        .unwrap_or_else(|| panic!("{keyspace}"));
    assert!(db0.starts_with("keys=30,expires=10,avg_ttl="), "{keyspace}");
    // redis-py's r.info("memory") is these fields: not empty.
    let memory: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
    let fields = info_fields(&memory);
    let used: i64 = fields
        .iter()
        .find(|(k, _)| k == "used_memory")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or_else(|| panic!("{memory}"));
    assert!(used > 0);
    assert!(fields.iter().any(|(k, _)| k == "maxmemory_policy"));
    let all: String = redis::cmd("INFO").query(&mut c).unwrap();
    for section in [
        "# Server",
        "# Clients",
        "# Memory",
        "# Persistence",
        "# Stats",
        "# Replication",
        "# CPU",
        "# Cluster",
        "# Keyspace",
    ] {
        assert!(all.contains(section), "{section} in {all}");
    }
    for field in [
        "redis_version:7.",
        "cluster_enabled:0",
        "connected_clients:",
        "blocked_clients:0",
        "pubsub_clients:0",
        "used_cpu_user:",
        "rdb_last_save_time:",
        "total_commands_processed:",
    ] {
        assert!(all.contains(field), "{field} in {all}");
    }
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut c)
        .unwrap();
    assert!(stats.contains("cmdstat_set:calls="), "{stats}");
}

#[test]
fn scan_fills_its_page_across_masters() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let mut c = proxy.client();
    let keys: Vec<String> = (0..5).map(|i| format!("scan-key-{i}")).collect();
    for k in &keys {
        let _: () = c.set(k, 1).unwrap();
    }
    let (cursor, mut got): (String, Vec<String>) = redis::cmd("SCAN").arg(0).query(&mut c).unwrap();
    assert_eq!(cursor, "0", "one call covers a small key space");
    got.sort();
    assert_eq!(got, keys);
    // With COUNT 2 the pages are small, and a full iteration sees every key once.
    let mut all = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let (next, page): (String, Vec<String>) = redis::cmd("SCAN")
            .arg(&cursor)
            .arg("MATCH")
            .arg("scan-key-*")
            .arg("COUNT")
            .arg(2)
            .query(&mut c)
            .unwrap();
        all.extend(page);
        cursor = next;
        if cursor == "0" {
            break;
        }
    }
    all.sort();
    assert_eq!(all, keys);
}

#[test]
fn admin_commands_deny_refuses_node_administration() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &["--admin-commands", "deny"]);
    let mut c = proxy.client();
    for args in [
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"][..],
        &["CONFIG", "RESETSTAT"],
        &["ACL", "SETUSER", "bob"],
        &["CLIENT", "KILL", "ID", "1"],
        &["CLIENT", "PAUSE", "10"],
        &["FLUSHALL"],
        &["BGSAVE"],
        &["MONITOR"],
    ] {
        let err = redis::cmd(args[0])
            .arg(&args[1..])
            .query::<redis::Value>(&mut c)
            .unwrap_err();
        assert_eq!(err.code(), Some("NOPERM"), "{args:?}: {err}");
    }
    let policy: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query(&mut c)
        .unwrap();
    assert_eq!(policy[1], "noeviction");
    let _: () = c.set("still", "works").unwrap();
}

#[test]
fn monitor_sees_commands_that_land_on_every_master() {
    use slotproxy::cluster::slot::key_slot;
    use std::io::{BufRead, BufReader, Write};
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let masters = cluster.masters();
    // One key per master.
    let keys: Vec<String> = masters
        .iter()
        .map(|m| {
            (0..)
                .map(|i| format!("mon-{i}"))
                .find(|k| cluster.master_of_slot(key_slot(k.as_bytes()).0) == *m)
                .unwrap()
        })
        .collect();
    let mut mon = std::net::TcpStream::connect(proxy.addr()).unwrap();
    mon.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    mon.write_all(b"MONITOR\r\n").unwrap();
    let mut lines = BufReader::new(mon.try_clone().unwrap());
    let mut first = String::new();
    lines.read_line(&mut first).unwrap();
    assert_eq!(first, "+OK\r\n");
    let mut c = proxy.client();
    for k in &keys {
        let _: () = c.set(k, "v").unwrap();
    }
    let mut seen = vec![false; keys.len()];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !seen.iter().all(|s| *s) {
        assert!(std::time::Instant::now() < deadline, "seen {seen:?}");
        let mut line = String::new();
        lines
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("MONITOR stream ended ({e}); seen {seen:?}"));
        // Redis's format: +<time> [<db> <addr>] "cmd" "arg" ...
        assert!(line.starts_with('+') && line.contains(" [0 "), "{line}");
        for (i, k) in keys.iter().enumerate() {
            if line.contains(&format!("\"SET\" \"{k}\" \"v\"")) {
                seen[i] = true;
            }
        }
    }
    mon.write_all(b"QUIT\r\n").unwrap();
    // The masters' MONITOR connections close with the client's.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for m in masters {
        loop {
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query(&mut connect(m))
                .unwrap();
            if !list.contains("flags=O") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{m}: {list}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn wait_counts_the_replicas_of_the_masters_written_to() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let mut c = proxy.client();
    for i in 0..10 {
        let _: () = c.set(format!("wait-{i}"), i).unwrap();
    }
    // Every master has one replica: WAIT 1 returns 1 once they acknowledged the writes.
    let n: i64 = redis::cmd("WAIT").arg(1).arg(10_000).query(&mut c).unwrap();
    assert_eq!(n, 1);
    // Nobody has two replicas: the timeout passes and the count stays 1.
    let _: () = c.set("wait-x", 1).unwrap();
    let n: i64 = redis::cmd("WAIT").arg(2).arg(200).query(&mut c).unwrap();
    assert_eq!(n, 1);
    // Replicas that cannot acknowledge (stopped) are not counted: a WAIT on a connection that
    // wrote nothing would count them anyway.
    let signal = |sig: &str| {
        for r in cluster.replicas() {
            let pid = cluster.raw().pid(r).expect("replica pid");
            let ok = std::process::Command::new("kill")
                .arg(sig)
                .arg(pid.to_string())
                .status()
                .unwrap()
                .success();
            assert!(ok, "kill {sig} {pid}");
        }
    };
    signal("-STOP");
    let _: () = c.set("wait-stopped", 1).unwrap();
    let n: redis::RedisResult<i64> = redis::cmd("WAIT").arg(1).arg(300).query(&mut c);
    signal("-CONT");
    assert_eq!(n.unwrap(), 0, "no replica could acknowledge the write");
    let n: i64 = redis::cmd("WAIT").arg(1).arg(10_000).query(&mut c).unwrap();
    assert_eq!(n, 1, "once running again, they do");
}

#[test]
fn slowlog_shows_the_proxys_own_slow_requests_beside_the_masters() {
    let cluster = Cluster::start();
    // 100 ms: a BLPOP that waits 0.3 s is slow through the proxy (Redis itself does not log
    // time spent blocked, so only the proxy's entry can show it).
    let proxy = Proxy::start(&cluster.nodes(), &["--slowlog-slower-than-us", "100000"]);
    let mut c = proxy.client();
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut c).unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("slowpoke")
        .query(&mut c)
        .unwrap();
    let popped: Option<(String, String)> = redis::cmd("BLPOP")
        .arg("slow:list")
        .arg("0.3")
        .query(&mut c)
        .unwrap();
    assert_eq!(popped, None);
    let _: String = redis::cmd("GET")
        .arg("slow:fast")
        .query::<Option<String>>(&mut c)
        .unwrap()
        .unwrap_or_default();
    let len: i64 = redis::cmd("SLOWLOG").arg("LEN").query(&mut c).unwrap();
    assert!(len >= 1, "SLOWLOG LEN counts the proxy's entry: {len}");
    // Entries: [id, time, microseconds, args, addr, name].
    let entries: Vec<(i64, i64, i64, Vec<String>, String, String)> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(10)
        .query(&mut c)
        .unwrap();
    let blpop = entries
        .iter()
        .find(|e| e.3.first().map(String::as_str) == Some("BLPOP"))
        .unwrap_or_else(|| panic!("no BLPOP entry in {entries:?}"));
    assert_eq!(blpop.3, vec!["BLPOP", "slow:list", "0.3"]);
    assert!(blpop.2 >= 100_000, "at least the threshold: {blpop:?}");
    assert_eq!(blpop.5, "slowpoke");
    assert!(blpop.4.starts_with("127.0.0.1:"), "{blpop:?}");
    assert!(
        !entries
            .iter()
            .any(|e| e.3.first().map(String::as_str) == Some("GET")),
        "a fast GET is not slow: {entries:?}"
    );
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut c).unwrap();
    let entries: Vec<(i64, i64, i64, Vec<String>, String, String)> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(10)
        .query(&mut c)
        .unwrap();
    assert!(
        !entries
            .iter()
            .any(|e| e.3.first().map(String::as_str) == Some("BLPOP")),
        "RESET clears the proxy's entries too: {entries:?}"
    );
}
