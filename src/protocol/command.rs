//! The command table: for every command (and Redis 7 subcommand), its flags, where its keys
//! are, and how the proxy handles it.
//!
//! This module owns:
//! - parsing a node's raw RESP2 `COMMAND` reply into a [`CommandTable`] at startup;
//! - the fallback table shipped with slotproxy ([`CommandTable::fallback`]): Redis 7.0.15's
//!   `COMMAND` reply, recorded byte for byte in `commands-redis-7.0.15.resp`. Regenerate it
//!   with `python3 src/protocol/gen-fallback.py [path/to/redis-server]` (it starts a throwaway
//!   server on a unix socket, captures the reply, checks it is complete and stops the server);
//! - [`CommandTable::lookup`]: case-insensitive, allocation-free resolution of a request to its
//!   command, or subcommand (`CLIENT SETNAME` -> `client|setname`), the command name found by
//!   length and first letter without hashing;
//! - [`CommandTable::keys`]: key positions, via the key specs (interpreted in
//!   [`super::keyspec`]), so EVAL, XREAD, ZUNIONSTORE, ... route on their real keys, never on
//!   `argv[1]`;
//! - the [`Handling`] classification, the one place that decides which commands leave the
//!   shared forwarding path.
//!
//! Read-only/write come from the server's own flags (GETDEL is a write), never from a list
//! kept here.
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use redis_protocol::resp2::types::OwnedFrame;

use super::framer::Request;
use super::keyspec::{self, frame_bytes, string_list, KeyFinder, KeySpec};
use crate::auth::{self, Requires};

mod handling;
use handling::classify;
pub use handling::{
    AllMastersReply, AllNodesReply, ClientCommand, Handling, LocalCommand, SplitKind, SubscribeAt,
    TxCommand,
};

/// Dense index of a command in its table (stable for the table's life); used for metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommandId(pub u16);

impl CommandId {
    /// The id metrics use for a command the table does not know (a module command, a typo).
    /// [`CommandTable::get`] answers it with a synthetic `unknown` entry (handling
    /// [`Handling::Forward`], so the node answers `-ERR unknown command` exactly as Redis
    /// does); it is not part of [`CommandTable::ids`].
    pub const UNKNOWN: CommandId = CommandId(u16::MAX);
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
    /// Node administration that `admin_commands = "deny"` refuses (CONFIG SET, ACL SETUSER,
    /// CLIENT KILL, FLUSHALL, ...).
    pub admin: bool,
    /// Held by `CLIENT PAUSE ms WRITE`.
    pub pauses_on_write: bool,
    /// What a client must be to run it (logged in, full access), from its flags and ACL
    /// categories; see [`crate::auth::requirement`].
    pub requires: Requires,
    /// All flags as the server names them (`write`, `denyoom`, `movablekeys`, ...).
    pub flags: Vec<String>,
    /// Legacy key range: first key index (0 = none), last (negative = from the end), step.
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
    /// ACL categories (`@read`, `@string`, ...).
    pub acl_categories: Vec<String>,
    /// Command tips (`request_policy:all_shards`, `nondeterministic_output`, ...).
    pub tips: Vec<String>,
    /// Redis 7 key specs, in the server's order.
    pub key_specs: Vec<KeySpec>,
    /// How [`CommandTable::keys`] finds this command's keys.
    pub key_finder: KeyFinder,
    /// The container of a subcommand (`client` for `client|setname`).
    pub parent: Option<CommandId>,
    /// The subcommands of a container, sorted by name.
    pub subcommands: Vec<CommandId>,
}

/// Hashes command names (a few bytes) with FNV-1a: cheaper than SipHash on the hot path, and
/// the keys are the server's command names, not attacker-chosen.
struct NameHasher(u64);

impl Default for NameHasher {
    fn default() -> Self {
        NameHasher(0xcbf2_9ce4_8422_2325) // the FNV-1a 64-bit offset basis
    }
}

impl Hasher for NameHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

type NameMap = HashMap<Box<[u8]>, CommandId, BuildHasherDefault<NameHasher>>;

/// The names a client can type as `argv[0]` (every name without a `|`), grouped by length and
/// first letter, so [`CommandTable::lookup`] finds the command with one or two case-insensitive
/// comparisons of a few bytes instead of lower-casing into a buffer, hashing and probing.
/// Built from `by_name` once the table is complete, so both always agree.
#[derive(Debug, Clone, Default)]
struct TopLevelIndex {
    /// `names[starts[b] as usize..starts[b + 1] as usize]` holds bucket `b`'s names.
    starts: Vec<u16>,
    /// Lower-case name and id, sorted by bucket.
    names: Vec<(Box<[u8]>, CommandId)>,
}

impl TopLevelIndex {
    /// Length and first byte (its low five bits: upper and lower case of a letter agree).
    fn bucket(name: &[u8]) -> usize {
        name.len() * 32 + usize::from(name.first().map_or(0, |b| b & 0x1f))
    }

    fn build(by_name: &NameMap, longest: usize) -> TopLevelIndex {
        let mut names: Vec<(Box<[u8]>, CommandId)> = by_name
            .iter()
            .filter(|(name, _)| !name.contains(&b'|'))
            .map(|(name, id)| (name.clone(), *id))
            .collect();
        names.sort_by_key(|(name, id)| (Self::bucket(name), id.0));
        // At most u16::MAX entries (ids are u16), so positions fit.
        let starts = (0..=(longest + 1) * 32)
            .map(|b| names.partition_point(|(name, _)| Self::bucket(name) < b) as u16)
            .collect();
        TopLevelIndex { starts, names }
    }

    /// The id of the command named `name`, matched case-insensitively: the stored names are
    /// lower case, so only `name`'s bytes need lower-casing (`eq_ignore_ascii_case` would do
    /// both sides, at several times the cost on a three-letter name).
    fn get(&self, name: &[u8]) -> Option<CommandId> {
        let b = Self::bucket(name);
        let (start, end) = (*self.starts.get(b)?, *self.starts.get(b + 1)?);
        self.names[usize::from(start)..usize::from(end)]
            .iter()
            .find(|(lower, _)| {
                // Same bucket: same length.
                lower
                    .iter()
                    .zip(name)
                    .all(|(l, n)| *l == n.to_ascii_lowercase())
            })
            .map(|(_, id)| *id)
    }
}

/// Longest name (`container|sub` included) that [`CommandTable::lookup`] resolves: the size of
/// its stack buffer. Redis 7.0's longest is 29 (`cluster|count-failure-reports`).
const MAX_NAME_LEN: usize = 64;

/// The Redis version the fallback table was recorded from.
pub const FALLBACK_REDIS_VERSION: &str = "7.0.15";
static FALLBACK_REPLY: &[u8] = include_bytes!("commands-redis-7.0.15.resp");

/// The whole table.
#[derive(Debug, Clone)]
pub struct CommandTable {
    /// Containers and plain commands sorted by name, each followed by its subcommands.
    entries: Vec<CommandInfo>,
    /// Lower-case full name (`get`, `client|setname`) -> id.
    by_name: NameMap,
    /// Length of the longest name in `by_name`, to refuse longer input without hashing.
    longest: usize,
    /// `argv[0]` -> id, the first step of every lookup; see [`TopLevelIndex`].
    top_level: TopLevelIndex,
    /// What [`CommandId::UNKNOWN`] resolves to.
    unknown: CommandInfo,
}

#[derive(Debug, thiserror::Error)]
#[error("bad COMMAND reply: {0}")]
pub struct CommandTableError(pub String);

/// One parsed entry before ids are assigned.
struct Parsed {
    info: CommandInfo,
    subs: Vec<Parsed>,
}

impl CommandTable {
    /// Parses a raw RESP2 `COMMAND` reply (Redis 7 entries with key specs and subcommands;
    /// pre-7 entries with only the first six or seven fields are accepted too, their keys
    /// found with first/last/step).
    pub fn from_command_reply(reply: &[u8]) -> Result<CommandTable, CommandTableError> {
        let err = |m: &str| CommandTableError(m.to_string());
        let (frame, used) = redis_protocol::resp2::decode::decode(reply)
            .map_err(|e| CommandTableError(e.to_string()))?
            .ok_or_else(|| err("incomplete reply"))?;
        if used != reply.len() {
            return Err(err("trailing bytes after the reply"));
        }
        let items = match frame {
            OwnedFrame::Array(items) => items,
            OwnedFrame::Error(e) => return Err(CommandTableError(format!("node answered {e}"))),
            _ => return Err(err("reply is not an array")),
        };
        let mut parsed = items
            .iter()
            .map(|f| parse_entry(f, true))
            .collect::<Result<Vec<_>, _>>()?;
        parsed.sort_by(|a, b| a.info.name.cmp(&b.info.name));
        let mut table = CommandTable {
            entries: Vec::new(),
            by_name: NameMap::default(),
            longest: 0,
            top_level: TopLevelIndex::default(),
            unknown: unknown_entry(),
        };
        for entry in parsed {
            let container = table.push(entry.info, None)?;
            for sub in entry.subs {
                let id = table.push(sub.info, Some(container))?;
                table.entries[container.0 as usize].subcommands.push(id);
            }
        }
        table.top_level = TopLevelIndex::build(&table.by_name, table.longest);
        Ok(table)
    }

    /// Appends `info` with the next id; a duplicate name keeps the first entry's lookup.
    fn push(
        &mut self,
        mut info: CommandInfo,
        parent: Option<CommandId>,
    ) -> Result<CommandId, CommandTableError> {
        let id = u16::try_from(self.entries.len())
            .ok()
            .filter(|id| *id != CommandId::UNKNOWN.0)
            .map(CommandId)
            .ok_or_else(|| CommandTableError("too many commands".into()))?;
        info.id = id;
        info.parent = parent;
        if info.name.len() <= MAX_NAME_LEN {
            self.longest = self.longest.max(info.name.len());
            self.by_name
                .entry(info.name.as_bytes().into())
                .or_insert(id);
        }
        self.entries.push(info);
        Ok(id)
    }

    /// The table shipped with slotproxy (Redis 7.0.15's COMMAND reply), for when no node
    /// answers `COMMAND` at startup. Parsed once per process.
    pub fn fallback() -> CommandTable {
        static TABLE: OnceLock<CommandTable> = OnceLock::new();
        TABLE
            .get_or_init(|| {
                CommandTable::from_command_reply(FALLBACK_REPLY)
                    .expect("the shipped COMMAND reply parses (checked by unit tests)")
            })
            .clone()
    }

    /// The command (or subcommand) `req` invokes; `None` if unknown. No allocation. The name
    /// is found in `TopLevelIndex` (`client|setname` is not something a client can type, so
    /// no name with a `|` is there). For a container (CLIENT, CONFIG, OBJECT, ...), `argv[1]`
    /// selects the subcommand, looked up as `container|sub` lower-cased into a stack buffer;
    /// an unknown or missing subcommand yields the container.
    pub fn lookup(&self, req: &Request) -> Option<&CommandInfo> {
        if req.argc() == 0 {
            return None;
        }
        let info = &self.entries[self.top_level.get(req.arg(0))?.0 as usize];
        if info.subcommands.is_empty() || req.argc() < 2 {
            return Some(info);
        }
        // The index matched `argv[0]` to this name: it is `argv[0]` lower-cased.
        let n = info.name.len();
        let sub = req.arg(1);
        let full = n + 1 + sub.len();
        if full > self.longest {
            return Some(info);
        }
        let mut buf = [0u8; MAX_NAME_LEN];
        buf[..n].copy_from_slice(info.name.as_bytes());
        buf[n] = b'|';
        for (dst, src) in buf[n + 1..full].iter_mut().zip(sub) {
            *dst = src.to_ascii_lowercase();
        }
        Some(match self.by_name.get(&buf[..full]) {
            Some(id) => &self.entries[id.0 as usize],
            None => info,
        })
    }

    /// Appends the argument indices of `req`'s keys to `out`, in argument order, without
    /// duplicates: the union of all key specs (including `not_key` ones: the shard channels of
    /// SPUBLISH/SSUBSCRIBE route by slot exactly like keys). Indices are always `< argc`; a
    /// malformed request yields the keys that exist.
    pub fn keys(&self, info: &CommandInfo, req: &Request, out: &mut Vec<usize>) {
        let start = out.len();
        match info.key_finder {
            KeyFinder::NoKeys => return,
            // One ascending range: no duplicates to remove.
            KeyFinder::Range { first, last, step } => {
                return keyspec::push_legacy(first, last, step, req, out);
            }
            KeyFinder::Specs => info.key_specs.iter().for_each(|s| s.push_keys(req, out)),
            KeyFinder::SpecsAndLegacy => {
                info.key_specs.iter().for_each(|s| s.push_keys(req, out));
                keyspec::push_legacy(info.first_key, info.last_key, info.step, req, out);
            }
            KeyFinder::Legacy => {
                keyspec::push_legacy(info.first_key, info.last_key, info.step, req, out)
            }
            KeyFinder::Sort => keyspec::push_sort_keys(req, out),
            KeyFinder::Migrate => keyspec::push_migrate_keys(req, out),
        }
        if !out[start..].windows(2).all(|w| w[0] < w[1]) {
            out[start..].sort_unstable();
            let mut kept = start;
            for read in start..out.len() {
                if kept == start || out[read] != out[kept - 1] {
                    out[kept] = out[read];
                    kept += 1;
                }
            }
            out.truncate(kept);
        }
    }

    /// Whether this request really blocks: every [`Handling::Blocking`] command does, except
    /// XREAD and XREADGROUP, which block only with a `BLOCK` option (looked for among the
    /// options before `STREAMS`, so a stream named `block` does not count).
    pub fn may_block(&self, info: &CommandInfo, req: &Request) -> bool {
        if info.handling != Handling::Blocking {
            return false;
        }
        match info.name.as_str() {
            "xread" => has_block_option(req, false),
            "xreadgroup" => has_block_option(req, true),
            _ => true,
        }
    }

    /// The command with id `id` ([`CommandId::UNKNOWN`] gives the synthetic `unknown` entry).
    /// Panics on an id from another table that is out of this one's range.
    pub fn get(&self, id: CommandId) -> &CommandInfo {
        if id == CommandId::UNKNOWN {
            &self.unknown
        } else {
            &self.entries[id.0 as usize]
        }
    }

    /// The name of command `id` (`unknown` for [`CommandId::UNKNOWN`]).
    pub fn name(&self, id: CommandId) -> &str {
        &self.get(id).name
    }

    /// Every entry's id (commands and subcommands), in table order; not [`CommandId::UNKNOWN`].
    pub fn ids(&self) -> impl Iterator<Item = CommandId> + '_ {
        self.entries.iter().map(|e| e.id)
    }

    /// Every entry (commands and subcommands), in table order.
    pub fn iter(&self) -> impl Iterator<Item = &CommandInfo> + '_ {
        self.entries.iter()
    }

    /// The top-level commands (no subcommands), sorted by name: one metrics label each.
    pub fn top_level(&self) -> impl Iterator<Item = &CommandInfo> + '_ {
        self.entries.iter().filter(|e| e.parent.is_none())
    }

    /// Number of entries (commands and subcommands).
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `XREAD [COUNT n] [BLOCK ms] STREAMS ...` / `XREADGROUP GROUP g c [COUNT n] [BLOCK ms]
/// [NOACK] STREAMS ...`: walks the options, skipping their arguments, up to `STREAMS`.
fn has_block_option(req: &Request, group: bool) -> bool {
    let mut i = 1;
    while i < req.argc() {
        let arg = req.arg(i);
        if arg.eq_ignore_ascii_case(b"block") {
            return true;
        } else if arg.eq_ignore_ascii_case(b"streams") {
            return false;
        } else if group && arg.eq_ignore_ascii_case(b"group") {
            i += 3;
        } else if arg.eq_ignore_ascii_case(b"count") {
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// Parses one `COMMAND` entry: name, arity, flags, first key, last key, step, ACL categories,
/// tips, key specs, subcommands (the last four are absent before Redis 7).
fn parse_entry(frame: &OwnedFrame, top_level: bool) -> Result<Parsed, CommandTableError> {
    let bad = |what: &str| CommandTableError(format!("bad command entry: {what}"));
    let OwnedFrame::Array(items) = frame else {
        return Err(bad("not an array"));
    };
    if items.len() < 6 {
        return Err(bad("fewer than 6 fields"));
    }
    let name = frame_bytes(&items[0])
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or_else(|| bad("name"))?
        .to_ascii_lowercase();
    let int = |i: usize| match &items[i] {
        OwnedFrame::Integer(v) => i32::try_from(*v).map_err(|_| bad(&format!("{name} field {i}"))),
        _ => Err(bad(&format!("{name} field {i} is not an integer"))),
    };
    let list = |i: usize| match items.get(i) {
        Some(f) => string_list(f).ok_or_else(|| bad(&format!("{name} field {i}"))),
        None => Ok(Vec::new()),
    };
    let flags = list(2)?;
    let key_specs = match items.get(8) {
        Some(OwnedFrame::Array(specs)) => specs
            .iter()
            .map(KeySpec::from_frame)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&format!("{name}: {e}")))?,
        Some(_) => return Err(bad(&format!("{name} key specs"))),
        None => Vec::new(),
    };
    let mut subs = match items.get(9) {
        Some(OwnedFrame::Array(subs)) if top_level => subs
            .iter()
            .map(|f| parse_entry(f, false))
            .collect::<Result<Vec<_>, _>>()?,
        // Redis nests one level only; deeper subcommands would be unreachable by lookup.
        Some(OwnedFrame::Array(_)) | None => Vec::new(),
        Some(_) => return Err(bad(&format!("{name} subcommands"))),
    };
    subs.sort_by(|a, b| a.info.name.cmp(&b.info.name));
    let first_key = int(3)?;
    let has = |f: &str| flags.iter().any(|x| x == f);
    let acl_categories = list(6)?;
    let requires = auth::requirement(&name, &flags, &acl_categories, !subs.is_empty());
    let info = CommandInfo {
        id: CommandId::UNKNOWN,
        arity: int(1)?,
        readonly: has("readonly"),
        write: has("write"),
        handling: classify(&name, has("blocking")),
        admin: handling::is_admin(&name),
        pauses_on_write: handling::pauses_on_write(&name, has("write")),
        requires,
        first_key,
        last_key: int(4)?,
        step: int(5)?,
        acl_categories,
        tips: list(7)?,
        key_finder: KeyFinder::choose(&name, &key_specs, first_key),
        key_specs,
        parent: None,
        subcommands: Vec::new(),
        flags,
        name,
    };
    Ok(Parsed { info, subs })
}

/// What [`CommandId::UNKNOWN`] resolves to: no keys, forwarded so the node answers.
fn unknown_entry() -> CommandInfo {
    CommandInfo {
        id: CommandId::UNKNOWN,
        name: "unknown".into(),
        arity: 0,
        readonly: false,
        write: false,
        handling: Handling::Forward,
        admin: false,
        pauses_on_write: false,
        requires: Requires::FullAccess,
        flags: Vec::new(),
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: Vec::new(),
        tips: Vec::new(),
        key_specs: Vec::new(),
        key_finder: KeyFinder::NoKeys,
        parent: None,
        subcommands: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
