//! The [`Handling`] of every command: decided once, from its name, when the table is built, so
//! the session, transactions, subscriptions and local answers match on a typed value instead
//! of comparing names on every request (in the spirit of redis-rs's `RoutingInfo` /
//! `ResponsePolicy`).

/// How a multi-key command is split per slot and its replies merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitKind {
    /// MGET: one key per part, replies are arrays merged back in key order.
    Mget,
    /// MSET: key/value pairs, replies are all `+OK`.
    Mset,
    /// DEL, UNLINK, EXISTS, TOUCH: integer replies summed.
    SumInts,
}

/// How the replies of a command sent to every master become the client's one reply (in the
/// spirit of redis-rs's `ResponsePolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllMastersReply {
    /// Integers summed: DBSIZE, PUBSUB NUMPAT, LATENCY RESET.
    Sum,
    /// SLOWLOG LEN: summed, plus the proxy's own slow log.
    SlowlogLen,
    /// SLOWLOG RESET: every master `+OK`, and the proxy's own slow log cleared.
    SlowlogReset,
    /// Arrays concatenated: KEYS.
    Concat,
    /// Every master must answer `+OK`: FLUSHALL, FLUSHDB, SCRIPT FLUSH, FUNCTION DELETE/FLUSH/
    /// RESTORE.
    AllOk,
    /// The first non-null reply: RANDOMKEY.
    FirstNonNull,
    /// Every master answers the same; that answer: SCRIPT LOAD, FUNCTION LOAD.
    Same,
    /// Arrays of 0/1 and-ed element by element: SCRIPT EXISTS.
    AndInts,
    /// Arrays merged as a set, without duplicates, in order of first appearance: PUBSUB
    /// CHANNELS, PUBSUB SHARDCHANNELS.
    Union,
    /// `channel, count` pairs (an array in RESP2, a map in RESP3) in the order asked, counts
    /// summed per channel: PUBSUB NUMSUB, PUBSUB SHARDNUMSUB.
    SumPerChannel,
    /// Every master must succeed; the first one's reply: BGSAVE, SAVE, BGREWRITEAOF (their
    /// status lines are the same on every node).
    AllSucceed,
    /// The smallest integer: LASTSAVE (the data set is only saved as of the oldest save).
    Min,
    /// SLOWLOG GET: every master's entries and the proxy's own, newest first, ids renumbered
    /// to stay unique.
    Slowlog,
    /// LATENCY LATEST: one entry per event, its latest sample and the largest maximum.
    LatencyLatest,
    /// LATENCY HISTORY: every master's samples, oldest first.
    LatencyHistory,
    /// ACL LOG: every master's entries, newest first (`ACL LOG RESET`: all `+OK`).
    AclLog,
}

/// How the replies of a command sent to every node, masters and replicas, become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllNodesReply {
    /// `+OK` only if every node applied it, else the first node's error (and a log line
    /// naming the nodes that did): CONFIG SET, CONFIG REWRITE, ACL SETUSER/DELUSER/LOAD/SAVE.
    AllOk,
    /// CONFIG RESETSTAT: as [`AllNodesReply::AllOk`], and the proxy's own statistics reset.
    ResetStats,
}

/// Which node a client's subscription connection is opened to, decided by the command that
/// opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeAt {
    /// SUBSCRIBE: the master owning the slot of the first channel, where PUBLISH to that
    /// channel goes too, so PUBLISH's reply counts this subscriber.
    ChannelSlot,
    /// SSUBSCRIBE: the master owning the shard channels' slot (one slot for all of them).
    ShardSlot,
    /// PSUBSCRIBE (a pattern has no slot) and the UN- forms: any master, by spread.
    AnyMaster,
}

/// A command the proxy answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalCommand {
    Ping,
    Echo,
    Quit,
    Select,
    Hello,
    Auth,
    Reset,
    /// READONLY, READWRITE: accepted, the read policy is the proxy's.
    ReadMode,
    /// ACL WHOAMI: the client's user, not the proxy's user on the node.
    Whoami,
    Client(ClientCommand),
    /// COMMAND and its subcommands: forwarded to any master after all (the cluster knows its
    /// commands best).
    Command,
}

/// CLIENT's subcommands, about the proxy's own clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCommand {
    SetName,
    GetName,
    Id,
    SetInfo,
    Info,
    List,
    Kill,
    Pause,
    Unpause,
    Reply,
    NoEvict,
    NoTouch,
    GetRedir,
    Help,
    /// A subcommand Redis has that the proxy does not answer (TRACKING, CACHING, ...), or none
    /// the table knows (Redis's `unknown subcommand` error).
    Other,
}

/// MULTI, EXEC, DISCARD, WATCH, UNWATCH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxCommand {
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
}

/// What the proxy does with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// Forwarded to the node owning its keys' slot (any master when it has no key). Also the
    /// handling of keyless introspection (CONFIG GET, MEMORY STATS, TIME, ROLE, ACL GETUSER/
    /// LIST/USERS/CAT/GENPASS/DRYRUN, LATENCY DOCTOR ...), which then shows one master's view,
    /// and of a container with an unknown subcommand (`CONFIG FOO`), so the node answers the
    /// error as Redis words it.
    Forward,
    /// PUBLISH: forwarded to the master owning the slot of its channel (`argv[1]`, hashed like
    /// a key). Redis Cluster delivers a message everywhere whichever node gets it, but only one
    /// node per channel keeps one publisher's messages in order, and PUBLISH's reply counts
    /// the subscribers of that node, where SUBSCRIBE puts them ([`SubscribeAt::ChannelSlot`]).
    /// The channel is not a key: in a transaction PUBLISH does not choose the node.
    ByChannel,
    /// Split across slots when its keys span several, replies merged.
    Split(SplitKind),
    /// Answered by the proxy itself.
    Local(LocalCommand),
    /// Sent to every master and the replies merged as said: DBSIZE, KEYS, FLUSHALL, FLUSHDB,
    /// RANDOMKEY, SCRIPT LOAD/FLUSH/EXISTS, FUNCTION LOAD/DELETE/FLUSH/RESTORE (a library
    /// must exist on every master for FCALL to work on any key, as with SCRIPT LOAD; every
    /// master answers the same reply), PUBSUB CHANNELS/NUMSUB/NUMPAT/SHARDCHANNELS/SHARDNUMSUB
    /// (each node counts only its own subscribers), SLOWLOG, LATENCY LATEST/HISTORY/RESET,
    /// BGSAVE, SAVE, BGREWRITEAOF, LASTSAVE, ACL LOG.
    AllMasters(AllMastersReply),
    /// Sent to every node, masters and replicas, in parallel: node settings and users must be
    /// the same on a replica that may become a master.
    AllNodes(AllNodesReply),
    /// INFO: the proxy's own sections, and the masters' combined.
    Info,
    /// SCAN: every master in turn, the client's cursor saying which.
    Scan,
    /// WAIT: the replicas of every master the client wrote to since its last WAIT, the
    /// smallest count (see `fanout/wait.rs`).
    Wait,
    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH: need a connection pinned to one node.
    Transaction(TxCommand),
    /// Commands that may block the connection: those with the server's `blocking` flag (BLPOP,
    /// BRPOP, BLMOVE, BRPOPLPUSH, BZPOPMIN, BZPOPMAX, BLMPOP, BZMPOP, XREAD, XREADGROUP).
    /// They need a dedicated connection; whether one request really blocks is
    /// [`super::CommandTable::may_block`].
    Blocking,
    /// SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE and their UN- forms: a dedicated connection, opened
    /// where the first such command says.
    PubSub(SubscribeAt),
    /// MONITOR: one stream merged from every master.
    Monitor,
    /// No sensible meaning through a proxy: refused with an error naming the command.
    /// CLUSTER (every subcommand), ASKING, RESTORE-ASKING, SWAPDB, MOVE, SHUTDOWN, FAILOVER,
    /// REPLICAOF, SLAVEOF, SYNC, PSYNC, REPLCONF, DEBUG, MODULE LOAD/LOADEX/UNLOAD (a module
    /// is a file on each node's host), SCRIPT KILL/DEBUG, FUNCTION KILL (the proxy cannot
    /// tell which node runs the script).
    Unsupported,
}

/// The proxy's handling of command `name` (`container|sub` for subcommands); see [`Handling`]
/// for the reasons behind each group.
pub(super) fn classify(name: &str, blocking: bool) -> Handling {
    use AllMastersReply as M;
    use Handling::*;
    use LocalCommand as L;
    let container = name.split('|').next().unwrap_or(name);
    match container {
        "client" => return Local(L::Client(client_command(name))),
        "command" => return Local(L::Command),
        "cluster" => return Unsupported,
        _ => {}
    }
    match name {
        "mget" => Split(SplitKind::Mget),
        "mset" => Split(SplitKind::Mset),
        "del" | "unlink" | "exists" | "touch" => Split(SplitKind::SumInts),
        "ping" => Local(L::Ping),
        "echo" => Local(L::Echo),
        "quit" => Local(L::Quit),
        "select" => Local(L::Select),
        "hello" => Local(L::Hello),
        "auth" => Local(L::Auth),
        "reset" => Local(L::Reset),
        "readonly" | "readwrite" => Local(L::ReadMode),
        "acl|whoami" => Local(L::Whoami),
        "info" => Info,
        "dbsize" | "pubsub|numpat" | "latency|reset" => AllMasters(M::Sum),
        "slowlog|len" => AllMasters(M::SlowlogLen),
        "slowlog|reset" => AllMasters(M::SlowlogReset),
        "keys" => AllMasters(M::Concat),
        "flushall" | "flushdb" | "script|flush" | "function|delete" | "function|flush"
        | "function|restore" => AllMasters(M::AllOk),
        "randomkey" => AllMasters(M::FirstNonNull),
        "script|load" | "function|load" => AllMasters(M::Same),
        "script|exists" => AllMasters(M::AndInts),
        "pubsub|channels" | "pubsub|shardchannels" => AllMasters(M::Union),
        "pubsub|numsub" | "pubsub|shardnumsub" => AllMasters(M::SumPerChannel),
        "bgsave" | "save" | "bgrewriteaof" => AllMasters(M::AllSucceed),
        "lastsave" => AllMasters(M::Min),
        "slowlog|get" => AllMasters(M::Slowlog),
        "latency|latest" => AllMasters(M::LatencyLatest),
        "latency|history" => AllMasters(M::LatencyHistory),
        "acl|log" => AllMasters(M::AclLog),
        "config|set" | "config|rewrite" | "acl|setuser" | "acl|deluser" | "acl|save"
        | "acl|load" => AllNodes(AllNodesReply::AllOk),
        "config|resetstat" => AllNodes(AllNodesReply::ResetStats),
        "scan" => Scan,
        "wait" => Wait,
        "publish" => ByChannel,
        "multi" => Transaction(TxCommand::Multi),
        "exec" => Transaction(TxCommand::Exec),
        "discard" => Transaction(TxCommand::Discard),
        "watch" => Transaction(TxCommand::Watch),
        "unwatch" => Transaction(TxCommand::Unwatch),
        "subscribe" => PubSub(SubscribeAt::ChannelSlot),
        "ssubscribe" => PubSub(SubscribeAt::ShardSlot),
        "psubscribe" | "unsubscribe" | "punsubscribe" | "sunsubscribe" => {
            PubSub(SubscribeAt::AnyMaster)
        }
        "monitor" => Monitor,
        "asking" | "restore-asking" | "swapdb" | "move" | "shutdown" | "failover" | "replicaof"
        | "slaveof" | "sync" | "psync" | "replconf" | "debug" | "module|load" | "module|loadex"
        | "module|unload" | "script|kill" | "script|debug" | "function|kill" => Unsupported,
        _ if blocking => Blocking,
        _ => Forward,
    }
}

fn client_command(name: &str) -> ClientCommand {
    use ClientCommand::*;
    match name {
        "client|setname" => SetName,
        "client|getname" => GetName,
        "client|id" => Id,
        "client|setinfo" => SetInfo,
        "client|info" => Info,
        "client|list" => List,
        "client|kill" => Kill,
        "client|pause" => Pause,
        "client|unpause" => Unpause,
        "client|reply" => Reply,
        "client|no-evict" => NoEvict,
        "client|no-touch" => NoTouch,
        "client|getredir" => GetRedir,
        "client|help" => Help,
        _ => Other,
    }
}

/// Node administration that `admin_commands = "deny"` refuses.
pub(super) fn is_admin(name: &str) -> bool {
    matches!(
        name,
        "config|set"
            | "config|rewrite"
            | "config|resetstat"
            | "acl|setuser"
            | "acl|deluser"
            | "acl|load"
            | "acl|save"
            | "client|kill"
            | "client|pause"
            | "monitor"
            | "bgsave"
            | "save"
            | "bgrewriteaof"
            | "flushall"
            | "flushdb"
    )
}

/// Whether `CLIENT PAUSE ms WRITE` holds command `name`: writes, and what Redis 7.0 holds with
/// them although the `write` flag is absent (scripts and functions may write, PUBLISH and
/// PFCOUNT propagate, WAIT waits for writes).
pub(super) fn pauses_on_write(name: &str, write: bool) -> bool {
    write
        || matches!(
            name,
            "eval" | "evalsha" | "fcall" | "publish" | "spublish" | "pfcount" | "wait"
        )
}
