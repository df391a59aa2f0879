//! Configuration: the typed [`Config`] the proxy runs with, its defaults and its validation,
//! built from layers of [`Settings`] (the TOML file (`--config`), `SLOTPROXY_*` environment
//! variables and flags, one struct for all three, in [`settings`]) merged as flag > env > file >
//! default. The security settings (users, credentials and TLS) have their types in [`security`].
pub use crate::logging::LogFormat;
use crate::router::ReadFrom;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod security;
pub mod settings;
pub use security::{Access, ClientTls, NodeAuth, NodeTls, Secret, UserConfig};
pub use settings::Settings;

/// The address value that turns the plain-TCP client listener off (with `tls_listen` set).
pub const LISTEN_OFF: &str = "off";

/// The settings `slotproxy serve` runs with, after merging.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub seeds: Vec<String>,
    pub read_from: ReadFrom,
    pub log_level: String,
    pub log_format: LogFormat,
    pub metrics_listen: Option<String>,
    /// The default user's password (`AUTH password`).
    pub password: Option<Secret>,
    /// Named client users (`AUTH user password`).
    pub users: Vec<UserConfig>,
    /// What the proxy presents to every node.
    pub node_auth: NodeAuth,
    /// A TLS listener for clients, beside (or instead of) `listen`.
    pub tls: Option<ClientTls>,
    /// TLS to the nodes.
    pub node_tls: Option<NodeTls>,
    pub max_clients: usize,
    /// A replica is read from only while it is at most this many bytes behind its master.
    pub replica_max_lag_bytes: u64,
    /// After a client writes to a slot, its reads of that slot go to the master for this long
    /// (`None`: off).
    pub read_your_writes: Option<Duration>,
    pub backend_connections: usize,
    pub command_timeout: Duration,
    pub connect_timeout: Duration,
    pub refresh_interval: Duration,
    pub client_idle_timeout: Option<Duration>,
    pub max_bulk_len: usize,
    pub max_args: usize,
    pub max_inline_len: usize,
    /// Requests one client may have in flight before the proxy stops reading from it.
    pub max_pipeline: usize,
    /// Bytes of replies owed to one client before the proxy stops reading from it.
    pub client_reply_buffer_limit: usize,
    /// Bytes of replies owed to all clients before the biggest debtors stop being read.
    pub max_reply_memory: usize,
    pub worker_threads: usize,
    pub runtime: RuntimeShape,
    /// On SIGTERM/SIGINT: how long clients have to get their replies before they are closed.
    pub shutdown_grace: Duration,
    /// How long a request not yet written to a node may wait for its slot's master during a
    /// failover; `None`: twice the cluster's `cluster-node-timeout` (asked from a node).
    pub failover_hold: Option<Duration>,
    /// Requests held at once, process-wide; beyond it a request gets its error at once.
    pub max_held_requests: usize,
    /// Whether clients may run node administration (CONFIG SET, ACL SETUSER, CLIENT KILL, ...).
    pub admin_commands: AdminCommands,
    /// Requests at least this slow end to end go into the proxy's SLOWLOG (`None`: off).
    pub slowlog_slower_than: Option<Duration>,
}

/// `admin_commands`: whether clients may administer the nodes through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AdminCommands {
    /// As Redis allows them: CONFIG SET/REWRITE/RESETSTAT, ACL writes, CLIENT KILL/PAUSE,
    /// MONITOR, BGSAVE/SAVE/BGREWRITEAOF, FLUSHALL/FLUSHDB.
    #[default]
    Allow,
    /// Those are refused with `-NOPERM`.
    Deny,
}

/// How the proxy uses its threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeShape {
    /// One single-threaded runtime per worker, each with its own listener (SO_REUSEPORT), backend
    /// connections and topology refresher: a request never crosses threads.
    #[default]
    PerCore,
    /// One work-stealing runtime shared by every worker.
    WorkStealing,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7777".into(),
            seeds: Vec::new(),
            read_from: ReadFrom::Master,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            metrics_listen: None,
            password: None,
            users: Vec::new(),
            node_auth: NodeAuth::default(),
            tls: None,
            node_tls: None,
            max_clients: 10_000,
            replica_max_lag_bytes: 1024 * 1024,
            read_your_writes: None,
            backend_connections: 1,
            command_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            refresh_interval: Duration::from_secs(5),
            client_idle_timeout: None,
            max_bulk_len: 512 * 1024 * 1024,
            max_args: 1024 * 1024,
            max_inline_len: 64 * 1024,
            max_pipeline: 1024,
            client_reply_buffer_limit: 64 * 1024 * 1024,
            max_reply_memory: 1024 * 1024 * 1024,
            worker_threads: 0,
            runtime: RuntimeShape::PerCore,
            shutdown_grace: Duration::from_secs(10),
            failover_hold: None,
            max_held_requests: 100_000,
            admin_commands: AdminCommands::Allow,
            // Off unless asked: timing every request and keeping its bytes cost most of ~700
            // userspace instructions per request at -P 16 (callgrind, 2026-12-02).
            slowlog_slower_than: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// The settings in the TOML file at `path`.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })
    }
}

impl Config {
    /// The configuration `args` (flags over the environment, as clap read them) give over the
    /// config file they name, over the defaults; validated.
    pub fn resolve(args: &Settings) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(p) => Settings::load(p)?,
            None => Settings::default(),
        };
        let mut merged = file.under(args.clone());
        // A node password given in a higher layer beats a password file from a lower one.
        if args.node_password.is_some() && args.node_password_file.is_none() {
            merged.node_password_file = None;
        }
        Config::from_settings(merged)
    }

    /// Fills what `s` leaves unset with the defaults, and checks the result.
    pub fn from_settings(s: Settings) -> Result<Config, ConfigError> {
        let d = Config::default();
        let ms = Duration::from_millis;
        let invalid = |m: &str| ConfigError::Invalid(m.into());
        let node_password = match (&s.node_password_file, s.node_password) {
            (Some(p), _) => Some(security::read_secret_file(p).map_err(ConfigError::Invalid)?),
            (None, p) => p,
        };
        let config = Config {
            listen: s.listen.unwrap_or(d.listen),
            seeds: s.seeds.unwrap_or_default(),
            read_from: s.read_from.unwrap_or(d.read_from),
            log_level: s.log_level.unwrap_or(d.log_level),
            log_format: s.log_format.unwrap_or(d.log_format),
            metrics_listen: s.metrics_listen,
            password: s.password,
            users: s.users.unwrap_or_default(),
            node_auth: NodeAuth {
                user: s.node_user,
                password: node_password,
            },
            tls: match s.tls_listen {
                None => None,
                Some(listen) => Some(ClientTls {
                    listen,
                    cert_file: s
                        .tls_cert_file
                        .ok_or_else(|| invalid("tls_listen needs tls_cert_file"))?,
                    key_file: s
                        .tls_key_file
                        .ok_or_else(|| invalid("tls_listen needs tls_key_file"))?,
                    client_ca_file: s.tls_client_ca_file,
                }),
            },
            node_tls: (s.node_tls == Some(true)).then(|| NodeTls {
                ca_file: s.node_tls_ca_file,
                cert_file: s.node_tls_cert_file,
                key_file: s.node_tls_key_file,
                server_name: s.node_tls_server_name,
                insecure_skip_verify: s.node_tls_insecure_skip_verify == Some(true),
            }),
            max_clients: s.max_clients.unwrap_or(d.max_clients),
            replica_max_lag_bytes: s.replica_max_lag_bytes.unwrap_or(d.replica_max_lag_bytes),
            read_your_writes: s.read_your_writes_ms.filter(|&n| n > 0).map(ms),
            backend_connections: s.backend_connections.unwrap_or(d.backend_connections),
            command_timeout: s.command_timeout_ms.map(ms).unwrap_or(d.command_timeout),
            connect_timeout: s.connect_timeout_ms.map(ms).unwrap_or(d.connect_timeout),
            refresh_interval: s.refresh_interval_ms.map(ms).unwrap_or(d.refresh_interval),
            client_idle_timeout: s
                .client_idle_timeout_secs
                .filter(|&n| n > 0)
                .map(Duration::from_secs),
            max_bulk_len: s.max_bulk_len.unwrap_or(d.max_bulk_len),
            max_args: s.max_args.unwrap_or(d.max_args),
            max_inline_len: s.max_inline_len.unwrap_or(d.max_inline_len),
            max_pipeline: s.max_pipeline.unwrap_or(d.max_pipeline),
            client_reply_buffer_limit: s
                .client_reply_buffer_limit
                .unwrap_or(d.client_reply_buffer_limit),
            max_reply_memory: s.max_reply_memory.unwrap_or(d.max_reply_memory),
            worker_threads: s.worker_threads.unwrap_or(d.worker_threads),
            runtime: s.runtime.unwrap_or(d.runtime),
            shutdown_grace: s.shutdown_grace_ms.map(ms).unwrap_or(d.shutdown_grace),
            failover_hold: s.failover_hold_ms.map(ms),
            max_held_requests: s.max_held_requests.unwrap_or(d.max_held_requests),
            admin_commands: s.admin_commands.unwrap_or(d.admin_commands),
            slowlog_slower_than: match s.slowlog_slower_than_us {
                None => d.slowlog_slower_than,
                Some(us) if us < 0 => None,
                Some(us) => Some(Duration::from_micros(us as u64)),
            },
        };
        config.validate()?;
        Ok(config)
    }

    /// Whether reads may go to replicas (`read_from` other than `master`).
    pub fn replica_reads(&self) -> bool {
        self.read_from != ReadFrom::Master
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.into()));
        if self.seeds.is_empty() {
            return bad("at least one --seed (or `seeds` in the config file) is needed");
        }
        if self.backend_connections == 0 || self.backend_connections > 64 {
            return bad("backend_connections must be 1..=64");
        }
        if self.max_clients == 0 || self.max_pipeline == 0 {
            return bad("max_clients and max_pipeline must be at least 1");
        }
        if self.client_reply_buffer_limit < 64 * 1024 || self.max_reply_memory < 64 * 1024 {
            return bad("client_reply_buffer_limit and max_reply_memory must be at least 65536");
        }
        if self.command_timeout.is_zero()
            || self.connect_timeout.is_zero()
            || self.refresh_interval.is_zero()
        {
            return bad("timeouts and the refresh interval must be above zero");
        }
        if self.max_bulk_len == 0 || self.max_args == 0 || self.max_inline_len < 16 {
            return bad("max_bulk_len and max_args must be at least 1, max_inline_len at least 16");
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log_level.as_str()) {
            return bad("log_level must be one of error, warn, info, debug, trace");
        }
        if self.listen == LISTEN_OFF && self.tls.is_none() {
            return bad("listen = \"off\" needs tls_listen: the proxy would accept no clients");
        }
        security::validate(
            &self.users,
            self.password.as_ref(),
            &self.node_auth,
            self.node_tls.as_ref(),
        )
        .map_err(ConfigError::Invalid)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_example_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/slotproxy.toml");
        let file = Settings::load(&path).expect("config/slotproxy.toml parses");
        assert!(file.seeds.as_ref().is_some_and(|s| !s.is_empty()));
        let args = Settings {
            config: Some(path),
            ..Default::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.listen, "127.0.0.1:7777");
    }

    #[test]
    fn flags_beat_the_file() {
        let dir = std::env::temp_dir().join(format!("slotproxy-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\nseeds = [\"127.0.0.1:5001\"]\nread_from = \"replica\"\n",
        )
        .unwrap();
        let args = Settings {
            config: Some(path.clone()),
            listen: Some("127.0.0.1:2".into()),
            ..Default::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.listen, "127.0.0.1:2");
        assert_eq!(c.read_from, ReadFrom::Replica);
        assert_eq!(c.seeds, vec!["127.0.0.1:5001".to_string()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failover_settings_come_from_file_and_flags() {
        let f = Settings::parse("failover_hold_ms = 7000\nmax_held_requests = 5\n").unwrap();
        assert_eq!(f.failover_hold_ms, Some(7000));
        assert_eq!(f.max_held_requests, Some(5));
        let args = Settings {
            seeds: Some(vec!["x:1".into()]),
            failover_hold_ms: Some(0),
            ..Default::default()
        };
        let c = Config::resolve(&args).unwrap();
        assert_eq!(c.failover_hold, Some(Duration::ZERO), "0 = never hold");
        assert_eq!(c.max_held_requests, 100_000);
        assert_eq!(
            Config::default().failover_hold,
            None,
            "learned from the cluster"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(Settings::parse("lisen = \"x\"").is_err());
        assert!(Settings::parse("read_from = \"sometimes\"").is_err());
        let c = Config {
            seeds: vec!["x:1".into()],
            backend_connections: 0,
            ..Default::default()
        };
        assert!(c.validate().is_err());
        assert!(Config::default().validate().is_err(), "no seeds");
    }

    #[test]
    fn env_beats_the_file_and_flags_beat_env() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: Settings,
        }
        let dir = std::env::temp_dir().join(format!("slotproxy-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\nseeds = [\"127.0.0.1:5001\"]\n",
        )
        .unwrap();
        // Only this test reads SLOTPROXY_* variables.
        std::env::set_var("SLOTPROXY_LISTEN", "127.0.0.1:3");
        std::env::set_var("SLOTPROXY_READ_FROM", "prefer-replica");
        let file = path.to_str().unwrap();
        let from_env = Cli::try_parse_from(["x", "--config", file]).unwrap();
        let c = Config::resolve(&from_env.serve).unwrap();
        let from_flag =
            Cli::try_parse_from(["x", "--config", file, "--listen", "127.0.0.1:2"]).unwrap();
        let f = Config::resolve(&from_flag.serve).unwrap();
        std::env::remove_var("SLOTPROXY_LISTEN");
        std::env::remove_var("SLOTPROXY_READ_FROM");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(c.listen, "127.0.0.1:3", "env over file");
        assert_eq!(c.read_from, ReadFrom::PreferReplica);
        assert_eq!(f.listen, "127.0.0.1:2", "flag over env");
    }

    #[test]
    fn every_setting_is_a_file_key_and_a_flag() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: Settings,
        }
        // Settings that were file-only before there was one struct for all sources.
        let flags = Cli::try_parse_from([
            "x",
            "--seed",
            "a:1,b:2",
            "--max-clients",
            "7",
            "--refresh-interval-ms",
            "250",
            "--node-tls",
            "--node-tls-insecure-skip-verify",
            "--read-your-writes-ms",
            "0",
        ])
        .unwrap()
        .serve;
        let file = Settings::parse("max_clients = 9\nbackend_connections = 2\n").unwrap();
        let c = Config::from_settings(file.under(flags)).unwrap();
        assert_eq!(c.seeds, vec!["a:1".to_string(), "b:2".to_string()]);
        assert_eq!(c.max_clients, 7, "the flag over the file");
        assert_eq!(c.backend_connections, 2, "the file where no flag says");
        assert_eq!(c.refresh_interval, Duration::from_millis(250));
        assert!(c.node_tls.as_ref().is_some_and(|t| t.insecure_skip_verify));
        assert_eq!(c.read_your_writes, None);
        // The file cannot name the file.
        assert!(Settings::parse("config = \"x.toml\"").is_err());
    }
}
