//! The `slotproxy` binary: the command line. (For now only `bootstrap` and `down`; `serve` and
//! `up` arrive with the server.)
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use slotproxy::bootstrap::{self, BootstrapArgs, DownArgs};

/// A Redis Cluster proxy: one endpoint, routed by hash slot.
#[derive(Debug, Parser)]
#[command(name = "slotproxy", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Form a Redis Cluster (3 masters + 3 replicas): start local nodes with --spawn, or form
    /// running ones with --nodes.
    Bootstrap(BootstrapArgs),
    /// Stop the nodes `bootstrap --spawn` started.
    Down(DownArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Bootstrap(args) => bootstrap::run_bootstrap(args),
        Command::Down(args) => bootstrap::run_down(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
