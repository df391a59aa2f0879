use super::*;
use crate::backend::NoEvents;
use crate::backend::NodeObserver;
use crate::cluster::refresher::NoObserver;
use crate::cluster::topology::Topology;
use crate::config::Config;
use crate::proxy::Proxy;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn table() -> CommandTable {
    CommandTable::fallback()
}

fn id_of(t: &CommandTable, name: &str) -> CommandId {
    t.iter().find(|c| c.name == name).expect("known").id
}

/// The exposition lines (no comments) of `text` that start with `prefix`.
fn lines<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
        .collect()
}

fn rendered(m: &Metrics) -> String {
    String::from_utf8(m.encode()).expect("utf-8")
}

#[test]
fn error_kinds_come_from_the_first_word() {
    assert_eq!(ErrorKind::of_reply(b"+OK\r\n"), None);
    assert_eq!(ErrorKind::of_reply(b"$-1\r\n"), None);
    assert_eq!(
        ErrorKind::of_reply(b"-ERR unknown command\r\n"),
        Some(ErrorKind::Err)
    );
    assert_eq!(
        ErrorKind::of_reply(b"-MOVED 12 127.0.0.1:7001\r\n"),
        Some(ErrorKind::Moved)
    );
    assert_eq!(
        ErrorKind::of_reply(b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"),
        Some(ErrorKind::CrossSlot)
    );
    assert_eq!(
        ErrorKind::of_reply(b"-WRONGTYPE Operation\r\n"),
        Some(ErrorKind::WrongType)
    );
    assert_eq!(
        ErrorKind::of_reply(b"-MYMODULE says no\r\n"),
        Some(ErrorKind::Other)
    );
    assert_eq!(ErrorKind::of_reply(b"-\r\n"), Some(ErrorKind::Other));
    assert_eq!(
        ErrorKind::of_reply(b"!21\r\nSYNTAX invalid syntax\r\n"),
        Some(ErrorKind::Other)
    );
    assert_eq!(
        ErrorKind::of_reply(b"!9\r\nNOAUTH no\r\n"),
        Some(ErrorKind::NoAuth)
    );
}

#[test]
fn commands_are_counted_under_their_top_level_name() {
    let t = table();
    let m = Metrics::new(&t).expect("valid metrics");
    let before = stats::in_flight();
    for (name, reply) in [
        ("get", &b"$1\r\nx\r\n"[..]),
        ("get", b"$-1\r\n"),
        ("set", b"+OK\r\n"),
        ("client|setname", b"+OK\r\n"),
        ("incr", b"-WRONGTYPE Operation against a key\r\n"),
    ] {
        let mut timed = Timed::start(Instant::now());
        timed.set_command(id_of(&t, name));
        m.command_done(timed, reply);
    }
    let unknown = Timed::start(Instant::now());
    assert_eq!(stats::in_flight(), before + 1);
    m.command_done(unknown, b"-ERR unknown command 'foo'\r\n");
    drop(Timed::start(Instant::now())); // a client gone before its reply: no longer in flight
    assert_eq!(stats::in_flight(), before);

    let text = rendered(&m);
    let total = lines(&text, "slotproxy_commands_total");
    assert!(total.contains(&r#"slotproxy_commands_total{command="get"} 2"#));
    assert!(total.contains(&r#"slotproxy_commands_total{command="client"} 1"#));
    assert!(total.contains(&r#"slotproxy_commands_total{command="other"} 1"#));
    assert_eq!(total.len(), 5, "only commands seen are listed: {total:?}");
    let errors = lines(&text, "slotproxy_command_errors_total");
    assert_eq!(
        errors,
        [
            r#"slotproxy_command_errors_total{command="incr",kind="WRONGTYPE"} 1"#,
            r#"slotproxy_command_errors_total{command="other",kind="ERR"} 1"#,
        ]
    );
    assert!(text.contains(r#"slotproxy_command_duration_seconds_count{command="get"} 2"#));
    assert!(
        text.contains(r#"slotproxy_command_duration_seconds_bucket{command="get",le="+Inf"} 2"#)
    );
    assert!(text.contains("# TYPE slotproxy_command_duration_seconds histogram"));
    assert!(text.contains(r#"slotproxy_build_info{version=""#));
}

#[test]
fn every_command_id_maps_to_a_top_level_entry() {
    let t = table();
    let m = Metrics::new(&t).expect("valid metrics");
    let top: Vec<&str> = t.top_level().map(|c| c.name.as_str()).collect();
    assert_eq!(m.commands.len(), top.len());
    for info in t.iter() {
        let e = m.command_entry(info.id);
        let want = info.parent.map_or(info.id, |p| p);
        assert!(std::ptr::eq(e, m.command_entry(want)), "{}", info.name);
    }
    assert!(std::ptr::eq(
        m.command_entry(CommandId::UNKNOWN),
        &m.other_command
    ));
}

#[test]
fn nodes_retries_and_refreshes() {
    let m = Arc::new(Metrics::new(&table()).expect("valid metrics"));
    let (events, observer) = m.observe(Arc::new(NoEvents), Box::new(NoObserver));
    let a: SocketAddr = "127.0.0.1:7001".parse().expect("addr");
    let b: SocketAddr = "127.0.0.1:7002".parse().expect("addr");
    let stats = events.node_stats(a).expect("metrics give node stats");
    assert!(
        std::ptr::addr_eq(Arc::as_ptr(&stats), Arc::as_ptr(&m.node(a))),
        "resolved once, then shared"
    );
    events.connected(a, true);
    events.connected(a, true);
    events.connected(a, false);
    events.failed(b, BackendError::Connect);
    stats.observe(stats.role(), Duration::from_micros(300));
    stats.observe(Role::Replica, Duration::from_millis(2));
    m.retry(RetryReason::Moved);
    m.retry(RetryReason::Moved);
    m.retry(RetryReason::TryAgain);
    m.auth_failed();

    let nodes = "07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-16383\n\
                 e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:7002@17002 slave 07c37dfeb235213a872192d90877d0cd55635b91 0 0 1 connected\n";
    let view = View {
        topology: Topology::from_cluster_nodes(nodes, a).expect("parses"),
        backends: Vec::new(),
    };
    observer.refreshed(
        Trigger::Startup,
        Outcome::Updated,
        Duration::from_millis(3),
        &view,
    );
    assert_eq!(m.node(b).role(), Role::Replica);

    let text = rendered(&m);
    for want in [
        r#"slotproxy_backend_connections{node="127.0.0.1:7001"} 1"#,
        r#"slotproxy_backend_connection_errors_total{error="connect",node="127.0.0.1:7002"} 1"#,
        r#"slotproxy_backend_connection_errors_total{error="lost",node="127.0.0.1:7001"} 0"#,
        r#"slotproxy_backend_requests_total{node="127.0.0.1:7001",role="master"} 1"#,
        r#"slotproxy_backend_requests_total{node="127.0.0.1:7001",role="replica"} 1"#,
        r#"slotproxy_backend_request_duration_seconds_count{node="127.0.0.1:7001",role="master"} 1"#,
        r#"slotproxy_redirections_total{type="moved"} 2"#,
        r#"slotproxy_redirections_total{type="ask"} 0"#,
        r#"slotproxy_retries_total{reason="moved"} 2"#,
        r#"slotproxy_retries_total{reason="tryagain"} 1"#,
        r#"slotproxy_retries_total{reason="connect"} 0"#,
        r#"slotproxy_topology_refreshes_total{result="updated",trigger="startup"} 1"#,
        r#"slotproxy_topology_refreshes_total{result="failed",trigger="timer"} 0"#,
        "slotproxy_topology_refresh_duration_seconds_count 1",
        "slotproxy_auth_failures_total 1",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(text.contains(want), "missing {want}");
    }
    // Bounded labels: nothing but the names listed here.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(labels) = line.split_once('{').map(|(_, rest)| rest) else {
            continue;
        };
        let labels = labels.split('}').next().unwrap_or("");
        for pair in labels.split(',') {
            let name = pair.split('=').next().unwrap_or("");
            assert!(
                [
                    "command", "kind", "node", "role", "error", "type", "reason", "trigger",
                    "result", "state", "version", "le"
                ]
                .contains(&name),
                "unexpected label {name} in {line}"
            );
        }
    }
}

/// A proxy that never started its refresher: an empty topology.
fn idle_proxy(metrics: &Arc<Metrics>) -> Arc<Proxy> {
    Arc::new(Proxy::idle(Config::default(), table()).with_metrics(Some(metrics.clone())))
}

async fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}

#[tokio::test]
async fn http_routes() {
    let m = Arc::new(Metrics::new(&table()).expect("valid metrics"));
    let proxy = idle_proxy(&m);
    let listener = http::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(http::serve(listener, proxy, m));

    let r = http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(r.contains("Content-Type: text/plain; version=0.0.4"));
    assert!(r.contains("Connection: close\r\n"));
    assert!(r.contains("\nslotproxy_cluster_slots_covered 0\n"));
    let (head, body) = r.split_once("\r\n\r\n").expect("head and body");
    assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));

    let r = http(addr, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert!(
        r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("ok\n"),
        "{r}"
    );
    let r = http(addr, b"GET /readyz?verbose=1 HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
    assert!(r.ends_with("not ready: no topology loaded yet\n"), "{r}");
    let r = http(addr, b"GET /nope HTTP/1.1\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
    let r = http(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
    assert!(r.contains("Allow: GET\r\n"));
    let r = http(addr, b"garbage\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");
    let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 10_000));
    let r = http(addr, &big).await;
    assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
}
