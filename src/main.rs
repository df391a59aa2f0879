//! The `slotproxy` binary: `serve` runs the proxy, `bootstrap` forms a cluster, `down` stops a
//! spawned one, and `up` does both for a newcomer (a local cluster and the proxy in front of it).
use clap::{Parser, Subcommand};
use slotproxy::bootstrap::{self, BootstrapArgs, DownArgs};
use slotproxy::config::{Config, ServeArgs};
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
    Serve(Box<ServeArgs>),
    /// Form a six-node cluster (3 masters, 3 replicas), spawning the nodes or from given ones.
    Bootstrap(BootstrapArgs),
    /// Stop the nodes `bootstrap --spawn` started.
    Down(DownArgs),
    /// Start a local six-node cluster if none is running, then serve in front of it.
    Up(UpArgs),
}

#[derive(clap::Args)]
struct UpArgs {
    /// Where the nodes keep their configs, data, logs and pid files.
    #[arg(long, default_value = "./cluster")]
    dir: PathBuf,
    /// First node port; the six nodes use base..base+5 (and +10000 for the cluster bus).
    #[arg(long, default_value_t = 5001)]
    base_port: u16,
    /// Address the proxy listens on.
    #[arg(long, default_value = "127.0.0.1:7777")]
    listen: String,
    /// Address for /metrics.
    #[arg(long, default_value = "127.0.0.1:9121")]
    metrics_listen: String,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => Config::resolve(&args)
            .map_err(anyhow::Error::from)
            .and_then(|config| serve(config, Some(*args))),
        Command::Bootstrap(args) => bootstrap::run_bootstrap(&args),
        Command::Down(args) => bootstrap::run_down(&args),
        Command::Up(args) => up(args),
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
    let nodes = bootstrap::ensure_local_cluster(&args.dir, args.base_port, "127.0.0.1")?;
    let config = Config {
        listen: args.listen,
        seeds: nodes.iter().map(|a| a.to_string()).collect(),
        metrics_listen: Some(args.metrics_listen),
        ..Config::default()
    };
    config.validate()?;
    println!(
        "slotproxy: cluster is up; starting the proxy on {} (try: redis-cli -p {} ping)",
        config.listen,
        config.listen.rsplit(':').next().unwrap_or("")
    );
    serve(config, None)
}

/// Runs the proxy; `args` (the flags and environment it started with) are what a SIGHUP
/// re-resolves the config file under.
fn serve(config: Config, args: Option<ServeArgs>) -> anyhow::Result<()> {
    let log = slotproxy::logging::init(&config.log_level, config.log_format)?;
    let reloader = slotproxy::reload::Reloader::new(args, Some(log));
    slotproxy::server::run(config, reloader)
}
