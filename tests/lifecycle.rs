//! The proxy's lifecycle against a real cluster: SIGHUP reloads the config file, `/readyz` and
//! the cluster gauges follow what the proxy can reach, SIGTERM drains, start-up errors exit 1,
//! and the logs suit files and log collectors.
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};
use support::proxy::http_get;
use support::{free_port, Cluster, Proxy};

/// The value of one exposed series (`name{labels}`), if present.
fn exposed(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after `limit` with `what`.
fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(200));
    }
}

fn write_config(path: &Path, seeds: &[SocketAddr], extra: &str) {
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    std::fs::write(path, format!("seeds = [{}]\n{extra}", seeds.join(", "))).unwrap();
}

fn client_with(addr: SocketAddr, password: &str) -> redis::RedisResult<redis::Connection> {
    let mut con = redis::Client::open(format!("redis://{addr}/"))?
        .get_connection_with_timeout(Duration::from_secs(5))?;
    redis::cmd("AUTH").arg(password).query::<String>(&mut con)?;
    Ok(con)
}

fn info_read_from(con: &mut redis::Connection) -> String {
    let info: String = redis::cmd("INFO").arg("proxy").query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("read_from:"))
        .unwrap_or("")
        .trim()
        .to_string()
}

#[test]
fn sighup_reloads_read_policy_and_password_without_dropping_clients() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("slotproxy.toml");
    write_config(
        &conf,
        &cluster.nodes(),
        "password = \"old-secret\"\nread_from = \"master\"\n",
    );
    let conf_arg = conf.to_str().unwrap();
    let proxy = Proxy::start_unready(&[], &["--config", conf_arg, "--worker-threads", "2"]);
    let mut kept = wait_for(Duration::from_secs(20), "the proxy to serve", || {
        let mut c = client_with(proxy.addr(), "old-secret").ok()?;
        redis::cmd("SET")
            .arg("reload-key")
            .arg("v1")
            .query::<()>(&mut c)
            .ok()?;
        Some(c)
    });
    assert_eq!(info_read_from(&mut kept), "Master");

    write_config(
        &conf,
        &cluster.nodes(),
        "password = \"new-secret\"\nread_from = \"replica\"\n",
    );
    proxy.signal("HUP");
    wait_for(
        Duration::from_secs(10),
        "read_from to become Replica",
        || (info_read_from(&mut kept) == "Replica").then_some(()),
    );
    // The client connected across the reload keeps working.
    let got: String = redis::cmd("GET")
        .arg("reload-key")
        .query(&mut kept)
        .unwrap();
    assert_eq!(got, "v1");
    // A new client needs the new password.
    let old = client_with(proxy.addr(), "old-secret");
    assert!(
        old.is_err(),
        "the old password still works after the reload"
    );
    let mut fresh = client_with(proxy.addr(), "new-secret").expect("the new password works");
    redis::cmd("SET")
        .arg("reload-key")
        .arg("v2")
        .query::<()>(&mut fresh)
        .unwrap();

    // An invalid file is refused: the process keeps serving with the config it had.
    std::fs::write(&conf, "seeds = []\nread_from = \"sometimes\"\n").unwrap();
    proxy.signal("HUP");
    wait_for(Duration::from_secs(10), "the refusal in the log", || {
        proxy.log().contains("reload refused").then_some(())
    });
    let log = proxy.log();
    let refusal = log.lines().find(|l| l.contains("reload refused")).unwrap();
    assert!(
        refusal.contains("read_from"),
        "the refusal names the problem: {refusal}"
    );
    assert_eq!(info_read_from(&mut kept), "Replica");
    let got: String = redis::cmd("GET")
        .arg("reload-key")
        .query(&mut kept)
        .unwrap();
    assert_eq!(got, "v2");
    assert!(client_with(proxy.addr(), "new-secret").is_ok());

    // A change that needs a restart is named, and the rest still applies.
    write_config(
        &conf,
        &cluster.nodes(),
        "password = \"new-secret\"\nread_from = \"master\"\nbackend_connections = 2\n",
    );
    proxy.signal("HUP");
    wait_for(Duration::from_secs(10), "read_from back to Master", || {
        (info_read_from(&mut kept) == "Master").then_some(())
    });
    assert!(
        proxy
            .log()
            .contains("backend_connections changed but only take effect after a restart"),
        "{}",
        proxy.log_tail(10)
    );
}

#[test]
fn readyz_and_gauges_follow_what_the_proxy_can_reach() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("slotproxy.toml");
    write_config(&conf, &cluster.nodes(), "refresh_interval_ms = 500\n");
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = Proxy::start(
        &[],
        &[
            "--config",
            conf.to_str().unwrap(),
            "--metrics-listen",
            &metrics.to_string(),
            "--worker-threads",
            "2",
        ],
    );
    wait_for(Duration::from_secs(10), "/readyz 200", || {
        (http_get(metrics, "/readyz").0 == 200).then_some(())
    });
    let covered = r#"slotproxy_cluster_slots_covered"#;
    let masters_ok = r#"slotproxy_cluster_nodes{role="master",state="ok"}"#;
    let (_, m) = http_get(metrics, "/metrics");
    assert_eq!(exposed(&m, covered), Some(16384.0));
    assert_eq!(exposed(&m, masters_ok), Some(3.0));

    // Timer refreshes that change nothing log nothing (four intervals here).
    sleep(Duration::from_secs(2));
    let quiet = proxy.log();
    assert!(
        !quiet.contains("trigger=\"timer\""),
        "a timer refresh logged:\n{quiet}"
    );

    for node in cluster.nodes() {
        cluster.kill(node);
    }
    let why = wait_for(
        Duration::from_secs(15),
        "/readyz 503 with every node stopped",
        || {
            let (status, body) = http_get(metrics, "/readyz");
            (status == 503).then_some(body)
        },
    );
    assert!(why.starts_with("not ready: "), "{why}");
    assert_eq!(why.trim().lines().count(), 1, "one line: {why}");
    wait_for(Duration::from_secs(15), "the gauges to drop", || {
        let (_, m) = http_get(metrics, "/metrics");
        (exposed(&m, covered) == Some(0.0) && exposed(&m, masters_ok) == Some(0.0)).then_some(())
    });
    assert_eq!(
        http_get(metrics, "/healthz").0,
        200,
        "the process still serves"
    );
    let log = proxy.log();
    let unreachable = log.lines().filter(|l| l.contains("unreachable")).count();
    assert!(
        (1..=6).contains(&unreachable),
        "one WARN per node going down, not one per attempt ({unreachable}):\n{}",
        proxy.log_tail(30)
    );

    for node in cluster.nodes() {
        cluster.restart(node);
    }
    cluster.wait_ok();
    wait_for(
        Duration::from_secs(30),
        "/readyz 200 after the restart",
        || (http_get(metrics, "/readyz").0 == 200).then_some(()),
    );
    let (_, m) = http_get(metrics, "/metrics");
    assert_eq!(exposed(&m, covered), Some(16384.0));
    assert_eq!(exposed(&m, masters_ok), Some(3.0));
    let log = proxy.log();
    assert!(log.contains("reachable again"));
    // The WARN names the node's id and role, once per outage, with the repeats counted.
    assert!(
        log.contains(", master) unreachable: "),
        "unreachable WARN without id and role:\n{}",
        proxy.log_tail(30)
    );
    assert!(log.contains("more failures after the first were not logged"));
}

/// Reads one RESP reply (enough of RESP2 for these tests); `None` on EOF.
fn read_reply(r: &mut impl std::io::BufRead) -> Option<String> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let line = line.trim_end().to_string();
    match line.as_bytes().first()? {
        b'$' => {
            let n: i64 = line[1..].parse().ok()?;
            if n < 0 {
                return Some("(nil)".into());
            }
            let mut buf = vec![0; n as usize + 2];
            r.read_exact(&mut buf).ok()?;
            Some(String::from_utf8_lossy(&buf[..n as usize]).into_owned())
        }
        b'*' => {
            let n: i64 = line[1..].parse().ok()?;
            let mut parts = Vec::new();
            for _ in 0..n.max(0) {
                parts.push(read_reply(r)?);
            }
            Some(if n < 0 {
                "(nil)".into()
            } else {
                parts.join(" ")
            })
        }
        _ => Some(line),
    }
}

#[test]
fn sigterm_drains_answers_in_flight_requests_and_exits_0() {
    let cluster = Cluster::start();
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut proxy = Proxy::start(
        &cluster.nodes(),
        &[
            "--metrics-listen",
            &metrics.to_string(),
            "--shutdown-grace-ms",
            "4000",
            "--worker-threads",
            "2",
        ],
    );
    // A client blocked for good: closed at the deadline.
    let mut blocked = TcpStream::connect(proxy.addr()).unwrap();
    blocked.write_all(b"BLPOP drain:never 0\r\n").unwrap();
    // A pipelined client: a 1 s BLPOP is in flight when the signal comes, and 500 SETs after
    // it wait for it; every one must be answered.
    let mut piped = TcpStream::connect(proxy.addr()).unwrap();
    let mut batch = String::from("BLPOP drain:empty 1\r\n");
    for i in 0..500 {
        batch.push_str(&format!("SET drain:{i} {i}\r\n"));
    }
    piped.write_all(batch.as_bytes()).unwrap();
    sleep(Duration::from_millis(200));
    proxy.signal("TERM");

    wait_for(Duration::from_secs(3), "/readyz 503 while draining", || {
        let (status, body) = http_get(metrics, "/readyz");
        (status == 503 && body.contains("shutting down")).then_some(())
    });
    piped
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = std::io::BufReader::new(piped);
    assert_eq!(
        read_reply(&mut reader).as_deref(),
        Some("(nil)"),
        "the BLPOP"
    );
    for i in 0..500 {
        assert_eq!(
            read_reply(&mut reader).as_deref(),
            Some("+OK"),
            "SET number {i}"
        );
    }
    assert_eq!(read_reply(&mut reader), None, "closed after its replies");
    // The listener is closed.
    assert!(TcpStream::connect_timeout(&proxy.addr(), Duration::from_secs(1)).is_err());

    blocked
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let closed_at = blocked.read_to_end(&mut rest);
    assert!(
        closed_at.is_ok(),
        "the blocked client is closed: {closed_at:?}"
    );
    let status = proxy
        .wait_exit(Duration::from_secs(10))
        .expect("the proxy exits");
    assert_eq!(status.code(), Some(0), "{}", proxy.log_tail(20));
}

#[test]
fn a_busy_metrics_port_exits_1_with_the_message() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_slotproxy"))
        .args(["serve", "--seed", "127.0.0.1:1", "--worker-threads", "2"])
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--metrics-listen")
        .arg(busy_addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        sleep(Duration::from_millis(50));
    };
    let status = status.expect("slotproxy hung on a busy metrics port");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains(&format!("cannot listen for metrics on {busy_addr}")),
        "stderr: {err}"
    );
}

#[test]
fn logs_have_no_colour_off_a_terminal_and_can_be_json() {
    // No cluster: the seed refuses connections, so the proxy logs warnings.
    let seed = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let one = ["--worker-threads", "1"];
    let text = Proxy::start_unready(&[seed], &one);
    let json = Proxy::start_unready(&[seed], &[&one[..], &["--log-format", "json"]].concat());
    sleep(Duration::from_secs(2));
    let log = text.log();
    assert!(!log.contains('\u{1b}'), "ANSI codes in a file: {log}");
    assert!(log.contains("WARN"), "{log}");
    let failures = log.matches("topology refresh failed").count();
    assert_eq!(failures, 1, "one WARN, not one per attempt:\n{log}");
    let json_log = json.log();
    // The `slotproxy ready ...` lines on stdout are for scripts, not log lines.
    let lines: Vec<&str> = json_log
        .lines()
        .filter(|l| !l.starts_with("slotproxy "))
        .collect();
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(
            l.starts_with("{\"ts\":\"") && l.ends_with('}') && l.contains("\"level\":"),
            "not a JSON log line: {l}"
        );
    }
    assert!(lines.iter().any(|l| l.contains("\"level\":\"WARN\"")));
}

#[test]
fn the_systemd_unit_verifies_and_outlasts_the_drain() {
    let unit_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/slotproxy.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("{key} missing from the unit"))
            .trim()
            .to_string()
    };
    assert_eq!(
        value("ExecStart"),
        "/usr/local/bin/slotproxy serve --config /etc/slotproxy/slotproxy.toml"
    );
    assert_eq!(value("ExecReload"), "/bin/kill -HUP $MAINPID");
    let stop: u64 = value("TimeoutStopSec").parse().unwrap();
    let grace = slotproxy::config::Config::default().shutdown_grace;
    assert!(
        stop > grace.as_secs(),
        "the stop timeout must outlast the drain"
    );
    for (key, want) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
    ] {
        assert_eq!(value(key), want);
    }
    // systemd-analyze checks the unit against the binary built here (.ci/run installs it).
    let analyze = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        analyze.is_ok(),
        "systemd-analyze not found: install systemd (apt-get install systemd)"
    );
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("slotproxy.service");
    std::fs::write(
        &local,
        unit.replace("/usr/local/bin/slotproxy", env!("CARGO_BIN_EXE_slotproxy")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&local)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
}
