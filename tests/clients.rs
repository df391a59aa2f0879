//! What a client written for a standalone Redis expects, through the proxy: connection
//! handshake commands, transactions, blocking commands, Pub/Sub, SCAN, and redis-benchmark.
mod support;

use redis::Commands;
use slotproxy::protocol::framer::Request;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;
use support::{Cluster, Proxy};

#[test]
fn handshake_commands_answer_like_a_standalone_redis() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let mut c = proxy.client();
    let info: String = redis::cmd("INFO").query(&mut c).unwrap();
    assert!(info.contains("cluster_enabled:0"), "{info}");
    assert!(info.contains("redis_version:"), "{info}");
    assert!(info.contains("arch_bits:64"), "{info}");
    let _: () = redis::cmd("SELECT").arg(0).query(&mut c).unwrap();
    let err = redis::cmd("SELECT").arg(1).query::<()>(&mut c).unwrap_err();
    assert!(
        err.to_string().contains("DB index is out of range"),
        "{err}"
    );
    let err = redis::cmd("AUTH")
        .arg("foo")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("AUTH <password> called without any password configured"),
        "{err}"
    );
    let _: () = redis::cmd("AUTH")
        .arg("default")
        .arg("foo")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("app-1")
        .query(&mut c)
        .unwrap();
    let name: String = redis::cmd("CLIENT").arg("GETNAME").query(&mut c).unwrap();
    assert_eq!(name, "app-1");
    let _: () = redis::cmd("CLIENT")
        .arg("SETINFO")
        .arg("lib-name")
        .arg("x")
        .query(&mut c)
        .unwrap();
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut c).unwrap();
    assert!(id > 0);
    let echo: String = redis::cmd("ECHO").arg("hi").query(&mut c).unwrap();
    assert_eq!(echo, "hi");
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut c).unwrap();
    assert!(count > 200, "COMMAND COUNT from the cluster: {count}");
}

/// Raw RESP3 through HELLO 3, as redis-py 8 and Lettuce do, with AUTH and SETNAME inside.
#[test]
fn hello_3_switches_the_client_to_resp3() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"HELLO 3 AUTH default pw SETNAME r3\r\n")
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    let hello = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(hello.starts_with("%7\r\n"), "{hello}");
    assert!(hello.contains("$5\r\nproto\r\n:3\r\n"), "{hello}");
    // A RESP3 reply forwarded from a node: HGETALL is a map, a missing key is `_`.
    s.write_all(b"HSET h3 f v\r\nHGETALL h3\r\nGET missing-key\r\n")
        .unwrap();
    let want = ":1\r\n%1\r\n$1\r\nf\r\n$1\r\nv\r\n_\r\n";
    let mut got = Vec::new();
    while got.len() < want.len() {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&got), want);
}

#[test]
fn transactions_run_on_the_node_of_their_keys() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let mut c = proxy.client();
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("{tx}a")
        .arg(5)
        .ignore()
        .cmd("INCR")
        .arg("{tx}a")
        .cmd("INCRBY")
        .arg("{tx}b")
        .arg(7)
        .query(&mut c)
        .unwrap();
    assert_eq!((a, b), (6, 7));
    // WATCH + a concurrent write aborts EXEC (nil), as on a standalone Redis.
    let _: () = redis::cmd("WATCH").arg("{tx}a").query(&mut c).unwrap();
    let mut other = proxy.client();
    let _: () = other.set("{tx}a", 100).unwrap();
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: String = redis::cmd("INCR").arg("{tx}a").query(&mut c).unwrap();
    let r: Option<Vec<i64>> = redis::cmd("EXEC").query(&mut c).unwrap();
    assert_eq!(r, None, "EXEC after a WATCHed key changed must abort");
    let v: i64 = c.get("{tx}a").unwrap();
    assert_eq!(v, 100);
    // DISCARD, and EXEC without MULTI.
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: String = redis::cmd("SET").arg("{tx}a").arg(1).query(&mut c).unwrap();
    let _: () = redis::cmd("DISCARD").query(&mut c).unwrap();
    let v: i64 = c.get("{tx}a").unwrap();
    assert_eq!(v, 100);
    let err = redis::cmd("EXEC").query::<()>(&mut c).unwrap_err();
    assert!(err.to_string().contains("EXEC without MULTI"), "{err}");
}

#[test]
fn blocking_commands_do_not_block_other_clients() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let addr = proxy.addr();
    let waiter = std::thread::spawn(move || {
        let mut c = redis::Client::open(format!("redis://{addr}"))
            .unwrap()
            .get_connection()
            .unwrap();
        let r: Option<(String, String)> = redis::cmd("BLPOP")
            .arg("jobs")
            .arg(10)
            .query(&mut c)
            .unwrap();
        r
    });
    std::thread::sleep(Duration::from_millis(300));
    // Meanwhile everyone else is served at once, including on the node that holds `jobs`.
    let mut c = proxy.client();
    for i in 0..50 {
        let _: () = c.set(format!("{{jobs}}other:{i}"), i).unwrap();
    }
    let _: i64 = c.rpush("jobs", "job-1").unwrap();
    let got = waiter.join().unwrap();
    assert_eq!(got, Some(("jobs".to_string(), "job-1".to_string())));
}

#[test]
fn pubsub_delivers_messages_published_through_the_proxy() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let client = redis::Client::open(format!("redis://{}", proxy.addr())).unwrap();
    let mut sub_conn = client.get_connection().unwrap();
    let mut pubsub = sub_conn.as_pubsub();
    pubsub.subscribe(&["news", "sport"]).unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut c = proxy.client();
    for i in 0..5 {
        let _: i64 = c.publish("news", format!("n{i}")).unwrap();
        let _: i64 = c.publish("sport", format!("s{i}")).unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..10 {
        let m = pubsub.get_message().unwrap();
        got.push(format!(
            "{}={}",
            m.get_channel_name(),
            m.get_payload::<String>().unwrap()
        ));
    }
    for i in 0..5 {
        assert!(got.contains(&format!("news=n{i}")), "{got:?}");
        assert!(got.contains(&format!("sport=s{i}")), "{got:?}");
    }
    pubsub.unsubscribe(&["news", "sport"]).unwrap();
    drop(pubsub);
    // Back on the normal path right after the last unsubscribe.
    let _: () = sub_conn.set("after-sub", 1).unwrap();
    let v: i64 = sub_conn.get("after-sub").unwrap();
    assert_eq!(v, 1);
}

/// Sends `input` in one write and reads until `expected.len()` bytes came (or 5 s pass).
fn pipeline(s: &mut TcpStream, input: &[u8], expected: &str) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(input).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < expected.len() {
        match s.read(&mut buf) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    assert_eq!(String::from_utf8_lossy(&got), expected);
}

/// The requests `argvs`, RESP-encoded one after the other.
fn resp(argvs: &[&[&str]]) -> Vec<u8> {
    argvs
        .iter()
        .flat_map(|argv| Request::from_args(argv).bytes().to_vec())
        .collect()
}

#[test]
fn pubsub_replies_stay_in_request_order_as_redis_sends_them() {
    // Expected bytes are what a standalone Redis 7.0.15 answers to the same pipelines.
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let _: () = proxy.client().set("a", "va").unwrap();
    let not_allowed = "-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n";
    // Confirmations come before the replies to what follows; after the last UNSUBSCRIBE the
    // client is at once back to normal commands.
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    pipeline(
        &mut s,
        &resp(&[
            &["SUBSCRIBE", "ch"],
            &["PING"],
            &["GET", "a"],
            &["UNSUBSCRIBE"],
            &["GET", "a"],
            &["UNSUBSCRIBE", "z"],
        ]),
        &format!(
            "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n{not_allowed}\
             *3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n$2\r\nva\r\n\
             *3\r\n$11\r\nunsubscribe\r\n$1\r\nz\r\n:0\r\n"
        ),
    );
    pipeline(
        &mut s,
        &resp(&[
            &["PSUBSCRIBE", "c*"],
            &["PUNSUBSCRIBE", "c*"],
            &["GET", "a"],
        ]),
        "*3\r\n$10\r\npsubscribe\r\n$2\r\nc*\r\n:1\r\n\
         *3\r\n$12\r\npunsubscribe\r\n$2\r\nc*\r\n:0\r\n$2\r\nva\r\n",
    );
    // RESP3: confirmations are pushes, and a subscribed client may run any command.
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&resp(&[&["HELLO", "3"]])).unwrap();
    let mut hello = Vec::new();
    let mut buf = [0u8; 4096];
    while !hello.ends_with(b"$7\r\nmodules\r\n*0\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "HELLO 3 unanswered");
        hello.extend_from_slice(&buf[..n]);
    }
    pipeline(
        &mut s,
        &resp(&[
            &["SUBSCRIBE", "ch"],
            &["GET", "a"],
            &["UNSUBSCRIBE", "ch"],
            &["GET", "a"],
        ]),
        ">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n$2\r\nva\r\n\
         >3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n$2\r\nva\r\n",
    );
}

#[test]
fn a_clients_commands_run_in_order_across_its_connections_as_in_redis() {
    // Expected bytes are what a standalone Redis 7.0.15 answers to the same pipelines. Commands
    // after an EXEC or a BLPOP go on another node connection than those; they must still see
    // what those did. Repeated, since an overtaking request would win only some races.
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    for i in 0..30 {
        let v = i.to_string();
        pipeline(
            &mut s,
            &resp(&[
                &["SET", "{t}a", "old"],
                &["WATCH", "{t}a"],
                &["MULTI"],
                &["SET", "{t}a", &v],
                &["EXEC"],
                &["GET", "{t}a"],
            ]),
            &format!(
                "+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n${}\r\n{v}\r\n",
                v.len()
            ),
        );
        pipeline(
            &mut s,
            &resp(&[
                &["RPUSH", "{t}l", "x"],
                &["BLPOP", "{t}l", "1"],
                &["LLEN", "{t}l"],
            ]),
            ":1\r\n*2\r\n$4\r\n{t}l\r\n$1\r\nx\r\n:0\r\n",
        );
    }
    // A command that cannot be queued aborts the transaction, as in Redis.
    pipeline(
        &mut s,
        &resp(&[
            &["MULTI"],
            &["SET", "{t}a"],
            &["GET", "{t}a"],
            &["EXEC"],
            &["MULTI"],
            &["NOSUCHCOMMAND"],
            &["EXEC"],
        ]),
        "+OK\r\n-ERR wrong number of arguments for 'set' command\r\n+QUEUED\r\n\
         -EXECABORT Transaction discarded because of previous errors.\r\n\
         +OK\r\n-ERR unknown command 'NOSUCHCOMMAND', with args beginning with: \r\n\
         -EXECABORT Transaction discarded because of previous errors.\r\n",
    );
    pipeline(
        &mut s,
        &resp(&[&["PING", "a", "b"], &["SELECT", "x"], &["CLIENT", "FOO"]]),
        "-ERR wrong number of arguments for 'ping' command\r\n\
         -ERR value is not an integer or out of range\r\n\
         -ERR unknown subcommand 'FOO'. Try CLIENT HELP.\r\n",
    );
}

#[test]
fn scan_walks_every_master() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let mut c = proxy.client();
    for i in 0..500 {
        let _: () = c.set(format!("scan:{i}"), i).unwrap();
    }
    let _: () = c.set("other", 1).unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut cursor: u64 = 0;
    let mut rounds = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("scan:*")
            .arg("COUNT")
            .arg(100)
            .query(&mut c)
            .unwrap();
        seen.extend(keys);
        rounds += 1;
        assert!(rounds < 1000);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(seen.len(), 500);
    let keys: Vec<String> = c.keys("scan:1*").unwrap();
    assert_eq!(keys.len(), 111);
}

#[test]
fn redis_benchmark_runs_clean_through_the_proxy() {
    let cluster = Cluster::start();
    let proxy = Proxy::start(&cluster.nodes(), &[]);
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &proxy.addr().port().to_string()])
        .args(["-n", "2000", "-c", "20", "-P", "4", "--csv"])
        .args([
            "-t",
            "set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,zpopmin,lrange_100,mset",
        ])
        .output()
        .expect("redis-benchmark not found: apt-get install redis-tools");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "redis-benchmark failed: {stderr}");
    assert!(!stderr.to_lowercase().contains("error"), "errors: {stderr}");
    for t in [
        "SET",
        "GET",
        "INCR",
        "LPUSH",
        "RPUSH",
        "LPOP",
        "RPOP",
        "SADD",
        "HSET",
        "SPOP",
        "ZADD",
        "ZPOPMIN",
        "LRANGE_100",
        "MSET",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("\"{t}"))),
            "no result for {t}: {stdout}"
        );
    }
}

#[test]
fn both_runtime_shapes_serve_many_connections() {
    let cluster = Cluster::start();
    for shape in ["per-core", "work-stealing"] {
        let proxy = Proxy::start(
            &cluster.nodes(),
            &["--runtime", shape, "--worker-threads", "2"],
        );
        // Enough connections that SO_REUSEPORT spreads them over both per-core workers.
        let mut conns: Vec<redis::Connection> = (0..16).map(|_| proxy.client()).collect();
        for (i, c) in conns.iter_mut().enumerate() {
            let _: () = c.set(format!("{shape}:{i}"), i).unwrap();
        }
        for (i, c) in conns.iter_mut().enumerate() {
            let keys: Vec<String> = (0..16).map(|j| format!("{shape}:{j}")).collect();
            let vals: Vec<usize> = redis::cmd("MGET").arg(&keys).query(c).unwrap();
            assert_eq!(vals, (0..16).collect::<Vec<_>>(), "{shape} connection {i}");
        }
        let clients: String = redis::cmd("INFO")
            .arg("clients")
            .query(&mut conns[0])
            .unwrap();
        assert!(
            clients.contains("connected_clients:16"),
            "{shape}: {clients}"
        );
    }
}

#[test]
fn a_password_guards_the_proxy_like_requirepass() {
    let cluster = Cluster::start();
    // The harness's readiness probe cannot AUTH, so wait for PING only.
    let proxy = Proxy::start_unready(&cluster.nodes(), &["--password", "s3cret"]);
    let mut s = TcpStream::connect(proxy.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut exchange = |req: &str, want: &str| {
        s.write_all(req.as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while got.len() < want.len() {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(String::from_utf8_lossy(&got), want, "for {req:?}");
    };
    exchange("GET k\r\n", "-NOAUTH Authentication required.\r\n");
    exchange(
        "AUTH wrong\r\n",
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    exchange(
        "AUTH someone s3cret\r\n",
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    exchange("AUTH s3cret\r\n", "+OK\r\n");
    // Routed once authenticated (retry while the topology loads).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut c = redis::Client::open(format!("redis://:s3cret@{}", proxy.addr()))
        .unwrap()
        .get_connection()
        .unwrap();
    loop {
        match c.set::<_, _, ()>("pw-key", "v") {
            Ok(()) => break,
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let v: String = c.get("pw-key").unwrap();
    assert_eq!(v, "v");
    // HELLO 3 with AUTH inside, as modern clients connect.
    let mut h = TcpStream::connect(proxy.addr()).unwrap();
    h.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    h.write_all(b"HELLO 3 AUTH default s3cret\r\nGET pw-key\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"$1\r\nv\r\n") {
        let n = h.read(&mut buf).unwrap();
        assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"%7\r\n"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}
