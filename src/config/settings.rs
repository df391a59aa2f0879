//! One layer of settings, as every source gives them: the TOML file (`--config`), the
//! `SLOTPROXY_*` environment and the flags of `slotproxy serve` / `up`. One struct serves all
//! three (serde reads the file, clap the flags and the environment), every field optional, and
//! layers merge field by field ([`Settings::under`]): flag > env > file > default. The defaults
//! and the typed [`Config`](super::Config) built from the merged layer live in `config.rs`.
//!
//! A setting is added here in one entry (its doc is the `--help` text and its name the file key,
//! the flag and the variable), plus its field and default in `Config`.
use super::{AdminCommands, LogFormat, RuntimeShape, Secret, UserConfig};
use crate::router::ReadFrom;
use serde::Deserialize;
use std::path::PathBuf;

/// Declares [`Settings`] and its field-by-field merge from one list, so the two cannot drift.
macro_rules! settings {
    ($( $(#[$meta:meta])* $name:ident : $ty:ty ),* $(,)?) => {
        /// One layer of settings (file, environment or flags); see the module doc.
        #[derive(Debug, Clone, Default, clap::Args, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            $( $(#[$meta])* pub $name: Option<$ty>, )*
        }

        impl Settings {
            /// This layer with `over`'s values where `over` has them.
            pub fn under(self, over: Settings) -> Settings {
                Settings { $( $name: over.$name.or(self.$name), )* }
            }
        }
    };
}

settings! {
    /// TOML config file
    #[arg(long, env = "SLOTPROXY_CONFIG")]
    #[serde(skip)]
    config: PathBuf,
    /// Address to accept clients on, or "off" (with --tls-listen) [default: 127.0.0.1:7777]
    #[arg(long, env = "SLOTPROXY_LISTEN")]
    listen: String,
    /// A cluster node to learn the topology from (repeatable; any node will do)
    #[arg(long = "seed", env = "SLOTPROXY_SEEDS", value_delimiter = ',')]
    seeds: Vec<String>,
    /// Where read-only commands go [default: master]
    #[arg(long, value_enum, env = "SLOTPROXY_READ_FROM")]
    read_from: ReadFrom,
    /// error, warn, info, debug or trace [default: info]
    #[arg(long, env = "SLOTPROXY_LOG_LEVEL")]
    log_level: String,
    /// text or json (one object a line) [default: text]
    #[arg(long, value_enum, env = "SLOTPROXY_LOG_FORMAT")]
    log_format: LogFormat,
    /// Address for the Prometheus /metrics, /healthz and /readyz HTTP listener (off if unset)
    #[arg(long, env = "SLOTPROXY_METRICS_LISTEN")]
    metrics_listen: String,
    /// Password clients must give with AUTH or HELLO (none if unset)
    #[arg(long, env = "SLOTPROXY_PASSWORD", hide_env_values = true)]
    password: Secret,
    /// Named client users (config file only: [[users]] tables)
    #[arg(skip)]
    users: Vec<UserConfig>,
    /// ACL user the proxy authenticates as on every node (default user if unset)
    #[arg(long, env = "SLOTPROXY_NODE_USER")]
    node_user: String,
    /// Password for the nodes; prefer SLOTPROXY_NODE_PASSWORD or --node-password-file
    #[arg(long, env = "SLOTPROXY_NODE_PASSWORD", hide_env_values = true, hide = true)]
    node_password: Secret,
    /// File whose first line is the nodes' password (keeps it out of argv and the environment)
    #[arg(long, env = "SLOTPROXY_NODE_PASSWORD_FILE")]
    node_password_file: PathBuf,
    /// Address of a TLS listener for clients (needs --tls-cert-file and --tls-key-file)
    #[arg(long, env = "SLOTPROXY_TLS_LISTEN")]
    tls_listen: String,
    /// PEM certificate chain the TLS listener presents
    #[arg(long, env = "SLOTPROXY_TLS_CERT_FILE")]
    tls_cert_file: PathBuf,
    /// PEM private key of that certificate
    #[arg(long, env = "SLOTPROXY_TLS_KEY_FILE")]
    tls_key_file: PathBuf,
    /// PEM CA certificates; when set, TLS clients must present a certificate they signed
    #[arg(long, env = "SLOTPROXY_TLS_CLIENT_CA_FILE")]
    tls_client_ca_file: PathBuf,
    /// Speak TLS to the nodes
    #[arg(long, env = "SLOTPROXY_NODE_TLS", num_args = 0..=1, default_missing_value = "true")]
    node_tls: bool,
    /// PEM CA certificates that sign the nodes' certificates
    #[arg(long, env = "SLOTPROXY_NODE_TLS_CA_FILE")]
    node_tls_ca_file: PathBuf,
    /// PEM client certificate for the nodes (tls-auth-clients)
    #[arg(long, env = "SLOTPROXY_NODE_TLS_CERT_FILE")]
    node_tls_cert_file: PathBuf,
    /// PEM private key of the client certificate
    #[arg(long, env = "SLOTPROXY_NODE_TLS_KEY_FILE")]
    node_tls_key_file: PathBuf,
    /// Name the nodes' certificates are verified against (default: the node's IP address)
    #[arg(long, env = "SLOTPROXY_NODE_TLS_SERVER_NAME")]
    node_tls_server_name: String,
    /// Accept any node certificate (labs only)
    #[arg(
        long,
        env = "SLOTPROXY_NODE_TLS_INSECURE_SKIP_VERIFY",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    node_tls_insecure_skip_verify: bool,
    /// Clients beyond this many are refused [default: 10000]
    #[arg(long, env = "SLOTPROXY_MAX_CLIENTS")]
    max_clients: usize,
    /// With replica reads: a replica gets reads only within this many bytes of its master
    /// [default: 1048576]
    #[arg(long, env = "SLOTPROXY_REPLICA_MAX_LAG_BYTES")]
    replica_max_lag_bytes: u64,
    /// With replica reads: after a write to a slot, the client reads it from the master for
    /// this long, in ms (0: off) [default: 0]
    #[arg(long, env = "SLOTPROXY_READ_YOUR_WRITES_MS")]
    read_your_writes_ms: u64,
    /// Shared, pipelined connections per node and worker [default: 1]
    #[arg(long, env = "SLOTPROXY_BACKEND_CONNECTIONS")]
    backend_connections: usize,
    /// Reply timeout for a command sent to a node, in milliseconds [default: 5000]
    #[arg(long, env = "SLOTPROXY_COMMAND_TIMEOUT_MS")]
    command_timeout_ms: u64,
    /// Connect (and connection set-up) timeout, in milliseconds [default: 1000]
    #[arg(long, env = "SLOTPROXY_CONNECT_TIMEOUT_MS")]
    connect_timeout_ms: u64,
    /// How often the topology is re-read, in milliseconds [default: 5000]
    #[arg(long, env = "SLOTPROXY_REFRESH_INTERVAL_MS")]
    refresh_interval_ms: u64,
    /// Close clients idle this long, in seconds (0: never) [default: 0]
    #[arg(long, env = "SLOTPROXY_CLIENT_IDLE_TIMEOUT_SECS")]
    client_idle_timeout_secs: u64,
    /// Longest bulk string a client may send, in bytes [default: 536870912]
    #[arg(long, env = "SLOTPROXY_MAX_BULK_LEN")]
    max_bulk_len: usize,
    /// Most arguments in one request [default: 1048576]
    #[arg(long, env = "SLOTPROXY_MAX_ARGS")]
    max_args: usize,
    /// Longest inline command line, in bytes [default: 65536]
    #[arg(long, env = "SLOTPROXY_MAX_INLINE_LEN")]
    max_inline_len: usize,
    /// Requests one client may have in flight before the proxy stops reading it [default: 1024]
    #[arg(long, env = "SLOTPROXY_MAX_PIPELINE")]
    max_pipeline: usize,
    /// Bytes of replies owed to one client before the proxy stops reading it [default: 64 MiB]
    #[arg(long, env = "SLOTPROXY_CLIENT_REPLY_BUFFER_LIMIT")]
    client_reply_buffer_limit: usize,
    /// Bytes of replies owed to all clients before the biggest debtors are paused
    /// [default: 1 GiB]
    #[arg(long, env = "SLOTPROXY_MAX_REPLY_MEMORY")]
    max_reply_memory: usize,
    /// Runtime worker threads, 0 = one per core (one on 2 cores or fewer) [default: 0]
    #[arg(long, env = "SLOTPROXY_WORKER_THREADS")]
    worker_threads: usize,
    /// per-core (a single-threaded runtime per worker) or work-stealing [default: per-core]
    #[arg(long, value_enum, env = "SLOTPROXY_RUNTIME")]
    runtime: RuntimeShape,
    /// On SIGTERM/SIGINT, how long clients get to receive their replies, in ms [default: 10000]
    #[arg(long, env = "SLOTPROXY_SHUTDOWN_GRACE_MS")]
    shutdown_grace_ms: u64,
    /// How long a request may wait for a new master during a failover, in milliseconds
    /// [default: twice the cluster's cluster-node-timeout]
    #[arg(long, env = "SLOTPROXY_FAILOVER_HOLD_MS")]
    failover_hold_ms: u64,
    /// Requests held during failovers at once, process-wide; beyond it: the error at once
    /// [default: 100000]
    #[arg(long, env = "SLOTPROXY_MAX_HELD_REQUESTS")]
    max_held_requests: usize,
    /// allow (as Redis) or deny: refuse CONFIG SET/REWRITE/RESETSTAT, ACL writes, CLIENT
    /// KILL/PAUSE, MONITOR, BGSAVE/SAVE, FLUSHALL/FLUSHDB with -NOPERM [default: allow]
    #[arg(long, value_enum, env = "SLOTPROXY_ADMIN_COMMANDS")]
    admin_commands: AdminCommands,
    /// Requests that take this long through the proxy, in microseconds, go into the proxy's
    /// own SLOWLOG (merged with the masters'; 10000 is Redis's threshold); negative: off
    /// [default: off]
    #[arg(long, env = "SLOTPROXY_SLOWLOG_SLOWER_THAN_US", allow_negative_numbers = true)]
    slowlog_slower_than_us: i64,
}

impl Settings {
    /// Parses a TOML file's text (unknown keys are refused).
    pub fn parse(text: &str) -> Result<Settings, toml::de::Error> {
        toml::from_str(text)
    }
}
