//! Configuration: the TOML file (`--config`), `SLOTPROXY_*` environment variables and flags,
//! merged as flag > env > file > default, then validated. The security settings (users,
//! credentials and TLS) have their types in [`security`].
use crate::router::ReadFrom;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod security;
pub use security::{Access, ClientTls, NodeAuth, NodeTls, Secret, UserConfig};

/// The address value that turns the plain-TCP client listener off (with `tls_listen` set).
pub const LISTEN_OFF: &str = "off";

/// The settings `slotproxy serve` runs with, after merging.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub seeds: Vec<String>,
    pub read_from: ReadFrom,
    pub log_level: String,
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
    pub worker_threads: usize,
    pub runtime: RuntimeShape,
    /// Whether clients may run node administration (CONFIG SET, ACL SETUSER, CLIENT KILL, ...).
    pub admin_commands: AdminCommands,
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
            metrics_listen: None,
            password: None,
            users: Vec::new(),
            node_auth: NodeAuth::default(),
            tls: None,
            node_tls: None,
            max_clients: 10_000,
            backend_connections: 1,
            command_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            refresh_interval: Duration::from_secs(5),
            client_idle_timeout: None,
            max_bulk_len: 512 * 1024 * 1024,
            max_args: 1024 * 1024,
            max_inline_len: 64 * 1024,
            max_pipeline: 1024,
            worker_threads: 0,
            runtime: RuntimeShape::PerCore,
            admin_commands: AdminCommands::Allow,
        }
    }
}

/// The TOML file; every key optional. See `config/slotproxy.toml` for the documented example.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub seeds: Option<Vec<String>>,
    pub read_from: Option<ReadFrom>,
    pub log_level: Option<String>,
    pub metrics_listen: Option<String>,
    pub password: Option<Secret>,
    pub users: Option<Vec<UserConfig>>,
    pub node_user: Option<String>,
    pub node_password: Option<Secret>,
    pub node_password_file: Option<PathBuf>,
    pub tls_listen: Option<String>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub tls_client_ca_file: Option<PathBuf>,
    pub node_tls: Option<bool>,
    pub node_tls_ca_file: Option<PathBuf>,
    pub node_tls_cert_file: Option<PathBuf>,
    pub node_tls_key_file: Option<PathBuf>,
    pub node_tls_server_name: Option<String>,
    pub node_tls_insecure_skip_verify: Option<bool>,
    pub max_clients: Option<usize>,
    pub backend_connections: Option<usize>,
    pub command_timeout_ms: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub refresh_interval_ms: Option<u64>,
    /// 0 = never close idle clients.
    pub client_idle_timeout_secs: Option<u64>,
    pub max_bulk_len: Option<usize>,
    pub max_args: Option<usize>,
    pub max_inline_len: Option<usize>,
    pub max_pipeline: Option<usize>,
    /// 0 = one per core.
    pub worker_threads: Option<usize>,
    pub runtime: Option<RuntimeShape>,
    pub admin_commands: Option<AdminCommands>,
}

/// Flags of `slotproxy serve`; each also reads `SLOTPROXY_<NAME>` from the environment.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Address to accept clients on [default: 127.0.0.1:7777]
    #[arg(long, env = "SLOTPROXY_LISTEN")]
    pub listen: Option<String>,
    /// A cluster node to learn the topology from (repeatable; any node will do)
    #[arg(long = "seed", env = "SLOTPROXY_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// Where read-only commands go [default: master]
    #[arg(long, value_enum, env = "SLOTPROXY_READ_FROM")]
    pub read_from: Option<ReadFrom>,
    /// TOML config file
    #[arg(long, env = "SLOTPROXY_CONFIG")]
    pub config: Option<PathBuf>,
    /// error, warn, info, debug or trace [default: info]
    #[arg(long, env = "SLOTPROXY_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Address for the Prometheus /metrics, /healthz and /readyz HTTP listener (off if unset)
    #[arg(long, env = "SLOTPROXY_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Password clients must give with AUTH or HELLO (none if unset)
    #[arg(long, env = "SLOTPROXY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// ACL user the proxy authenticates as on every node (default user if unset)
    #[arg(long, env = "SLOTPROXY_NODE_USER")]
    pub node_user: Option<String>,
    /// Password for the nodes; prefer SLOTPROXY_NODE_PASSWORD or --node-password-file
    #[arg(
        long,
        env = "SLOTPROXY_NODE_PASSWORD",
        hide_env_values = true,
        hide = true
    )]
    pub node_password: Option<String>,
    /// File whose first line is the nodes' password (keeps it out of argv and the environment)
    #[arg(long, env = "SLOTPROXY_NODE_PASSWORD_FILE")]
    pub node_password_file: Option<PathBuf>,
    /// Address of a TLS listener for clients (needs --tls-cert-file and --tls-key-file)
    #[arg(long, env = "SLOTPROXY_TLS_LISTEN")]
    pub tls_listen: Option<String>,
    /// PEM certificate chain the TLS listener presents
    #[arg(long, env = "SLOTPROXY_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of that certificate
    #[arg(long, env = "SLOTPROXY_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates; when set, TLS clients must present a certificate they signed
    #[arg(long, env = "SLOTPROXY_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Speak TLS to the nodes
    #[arg(long, env = "SLOTPROXY_NODE_TLS")]
    pub node_tls: bool,
    /// PEM CA certificates that sign the nodes' certificates
    #[arg(long, env = "SLOTPROXY_NODE_TLS_CA_FILE")]
    pub node_tls_ca_file: Option<PathBuf>,
    /// PEM client certificate for the nodes (tls-auth-clients)
    #[arg(long, env = "SLOTPROXY_NODE_TLS_CERT_FILE")]
    pub node_tls_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate
    #[arg(long, env = "SLOTPROXY_NODE_TLS_KEY_FILE")]
    pub node_tls_key_file: Option<PathBuf>,
    /// Name the nodes' certificates are verified against (default: the node's IP address)
    #[arg(long, env = "SLOTPROXY_NODE_TLS_SERVER_NAME")]
    pub node_tls_server_name: Option<String>,
    /// Accept any node certificate (labs only)
    #[arg(long, env = "SLOTPROXY_NODE_TLS_INSECURE_SKIP_VERIFY")]
    pub node_tls_insecure_skip_verify: bool,
    /// Reply timeout for a command sent to a node, in milliseconds [default: 5000]
    #[arg(long, env = "SLOTPROXY_COMMAND_TIMEOUT_MS")]
    pub command_timeout_ms: Option<u64>,
    /// Runtime worker threads, 0 = one per core [default: 0]
    #[arg(long, env = "SLOTPROXY_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// per-core (a single-threaded runtime per worker) or work-stealing [default: per-core]
    #[arg(long, value_enum, env = "SLOTPROXY_RUNTIME")]
    pub runtime: Option<RuntimeShape>,
    /// allow or deny node administration by clients (CONFIG SET, ACL SETUSER, CLIENT KILL,
    /// FLUSHALL, ...) [default: allow]
    #[arg(long, value_enum, env = "SLOTPROXY_ADMIN_COMMANDS")]
    pub admin_commands: Option<AdminCommands>,
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

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })
    }

    pub fn parse(text: &str) -> Result<FileConfig, toml::de::Error> {
        toml::from_str(text)
    }
}

impl Config {
    /// Merges flags (which clap already merged with the environment) over the file over defaults.
    pub fn resolve(args: &ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let d = Config::default();
        let ms = Duration::from_millis;
        let config =
            Config {
                listen: args.listen.clone().or(file.listen).unwrap_or(d.listen),
                seeds: if args.seeds.is_empty() {
                    file.seeds.unwrap_or_default()
                } else {
                    args.seeds.clone()
                },
                read_from: args.read_from.or(file.read_from).unwrap_or(d.read_from),
                log_level: args
                    .log_level
                    .clone()
                    .or(file.log_level)
                    .unwrap_or(d.log_level),
                metrics_listen: args.metrics_listen.clone().or(file.metrics_listen),
                password: args.password.clone().map(Secret::new).or(file.password),
                users: file.users.unwrap_or_default(),
                node_auth: NodeAuth {
                    user: args.node_user.clone().or(file.node_user),
                    password: match (
                        &args.node_password_file,
                        &args.node_password,
                        &file.node_password_file,
                    ) {
                        (Some(p), _, _) => {
                            Some(security::read_secret_file(p).map_err(ConfigError::Invalid)?)
                        }
                        (None, Some(p), _) => Some(Secret::new(p.clone())),
                        (None, None, Some(p)) => {
                            Some(security::read_secret_file(p).map_err(ConfigError::Invalid)?)
                        }
                        (None, None, None) => file.node_password,
                    },
                },
                tls: match args.tls_listen.clone().or(file.tls_listen) {
                    None => None,
                    Some(listen) => Some(ClientTls {
                        listen,
                        cert_file: args
                            .tls_cert_file
                            .clone()
                            .or(file.tls_cert_file)
                            .ok_or_else(|| {
                                ConfigError::Invalid("tls_listen needs tls_cert_file".into())
                            })?,
                        key_file: args.tls_key_file.clone().or(file.tls_key_file).ok_or_else(
                            || ConfigError::Invalid("tls_listen needs tls_key_file".into()),
                        )?,
                        client_ca_file: args.tls_client_ca_file.clone().or(file.tls_client_ca_file),
                    }),
                },
                node_tls: (args.node_tls || file.node_tls == Some(true)).then(|| NodeTls {
                    ca_file: args.node_tls_ca_file.clone().or(file.node_tls_ca_file),
                    cert_file: args.node_tls_cert_file.clone().or(file.node_tls_cert_file),
                    key_file: args.node_tls_key_file.clone().or(file.node_tls_key_file),
                    server_name: args
                        .node_tls_server_name
                        .clone()
                        .or(file.node_tls_server_name),
                    insecure_skip_verify: args.node_tls_insecure_skip_verify
                        || file.node_tls_insecure_skip_verify == Some(true),
                }),
                max_clients: file.max_clients.unwrap_or(d.max_clients),
                backend_connections: file.backend_connections.unwrap_or(d.backend_connections),
                command_timeout: args
                    .command_timeout_ms
                    .or(file.command_timeout_ms)
                    .map(ms)
                    .unwrap_or(d.command_timeout),
                connect_timeout: file.connect_timeout_ms.map(ms).unwrap_or(d.connect_timeout),
                refresh_interval: file
                    .refresh_interval_ms
                    .map(ms)
                    .unwrap_or(d.refresh_interval),
                client_idle_timeout: match file.client_idle_timeout_secs {
                    None | Some(0) => None,
                    Some(s) => Some(Duration::from_secs(s)),
                },
                max_bulk_len: file.max_bulk_len.unwrap_or(d.max_bulk_len),
                max_args: file.max_args.unwrap_or(d.max_args),
                max_inline_len: file.max_inline_len.unwrap_or(d.max_inline_len),
                max_pipeline: file.max_pipeline.unwrap_or(d.max_pipeline),
                worker_threads: args
                    .worker_threads
                    .or(file.worker_threads)
                    .unwrap_or(d.worker_threads),
                runtime: args.runtime.or(file.runtime).unwrap_or(d.runtime),
                admin_commands: args
                    .admin_commands
                    .or(file.admin_commands)
                    .unwrap_or(d.admin_commands),
            };
        config.validate()?;
        Ok(config)
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
        let file = FileConfig::load(&path).expect("config/slotproxy.toml parses");
        assert!(file.seeds.as_ref().is_some_and(|s| !s.is_empty()));
        let args = ServeArgs {
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
        let args = ServeArgs {
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
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(FileConfig::parse("lisen = \"x\"").is_err());
        assert!(FileConfig::parse("read_from = \"sometimes\"").is_err());
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
            serve: ServeArgs,
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
}
