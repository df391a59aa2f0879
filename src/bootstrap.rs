//! Forming a Redis Cluster from nothing: `slotproxy bootstrap`, `down`, and the local cluster
//! behind `up`.
//!
//! The work is what an operator does by hand, in the same order, printing each step:
//!
//! - [`spawn`]: render `config/redis-node.conf` per node, check ports (and bus ports, +10000) are
//!   free, start `redis-server`s that outlive the command, and stop them again (`down`).
//! - [`form`]: check six running nodes are safe to form (refusing before any change), assign
//!   slots, give distinct config epochs, `CLUSTER MEET`, `CLUSTER REPLICATE`, and wait until the
//!   cluster is healthy; complete a half-formed cluster; recognise a formed one.
//! - [`cluster_view`]: `CLUSTER NODES` parsing and slot arithmetic for the above.
//! - [`node_client`]: a tiny blocking RESP2 client for the few commands sent, over TLS and
//!   authenticated when the nodes require it.
//! - [`security`]: what spawned nodes require (a password or an ACL user, TLS), as `redis.conf`
//!   lines, and how bootstrap gets in.
//! - [`pidfile`]: the pid file of the proxy `up` runs, so `down` stops it too.
//! - [`certs`]: a CA, node and client certificates for a local TLS cluster (and for tests).
//!
//! Everything here is blocking std code: it runs once, before (or instead of) serving.
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod certs;
pub mod cluster_view;
pub mod form;
pub mod node_client;
pub mod pidfile;
pub mod plan;
pub mod security;
pub mod spawn;

pub use form::{form_cluster, FormOptions, FormReport};
pub use node_client::NodeAccess;
pub use security::{NodeCredentials, NodeSecurity};
pub use spawn::{spawn_local, start_node, stop_local, NodeSpec, NODE_COUNT};

/// `slotproxy bootstrap` arguments.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["spawn", "nodes"])))]
pub struct BootstrapArgs {
    /// Start six local redis-server nodes (ports N..N+5) that keep running, then form them.
    #[arg(long)]
    pub spawn: bool,
    /// With --spawn: where each node gets its directory (DIR/node-PORT: config, data, pid, log).
    #[arg(long, default_value = "cluster", conflicts_with = "nodes")]
    pub dir: PathBuf,
    /// With --spawn: the first node's port; nodes use N..N+5 and cluster bus ports N+10000...
    #[arg(long, default_value_t = 5001, conflicts_with = "nodes")]
    pub base_port: u16,
    /// With --spawn: the address the nodes listen on.
    #[arg(long, default_value = "127.0.0.1", conflicts_with = "nodes")]
    pub bind: String,
    /// Form the cluster from six running nodes, HOST:PORT comma-separated; the first three
    /// become masters, the last three their replicas.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub nodes: Vec<String>,
    /// Seconds to wait for each step (nodes meeting, replicas syncing, cluster_state:ok).
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// File whose first line is the nodes' password. With --spawn the nodes get `requirepass`
    /// and `masterauth` (or, with --node-user, an ACL user); with --nodes, bootstrap
    /// authenticates with it.
    #[arg(long)]
    pub node_password_file: Option<PathBuf>,
    /// ACL user: with --spawn the nodes get this user (all commands, keys and channels) and
    /// their default user is turned off; with --nodes, bootstrap authenticates as it.
    #[arg(long, requires = "node_password_file")]
    pub node_user: Option<String>,
    /// With --spawn: the nodes speak only TLS (clients, replication, cluster bus) and require
    /// client certificates; a CA, node and client certificates are generated into DIR/tls.
    #[arg(long, conflicts_with = "nodes")]
    pub tls: bool,
}

/// `slotproxy down` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct DownArgs {
    /// The directory `bootstrap --spawn` (or `up`) used.
    #[arg(long, default_value = "cluster")]
    pub dir: PathBuf,
    /// Also delete the nodes' directories (configs, data, logs).
    #[arg(long)]
    pub purge: bool,
}

/// Runs `slotproxy bootstrap`.
pub fn run_bootstrap(args: &BootstrapArgs) -> anyhow::Result<()> {
    let progress = Progress::stdout();
    let mut opts = FormOptions {
        timeout: Duration::from_secs(args.timeout.max(1)),
        ..FormOptions::default()
    };
    let addrs = if args.spawn {
        let bind = parse_bind(&args.bind)?;
        let security = NodeSecurity::from_flags(
            &args.dir,
            bind,
            args.node_password_file.as_deref(),
            args.node_user.as_deref(),
            args.tls,
        )?;
        opts.access = security.access()?;
        report_security(&security, &progress);
        spawn_local(
            &args.dir,
            args.base_port,
            bind,
            NodeSpec::DEFAULT_TIMEOUT_MS,
            &security,
            &progress,
        )?
    } else {
        let password = match &args.node_password_file {
            Some(file) => Some(
                crate::config::security::read_secret_file(file).map_err(BootstrapError::Invalid)?,
            ),
            None => None,
        };
        opts.access.auth = crate::config::NodeAuth {
            user: args.node_user.clone(),
            password,
        };
        resolve_nodes(&args.nodes)?
    };
    form_cluster(&addrs, &opts, &progress)?;
    Ok(())
}

/// Says what the spawned nodes will require, and where the certificates are.
fn report_security(security: &NodeSecurity, progress: &Progress) {
    match security.auth.as_ref().map(|a| a.user.as_deref()) {
        None => {}
        Some(None) => progress.step("nodes require a password (requirepass, masterauth)"),
        Some(Some(user)) => progress.step(&format!(
            "nodes admit only the ACL user {user:?} (the default user is off)"
        )),
    }
    if let Some(tls) = &security.tls {
        progress.step(&format!(
            "nodes speak only TLS and require client certificates; CA, node and client \
             certificates in {}",
            tls.dir.display()
        ));
    }
}

/// Runs `slotproxy down`: the proxy `up` started (if any), then the nodes.
pub fn run_down(args: &DownArgs) -> anyhow::Result<()> {
    let progress = Progress::stdout();
    pidfile::stop_proxy(&args.dir, &progress)?;
    stop_local(&args.dir, args.purge, &progress)?;
    Ok(())
}

/// For `slotproxy up`: makes sure a local six-node cluster spawned under `dir` from `base_port`
/// is running and formed (spawning and forming it if not); returns the nodes' addresses.
pub fn ensure_local_cluster(
    dir: &Path,
    base_port: u16,
    bind: &str,
) -> anyhow::Result<Vec<SocketAddr>> {
    let bind = parse_bind(bind)?;
    ensure_local_cluster_with(dir, base_port, bind, &NodeSecurity::default())
}

/// [`ensure_local_cluster`] for nodes that require `security` (a password or ACL user, TLS).
pub fn ensure_local_cluster_with(
    dir: &Path,
    base_port: u16,
    bind: IpAddr,
    security: &NodeSecurity,
) -> anyhow::Result<Vec<SocketAddr>> {
    let progress = Progress::stdout();
    report_security(security, &progress);
    let addrs = spawn_local(
        dir,
        base_port,
        bind,
        NodeSpec::DEFAULT_TIMEOUT_MS,
        security,
        &progress,
    )?;
    let opts = FormOptions {
        access: security.access()?,
        ..FormOptions::default()
    };
    form_cluster(&addrs, &opts, &progress)?;
    Ok(addrs)
}

pub fn parse_bind(bind: &str) -> Result<IpAddr, BootstrapError> {
    bind.parse().map_err(|_| {
        BootstrapError::Invalid(format!(
            "--bind {bind:?} is not an IP address (use e.g. 127.0.0.1)"
        ))
    })
}

/// Resolves `--nodes` entries (`ip:port` or `host:port`), preferring IPv4.
pub fn resolve_nodes(nodes: &[String]) -> Result<Vec<SocketAddr>, BootstrapError> {
    nodes
        .iter()
        .map(|node| {
            let node = node.trim();
            let addrs: Vec<SocketAddr> = node
                .to_socket_addrs()
                .map_err(|e| {
                    BootstrapError::Invalid(format!(
                        "--nodes entry {node:?} is not HOST:PORT ({e})"
                    ))
                })?
                .collect();
            addrs
                .iter()
                .find(|a| a.is_ipv4())
                .or(addrs.first())
                .copied()
                .ok_or_else(|| BootstrapError::Invalid(format!("{node:?} resolves to nothing")))
        })
        .collect()
}

/// The address to connect to for a node bound to `bind:port` (loopback for a wildcard bind).
pub fn connect_addr(bind: IpAddr, port: u16) -> SocketAddr {
    let ip = if bind.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        bind
    };
    SocketAddr::new(ip, port)
}

/// Where bootstrap reports its steps as they happen (a newcomer should see progress, not a silent
/// minute). The binary prints to stdout; the test harness does too, so a failing test shows them.
pub struct Progress {
    sink: Box<dyn Fn(&str) + Send + Sync>,
}

impl Progress {
    /// Prints every step to stdout.
    pub fn stdout() -> Progress {
        Progress::new(|line| println!("{line}"))
    }

    /// Reports nothing.
    pub fn silent() -> Progress {
        Progress::new(|_| {})
    }

    /// Reports each line to `sink`.
    pub fn new(sink: impl Fn(&str) + Send + Sync + 'static) -> Progress {
        Progress {
            sink: Box::new(sink),
        }
    }

    /// A step: what bootstrap is doing now.
    pub fn step(&self, msg: &str) {
        (self.sink)(&format!("==> {msg}"));
    }

    /// A detail of the current step.
    pub fn detail(&self, msg: &str) {
        (self.sink)(&format!("    {msg}"));
    }
}

/// Why bootstrap stopped. Each message says what happened and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(
        "redis-server is not installed (not found on PATH); install it with \
         `apt-get install redis-server` (Debian/Ubuntu) or put redis-server on PATH"
    )]
    RedisServerMissing,
    #[error(
        "{what} {addr} is already in use by {holder}; choose another --base-port, or stop what \
         holds it (`ss -ltnp 'sport = :{port}'` shows it)",
        port = addr.port()
    )]
    PortInUse {
        what: &'static str,
        addr: SocketAddr,
        holder: String,
    },
    #[error("redis-server for {addr} failed to start: {detail}")]
    StartFailed { addr: SocketAddr, detail: String },
    #[error("node {addr} never answered within {secs}s ({detail}); {fix}")]
    NoAnswer {
        addr: SocketAddr,
        secs: u64,
        detail: String,
        fix: String,
    },
    #[error("timed out after {secs:.1}s waiting for {what}; still pending: {pending}. {fix}")]
    Timeout {
        what: String,
        secs: f64,
        pending: String,
        fix: String,
    },
    #[error("refusing to form the cluster, nothing was changed: node {addr} {reason}. Fix: {fix}")]
    Refused {
        addr: SocketAddr,
        reason: String,
        fix: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("node {addr}: `{command}` failed: {source}")]
    Command {
        addr: SocketAddr,
        command: String,
        source: node_client::NodeError,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BootstrapArgs,
    }

    fn parse(args: &[&str]) -> Result<BootstrapArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bootstrap").chain(args.iter().copied()))
            .map(|c| c.args)
    }

    #[test]
    fn parses_both_modes_with_the_issue_defaults() {
        let spawn = parse(&["--spawn"]).unwrap();
        assert!(spawn.spawn && spawn.nodes.is_empty());
        assert_eq!(
            (spawn.dir, spawn.base_port, spawn.bind.as_str()),
            (PathBuf::from("cluster"), 5001, "127.0.0.1")
        );
        let nodes = parse(&["--nodes", "10.0.0.1:6379,10.0.0.2:6379"]).unwrap();
        assert_eq!(nodes.nodes, ["10.0.0.1:6379", "10.0.0.2:6379"]);
        assert!(parse(&[]).is_err(), "a mode is required");
        assert!(parse(&["--spawn", "--nodes", "a:1"]).is_err());
        assert!(parse(&["--nodes", "a:1", "--base-port", "7000"]).is_err());
    }

    #[test]
    fn resolves_nodes_and_wildcard_binds() {
        let addrs = resolve_nodes(&["127.0.0.1:5001".into(), " localhost:5002".into()]).unwrap();
        assert_eq!(addrs[0], "127.0.0.1:5001".parse().unwrap());
        assert_eq!(addrs[1].port(), 5002);
        assert!(resolve_nodes(&["nonsense".into()]).is_err());
        assert_eq!(
            connect_addr("0.0.0.0".parse().unwrap(), 1),
            "127.0.0.1:1".parse().unwrap()
        );
    }
}
