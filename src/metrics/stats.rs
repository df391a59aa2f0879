//! The handles the hot path touches: per-command entries (created on first use, indexed by
//! command id), per-node backend counters ([`NodeStats`], held by each connection task), the
//! in-flight stamp of one command ([`Timed`]), and the bounded set of error codes a reply is
//! counted under ([`ErrorKind`]).
use super::sharded::{ShardedGauge, ShardedHistogram, Snapshot};
use crate::backend::BackendError;
use crate::cluster::topology::Role;
use crate::protocol::command::{CommandId, CommandTable};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Commands read but not yet answered, in this process. Process-wide rather than a field of
/// `Metrics` so that a [`Timed`] can give its count back when it is dropped unanswered (a client
/// that disconnects with requests in flight) without holding a reference per request.
static IN_FLIGHT: ShardedGauge = ShardedGauge::new();

pub(super) fn in_flight() -> i64 {
    IN_FLIGHT.get()
}

/// One command between being read and having its reply ready; in flight until dropped.
#[derive(Debug)]
pub struct Timed {
    started: Instant,
    command: CommandId,
    /// The request's raw bytes, kept only while the proxy's slow log is on (for its entry).
    /// Boxed: every queued reply carries a `Timed`, and 24 bytes less per item keeps its moves
    /// through the reply queue cheaper when the slow log is off.
    request: Option<Box<bytes::Bytes>>,
}

impl Timed {
    /// A command that arrived at `read_at` (the time of the read that completed it, shared by
    /// every request of a pipelined batch: one clock read per batch, not per command).
    #[inline]
    pub fn start(read_at: Instant) -> Timed {
        IN_FLIGHT.add(1);
        Timed {
            started: read_at,
            command: CommandId::UNKNOWN,
            request: None,
        }
    }

    /// Which command this is (`CommandId::UNKNOWN`, counted as `other`, until set).
    #[inline]
    pub fn set_command(&mut self, id: CommandId) {
        self.command = id;
    }

    pub(super) fn command(&self) -> CommandId {
        self.command
    }

    /// Keeps the request's bytes, for a slow-log entry if it turns out slow.
    #[inline]
    pub fn keep_request(&mut self, request: bytes::Bytes) {
        self.request = Some(Box::new(request));
    }

    /// The request's bytes, when kept.
    pub fn request(&self) -> Option<&bytes::Bytes> {
        self.request.as_deref()
    }

    /// When the request arrived.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Time since the request arrived.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        IN_FLIGHT.add(-1);
    }
}

/// The error code of an error reply: its first word, from a fixed set so the label stays
/// bounded whatever a node (or a module) answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Err,
    Moved,
    Ask,
    CrossSlot,
    ClusterDown,
    TryAgain,
    WrongType,
    NoAuth,
    WrongPass,
    NoPerm,
    ExecAbort,
    Loading,
    Busy,
    NoScript,
    Oom,
    ReadOnly,
    Other,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 17] = [
        ErrorKind::Err,
        ErrorKind::Moved,
        ErrorKind::Ask,
        ErrorKind::CrossSlot,
        ErrorKind::ClusterDown,
        ErrorKind::TryAgain,
        ErrorKind::WrongType,
        ErrorKind::NoAuth,
        ErrorKind::WrongPass,
        ErrorKind::NoPerm,
        ErrorKind::ExecAbort,
        ErrorKind::Loading,
        ErrorKind::Busy,
        ErrorKind::NoScript,
        ErrorKind::Oom,
        ErrorKind::ReadOnly,
        ErrorKind::Other,
    ];

    /// The label value: the code as Redis spells it, or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Err => "ERR",
            ErrorKind::Moved => "MOVED",
            ErrorKind::Ask => "ASK",
            ErrorKind::CrossSlot => "CROSSSLOT",
            ErrorKind::ClusterDown => "CLUSTERDOWN",
            ErrorKind::TryAgain => "TRYAGAIN",
            ErrorKind::WrongType => "WRONGTYPE",
            ErrorKind::NoAuth => "NOAUTH",
            ErrorKind::WrongPass => "WRONGPASS",
            ErrorKind::NoPerm => "NOPERM",
            ErrorKind::ExecAbort => "EXECABORT",
            ErrorKind::Loading => "LOADING",
            ErrorKind::Busy => "BUSY",
            ErrorKind::NoScript => "NOSCRIPT",
            ErrorKind::Oom => "OOM",
            ErrorKind::ReadOnly => "READONLY",
            ErrorKind::Other => "other",
        }
    }

    /// The kind of `reply` if it is an error (RESP2/RESP3 simple error `-CODE ...`, or RESP3
    /// blob error `!<len>\r\nCODE ...`); `None` for any other reply.
    pub fn of_reply(reply: &[u8]) -> Option<ErrorKind> {
        let msg = match *reply.first()? {
            b'-' => &reply[1..],
            b'!' => &reply[reply.iter().position(|&b| b == b'\n')? + 1..],
            _ => return None,
        };
        let end = msg
            .iter()
            .position(|&b| b == b' ' || b == b'\r')
            .unwrap_or(msg.len());
        let code = &msg[..end];
        Some(
            ErrorKind::ALL[..ErrorKind::ALL.len() - 1]
                .iter()
                .copied()
                .find(|k| k.as_str().as_bytes() == code)
                .unwrap_or(ErrorKind::Other),
        )
    }
}

/// One `command` label value: its latency histogram (whose count is the command count),
/// created on first use, and its error counters by kind.
pub(super) struct CommandEntry {
    name: String,
    duration: OnceLock<ShardedHistogram>,
    errors: [OnceLock<IntCounter>; ErrorKind::ALL.len()],
}

impl CommandEntry {
    pub fn new(name: String) -> CommandEntry {
        CommandEntry {
            name,
            duration: OnceLock::new(),
            errors: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    #[inline]
    pub fn duration(&self) -> &ShardedHistogram {
        self.duration.get_or_init(ShardedHistogram::default)
    }

    /// What the histogram holds, if the command was ever seen.
    pub fn snapshot(&self) -> Option<Snapshot> {
        self.duration.get().map(ShardedHistogram::snapshot)
    }

    /// The error counter for `kind`, resolved by label on its first use only.
    #[inline]
    pub fn error(&self, errors: &IntCounterVec, kind: ErrorKind) -> &IntCounter {
        self.errors[kind as usize]
            .get_or_init(|| errors.with_label_values(&[&self.name, kind.as_str()]))
    }
}

/// One entry per top-level command of `table` (subcommands are counted as their container),
/// and for every command id, the position of its entry.
pub(super) fn command_entries(table: &CommandTable) -> (Vec<u16>, Vec<CommandEntry>) {
    let mut index = vec![0u16; table.len()];
    let mut entries = Vec::new();
    for info in table.top_level() {
        index[info.id.0 as usize] = entries.len() as u16;
        entries.push(CommandEntry::new(info.name.clone()));
    }
    for info in table.iter() {
        if let Some(parent) = info.parent {
            index[info.id.0 as usize] = index[parent.0 as usize];
        }
    }
    (index, entries)
}

/// The labelled families per-node connection counters are resolved from.
pub(super) struct BackendVecs {
    pub connections: IntGaugeVec,
    pub errors: IntCounterVec,
    pub replica_lag: IntGaugeVec,
}

/// One node's backend counters. Each connection task resolves its node's `NodeStats` once
/// when it starts; per batch of requests it then costs a relaxed load (the role), and per
/// request a histogram observation (two uncontended adds).
pub struct NodeStats {
    label: String,
    /// The node's role in the last topology that listed it (`Role as u8`); nodes first seen
    /// through a redirect count as masters until a topology says otherwise.
    role: AtomicU8,
    /// Latency by role (master, replica), created on first use; its count is the request count.
    by_role: [OnceLock<ShardedHistogram>; 2],
    connections: IntGauge,
    /// Connection errors: connect, lost, timeout, auth, tls.
    errors: [IntCounter; 5],
    /// Replication lag in bytes, created when the node is first seen as a replica.
    replica_lag: OnceLock<IntGauge>,
    lag_vec: IntGaugeVec,
}

impl std::fmt::Debug for NodeStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStats")
            .field("node", &self.label)
            .finish_non_exhaustive()
    }
}

impl NodeStats {
    pub(super) fn new(addr: SocketAddr, vecs: &BackendVecs) -> NodeStats {
        let label = addr.to_string();
        NodeStats {
            role: AtomicU8::new(Role::Master as u8),
            by_role: [OnceLock::new(), OnceLock::new()],
            connections: vecs.connections.with_label_values(&[&label]),
            errors: ["connect", "lost", "timeout", "auth", "tls"]
                .map(|e| vecs.errors.with_label_values(&[label.as_str(), e])),
            replica_lag: OnceLock::new(),
            lag_vec: vecs.replica_lag.clone(),
            label,
        }
    }

    pub(super) fn set_role(&self, role: Role) {
        self.role.store(role as u8, Ordering::Relaxed);
    }

    /// The node label, and per role seen, what its histogram holds.
    pub(super) fn snapshots(&self) -> impl Iterator<Item = (&str, Role, Snapshot)> + '_ {
        [Role::Master, Role::Replica]
            .into_iter()
            .filter_map(move |role| {
                let h = self.by_role[role as usize].get()?;
                Some((self.label.as_str(), role, h.snapshot()))
            })
    }

    pub(super) fn connected(&self, up: bool) {
        if up {
            self.connections.inc();
        } else {
            self.connections.dec();
        }
    }

    pub(super) fn failed(&self, error: BackendError) {
        let i = match error {
            BackendError::Connect => 0,
            BackendError::Lost => 1,
            BackendError::Timeout => 2,
            BackendError::Auth => 3,
            BackendError::Tls => 4,
        };
        self.errors[i].inc();
    }
}

impl crate::backend::NodeObserver for NodeStats {
    /// The node's role now (read when a batch of requests is written).
    #[inline]
    fn role(&self) -> Role {
        match self.role.load(Ordering::Relaxed) {
            0 => Role::Master,
            _ => Role::Replica,
        }
    }

    /// A request written while the node had `role` was answered after `took`.
    #[inline]
    fn observe(&self, role: Role, took: Duration) {
        self.by_role[role as usize]
            .get_or_init(ShardedHistogram::default)
            .observe(took);
    }

    /// A replica's replication lag behind its master, in bytes (-1: link down or unknown).
    fn set_replica_lag(&self, bytes: i64) {
        self.replica_lag
            .get_or_init(|| self.lag_vec.with_label_values(&[self.label.as_str()]))
            .set(bytes);
    }
}
