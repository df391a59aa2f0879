//! A real `slotproxy serve` process for tests, on a port picked at run time, killed on drop.
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{connect, free_port};

/// A `slotproxy serve` process in front of some seeds; killed on drop.
pub struct Proxy {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

impl Proxy {
    /// Spawns `slotproxy serve --listen 127.0.0.1:<free port> --seed <a> ... <extra_args>` and
    /// waits (up to 20 s) until it answers `PING` and can `SET` (its topology is loaded).
    pub fn start(seeds: &[SocketAddr], extra_args: &[&str]) -> Proxy {
        Proxy::spawn(seeds, extra_args, true)
    }

    /// Like [`Proxy::start`], but ready as soon as it answers `PING` (for a proxy whose cluster
    /// is not reachable yet).
    pub fn start_unready(seeds: &[SocketAddr], extra_args: &[&str]) -> Proxy {
        Proxy::spawn(seeds, extra_args, false)
    }

    fn spawn(seeds: &[SocketAddr], extra_args: &[&str], need_topology: bool) -> Proxy {
        let mut failure = String::new();
        // Retry on another port if the chosen one was taken between picking and binding.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("slotproxy-proxy-")
                .tempdir()
                .expect("creating a temp dir");
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let log = dir.path().join("slotproxy.log");
            let out = std::fs::File::create(&log).expect("creating the proxy log");
            let err = out.try_clone().expect("cloning the log handle");
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_slotproxy"));
            cmd.arg("serve").arg("--listen").arg(addr.to_string());
            for seed in seeds {
                cmd.arg("--seed").arg(seed.to_string());
            }
            let child = cmd
                .args(extra_args)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("spawning slotproxy");
            let mut proxy = Proxy {
                child,
                addr,
                log,
                _dir: dir,
            };
            match proxy.wait_ready(Duration::from_secs(20), need_topology) {
                Ok(()) => return proxy,
                Err(why) => {
                    failure = format!("{why}\n--- log tail ---\n{}", proxy.log_tail(40));
                    if !failure.contains("in use") {
                        break;
                    }
                }
            }
        }
        panic!("slotproxy did not become ready: {failure}");
    }

    fn wait_ready(&mut self, limit: Duration, need_topology: bool) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let mut last = String::from("no attempt yet");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("slotproxy exited early ({status})"));
            }
            match self.probe(need_topology) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            sleep(Duration::from_millis(100));
        }
        Err(format!("not ready after {limit:?}: {last}"))
    }

    /// PING must answer PONG and (with `need_topology`) `SET __slotproxy_probe 1` OK.
    fn probe(&self, need_topology: bool) -> Result<(), String> {
        TcpStream::connect_timeout(&self.addr, Duration::from_millis(500))
            .map_err(|e| e.to_string())?;
        let mut con = redis::Client::open(format!("redis://{}/", self.addr))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        let pong: String = match redis::cmd("PING").query(&mut con) {
            Ok(p) => p,
            // A proxy that wants a password is up and answering.
            Err(e) if !need_topology && e.code() == Some("NOAUTH") => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        if pong != "PONG" {
            return Err(format!("PING answered {pong:?}"));
        }
        if !need_topology {
            return Ok(());
        }
        let ok: String = redis::cmd("SET")
            .arg("__slotproxy_probe")
            .arg(1)
            .query(&mut con)
            .map_err(|e| e.to_string())?;
        if ok != "OK" {
            return Err(format!("SET answered {ok:?}"));
        }
        // Leave no trace: tests count keys.
        let _: i64 = redis::cmd("DEL")
            .arg("__slotproxy_probe")
            .query(&mut con)
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A connection to the proxy.
    pub fn client(&self) -> redis::Connection {
        connect(self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the proxy process has not exited.
    /// Waits (up to `limit`) for the proxy to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` (as `kill -<signal>`) to the proxy.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{signal} {} failed", self.pid());
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The proxy's stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the proxy's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` over plain HTTP/1.0 (so the body is never chunked); returns status and body, or
/// status 0 when nothing answers (a proxy that is shutting down or gone).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, "connection refused".into());
    };
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// The sum of a metric's samples whose labels contain every one of `labels` (`error="auth"`).
pub fn metric_sum(exposition: &str, name: &str, labels: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
