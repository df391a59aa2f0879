//! Forming a Redis Cluster from nothing: `slotproxy bootstrap`, `down`, and the local cluster
//! behind `up`. (Interface stub: implementation in progress.)
use std::net::SocketAddr;
use std::path::PathBuf;

/// `slotproxy bootstrap` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BootstrapArgs {}

/// `slotproxy down` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct DownArgs {}

/// Runs `slotproxy bootstrap`.
pub fn run_bootstrap(args: &BootstrapArgs) -> anyhow::Result<()> {
    let _ = args;
    todo!()
}

/// Runs `slotproxy down`.
pub fn run_down(args: &DownArgs) -> anyhow::Result<()> {
    let _ = args;
    todo!()
}

/// For `slotproxy up`: makes sure a local six-node cluster spawned under `dir` from `base_port`
/// is running and formed (spawning and forming it if not); returns the nodes' addresses.
pub fn ensure_local_cluster(
    dir: &PathBuf,
    base_port: u16,
    bind: &str,
) -> anyhow::Result<Vec<SocketAddr>> {
    let _ = (dir, base_port, bind);
    todo!()
}
