//! Metrics, checked end to end by a real Prometheus: a proxy in front of a real cluster serves
//! `/metrics`; a Prometheus (Debian's `prometheus` package) scrapes it every second; the test
//! sends known traffic and reads the counters back through Prometheus's query API. It also runs
//! `promtool check metrics` on the exposition, and every query of every panel of
//! `dashboards/slotproxy.json` against that Prometheus.
mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};
use support::proxy::http_get;

const GETS: usize = 500;
const SETS: usize = 200;
const INCR_ERRORS: usize = 5;
const WRONGTYPE_ERRORS: usize = 3;

/// A binary from Debian's `prometheus` package; fails the test, saying how to install it.
fn prometheus_tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found: apt-get install prometheus"))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server scraping one target every second, in a temp dir; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("slotproxy-prometheus-")
            .tempdir()
            .expect("temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: slotproxy\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("writing prometheus.yml");
        let addr = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new(prometheus_tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawning prometheus");
        let mut p = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited early ({status}):\n{}", p.log());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && http_get(addr, "/-/ready").0 == 200
            {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                p.log()
            );
            sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query; `Err` carries Prometheus's error for a query it rejects.
    fn query(&self, promql: &str) -> Result<QueryResult, String> {
        let (status, body) = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", url_encode(promql)),
        );
        if status != 200 || !body.contains(r#""status":"success""#) {
            return Err(format!("HTTP {status}: {body}"));
        }
        Ok(QueryResult { body })
    }

    /// The single value `promql` evaluates to, once it does (waits for scrapes, up to 30 s).
    fn value(&self, promql: &str) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self
                .query(promql)
                .unwrap_or_else(|e| panic!("{promql}: {e}"));
            if let Some(v) = r.first_value() {
                return v;
            }
            assert!(Instant::now() < deadline, "{promql}: no data: {}", r.body);
            sleep(Duration::from_millis(250));
        }
    }

    /// Waits until `promql` evaluates to `want` (counters reach a value at the next scrape).
    fn wait_for(&self, promql: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.value(promql);
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{promql} = {got}, want {want}");
            sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JSON text of a successful query, read just enough for these checks.
struct QueryResult {
    body: String,
}

impl QueryResult {
    fn is_empty(&self) -> bool {
        self.body.contains(r#""result":[]"#)
    }

    /// The first sample's value: a vector's `"value":[<time>,"<v>"]` or a scalar's
    /// `"result":[<time>,"<v>"]`.
    fn first_value(&self) -> Option<f64> {
        let at = self.body.find(r#""value":["#).map(|i| i + 9).or_else(|| {
            self.body
                .contains(r#""resultType":"scalar""#)
                .then(|| self.body.find(r#""result":["#).map(|i| i + 10))
                .flatten()
        })?;
        let rest = &self.body[at..];
        let quoted = &rest[rest.find(",\"")? + 2..];
        let v = &quoted[..quoted.find('"')?];
        match v {
            "NaN" => Some(f64::NAN),
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            _ => v.parse().ok(),
        }
    }
}

/// Every `"expr"` string in a Grafana dashboard's JSON, unescaped.
fn dashboard_exprs(json: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = json;
    while let Some(i) = rest.find(r#""expr""#) {
        rest = &rest[i + 6..];
        let Some(open) = rest.find('"') else { break };
        rest = &rest[open + 1..];
        let mut s = String::new();
        let mut chars = rest.char_indices();
        let mut end = rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    end = i;
                    break;
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => s.push('\n'),
                    Some((_, 't')) => s.push('\t'),
                    Some((_, 'u')) => {
                        let hex: String =
                            (0..4).filter_map(|_| chars.next()).map(|c| c.1).collect();
                        let c = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                        s.push(c.unwrap_or('\u{fffd}'));
                    }
                    Some((_, c)) => s.push(c),
                    None => break,
                },
                c => s.push(c),
            }
        }
        out.push(s);
        rest = &rest[end..];
    }
    out
}

fn promtool_check(metrics: &str) {
    let mut child = Command::new(prometheus_tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("feeding promtool");
    let out = child.wait_with_output().expect("promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics: {}\n{report}",
        out.status
    );
}

/// The value of the sample `series` (exact name and labels) in an exposition, 0 if absent.
fn exposed(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

fn cluster_cmd(node: &mut redis::Connection, args: &[&str]) -> String {
    let mut cmd = redis::cmd("CLUSTER");
    for a in args {
        cmd.arg(*a);
    }
    match cmd.query::<redis::Value>(node).expect("CLUSTER command") {
        redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        other => format!("{other:?}"),
    }
}

/// Moves an empty slot from its master to another by hand, so that one STRLEN through the proxy
/// meets `-ASK` (while the slot is migrating) and one meets `-MOVED` (after, with the proxy's
/// topology not yet refreshed). The proxy follows both; the client sees neither.
fn redirect_once_each(cluster: &support::Cluster, proxy: &mut redis::Connection) {
    let key = "{metrics-redirect}k";
    let slot = slotproxy::cluster::slot::key_slot(key.as_bytes()).0;
    let source = cluster.master_of_slot(slot);
    let target = *cluster
        .masters()
        .iter()
        .find(|m| **m != source)
        .expect("another master");
    let (mut src, mut tgt) = (cluster.client(source), cluster.client(target));
    let src_id = cluster_cmd(&mut src, &["MYID"]);
    let tgt_id = cluster_cmd(&mut tgt, &["MYID"]);
    let slot = slot.to_string();
    cluster_cmd(&mut tgt, &["SETSLOT", &slot, "IMPORTING", &src_id]);
    cluster_cmd(&mut src, &["SETSLOT", &slot, "MIGRATING", &tgt_id]);
    let strlen = |c: &mut redis::Connection| -> i64 {
        redis::cmd("STRLEN").arg(key).query(c).expect("STRLEN")
    };
    assert_eq!(strlen(proxy), 0, "answered by the target after ASK");
    cluster_cmd(&mut tgt, &["SETSLOT", &slot, "NODE", &tgt_id]);
    cluster_cmd(&mut src, &["SETSLOT", &slot, "NODE", &tgt_id]);
    assert_eq!(strlen(proxy), 0, "answered by the target after MOVED");
}

#[test]
fn prometheus_sees_the_traffic_sent_and_every_dashboard_query_has_data() {
    let cluster = support::Cluster::start();
    let metrics_addr = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    // No timer refresh during the test: the MOVED below must meet the proxy's old topology.
    let config = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(config.path(), "refresh_interval_ms = 600000\n").expect("writing config");
    let proxy = support::Proxy::start(
        &cluster.nodes(),
        &[
            "--metrics-listen",
            &metrics_addr.to_string(),
            "--config",
            &config.path().display().to_string(),
            // Two per-core workers, each with its own topology refresher (see below).
            "--worker-threads",
            "2",
        ],
    );

    // Health endpoints: alive, and ready once the topology covers every slot (it does: the
    // harness waited for the proxy to serve a SET).
    assert_eq!(http_get(metrics_addr, "/healthz").0, 200);
    assert_eq!(
        http_get(metrics_addr, "/readyz"),
        (200, "ready\n".to_string())
    );
    let (status, before) = http_get(metrics_addr, "/metrics");
    assert_eq!(status, 200);
    // The harness's readiness probe sent a SET or more: count from here.
    let sets_before = exposed(&before, r#"slotproxy_commands_total{command="set"}"#);
    assert_eq!(
        exposed(&before, r#"slotproxy_commands_total{command="get"}"#),
        0.0
    );

    let prometheus = Prometheus::start(metrics_addr);

    let mut con = proxy.client();
    for i in 0..SETS {
        let _: () = redis::cmd("SET")
            .arg(format!("key:{i}"))
            .arg(i)
            .query(&mut con)
            .expect("SET");
    }
    for i in 0..GETS {
        let _: Option<String> = redis::cmd("GET")
            .arg(format!("key:{}", i % (SETS + 50)))
            .query(&mut con)
            .expect("GET");
    }
    let _: () = redis::cmd("SET")
        .arg("a-string")
        .arg("x")
        .query(&mut con)
        .expect("SET");
    for _ in 0..INCR_ERRORS {
        let r: redis::RedisResult<i64> = redis::cmd("INCR").arg("a-string").query(&mut con);
        assert!(r.is_err(), "INCR on a non-number fails");
    }
    for _ in 0..WRONGTYPE_ERRORS {
        let r: redis::RedisResult<i64> =
            redis::cmd("LPUSH").arg("a-string").arg("v").query(&mut con);
        assert!(r.is_err(), "LPUSH on a string fails");
    }
    let mut second = proxy.client();
    let _: String = redis::cmd("PING").query(&mut second).expect("PING");
    redirect_once_each(&cluster, &mut con);

    let q = |sel: &str| format!("sum({sel})");
    prometheus.wait_for(r#"slotproxy_commands_total{command="get"}"#, GETS as f64);
    prometheus.wait_for(
        r#"slotproxy_commands_total{command="set"}"#,
        sets_before + SETS as f64 + 1.0,
    );
    prometheus.wait_for(
        r#"slotproxy_command_duration_seconds_count{command="get"}"#,
        GETS as f64,
    );
    prometheus.wait_for(
        r#"slotproxy_command_errors_total{command="incr",kind="ERR"}"#,
        INCR_ERRORS as f64,
    );
    prometheus.wait_for(
        r#"slotproxy_command_errors_total{command="lpush",kind="WRONGTYPE"}"#,
        WRONGTYPE_ERRORS as f64,
    );
    prometheus.wait_for(
        r#"sum(slotproxy_command_errors_total{command="get"}) or vector(0)"#,
        0.0,
    );
    prometheus.wait_for("slotproxy_cluster_slots_covered", 16384.0);
    prometheus.wait_for(&q("slotproxy_cluster_nodes"), 6.0);

    prometheus.wait_for(r#"slotproxy_cluster_nodes{role="master",state="ok"}"#, 3.0);
    prometheus.wait_for("slotproxy_commands_in_flight", 0.0);
    prometheus.wait_for("slotproxy_client_connections", 2.0);
    // One startup refresh per worker: each per-core worker keeps its own view.
    prometheus.wait_for(
        r#"slotproxy_topology_refreshes_total{trigger="startup",result="updated"}"#,
        2.0,
    );
    prometheus.wait_for(r#"slotproxy_build_info{version!=""}"#, 1.0);
    prometheus.wait_for("up", 1.0);
    prometheus.wait_for(r#"slotproxy_commands_total{command="strlen"}"#, 2.0);
    for series in [
        r#"slotproxy_redirections_total{type="ask"}"#,
        r#"slotproxy_redirections_total{type="moved"}"#,
        r#"slotproxy_retries_total{reason="ask"}"#,
        r#"slotproxy_retries_total{reason="moved"}"#,
        r#"sum(slotproxy_topology_refreshes_total{trigger="moved"})"#,
    ] {
        prometheus.wait_for(&format!("{series} >= bool 1"), 1.0);
    }
    // Every GET, SET, INCR and LPUSH went to a master over a shared connection.
    let backend = prometheus.value(&q(r#"slotproxy_backend_requests_total{role="master"}"#));
    let forwarded = (GETS + SETS + 1 + INCR_ERRORS + WRONGTYPE_ERRORS) as f64 + sets_before;
    assert!(
        backend >= forwarded,
        "backend requests {backend} < {forwarded}"
    );
    assert_eq!(
        prometheus.value(&q("slotproxy_backend_request_duration_seconds_count")),
        prometheus.value(&q("slotproxy_backend_requests_total")),
    );
    assert!(prometheus.value("slotproxy_client_received_bytes_total") > 0.0);
    assert!(prometheus.value("slotproxy_client_sent_bytes_total") > 0.0);
    assert!(prometheus.value(&q("slotproxy_client_connections_total")) >= 3.0);
    assert!(prometheus.value("process_resident_memory_bytes") > 0.0);
    assert!(prometheus.value("process_open_fds") > 0.0);

    let (_, exposition) = http_get(metrics_addr, "/metrics");
    promtool_check(&exposition);

    // Every panel query of the dashboard, as Grafana would send it for this instance.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard = std::fs::read_to_string(root.join("dashboards/slotproxy.json"))
        .expect("reading dashboards/slotproxy.json");
    let instance = metrics_addr.to_string();
    let (_, values) = http_get(
        prometheus.addr,
        &format!(
            "/api/v1/label/instance/values?match[]={}",
            url_encode("slotproxy_build_info")
        ),
    );
    assert!(
        values.contains(&format!("\"{instance}\"")),
        "the instance variable's query finds {instance}: {values}"
    );
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() >= 30, "dashboard queries: {}", exprs.len());
    let deadline = Instant::now() + Duration::from_secs(30);
    for expr in &exprs {
        let promql = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", &instance);
        loop {
            let r = prometheus
                .query(&promql)
                .unwrap_or_else(|e| panic!("dashboard query {expr}\nfails: {e}"));
            if !r.is_empty() {
                break;
            }
            // A rate needs two scrapes of a series; wait for them, within bounds.
            assert!(
                Instant::now() < deadline,
                "dashboard query {expr}\nreturns no data: {}",
                r.body
            );
            sleep(Duration::from_millis(250));
        }
    }
    drop(prometheus);
    drop(proxy);
    drop(cluster);
}
