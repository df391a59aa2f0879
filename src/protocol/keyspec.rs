//! Key positions: Redis 7 key specs (`begin_search` + `find_keys`), the legacy
//! first/last/step triple, and the two commands whose keys only a hand-written parser finds
//! (SORT's `STORE`, MIGRATE's `KEYS`).
//!
//! The interpretation follows Redis's own `getKeysUsingKeySpecs` (db.c), with one deliberate
//! difference: a request whose numbers do not add up (numkeys larger than the arguments, a
//! missing `STREAMS` half, ...) yields the keys that exist instead of an error. The node will
//! answer the syntax error itself; the proxy only needs a slot to send it to, and must never
//! panic or read past `argc` on a client's bad input.
use redis_protocol::resp2::types::OwnedFrame;

use super::framer::Request;

/// Where the search for a key spec's first key starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginSearch {
    /// The first key is at this argument index.
    Index(i32),
    /// The first key follows `keyword` (matched case-insensitively). The search starts at
    /// `startfrom` and goes forward; a negative `startfrom` counts from the end and searches
    /// backward.
    Keyword { keyword: Box<[u8]>, startfrom: i32 },
    /// A spec Redis itself cannot interpret (SORT's BY/GET/STORE); such commands need a
    /// hand-written rule or the legacy triple.
    Unknown,
}

/// How the keys are found once the first one is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindKeys {
    /// Keys from the first to `lastkey` (relative to the first; negative = from the end of the
    /// arguments), every `keystep`. With `limit` > 0 and `lastkey` -1, only `1/limit` of the
    /// remaining arguments are keys (XREAD: the streams, not the ids).
    Range {
        lastkey: i32,
        keystep: i32,
        limit: i32,
    },
    /// The argument at `keynumidx` (relative to the first) says how many keys there are; they
    /// start at `firstkey` (relative to the first), every `keystep` (EVAL, ZUNIONSTORE, LMPOP).
    Keynum {
        keynumidx: i32,
        firstkey: i32,
        keystep: i32,
    },
    /// See [`BeginSearch::Unknown`].
    Unknown,
}

/// One Redis 7 key spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub begin_search: BeginSearch,
    pub find_keys: FindKeys,
    /// Spec flags as Redis names them (`RW`, `OW`, `access`, `not_key`, `incomplete`, ...).
    pub flags: Vec<String>,
}

/// How a command's key positions are found; chosen once when the table is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFinder {
    /// The command has no keys.
    NoKeys,
    /// Union of the key specs.
    Specs,
    /// One key spec of the plainest kind (a key at a fixed index, then a range whose end does
    /// not depend on a `limit`), reduced when the table is built to a first/last/step triple
    /// read like the legacy one (last negative = from the end): GET, SET, MGET, DEL, HSET ...,
    /// most of the traffic, then cost one range instead of interpreting a spec per request.
    Range { first: i32, last: i32, step: i32 },
    /// Union of the interpretable key specs and the legacy first/last/step triple: some specs
    /// are of an unknown type.
    SpecsAndLegacy,
    /// Only the legacy first/last/step triple (a pre-7 server, or a module without specs).
    Legacy,
    /// SORT: the sorted key, plus the last `STORE` destination, parsed as Redis's `sortGetKeys`.
    Sort,
    /// MIGRATE: the key argument, or with an empty key argument the keys after `KEYS`.
    Migrate,
}

impl KeyFinder {
    /// Picks the finder for a command. SORT and MIGRATE are special-cased by name because
    /// their specs are `unknown`/`incomplete`: Redis itself uses hand-written parsers for them.
    pub(crate) fn choose(name: &str, specs: &[KeySpec], first_key: i32) -> KeyFinder {
        match name {
            "sort" => KeyFinder::Sort,
            "migrate" => KeyFinder::Migrate,
            _ if specs.is_empty() && first_key == 0 => KeyFinder::NoKeys,
            _ if specs.is_empty() => KeyFinder::Legacy,
            _ => match specs.iter().map(KeySpec::as_range).collect::<Vec<_>>()[..] {
                [Some((first, last, step))] => KeyFinder::Range { first, last, step },
                _ if specs.iter().all(KeySpec::is_known) => KeyFinder::Specs,
                _ => KeyFinder::SpecsAndLegacy,
            },
        }
    }
}

impl KeySpec {
    /// This spec as a first/last/step triple for [`push_legacy`], if it is `Index` + `Range`
    /// with the range's end fixed relative to the first key (`lastkey >= 0`) or to the end of
    /// the arguments (`lastkey < 0` without a `limit`). [`KeySpec::push_keys`] then finds the
    /// same keys as `push_legacy` does with the triple.
    fn as_range(&self) -> Option<(i32, i32, i32)> {
        let BeginSearch::Index(first) = self.begin_search else {
            return None;
        };
        let FindKeys::Range {
            lastkey,
            keystep,
            limit,
        } = self.find_keys
        else {
            return None;
        };
        // push_keys stops at a first key below 1; push_legacy too, but a negative `first`
        // would change how `last` reads, so such a spec keeps the general path.
        if first < 1 {
            return None;
        }
        let last = match lastkey {
            0.. => first.checked_add(lastkey)?,
            _ if limit <= 0 => lastkey,
            _ => return None,
        };
        Some((first, last, keystep))
    }

    /// Whether both halves of the spec are of a type this module interprets.
    pub fn is_known(&self) -> bool {
        self.begin_search != BeginSearch::Unknown && self.find_keys != FindKeys::Unknown
    }

    /// Parses one spec: a RESP2 array of alternating field names and values (a flattened map).
    /// Unknown fields are ignored and unknown types become `Unknown`, so a newer server's
    /// additions degrade instead of failing the whole table.
    pub(crate) fn from_frame(frame: &OwnedFrame) -> Result<KeySpec, String> {
        let fields = map_pairs(frame).ok_or("key spec is not a map")?;
        let mut spec = KeySpec {
            begin_search: BeginSearch::Unknown,
            find_keys: FindKeys::Unknown,
            flags: Vec::new(),
        };
        for (name, value) in fields {
            match name {
                b"flags" => spec.flags = string_list(value).ok_or("bad key spec flags")?,
                b"begin_search" => {
                    let (kind, args) = typed_spec(value).ok_or("bad begin_search")?;
                    spec.begin_search = match kind {
                        b"index" => BeginSearch::Index(int_field(&args, b"index")?),
                        b"keyword" => BeginSearch::Keyword {
                            keyword: bytes_field(&args, b"keyword")?.into(),
                            startfrom: int_field(&args, b"startfrom")?,
                        },
                        _ => BeginSearch::Unknown,
                    };
                }
                b"find_keys" => {
                    let (kind, args) = typed_spec(value).ok_or("bad find_keys")?;
                    spec.find_keys = match kind {
                        b"range" => FindKeys::Range {
                            lastkey: int_field(&args, b"lastkey")?,
                            keystep: int_field(&args, b"keystep")?,
                            limit: int_field(&args, b"limit")?,
                        },
                        b"keynum" => FindKeys::Keynum {
                            keynumidx: int_field(&args, b"keynumidx")?,
                            firstkey: int_field(&args, b"firstkey")?,
                            keystep: int_field(&args, b"keystep")?,
                        },
                        _ => FindKeys::Unknown,
                    };
                }
                _ => {}
            }
        }
        Ok(spec)
    }

    /// Appends this spec's key indices (ascending, all `< argc`) to `out`.
    pub fn push_keys(&self, req: &Request, out: &mut Vec<usize>) {
        let argc = req.argc() as i64;
        let first = match &self.begin_search {
            BeginSearch::Index(i) => i64::from(*i),
            BeginSearch::Keyword { keyword, startfrom } => {
                match find_keyword(req, keyword, i64::from(*startfrom)) {
                    Some(i) => i + 1,
                    None => return,
                }
            }
            BeginSearch::Unknown => return,
        };
        if first < 1 || first >= argc {
            return;
        }
        let (first, last, step) = match self.find_keys {
            FindKeys::Range {
                lastkey,
                keystep,
                limit,
            } => {
                let lastkey = i64::from(lastkey);
                let last = if lastkey >= 0 {
                    first + lastkey
                } else if limit <= 0 {
                    argc + lastkey
                } else {
                    first + (argc - first) / i64::from(limit) + lastkey
                };
                (first, last, keystep)
            }
            FindKeys::Keynum {
                keynumidx,
                firstkey,
                keystep,
            } => {
                let idx = first + i64::from(keynumidx);
                if idx < 1 || idx >= argc {
                    return;
                }
                let numkeys = match parse_i64(req.arg(idx as usize)) {
                    Some(n) if n >= 0 => n,
                    _ => return,
                };
                let start = first + i64::from(firstkey);
                (start, start.saturating_add(numkeys) - 1, keystep)
            }
            FindKeys::Unknown => return,
        };
        push_range(first, last, i64::from(step), argc, out);
    }
}

/// Appends the legacy first/last/step range (last negative = from the end) to `out`.
pub fn push_legacy(first: i32, last: i32, step: i32, req: &Request, out: &mut Vec<usize>) {
    let argc = req.argc() as i64;
    let last = if last < 0 {
        argc + i64::from(last)
    } else {
        i64::from(last)
    };
    push_range(i64::from(first), last, i64::from(step), argc, out);
}

/// `SORT key [BY pattern] [LIMIT offset count] [GET pattern ...] [ASC|DESC] [ALPHA]
/// [STORE destination]`: the key, and the destination of the last STORE (as Redis does).
/// Options are skipped with their arguments, so a pattern or offset spelled `store` is not
/// mistaken for the keyword.
pub fn push_sort_keys(req: &Request, out: &mut Vec<usize>) {
    let argc = req.argc();
    if argc < 2 {
        return;
    }
    out.push(1);
    let mut store = None;
    let mut i = 2;
    while i < argc {
        let arg = req.arg(i);
        if arg.eq_ignore_ascii_case(b"limit") {
            i += 3;
        } else if arg.eq_ignore_ascii_case(b"by") || arg.eq_ignore_ascii_case(b"get") {
            i += 2;
        } else if arg.eq_ignore_ascii_case(b"store") {
            if i + 1 < argc {
                store = Some(i + 1);
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    out.extend(store);
}

/// `MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw | AUTH2 user pw]
/// [KEYS key ...]`: the key argument when it is not empty; otherwise the keys after `KEYS`,
/// found by walking the options so that a password spelled `keys` is not taken for it.
pub fn push_migrate_keys(req: &Request, out: &mut Vec<usize>) {
    let argc = req.argc();
    if argc < 4 {
        return;
    }
    if !req.arg(3).is_empty() {
        out.push(3);
        return;
    }
    let mut i = 6;
    while i < argc {
        let arg = req.arg(i);
        if arg.eq_ignore_ascii_case(b"keys") {
            out.extend(i + 1..argc);
            return;
        } else if arg.eq_ignore_ascii_case(b"auth") {
            i += 2;
        } else if arg.eq_ignore_ascii_case(b"auth2") {
            i += 3;
        } else {
            i += 1;
        }
    }
}

/// Pushes `first..=last` every `step`, clipped to `1..argc`. A step below 1 is taken as 1 so
/// that no table entry can make this loop forever.
fn push_range(first: i64, last: i64, step: i64, argc: i64, out: &mut Vec<usize>) {
    let last = last.min(argc - 1);
    if first < 1 || last < first {
        return;
    }
    // A plain loop: most ranges hold one key, for which `extend(range.step_by(..))` costs
    // several times the push.
    let step = step.max(1);
    let mut i = first;
    while i <= last {
        out.push(i as usize);
        i += step;
    }
}

/// Redis's keyword search: forward from `startfrom` up to (not including) the last argument,
/// or for a negative `startfrom` backward from `argc + startfrom` down to argument 1.
fn find_keyword(req: &Request, keyword: &[u8], startfrom: i64) -> Option<i64> {
    let argc = req.argc() as i64;
    let matches = |i: &i64| req.arg(*i as usize).eq_ignore_ascii_case(keyword);
    if startfrom > 0 {
        (startfrom..argc - 1).find(matches)
    } else if startfrom == 0 {
        None // Redis starts at argc and finds nothing
    } else {
        (1..(argc + startfrom + 1).min(argc)).rev().find(matches)
    }
}

/// Parses a decimal integer as Redis's `string2ll` would (no spaces, optional `-`).
/// As Redis reads a numeric argument (string2ll): `+1` and `01` are not integers.
fn parse_i64(arg: &[u8]) -> Option<i64> {
    super::framer::parse_int(arg)
}

/// The byte content of a simple or bulk string frame.
pub(crate) fn frame_bytes(frame: &OwnedFrame) -> Option<&[u8]> {
    match frame {
        OwnedFrame::SimpleString(s) | OwnedFrame::BulkString(s) => Some(s),
        _ => None,
    }
}

/// An array of strings (flags, ACL categories, tips).
pub(crate) fn string_list(frame: &OwnedFrame) -> Option<Vec<String>> {
    match frame {
        OwnedFrame::Array(items) => items
            .iter()
            .map(|f| frame_bytes(f).map(|b| String::from_utf8_lossy(b).into_owned()))
            .collect(),
        OwnedFrame::Null => Some(Vec::new()),
        _ => None,
    }
}

/// The fields of a RESP2-flattened map, in order.
type Fields<'a> = Vec<(&'a [u8], &'a OwnedFrame)>;

/// A RESP2-flattened map: `[name, value, name, value, ...]`.
fn map_pairs(frame: &OwnedFrame) -> Option<Fields<'_>> {
    let OwnedFrame::Array(items) = frame else {
        return None;
    };
    items
        .chunks(2)
        .map(|pair| match pair {
            [name, value] => Some((frame_bytes(name)?, value)),
            _ => None,
        })
        .collect()
}

/// `[type, <kind>, spec, [fields...]]` of a begin_search or find_keys.
fn typed_spec(frame: &OwnedFrame) -> Option<(&[u8], Fields<'_>)> {
    let pairs = map_pairs(frame)?;
    let kind = pairs.iter().find(|(n, _)| *n == b"type")?.1;
    let args = match pairs.iter().find(|(n, _)| *n == b"spec") {
        Some((_, spec)) => map_pairs(spec)?,
        None => Vec::new(),
    };
    Some((frame_bytes(kind)?, args))
}

fn field<'a>(args: &[(&[u8], &'a OwnedFrame)], name: &[u8]) -> Result<&'a OwnedFrame, String> {
    args.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("key spec lacks {}", String::from_utf8_lossy(name)))
}

fn int_field(args: &[(&[u8], &OwnedFrame)], name: &[u8]) -> Result<i32, String> {
    match field(args, name)? {
        OwnedFrame::Integer(i) => {
            i32::try_from(*i).map_err(|_| "key spec integer out of range".into())
        }
        _ => Err(format!(
            "key spec {} is not an integer",
            String::from_utf8_lossy(name)
        )),
    }
}

fn bytes_field<'a>(args: &[(&[u8], &'a OwnedFrame)], name: &[u8]) -> Result<&'a [u8], String> {
    frame_bytes(field(args, name)?)
        .ok_or_else(|| format!("key spec {} is not a string", String::from_utf8_lossy(name)))
}
