//! The proxy that `up` starts in front of a local cluster leaves its pid in `DIR/slotproxy.pid`,
//! so `down` can stop it too (before the nodes, so it does not spend its last seconds on a
//! cluster going away) and say so.
use std::fs;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::spawn::{process_alive, read_pid, signal};
use super::{BootstrapError, Progress};

/// How long `down` waits for the proxy to drain and exit after SIGTERM before SIGKILL.
const PROXY_STOP_WAIT: Duration = Duration::from_secs(20);

/// The proxy's pid file under a cluster directory.
pub fn proxy_pid_path(dir: &Path) -> PathBuf {
    dir.join("slotproxy.pid")
}

/// This process's pid in `DIR/slotproxy.pid`, removed again when dropped (a proxy killed
/// outright leaves it behind; `down` checks the pid is a slotproxy before signalling it).
pub struct ProxyPidFile(PathBuf);

impl ProxyPidFile {
    pub fn create(dir: &Path) -> Result<ProxyPidFile, BootstrapError> {
        let path = proxy_pid_path(dir);
        fs::write(&path, format!("{}\n", std::process::id())).map_err(|source| {
            BootstrapError::Io {
                context: format!("writing {}", path.display()),
                source,
            }
        })?;
        Ok(ProxyPidFile(path))
    }
}

impl Drop for ProxyPidFile {
    fn drop(&mut self) {
        if read_pid(&self.0) == Some(std::process::id()) {
            let _ = fs::remove_file(&self.0);
        }
    }
}

/// True if `pid` is alive and, where `/proc` tells, a slotproxy (pids are reused).
fn is_proxy_process(pid: u32) -> bool {
    if !process_alive(pid) {
        return false;
    }
    match fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => String::from_utf8_lossy(&cmdline).contains("slotproxy"),
        Err(_) => true,
    }
}

/// `down`: stops the proxy `up` started under `dir`, if one runs (SIGTERM, SIGKILL after a
/// grace period), and removes its pid file.
pub fn stop_proxy(dir: &Path, progress: &Progress) -> Result<(), BootstrapError> {
    let path = proxy_pid_path(dir);
    let Some(pid) = read_pid(&path) else {
        return Ok(());
    };
    if !is_proxy_process(pid) {
        progress.step(&format!(
            "the proxy `up` started (pid {pid}) is not running; removing {}",
            path.display()
        ));
        let _ = fs::remove_file(&path);
        return Ok(());
    }
    progress.step(&format!(
        "stopping the proxy `up` started (pid {pid}): SIGTERM"
    ));
    signal(pid, "TERM");
    let deadline = Instant::now() + PROXY_STOP_WAIT;
    while is_proxy_process(pid) && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
    }
    if is_proxy_process(pid) {
        progress.detail(&format!("still running, sending SIGKILL to pid {pid}"));
        signal(pid, "KILL");
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_proxy_process(pid) && Instant::now() < deadline {
            sleep(Duration::from_millis(50));
        }
    }
    if is_proxy_process(pid) {
        return Err(BootstrapError::Invalid(format!(
            "the proxy (pid {pid}) did not stop; stop it by hand (`kill -9 {pid}`)"
        )));
    }
    let _ = fs::remove_file(&path);
    progress.detail(&format!("proxy (pid {pid}) stopped"));
    Ok(())
}
