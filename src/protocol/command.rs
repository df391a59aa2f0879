//! The command table: for every command, its flags, where its keys are, and how the proxy
//! handles it. Built from a node's `COMMAND` reply at startup, with a shipped fallback recorded
//! from Redis 7.0.15 for when no node answers. (Interface stub: implementation in progress.)
use super::framer::Request;

/// Dense index of a command in its table (stable for the table's life); used for metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandId(pub u16);

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

/// What the proxy does with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// Forwarded to the node owning its keys' slot (any master when it has no key).
    Forward,
    /// Split across slots when its keys span several, replies merged.
    Split(SplitKind),
    /// Answered by the proxy itself: PING, ECHO, QUIT, SELECT, HELLO, AUTH, CLIENT, COMMAND, INFO,
    /// RESET, READONLY, READWRITE.
    Local,
    /// Sent to every master and the replies merged: DBSIZE, KEYS, SCAN, FLUSHALL, FLUSHDB,
    /// RANDOMKEY, SCRIPT LOAD/FLUSH/EXISTS.
    AllMasters,
    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH: need a connection pinned to one node.
    Transaction,
    /// Commands that may block the connection (BLPOP, BRPOP, BLMOVE, BZPOPMIN, XREAD(GROUP) with
    /// BLOCK, WAIT, ...): need a dedicated connection.
    Blocking,
    /// SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE and their UN- forms, MONITOR: a dedicated connection.
    PubSub,
    /// No sensible meaning through a proxy (CLUSTER ..., ASKING, SWAPDB, MOVE, SHUTDOWN, ...):
    /// refused with an error naming the command.
    Unsupported,
}

/// One command (or subcommand, named `container|sub` as Redis 7 does).
#[derive(Debug, Clone)]
pub struct CommandInfo {
    pub id: CommandId,
    /// Lower-case name, `client|setname` for subcommands.
    pub name: String,
    /// Redis arity: positive = exact argc, negative = at least -arity.
    pub arity: i32,
    /// Flag `readonly`: may be served by a replica.
    pub readonly: bool,
    /// Flag `write`.
    pub write: bool,
    pub handling: Handling,
}

/// The whole table.
#[derive(Debug, Clone)]
pub struct CommandTable {}

#[derive(Debug, thiserror::Error)]
#[error("bad COMMAND reply: {0}")]
pub struct CommandTableError(pub String);

impl CommandTable {
    /// Parses a raw RESP2 `COMMAND` reply.
    pub fn from_command_reply(reply: &[u8]) -> Result<CommandTable, CommandTableError> {
        let _ = reply;
        todo!()
    }
    /// The table shipped with slotproxy (Redis 7.0.15's COMMAND reply).
    pub fn fallback() -> CommandTable {
        todo!()
    }
    /// The command (or subcommand) `req` invokes; `None` if unknown. No allocation.
    pub fn lookup(&self, req: &Request) -> Option<&CommandInfo> {
        let _ = req;
        todo!()
    }
    /// Appends the argument indices of `req`'s keys to `out`, in argument order.
    pub fn keys(&self, info: &CommandInfo, req: &Request, out: &mut Vec<usize>) {
        let _ = (info, req, out);
        todo!()
    }
    /// The command with id `id`.
    pub fn get(&self, id: CommandId) -> &CommandInfo {
        let _ = id;
        todo!()
    }
    /// Number of entries (commands and subcommands).
    pub fn len(&self) -> usize {
        0
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CommandTable {
    /// Whether this request really blocks (XREAD only with BLOCK). (Interface stub.)
    pub fn may_block(&self, info: &CommandInfo, req: &Request) -> bool {
        let _ = (info, req);
        todo!()
    }
}
