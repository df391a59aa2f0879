//! Local nodes: rendering `config/redis-node.conf`, checking ports, starting `redis-server`
//! processes that outlive the command (`bootstrap --spawn`), and stopping them by their pid files
//! (`down`).
//!
//! Each node lives in `DIR/node-PORT/` (`redis.conf`, `nodes.conf`, data, `redis.pid`,
//! `redis.log`). Signals go through the `kill` command: the crate forbids `unsafe`, so no libc.
use std::fs;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::node_client::{NodeAccess, NodeClient, Reply};
use super::security::NodeSecurity;
use super::{connect_addr, BootstrapError, Progress};

/// Nodes in a local cluster: three masters and three replicas.
pub const NODE_COUNT: u16 = 6;
/// The node template, compiled in so the binary works from any directory.
pub const NODE_TEMPLATE: &str = include_str!("../../config/redis-node.conf");
/// The cluster bus listens on the node's port plus this.
pub const BUS_PORT_OFFSET: u16 = 10000;
/// How long a freshly started node may take to answer `PING`.
const START_WAIT: Duration = Duration::from_secs(15);
/// How long `down` waits for a node to exit after SIGTERM before SIGKILL.
const STOP_WAIT: Duration = Duration::from_secs(15);

/// One local node to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub port: u16,
    pub bind: IpAddr,
    /// The node's own directory (`DIR/node-PORT`); absolute.
    pub dir: PathBuf,
    /// `cluster-node-timeout`, in milliseconds.
    pub node_timeout_ms: u64,
    /// Password or ACL user, and TLS, the node requires.
    pub security: NodeSecurity,
}

impl NodeSpec {
    /// The template's `cluster-node-timeout`.
    pub const DEFAULT_TIMEOUT_MS: u64 = 3000;

    pub fn conf_path(&self) -> PathBuf {
        self.dir.join("redis.conf")
    }
    pub fn pid_path(&self) -> PathBuf {
        self.dir.join("redis.pid")
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }
    /// Where clients reach the node.
    pub fn addr(&self) -> SocketAddr {
        connect_addr(self.bind, self.port)
    }

    /// The node's `redis.conf`: the template with every placeholder filled, then what its
    /// [`NodeSecurity`] requires (under TLS the plain port is 0 and `tls-port` is the port).
    pub fn render_config(&self) -> String {
        let plain_port = if self.security.tls.is_some() {
            0
        } else {
            self.port
        };
        let mut out = NODE_TEMPLATE
            .replace("{{port}}", &plain_port.to_string())
            .replace("{{bind}}", &self.bind.to_string())
            .replace(
                "{{cluster_node_timeout}}",
                &self.node_timeout_ms.to_string(),
            )
            .replace("{{dir}}", &quote(&self.dir))
            .replace("{{pidfile}}", &quote(&self.pid_path()))
            .replace("{{logfile}}", &quote(&self.log_path()));
        assert!(!out.contains("{{"), "unfilled placeholder in node template");
        out.push_str(&self.security.config_lines(self.port));
        out
    }
}

/// A path as a double-quoted redis.conf string.
fn quote(path: &Path) -> String {
    super::security::quote(&path.display().to_string())
}

/// `redis-server` on `PATH`.
pub fn find_redis_server() -> Result<PathBuf, BootstrapError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
        .ok_or(BootstrapError::RedisServerMissing)
}

/// Checks that `port` and its cluster bus port are free on `bind`.
pub fn check_ports_free(bind: IpAddr, port: u16) -> Result<(), BootstrapError> {
    let bus = port.checked_add(BUS_PORT_OFFSET).ok_or_else(|| {
        BootstrapError::Invalid(format!(
            "port {port} is too high: its bus port would pass 65535"
        ))
    })?;
    for (what, p) in [("port", port), ("cluster bus port", bus)] {
        if TcpListener::bind((bind, p)).is_err() {
            let addr = SocketAddr::new(bind, p);
            let holder = if answers_ping(connect_addr(bind, p)) {
                "a Redis server that bootstrap did not start here".to_string()
            } else {
                "another program".to_string()
            };
            return Err(BootstrapError::PortInUse { what, addr, holder });
        }
    }
    Ok(())
}

/// True if something at `addr` answers `PING` with `PONG` right now (plain TCP, no `AUTH`).
pub fn answers_ping(addr: SocketAddr) -> bool {
    answers_ping_with(addr, &NodeAccess::default())
}

/// True if the node at `addr`, reached as `access` says, answers `PING` with `PONG` right now.
pub fn answers_ping_with(addr: SocketAddr, access: &NodeAccess) -> bool {
    NodeClient::connect_with(addr, Duration::from_millis(1000), access)
        .and_then(|mut c| c.call(&["PING"]))
        .is_ok_and(|r| r == Reply::Status("PONG".into()))
}

/// Starts one node (writing its config if it has none) and waits until it answers; returns its
/// pid. The process daemonizes, so it keeps running after this program exits.
pub fn start_node(redis_server: &Path, spec: &NodeSpec) -> Result<u32, BootstrapError> {
    let io_err = |context: String| move |source| BootstrapError::Io { context, source };
    fs::create_dir_all(&spec.dir).map_err(io_err(format!("creating {}", spec.dir.display())))?;
    let access = spec.security.access()?;
    let conf = spec.conf_path();
    if !conf.exists() {
        write_private(&conf, &spec.render_config())
            .map_err(io_err(format!("writing {}", conf.display())))?;
    }
    // A pid file left by a node that died would mislead the wait below.
    if read_pid(&spec.pid_path()).is_some_and(|pid| !is_redis_process(pid)) {
        let _ = fs::remove_file(spec.pid_path());
    }
    let addr = spec.addr();
    let output = Command::new(redis_server)
        .arg(&conf)
        .current_dir(&spec.dir)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("running {}", redis_server.display())))?;
    if !output.status.success() {
        let mut detail = String::from_utf8_lossy(&output.stdout).trim().to_string();
        detail.push_str(String::from_utf8_lossy(&output.stderr).trim());
        return Err(BootstrapError::StartFailed {
            addr,
            detail: format!("{} {}{}", output.status, detail, log_tail(spec)),
        });
    }
    let deadline = Instant::now() + START_WAIT;
    loop {
        let pid = read_pid(&spec.pid_path());
        if let Some(pid) = pid {
            if !is_redis_process(pid) {
                return Err(BootstrapError::StartFailed {
                    addr,
                    detail: format!("it exited right after starting{}", log_tail(spec)),
                });
            }
            if answers_ping_with(addr, &access) {
                return Ok(pid);
            }
        }
        if Instant::now() >= deadline {
            return Err(BootstrapError::NoAnswer {
                addr,
                secs: START_WAIT.as_secs(),
                detail: format!("pid file: {:?}{}", pid, log_tail(spec)),
                fix: format!("see {}", spec.log_path().display()),
            });
        }
        sleep(Duration::from_millis(100));
    }
}

/// Writes a file only its owner may read (a node's config may hold its password).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())
}

/// The last lines of a node's log, for error messages.
pub fn log_tail(spec: &NodeSpec) -> String {
    match fs::read_to_string(spec.log_path()) {
        Ok(log) => {
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(8)..].join("\n    ");
            format!(
                "\n  last lines of {}:\n    {tail}",
                spec.log_path().display()
            )
        }
        Err(_) => String::new(),
    }
}

/// The specs of the local cluster under `dir` (made absolute) from `base_port`.
pub fn local_specs(
    dir: &Path,
    base_port: u16,
    bind: IpAddr,
    node_timeout_ms: u64,
    security: &NodeSecurity,
) -> Result<Vec<NodeSpec>, BootstrapError> {
    let last = u32::from(base_port) + u32::from(NODE_COUNT) - 1 + u32::from(BUS_PORT_OFFSET);
    if base_port == 0 || last > u32::from(u16::MAX) {
        return Err(BootstrapError::Invalid(format!(
            "--base-port {base_port} is out of range: ports N..N+5 and their bus ports \
             N+10000..N+10005 must fit in 1..65535 (the default is 5001)"
        )));
    }
    fs::create_dir_all(dir).map_err(|source| BootstrapError::Io {
        context: format!("creating {}", dir.display()),
        source,
    })?;
    let dir = dir.canonicalize().map_err(|source| BootstrapError::Io {
        context: format!("resolving {}", dir.display()),
        source,
    })?;
    Ok((0..NODE_COUNT)
        .map(|i| NodeSpec {
            port: base_port + i,
            bind,
            dir: dir.join(format!("node-{}", base_port + i)),
            node_timeout_ms,
            security: security.clone(),
        })
        .collect())
}

/// `bootstrap --spawn`: makes sure six local nodes run under `dir` (starting those that do not),
/// and returns their addresses. Port problems are found for every node before any is started.
pub fn spawn_local(
    dir: &Path,
    base_port: u16,
    bind: IpAddr,
    node_timeout_ms: u64,
    security: &NodeSecurity,
    progress: &Progress,
) -> Result<Vec<SocketAddr>, BootstrapError> {
    let redis_server = find_redis_server()?;
    let specs = local_specs(dir, base_port, bind, node_timeout_ms, security)?;
    progress.step(&format!(
        "checking {} local nodes on ports {}-{} under {} (redis-server: {})",
        specs.len(),
        base_port,
        base_port + NODE_COUNT - 1,
        dir.display(),
        redis_server.display()
    ));
    let mut running = Vec::new();
    for spec in &specs {
        let pid = read_pid(&spec.pid_path()).filter(|&pid| is_redis_process(pid));
        if pid.is_none() {
            check_ports_free(bind, spec.port)?;
        }
        running.push(pid);
    }
    for (spec, pid) in specs.iter().zip(running) {
        match pid {
            Some(pid) => {
                progress.detail(&format!("{} already running (pid {pid})", spec.addr()));
                wait_answering(spec)?;
            }
            None => {
                let pid = start_node(&redis_server, spec)?;
                progress.detail(&format!(
                    "{} started (pid {pid}, {})",
                    spec.addr(),
                    spec.dir.display()
                ));
            }
        }
    }
    Ok(specs.iter().map(NodeSpec::addr).collect())
}

/// Waits for an already running node to answer (it may still be loading its data).
fn wait_answering(spec: &NodeSpec) -> Result<(), BootstrapError> {
    let deadline = Instant::now() + START_WAIT;
    let access = spec.security.access()?;
    while !answers_ping_with(spec.addr(), &access) {
        if Instant::now() >= deadline {
            return Err(BootstrapError::NoAnswer {
                addr: spec.addr(),
                secs: START_WAIT.as_secs(),
                detail: "its process runs but does not answer PING (with the credentials \
                         and TLS given now, if any)"
                    .into(),
                fix: format!(
                    "see {}; stop it with `slotproxy down --dir {}`",
                    spec.log_path().display(),
                    spec.dir.parent().unwrap_or(&spec.dir).display()
                ),
            });
        }
        sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// `down`: stops every node under `dir` by its pid file (SIGTERM, then SIGKILL after a grace
/// period), and with `purge` deletes the nodes' directories.
pub fn stop_local(dir: &Path, purge: bool, progress: &Progress) -> Result<(), BootstrapError> {
    if !dir.is_dir() {
        progress.step(&format!(
            "nothing to stop: {} does not exist",
            dir.display()
        ));
        return Ok(());
    }
    let node_dirs = node_dirs(dir)?;
    progress.step(&format!(
        "stopping {} node(s) under {}",
        node_dirs.len(),
        dir.display()
    ));
    let mut stopping = Vec::new();
    for node_dir in &node_dirs {
        let name = node_dir.file_name().unwrap_or_default().to_string_lossy();
        match read_pid(&node_dir.join("redis.pid")).filter(|&pid| is_redis_process(pid)) {
            Some(pid) => {
                progress.detail(&format!("{name}: sending SIGTERM to pid {pid}"));
                signal(pid, "TERM");
                stopping.push((name.into_owned(), pid));
            }
            None => progress.detail(&format!("{name}: not running")),
        }
    }
    let deadline = Instant::now() + STOP_WAIT;
    for (name, pid) in &stopping {
        while is_redis_process(*pid) && Instant::now() < deadline {
            sleep(Duration::from_millis(50));
        }
        if is_redis_process(*pid) {
            progress.detail(&format!(
                "{name}: still running, sending SIGKILL to pid {pid}"
            ));
            signal(*pid, "KILL");
            let kill_deadline = Instant::now() + Duration::from_secs(5);
            while is_redis_process(*pid) && Instant::now() < kill_deadline {
                sleep(Duration::from_millis(50));
            }
        }
        if is_redis_process(*pid) {
            return Err(BootstrapError::Invalid(format!(
                "{name} (pid {pid}) did not stop; stop it by hand (`kill -9 {pid}`)"
            )));
        }
        progress.detail(&format!("{name}: stopped"));
    }
    if purge {
        for node_dir in &node_dirs {
            fs::remove_dir_all(node_dir).map_err(|source| BootstrapError::Io {
                context: format!("removing {}", node_dir.display()),
                source,
            })?;
            progress.detail(&format!("removed {}", node_dir.display()));
        }
        let tls_dir = super::security::tls_dir(dir);
        if tls_dir.is_dir() && fs::remove_dir_all(&tls_dir).is_ok() {
            progress.detail(&format!("removed {} (certificates)", tls_dir.display()));
        }
        if fs::remove_dir(dir).is_ok() {
            progress.detail(&format!("removed {}", dir.display()));
        }
    } else if !node_dirs.is_empty() {
        progress.detail("data kept (add --purge to delete it)");
    }
    Ok(())
}

/// The `node-PORT` directories under `dir`, in port order.
fn node_dirs(dir: &Path) -> Result<Vec<PathBuf>, BootstrapError> {
    let entries = fs::read_dir(dir).map_err(|source| BootstrapError::Io {
        context: format!("reading {}", dir.display()),
        source,
    })?;
    let mut dirs: Vec<(u16, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let port = name.strip_prefix("node-")?.parse().ok()?;
            e.path()
                .join("redis.conf")
                .exists()
                .then(|| (port, e.path()))
        })
        .collect();
    dirs.sort();
    Ok(dirs.into_iter().map(|(_, p)| p).collect())
}

/// The pid in a pid file.
pub fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// True if `pid` is a live (not zombie) process. Uses `/proc` where there is one, so a zombie
/// left under a parent that does not reap counts as gone; elsewhere asks `kill -0`.
pub fn process_alive(pid: u32) -> bool {
    if Path::new("/proc/self").exists() {
        return match fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state follows the parenthesised command name.
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X"),
            Err(_) => false,
        };
    }
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True if `pid` is alive and, where `/proc` tells, a redis-server (a pid file can outlive its
/// process and the pid be reused).
pub fn is_redis_process(pid: u32) -> bool {
    if !process_alive(pid) {
        return false;
    }
    match fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => String::from_utf8_lossy(&cmdline).contains("redis-server"),
        Err(_) => true,
    }
}

/// Sends `SIG<name>` to `pid` with the `kill` command.
pub fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_placeholder() {
        let spec = NodeSpec {
            port: 5001,
            bind: "127.0.0.1".parse().unwrap(),
            dir: PathBuf::from("/tmp/my \"cluster\"/node-5001"),
            node_timeout_ms: 2000,
            security: NodeSecurity::default(),
        };
        let conf = spec.render_config();
        for line in [
            "port 5001",
            "bind 127.0.0.1",
            "cluster-enabled yes",
            "cluster-config-file nodes.conf",
            "cluster-node-timeout 2000",
            "dir \"/tmp/my \\\"cluster\\\"/node-5001\"",
            "appendonly yes",
            "daemonize yes",
            "pidfile \"/tmp/my \\\"cluster\\\"/node-5001/redis.pid\"",
            "logfile \"/tmp/my \\\"cluster\\\"/node-5001/redis.log\"",
        ] {
            assert!(
                conf.lines().any(|l| l == line),
                "missing {line:?} in\n{conf}"
            );
        }
    }

    #[test]
    fn refuses_base_ports_whose_bus_ports_overflow() {
        let dir = std::env::temp_dir();
        let bind = "127.0.0.1".parse().unwrap();
        let none = NodeSecurity::default();
        assert!(local_specs(&dir, 55531, bind, 3000, &none).is_err());
        assert!(local_specs(&dir, 0, bind, 3000, &none).is_err());
        let specs = local_specs(&dir, 55530, bind, 3000, &none).unwrap();
        assert_eq!(specs.len(), 6);
        assert_eq!(specs[5].port, 55535);
        assert!(specs[0].dir.ends_with("node-55530"));
    }

    #[test]
    fn sees_its_own_process_alive_and_a_bogus_pid_dead() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX - 1));
        assert!(!is_redis_process(u32::MAX - 1));
    }

    #[test]
    fn reports_a_port_in_use() {
        // A port low enough that its bus port exists.
        let (listener, port) = loop {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            if port <= u16::MAX - BUS_PORT_OFFSET {
                break (listener, port);
            }
        };
        let err = check_ports_free("127.0.0.1".parse().unwrap(), port).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        drop(listener);
    }
}
