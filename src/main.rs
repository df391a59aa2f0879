//! The `slotproxy` binary: `serve` runs the proxy, `bootstrap` forms a cluster, `down` stops a
//! spawned one, and `up` does both for a newcomer (a local cluster and the proxy in front of it).
use clap::{Parser, Subcommand};
use slotproxy::bootstrap::{self, BootstrapArgs, DownArgs, NodeCredentials, NodeSecurity};
use slotproxy::config::{Config, Settings};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "slotproxy",
    version,
    about = "A Redis Cluster proxy: one endpoint, routed by hash slot"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy in front of a cluster.
    Serve(Box<Settings>),
    /// Form a six-node cluster (3 masters, 3 replicas), spawning the nodes or from given ones.
    Bootstrap(BootstrapArgs),
    /// Stop the nodes `bootstrap --spawn` started (and the proxy `up` started there).
    Down(DownArgs),
    /// Start a local six-node cluster if none is running, then serve in front of it.
    Up(Box<UpArgs>),
}

/// `up` takes every `serve` setting (`--config`, `--password`, `--read-from`, ...); the seeds
/// are its own nodes. `--node-password-file` / `--node-user` (or the same settings in the file
/// or environment) protect the nodes it spawns and are what the proxy presents to them.
#[derive(clap::Args)]
struct UpArgs {
    /// Where the nodes keep their configs, data, logs and pid files (and `up` its own pid file).
    #[arg(long, default_value = "./cluster")]
    dir: PathBuf,
    /// First node port; the six nodes use base..base+5 (and +10000 for the cluster bus).
    #[arg(long, default_value_t = 5001)]
    base_port: u16,
    /// The nodes speak only TLS and require client certificates; certificates are generated
    /// into DIR/tls and the proxy speaks TLS to the nodes with them.
    #[arg(long)]
    tls: bool,
    #[command(flatten)]
    serve: Settings,
}

/// Where `up`'s proxy serves /metrics unless told otherwise.
const UP_METRICS_LISTEN: &str = "127.0.0.1:9121";

fn main() -> std::process::ExitCode {
    return_memory_after_bursts();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => Config::resolve(&args)
            .map_err(anyhow::Error::from)
            .and_then(|config| serve(config, Some(*args))),
        Command::Bootstrap(args) => bootstrap::run_bootstrap(&args),
        Command::Down(args) => bootstrap::run_down(&args),
        Command::Up(args) => up(*args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slotproxy: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn up(args: UpArgs) -> anyhow::Result<()> {
    let bind = bootstrap::parse_bind("127.0.0.1")?;
    let specs = bootstrap::spawn::local_specs(
        &args.dir,
        args.base_port,
        bind,
        bootstrap::NodeSpec::DEFAULT_TIMEOUT_MS,
        &NodeSecurity::default(),
    )?;
    let mut serve_args = args.serve.clone();
    serve_args.seeds = Some(specs.iter().map(|s| s.addr().to_string()).collect());
    if serve_args.metrics_listen.is_none() {
        serve_args.metrics_listen = Some(UP_METRICS_LISTEN.into());
    }
    let tls = args
        .tls
        .then(|| bootstrap::certs::CertPaths::in_dir(&bootstrap::security::tls_dir(&args.dir)));
    if let Some(paths) = &tls {
        serve_args.node_tls = Some(true);
        serve_args.node_tls_ca_file = Some(paths.ca_cert.clone());
        serve_args.node_tls_cert_file = Some(paths.client_cert.clone());
        serve_args.node_tls_key_file = Some(paths.client_key.clone());
    }
    let config = Config::resolve(&serve_args)?;
    let security = NodeSecurity {
        auth: config
            .node_auth
            .password
            .clone()
            .map(|password| NodeCredentials {
                user: config.node_auth.user.clone(),
                password,
                rules: bootstrap::security::ALL_RULES.into(),
            }),
        tls: match &tls {
            Some(_) => Some(bootstrap::certs::ensure(
                &bootstrap::security::tls_dir(&args.dir),
                &[bind],
            )?),
            None => None,
        },
    };
    security.check()?;
    bootstrap::ensure_local_cluster_with(&args.dir, args.base_port, bind, &security)?;
    let _pid_file = bootstrap::pidfile::ProxyPidFile::create(&args.dir)?;
    println!(
        "slotproxy: cluster is up; starting the proxy on {} (try: redis-cli -p {} ping)",
        config.listen,
        config.listen.rsplit(':').next().unwrap_or("")
    );
    serve(config, None)
}

/// Runs the proxy; `args` (the flags and environment it started with) are what a SIGHUP
/// re-resolves the config file under.
fn serve(config: Config, args: Option<Settings>) -> anyhow::Result<()> {
    let log = slotproxy::logging::init(&config.log_level, config.log_format)?;
    let reloader = slotproxy::reload::Reloader::new(args, Some(log));
    slotproxy::server::run(config, reloader)
}

/// Makes glibc's malloc give memory back to the system after a burst.
///
/// By default glibc raises its mmap threshold to the size of each large block freed (up to
/// 32 MB), so after one burst of 1 MB replies every later reply buffer is carved from the heap
/// arenas, and freed arena memory below the top is kept: measured, a proxy that held 1 GB of
/// replies for slow readers stayed at 1 GB after they left, and with the reply limits in
/// place still kept 45 MB of a 50 MB burst. Fixing both thresholds at 128 KB (glibc's initial
/// value, which disables the dynamic adjustment) maps large buffers on their own and trims the
/// heap top past 128 KB free. Measured in release (benches/README.md, "Allocator"): after a
/// 265 MB burst glibc's defaults kept 29-71 MB, these settings 0.1 MB, jemalloc with background
/// purging 1 MB, at the same throughput (GET -c 50) within noise; this adds no crate.
///
/// The one `unsafe` of the binary: `mallopt` is a plain C call with integer arguments, made
/// before any thread exists (the library itself forbids unsafe code).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_memory_after_bursts() {
    const THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only sets allocator parameters; called once, single-threaded, at start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_memory_after_bursts() {}
