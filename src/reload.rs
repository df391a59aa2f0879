//! Reloading the configuration (SIGHUP): re-resolve it from the original flags and environment
//! over the re-read file (flag > env > file > default, as at start-up), validate it, let the
//! reloadable parts check and take it (hooks), and store it in the shared `ArcSwap<Config>`
//! every worker reads. An invalid file is refused with a log line naming the problem; the old
//! configuration stays.
//!
//! What changes live, because its readers load the current config at each use: read policy,
//! client password and users (new connections; an authenticated client stays so), limits read
//! per new client, the refresh interval and seeds, subscription timeouts, and the log level.
//! What cannot change without a restart is named in a WARN ([`fixed_changes`]).
use crate::config::{Config, Settings};
use crate::logging::LogLevel;
use arc_swap::ArcSwap;
use std::sync::Mutex;

/// A reloadable part outside the config value itself (TLS certificates, ...): called with the
/// new, validated configuration before it is stored. An `Err` refuses the whole reload (the
/// old configuration stays), so a hook should prepare its new state, and swap it in only when
/// it succeeds.
pub type ReloadHook = Box<dyn Fn(&Config) -> Result<(), String> + Send + Sync>;

/// Re-reads the configuration on request.
#[derive(Default)]
pub struct Reloader {
    /// The flags and environment the process started with (`None`: nothing to re-read, as for
    /// `slotproxy up`).
    args: Option<Settings>,
    log: Option<LogLevel>,
    hooks: Mutex<Vec<(String, ReloadHook)>>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    pub fn new(args: Option<Settings>, log: Option<LogLevel>) -> Reloader {
        Reloader {
            args,
            log,
            hooks: Mutex::new(Vec::new()),
        }
    }

    /// Registers a reloadable part under `name` (named in the log when it refuses).
    pub fn add_hook(&self, name: &str, hook: ReloadHook) {
        self.hooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_string(), hook));
    }

    /// Re-reads and applies the configuration into `current`; logs what happened either way.
    pub fn reload(&self, current: &ArcSwap<Config>) -> Result<(), String> {
        let result = self.try_reload(current);
        match &result {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(e) => tracing::error!(
                "configuration reload refused, the old one stays: {}",
                one_line(e)
            ),
        }
        result
    }

    fn try_reload(&self, current: &ArcSwap<Config>) -> Result<(), String> {
        let Some(args) = &self.args else {
            return Err("no configuration file or flags to re-read (started by `up`)".into());
        };
        let new = Config::resolve(args).map_err(|e| e.to_string())?;
        let old = current.load_full();
        let fixed = fixed_changes(&old, &new);
        if !fixed.is_empty() {
            tracing::warn!(
                "configuration reload: {} changed but only take effect after a restart",
                fixed.join(", ")
            );
        }
        // ---- reloadable parts other than the config value: the one place to call them ----
        {
            let hooks = self.hooks.lock().unwrap_or_else(|e| e.into_inner());
            for (name, hook) in hooks.iter() {
                hook(&new).map_err(|e| format!("{name}: {e}"))?;
            }
        }
        if let Some(log) = &self.log {
            if new.log_level != old.log_level {
                log.set(&new.log_level)?;
            }
        }
        current.store(std::sync::Arc::new(new));
        Ok(())
    }
}

/// `text` on one line (TOML errors come with a multi-line snippet of the file).
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "|")
        .collect::<Vec<_>>()
        .join(" ")
}

/// The settings that differ between `old` and `new` but are only read at start-up.
pub fn fixed_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |changed: bool, name: &'static str| {
        if changed {
            out.push(name);
        }
    };
    check(old.listen != new.listen, "listen");
    check(
        old.tls.as_ref().map(|t| &t.listen) != new.tls.as_ref().map(|t| &t.listen),
        "tls_listen",
    );
    check(old.metrics_listen != new.metrics_listen, "metrics_listen");
    check(old.worker_threads != new.worker_threads, "worker_threads");
    check(old.runtime != new.runtime, "runtime");
    check(old.log_format != new.log_format, "log_format");
    check(
        old.backend_connections != new.backend_connections,
        "backend_connections",
    );
    // Backend connections take their timeouts when the pool creates them.
    check(
        old.command_timeout != new.command_timeout,
        "command_timeout_ms",
    );
    check(
        old.connect_timeout != new.connect_timeout,
        "connect_timeout_ms",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_needs_a_restart() {
        let old = Config::default();
        let new = Config {
            listen: "127.0.0.1:1".into(),
            worker_threads: 3,
            read_from: crate::router::ReadFrom::Replica,
            ..Config::default()
        };
        assert_eq!(fixed_changes(&old, &new), vec!["listen", "worker_threads"]);
    }
}
